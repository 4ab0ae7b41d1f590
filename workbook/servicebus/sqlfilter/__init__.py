"""The Service Bus SQL filter and SQL rule action language, as topic subscription rules use it.

``compile_filter`` and ``compile_action`` parse an expression once; the compiled objects then
evaluate against each message's ``FilterContext``. The semantics follow Microsoft's pages
"Subscription Rule SQL Filter Syntax" and "Subscription Rule SQL Action Syntax"; where those pages
are silent, a ``NOTE:`` marks the choice where the code makes it.
"""

from workbook.servicebus.sqlfilter.errors import SqlFilterError
from workbook.servicebus.sqlfilter.properties import SYSTEM_PROPERTIES, FilterContext, SystemProperty
from workbook.servicebus.sqlfilter.rules import SqlFilter, SqlRuleAction, compile_action, compile_filter

__all__ = [
    "SYSTEM_PROPERTIES",
    "FilterContext",
    "SqlFilter",
    "SqlFilterError",
    "SqlRuleAction",
    "SystemProperty",
    "compile_action",
    "compile_filter",
]
