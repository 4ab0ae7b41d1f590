"""Load the JSON Schemas of canonical UBL documents and validate canonical JSON against them.

There is one schema per UBL document type in data/schemas (JSON Schema draft 2020-12). Besides the
standard keywords they use two of this package's own. The ``xml`` annotation gives the XML namespace
and prefix of an element, for the transformer. ``decimalMinimum`` checks numbers written as strings:
the element's value (the string itself, or its ``#text``) read as a decimal must be at least the given
decimal. Other validators ignore both keywords, as JSON Schema does with unknown keywords.

NOTE: the schemas list the elements that the Peppol BIS 3 example documents and the project's samples
use, in UBL 2.1 sequence order. An element repeats where Peppol BIS 3 lets it, or where UBL 2.1 does when
the Peppol cardinality was not checked. A valid UBL element outside the schema makes xml_to_canonical
raise UnmappableXmlError (and transform_with_fallback pass the document through) until it is added.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import referencing
import referencing.jsonschema
from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import SchemaError, best_match

from workbook.esb.errors import EsbError
from workbook.paths import data_dir

if TYPE_CHECKING:
    from referencing._core import Resolver

logger = logging.getLogger(__name__)

SCHEMA_FILES: dict[str, str] = {
    "Order": "order.json",
    "OrderChange": "order_change.json",
    "OrderCancellation": "order_cancellation.json",
    "OrderResponse": "order_response.json",
    "DespatchAdvice": "despatch_advice.json",
    "Catalogue": "catalogue.json",
    "ApplicationResponse": "application_response.json",
}

# Key names of the canonical form: "#text" is an element's text, "@name" one of its attributes.
TEXT_KEY = "#text"
ATTRIBUTE_MARK = "@"

# Meanings of the patterns in data/schemas, named in problem messages in place of the regex.
_PATTERN_MEANINGS = {
    r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)$": "a decimal number such as 12.50",
    r"\S": "a value with at least one character other than whitespace",
    "^[A-Z]{3}$": "three capital letters, as ISO 4217 currency codes are",
    "^[A-Z]{2}$": "two capital letters, as ISO 3166-1 alpha-2 country codes are",
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}$": "a date as YYYY-MM-DD",
}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


class SchemaFileError(EsbError):
    """Error for a schema file that is missing, unreadable or not a valid JSON Schema."""

    def __init__(self, document_type: str, path: Path | None, reason: str) -> None:
        self.document_type = document_type
        self.path = path
        self.reason = reason
        where = f" at {path}" if path else ""
        super().__init__(f"JSON Schema for {document_type!r}{where}: {reason}.")


@dataclass(frozen=True)
class ValidationProblem:
    """One failed schema rule: the JSON path of the value, such as ``$.OrderLine[0].LineItem.Quantity``,
    the JSON Schema keyword that failed (``required``, ``type``, ``pattern``...) and a message."""

    path: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} ({self.rule})"


class SchemaValidationError(EsbError):
    """Error for canonical JSON that fails its document type's schema. `problems` lists every failure."""

    def __init__(
        self, document_type: str, problems: list[ValidationProblem], source: str | None = None
    ) -> None:
        self.document_type = document_type
        self.problems = tuple(problems)
        self.source = source
        origin = f"{source}: " if source else ""
        listing = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(
            f"{origin}{document_type} failed schema validation with {len(self.problems)} problem(s):\n"
            f"{listing}\nFix each listed value and send the document again."
        )


def schema_dir() -> Path:
    """Return the folder of the canonical JSON Schemas, <repository>/data/schemas."""
    return data_dir() / "schemas"


def schema_file(document_type: str) -> Path:
    """Return the path of a document type's schema. Raises SchemaFileError for an unknown type."""
    name = SCHEMA_FILES.get(document_type)
    if name is None:
        supported = ", ".join(SCHEMA_FILES)
        raise SchemaFileError(
            document_type, None, f"no schema for this document type; expected one of {supported}"
        )

    return schema_dir() / name


@cache
def load_schema(document_type: str) -> dict[str, Any]:
    """Read and check a document type's schema once per process. Callers must not modify the result."""
    path = schema_file(document_type)
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise SchemaFileError(document_type, path, "the file does not exist") from error
    except json.JSONDecodeError as error:
        raise SchemaFileError(
            document_type, path, f"invalid JSON at line {error.lineno}: {error.msg}"
        ) from error

    try:
        _Validator.check_schema(schema)
    except SchemaError as error:
        raise SchemaFileError(document_type, path, f"not a valid JSON Schema: {error.message}") from error

    logger.debug("loaded the %s schema from %s", document_type, path)
    return schema


def schema_resolver(document_type: str) -> Resolver[Any]:
    """Return a `referencing` resolver rooted at a document type's schema, to follow its ``$ref``s."""
    uri = schema_file(document_type).as_uri()
    resource = referencing.jsonschema.DRAFT202012.create_resource(load_schema(document_type))
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(uri, resource)
    return registry.resolver(base_uri=uri)


