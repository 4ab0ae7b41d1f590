"""Helper package of the integration troubleshooting workbook.

Each subpackage owns one concern (configuration, clock, the local Service Bus emulator, the ESB
pieces); the notebooks only call these and show the results.
"""

__version__ = "0.1.0"
