"""matplotlib figures used by the notebooks, one module per topic."""

from workbook.plots.latency import plot_latency_distribution, plot_queue_depth
from workbook.plots.sagas import plot_saga_timeline
from workbook.plots.traces import plot_trace_gantt

__all__ = ["plot_latency_distribution", "plot_queue_depth", "plot_saga_timeline", "plot_trace_gantt"]
