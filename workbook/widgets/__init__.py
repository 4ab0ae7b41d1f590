"""ipywidgets panels for the notebooks' "try it yourself" sections.

Each panel calls the same package functions as the notebook's cells and has a headless method
(`apply`) that the committed notebooks and the tests call, so a click and a papermill run take
the same path.
"""

from workbook.widgets.conflicts import ConflictPanel
from workbook.widgets.deadletter import DeadLetterPanel
from workbook.widgets.emergency import EmergencyPanel
from workbook.widgets.latency import LatencyPanel
from workbook.widgets.monitoring import MonitoringPanel
from workbook.widgets.projections import DeserializationPanel, ProjectionLagPanel
from workbook.widgets.routing import RoutingRulePanel
from workbook.widgets.sagas import SagaPanel
from workbook.widgets.traces import TraceLabPanel
from workbook.widgets.transformation import TransformationPanel

__all__ = [
    "ConflictPanel",
    "DeadLetterPanel",
    "DeserializationPanel",
    "EmergencyPanel",
    "LatencyPanel",
    "MonitoringPanel",
    "ProjectionLagPanel",
    "RoutingRulePanel",
    "SagaPanel",
    "TraceLabPanel",
    "TransformationPanel",
]
