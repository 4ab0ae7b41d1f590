"""The targets a notebook can run against."""

from __future__ import annotations

from enum import StrEnum

from workbook.config.errors import UnknownTargetError


class Target(StrEnum):
    """The backend set a notebook runs against. Parsing ignores case and surrounding spaces."""

    LOCAL = "local"  # the package's own Service Bus emulator and embedded SQLite stores
    EMULATOR = "emulator"  # Microsoft's Service Bus and Cosmos DB emulators
    AZURE = "azure"  # an Azure Service Bus namespace and an Azure Cosmos DB account

    @classmethod
    def parse(cls, text: str) -> Target:
        """Return the target named by `text`, or raise UnknownTargetError naming the allowed values."""
        return cls(text)

    @classmethod
    def _missing_(cls, value: object) -> Target:
        if isinstance(value, str):
            normalized = value.strip().lower()
            for member in cls:
                if member.value == normalized:
                    return member
        raise UnknownTargetError(value, [member.value for member in cls])
