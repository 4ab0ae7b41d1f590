"""A small parser for `.env` files of KEY=VALUE lines.

Supported: blank lines, `#` comments, an `export ` prefix, single quotes (literal text), double quotes
(with the escapes \\n, \\t, \\" and \\\\) and ` #` comments after unquoted values. A later line wins over
an earlier one for the same name. NOTE: multi-line values and `${VAR}` expansion are not supported.
"""

from __future__ import annotations

import re
from pathlib import Path

from workbook.config.errors import ConfigError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INLINE_COMMENT = re.compile(r"\s#")
_DOUBLE_QUOTE_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def read_env_file(path: Path) -> dict[str, str]:
    """Read the variables of the `.env` file at `path`, or raise ConfigError listing every malformed line."""
    values, problems = parse_env_text(_read_text(path), source=str(path))
    if problems:
        raise ConfigError(f"Invalid env file {path}:", problems=problems)
    return values


def parse_env_text(text: str, *, source: str = ".env") -> tuple[dict[str, str], list[str]]:
    """Return the variables in `text` and a problem for each malformed line, naming `source` and the line.

    Problems give line numbers but never line contents, because a malformed line may hold a secret.
    """
    values: dict[str, str] = {}
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            parsed = _parse_line(line)
        except ValueError as error:
            problems.append(f"{source} line {number}: {error}")
            continue
        if parsed is not None:
            name, value = parsed
            values[name] = value
    return values, problems


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise ConfigError(f"Cannot read env file {path}: {error.strerror or error}.") from error


def _parse_line(line: str) -> tuple[str, str] | None:
    """Return (name, value) for an assignment, None for a blank or comment line, or raise ValueError."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    if stripped.startswith("export") and stripped[6:7].isspace():
        stripped = stripped[6:].lstrip()

    if "=" not in stripped:
        raise ValueError("expected NAME=VALUE, but the line has no '='.")
    name, raw_value = stripped.split("=", 1)
    name = name.strip()
    if not _NAME.fullmatch(name):
        raise ValueError(
            "the name before '=' is not a valid variable name: use letters, digits and '_', "
            "and do not start with a digit."
        )
    return name, _parse_value(raw_value.strip())


def _parse_value(raw: str) -> str:
    if raw.startswith("'"):
        return _parse_quoted(raw, "'")
    if raw.startswith('"'):
        return _parse_quoted(raw, '"')

    comment = _INLINE_COMMENT.search(raw)
    return raw[: comment.start()].rstrip() if comment else raw


def _parse_quoted(raw: str, quote: str) -> str:
    characters: list[str] = []
    index = 1
    while index < len(raw):
        character = raw[index]
        if character == quote:
            _check_after_quote(raw[index + 1 :])
            return "".join(characters)
        if quote == '"' and character == "\\" and index + 1 < len(raw):
            following = raw[index + 1]
            characters.append(_DOUBLE_QUOTE_ESCAPES.get(following, "\\" + following))
            index += 2
            continue
        characters.append(character)
        index += 1
    raise ValueError(f"the value opens with {quote} but has no closing {quote} on the same line.")


def _check_after_quote(rest: str) -> None:
    rest = rest.strip()
    if rest and not rest.startswith("#"):
        raise ValueError("unexpected text after the closing quote: put a comment after ' #' or remove it.")
