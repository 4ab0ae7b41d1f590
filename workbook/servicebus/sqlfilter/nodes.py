"""The syntax tree of a compiled filter or action expression, and its evaluation on one message.

Value nodes return a normalized value or ``None`` (NULL). Condition nodes return ``True``,
``False`` or ``None`` (unknown), combined by the three-valued AND, OR and NOT tables of Microsoft's
"Subscription Rule SQL Filter Syntax" page.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from workbook.servicebus.sqlfilter import values
from workbook.servicebus.sqlfilter.properties import FilterContext, SystemProperty, read_system, read_user


class Node:
    """A node of the syntax tree. ``offset`` is its 0-based position in the expression."""

    is_condition: ClassVar[bool] = False
    offset: int

    def evaluate(self, context: FilterContext) -> Any:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Constant(Node):
    value: Any
    offset: int

    def evaluate(self, context: FilterContext) -> Any:
        return self.value


@dataclass(frozen=True, slots=True)
class SystemReference(Node):
    prop: SystemProperty
    offset: int

    def evaluate(self, context: FilterContext) -> Any:
        return read_system(context, self.prop)[1]

    def exists(self, context: FilterContext) -> bool:
        return read_system(context, self.prop)[0]


@dataclass(frozen=True, slots=True)
class UserReference(Node):
    name: str
    offset: int

    def evaluate(self, context: FilterContext) -> Any:
        return read_user(context, self.name)[1]

    def exists(self, context: FilterContext) -> bool:
        return read_user(context, self.name)[0]


@dataclass(frozen=True, slots=True)
class NewId(Node):
    offset: int

    def evaluate(self, context: FilterContext) -> Any:
        return uuid.uuid4()


@dataclass(frozen=True, slots=True)
class PropertyFunction(Node):
    """``property(name)`` or ``p(name)``: the application property whose name ``name`` evaluates to."""

    argument: Node
    offset: int

    def evaluate(self, context: FilterContext) -> Any:
        name = self.argument.evaluate(context)
        # NOTE: only application properties are looked up. The documentation does not say whether
        # 'sys.Label' reaches a system property, and users report that it does not.
        return read_user(context, name)[1] if isinstance(name, str) else None


@dataclass(frozen=True, slots=True)
class Unary(Node):
    operator: str
    operand: Node
    offset: int

    def evaluate(self, context: FilterContext) -> Any:
        return values.negate(self.operator, self.operand.evaluate(context))


@dataclass(frozen=True, slots=True)
class Arithmetic(Node):
    operator: str
    left: Node
    right: Node
    offset: int

    def evaluate(self, context: FilterContext) -> Any:
        return values.arithmetic(self.operator, self.left.evaluate(context), self.right.evaluate(context))


@dataclass(frozen=True, slots=True)
class Comparison(Node):
    is_condition: ClassVar[bool] = True
    operator: str
    left: Node
    right: Node
    offset: int

    def evaluate(self, context: FilterContext) -> bool | None:
        return values.compare(self.operator, self.left.evaluate(context), self.right.evaluate(context))


@dataclass(frozen=True, slots=True)
class InList(Node):
    is_condition: ClassVar[bool] = True
    operand: Node
    items: tuple[Node, ...]
    negated: bool
    offset: int

    def evaluate(self, context: FilterContext) -> bool | None:
        found = values.is_in(self.operand.evaluate(context), (item.evaluate(context) for item in self.items))
        return _negate_if(self.negated, found)


@dataclass(frozen=True, slots=True)
class Like(Node):
    is_condition: ClassVar[bool] = True
    operand: Node
    pattern: Node
    escape: Node | None
    negated: bool
    offset: int

    def evaluate(self, context: FilterContext) -> bool | None:
        escape = self.escape.evaluate(context) if self.escape is not None else None
        matched = values.like(
            self.operand.evaluate(context), self.pattern.evaluate(context), escape, self.escape is not None
        )
        return _negate_if(self.negated, matched)


@dataclass(frozen=True, slots=True)
class IsNull(Node):
    """``property IS [NOT] NULL``: true when the property is missing or its value is NULL."""

    is_condition: ClassVar[bool] = True
    reference: SystemReference | UserReference
    negated: bool
    offset: int

    def evaluate(self, context: FilterContext) -> bool:
        return (self.reference.evaluate(context) is None) != self.negated


@dataclass(frozen=True, slots=True)
class Exists(Node):
    """``EXISTS(property)``: an application property exists even with a NULL value, a system one when set."""

    is_condition: ClassVar[bool] = True
    reference: SystemReference | UserReference
    offset: int

    def evaluate(self, context: FilterContext) -> bool:
        return self.reference.exists(context)


@dataclass(frozen=True, slots=True)
class Not(Node):
    is_condition: ClassVar[bool] = True
    operand: Node
    offset: int

    def evaluate(self, context: FilterContext) -> bool | None:
        return _negate_if(True, self.operand.evaluate(context))


@dataclass(frozen=True, slots=True)
class And(Node):
    is_condition: ClassVar[bool] = True
    left: Node
    right: Node
    offset: int

    def evaluate(self, context: FilterContext) -> bool | None:
        left = self.left.evaluate(context)
        if left is False:
            return False
        right = self.right.evaluate(context)
        if right is False:
            return False
        return None if left is None or right is None else True


@dataclass(frozen=True, slots=True)
class Or(Node):
    is_condition: ClassVar[bool] = True
    left: Node
    right: Node
    offset: int

    def evaluate(self, context: FilterContext) -> bool | None:
        left = self.left.evaluate(context)
        if left is True:
            return True
        right = self.right.evaluate(context)
        if right is True:
            return True
        return None if left is None or right is None else False


def _negate_if(negated: bool, result: bool | None) -> bool | None:
    if result is None or not negated:
        return result
    return not result