def validate(document_type: str, canonical: Any) -> list[ValidationProblem]:
    """List every schema failure of a canonical document, in the order the validator finds them.

    An empty list means the document is valid. A missing property is reported at the path it would
    have, with the rule ``required``. An unexpected property is reported at its own path, with the rule
    ``additionalProperties``.
    """
    problems: list[ValidationProblem] = []
    seen: set[tuple[str, str]] = set()
    for error in _validator(document_type).iter_errors(canonical):
        for problem in _problems(error):
            if (problem.path, problem.rule) not in seen:
                seen.add((problem.path, problem.rule))
                problems.append(problem)

    return problems


def ensure_valid(document_type: str, canonical: Any, *, source: str | None = None) -> None:
    """Raise SchemaValidationError listing every failure when a canonical document fails its schema."""
    problems = validate(document_type, canonical)
    if problems:
        raise SchemaValidationError(document_type, problems, source)


def json_path(parts: Iterable[str | int]) -> str:
    """Format a path as JSONPath: ``$.OrderLine[0].LineItem.Quantity['#text']``."""
    text = "$"
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.match(part):
            text += f".{part}"
        else:
            escaped = part.replace("\\", "\\\\").replace("'", "\\'")
            text += f"['{escaped}']"

    return text


def json_type(value: Any) -> str:
    """Name a value's JSON type with its article, such as "an object" or "a number"."""
    for python_type, name in _JSON_TYPES.items():
        if type(value) is python_type:
            return name

    return "a number" if isinstance(value, int | float) else type(value).__name__


def _decimal_minimum(
    validator: Any, minimum: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    text = instance.get(TEXT_KEY) if isinstance(instance, dict) else instance
    if not isinstance(text, str):
        return

    # A value that is not a decimal is left to the pattern keyword, so that it is reported once.
    try:
        value = Decimal(text)
    except InvalidOperation:
        return
    if value.is_finite() and value < Decimal(minimum):
        yield ValidationError(f"{text!r} is less than the minimum of {minimum}")


_Validator = validators.extend(Draft202012Validator, {"decimalMinimum": _decimal_minimum})


@cache
def _validator(document_type: str) -> Any:
    schema = load_schema(document_type)
    return _Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _problems(error: ValidationError) -> list[ValidationProblem]:
    parts = list(error.absolute_path)
    if error.validator == "required":
        return [_missing(error, parts)]
    if error.validator == "additionalProperties":
        return _unexpected(error, parts)
    if error.validator in ("anyOf", "oneOf") and error.context:
        return _problems(best_match(error.context))

    return [ValidationProblem(json_path(parts), str(error.validator), _message(error))]


def _missing(error: ValidationError, parts: list[str | int]) -> ValidationProblem:
    # jsonschema reports each missing property as its own error, in the order of the required list,
    # but states the name only inside the message.
    instance = error.instance if isinstance(error.instance, dict) else {}
    names = [name for name in error.validator_value if name not in instance]
    name = next((name for name in names if repr(name) in error.message), names[0])
    message = f"missing {name!r}, which this element requires"
    return ValidationProblem(json_path([*parts, name]), "required", message)


def _unexpected(error: ValidationError, parts: list[str | int]) -> list[ValidationProblem]:
    schema = error.schema if isinstance(error.schema, dict) else {}
    known = set(schema.get("properties", {}))
    patterns = [re.compile(pattern) for pattern in schema.get("patternProperties", {})]
    extra = [
        name
        for name in error.instance
        if name not in known and not any(pattern.search(name) for pattern in patterns)
    ]
    allowed = ", ".join(sorted(known)) or "none"
    return [
        ValidationProblem(
            json_path([*parts, name]),
            "additionalProperties",
            f"unexpected property {name!r}: no element or attribute of that name is allowed here "
            f"(allowed: {allowed})",
        )
        for name in extra
    ]


def _message(error: ValidationError) -> str:
    if error.validator == "type":
        return _type_message(error)
    if error.validator == "pattern" and error.validator_value in _PATTERN_MEANINGS:
        return f"{error.instance!r} is not {_PATTERN_MEANINGS[error.validator_value]}"
    if (
        error.validator == "minProperties"
        and isinstance(error.instance, dict)
        and set(error.instance) == {TEXT_KEY}
    ):
        return (
            "an element without attributes is written as a plain string, not as an object with only '#text'"
        )

    return error.message


def _type_message(error: ValidationError) -> str:
    expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
    found = json_type(error.instance)
    message = f"expected {' or '.join(expected)}, found {found}"

    if "array" in expected and isinstance(error.instance, dict):
        return f"{message}: an element that may repeat stays a list even when it appears once"
    if "array" not in expected and isinstance(error.instance, list):
        return f"{message}: the element appears at most once, so it is not a list"
    if expected == ["object"] and isinstance(error.instance, str):
        attributes = [name for name in error.schema.get("required", []) if name.startswith(ATTRIBUTE_MARK)]
        if attributes:
            needed = ", ".join(attributes)
            return f"{message}: the element needs the attribute(s) {needed}, so it is written as an object"
    if (
        "string" in expected
        and isinstance(error.instance, int | float)
        and not isinstance(error.instance, bool)
    ):
        return (
            f"{message}: canonical values are strings so that no digit is lost, write {str(error.instance)!r}"
        )

    return message
