"""The target a run used, described for the reports with every key masked."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workbook.config import TARGET_VARIABLE, ConfigError, Target, load_settings, mask_secrets

logger = logging.getLogger(__name__)

# Keys of Settings.describe() shown in the reports. The others (host, port, sources) repeat these.
_REPORTED_SETTINGS = ("target", "servicebus_connection_string", "cosmos_endpoint", "cosmos_key")


def describe_target(kernel_dir: Path, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Describe the settings the notebook kernels read: target, masked connection string, Cosmos DB account.

    Kernels run in `kernel_dir`, so its `.env` file is the one they read. Invalid settings do not stop the
    run, because a notebook on the local target needs none of them: the description then carries a
    `problem` entry with the masked error, and the target as written in the environment.
    """
    env_file = kernel_dir / ".env"
    try:
        settings = load_settings(environ, env_file=env_file if env_file.is_file() else None)
    except ConfigError as error:
        # ConfigError masks its message and problems already.
        logger.warning("workbook settings are invalid, the report lists the problems: %s", error)
        written = (os.environ if environ is None else environ).get(TARGET_VARIABLE)
        return {"target": written or Target.LOCAL.value, "problem": " ".join(str(error).split())}

    summary = settings.describe()
    return {name: mask_secrets(str(summary[name])) for name in _REPORTED_SETTINGS}
