"""The tokenizer of the Service Bus SQL filter and rule action language.

Token rules follow Microsoft's "Subscription Rule SQL Filter Syntax" page. A regular identifier is a
letter followed by letters, decimal digits or underscores. ``[delimited]`` and ``"quoted"``
identifiers double their closing character to escape it. Strings are single-quoted with ``''`` as
the escape. Integers are Int64, and numbers with a decimal point or an exponent are doubles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workbook.servicebus.sqlfilter.errors import SqlFilterError

INTEGER = "integer"
DECIMAL = "decimal"
STRING = "string"
IDENTIFIER = "identifier"
DELIMITED = "delimited identifier"
PARAMETER = "parameter"
KEYWORD = "keyword"
SYMBOL = "symbol"
END = "end"

KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "LIKE", "ESCAPE", "IS", "NULL", "TRUE", "FALSE", "EXISTS"})

# Longest symbols first, so that ">=" is not read as ">" followed by "=".
SYMBOLS = ("<>", "!=", ">=", "<=", "=", ">", "<", "+", "-", "*", "/", "%", "(", ")", ",", ".", ";")

INT64_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Token:
    """One token: its kind, its decoded value and its 0-based offset in the expression."""

    kind: str
    value: Any
    offset: int
    text: str

    def is_keyword(self, *names: str) -> bool:
        return self.kind == KEYWORD and self.value in names

    def is_symbol(self, *symbols: str) -> bool:
        return self.kind == SYMBOL and self.value in symbols

    def describe(self) -> str:
        """Name the token for an error message, e.g. ``keyword AND`` or ``end of expression``."""
        if self.kind == END:
            return "end of expression"
        if self.kind == SYMBOL:
            return f"'{self.text}'"
        return f"{self.kind} {self.text}"


def tokenize(expression: str, kind: str) -> list[Token]:
    """Split ``expression`` into tokens, ending with an END token.

    ``kind`` ("filter" or "rule action") names the language in errors. Raises SqlFilterError for an
    unrecognized character, an unterminated string or identifier and an integer beyond Int64.
    """
    return _Lexer(expression, kind).run()


class _Lexer:
    def __init__(self, expression: str, kind: str) -> None:
        self.text = expression
        self.kind = kind
        self.position = 0
        self.tokens: list[Token] = []

    def run(self) -> list[Token]:
        while True:
            self._skip_whitespace()
            if self.position >= len(self.text):
                self.tokens.append(Token(END, None, self.position, ""))
                return self.tokens
            self.tokens.append(self._next_token())

    def _skip_whitespace(self) -> None:
        while self.position < len(self.text) and self.text[self.position].isspace():
            self.position += 1

    def _next_token(self) -> Token:
        char = self.text[self.position]
        if char.isalpha():
            return self._regular_identifier()
        if char.isdecimal():
            return self._number()
        if char == "'":
            return self._enclosed(STRING, "'", "a closing ' for the string that starts here")
        if char == "[":
            return self._enclosed(DELIMITED, "]", "a closing ] for the identifier that starts here")
        if char == '"':
            return self._enclosed(DELIMITED, '"', 'a closing " for the identifier that starts here')
        if char == "@":
            return self._parameter()
        return self._symbol()

    def _take_while(self, predicate: Callable[[str], bool]) -> str:
        start = self.position
        while self.position < len(self.text) and predicate(self.text[self.position]):
            self.position += 1
        return self.text[start : self.position]

    def _regular_identifier(self) -> Token:
        start = self.position
        name = self._take_while(_is_identifier_part)
        if name.upper() in KEYWORDS:
            return Token(KEYWORD, name.upper(), start, name)
        return Token(IDENTIFIER, name, start, name)

    def _number(self) -> Token:
        start = self.position
        self._take_while(str.isdecimal)
        is_decimal = False
        if self._peek() == "." and self._peek(1).isdecimal():
            self.position += 1
            self._take_while(str.isdecimal)
            is_decimal = True
        if self._peek() in ("e", "E"):
            self._exponent(start)
            is_decimal = True
        text = self.text[start : self.position]
        if is_decimal:
            return Token(DECIMAL, float(text), start, text)
        value = int(text)
        if value > INT64_MAX:
            raise SqlFilterError(
                self.kind, self.text, start, f"an integer of at most {INT64_MAX} (Int64)", f"integer {text}"
            )
        return Token(INTEGER, value, start, text)

    def _exponent(self, start: int) -> None:
        self.position += 1
        if self._peek() in ("+", "-"):
            self.position += 1
        if not self._peek().isdecimal():
            raise SqlFilterError(
                self.kind,
                self.text,
                self.position,
                "the digits of the exponent",
                _describe_char(self._peek()),
            )
        self._take_while(str.isdecimal)

    def _enclosed(self, token_kind: str, closing: str, expected: str) -> Token:
        """Read a string or identifier in quotes or brackets, where a doubled closing character escapes it."""
        start = self.position
        self.position += 1
        parts: list[str] = []
        while True:
            end = self.text.find(closing, self.position)
            if end < 0:
                raise SqlFilterError(self.kind, self.text, start, expected, "end of expression")
            parts.append(self.text[self.position : end])
            if self.text.startswith(closing * 2, end):
                parts.append(closing)
                self.position = end + 2
                continue
            self.position = end + 1
            return Token(token_kind, "".join(parts), start, self.text[start : self.position])

    def _parameter(self) -> Token:
        start = self.position
        self.position += 1
        name = self._take_while(_is_identifier_part)
        if not name or not name[0].isalpha():
            raise SqlFilterError(
                self.kind, self.text, start + 1, "a parameter name after @", _describe_char(self._peek())
            )
        return Token(PARAMETER, "@" + name, start, "@" + name)

    def _symbol(self) -> Token:
        start = self.position
        for symbol in SYMBOLS:
            if self.text.startswith(symbol, start):
                self.position += len(symbol)
                return Token(SYMBOL, symbol, start, symbol)
        raise SqlFilterError(
            self.kind,
            self.text,
            start,
            "an identifier, a constant, an operator or a parenthesis",
            f"unrecognized character {self.text[start]!r}",
        )

    def _peek(self, ahead: int = 0) -> str:
        index = self.position + ahead
        return self.text[index] if index < len(self.text) else ""


def _is_identifier_part(char: str) -> bool:
    return char.isalpha() or char.isdecimal() or char == "_"


def _describe_char(char: str) -> str:
    return f"{char!r}" if char else "end of expression"
