"""Locate the project's data folders independently of the current working directory.

Papermill runs a notebook's kernel in the caller's directory, JupyterLab and nbval in the notebook's
folder, so every data path is resolved against the repository root instead of the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

PEPPOL_DATA_ENV = "WORKBOOK_PEPPOL_DATA"

# Shortcut names accepted as a notebook's data_path parameter.
SHORTCUTS = ("samples", "peppol")


def project_root() -> Path:
    """Return the repository root, the folder that contains the `workbook` package.

    NOTE: this assumes a source checkout or an editable install. A wheel installed into
    site-packages has no data/ folder beside the package.
    """
    return Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """Return the project's own data folder, <repository>/data."""
    return project_root() / "data"


def peppol_corpus_dir() -> Path:
    """Return the Peppol example corpus folder.

    That is $WORKBOOK_PEPPOL_DATA when set, else <repository>/../shared/data/peppol.
    """
    override = os.environ.get(PEPPOL_DATA_ENV, "").strip()
    if override:
        return Path(override).expanduser().resolve()

    return (project_root() / ".." / "shared" / "data" / "peppol").resolve()


def resolve_data_path(value: str | os.PathLike[str]) -> Path:
    """Turn a notebook's data_path parameter into an existing absolute path.

    Accepts the shortcuts "samples" (the project's sample documents) and "peppol" (the Peppol
    corpus), an absolute path, or a path relative to the repository root. Raises FileNotFoundError
    naming the value when the path does not exist.
    """
    text = os.fspath(value).strip()
    if not text:
        raise ValueError(f"data_path is empty; use one of {', '.join(SHORTCUTS)} or a folder path")

    path = _expand(text)
    if not path.exists():
        raise FileNotFoundError(_missing_message(text, path))

    return path


def _expand(text: str) -> Path:
    if text == "samples":
        return data_dir() / "samples"
    if text == "peppol":
        return peppol_corpus_dir()

    path = Path(text).expanduser()
    if path.is_absolute():
        return path

    return (project_root() / path).resolve()


def _missing_message(text: str, path: Path) -> str:
    hint = (
        f"set {PEPPOL_DATA_ENV} to the folder that contains the Peppol example documents"
        if text == "peppol"
        else f"pass an absolute path, a path relative to {project_root()}, or one of {', '.join(SHORTCUTS)}"
    )
    return f"data_path {text!r} resolves to {path}, which does not exist: {hint}"
