"""What an operation costs before it runs: fields, multiplied by the page sizes of the lists they sit in,
with `downloadStats` priced by its `limit` and far higher when `exact` (raw events, no rollups)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    value_from_ast_untyped,
)

DEFAULT_PAGE = 20
STATS_BASE = 200
STATS_EXACT = 2000
PAGED_ARGS = ("first", "last")
MAX_FRAGMENT_DEPTH = 50


def _argument(field: FieldNode, name: str, variables: Mapping[str, Any]) -> Any:
    for arg in field.arguments or ():
        if arg.name.value == name:
            return value_from_ast_untyped(arg.value, variables)  # type: ignore[arg-type]
    return None


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


class CostCounter:
    def __init__(self, fragments: Mapping[str, FragmentDefinitionNode], variables: Mapping[str, Any]) -> None:
        self.fragments = fragments
        self.variables = variables

    def selection_set(self, selections: SelectionSetNode | None, depth: int = 0) -> int:
        if selections is None or depth > MAX_FRAGMENT_DEPTH:
            return 0
        total = 0
        for node in selections.selections:
            if isinstance(node, FieldNode):
                total += self.field(node, depth)
            elif isinstance(node, InlineFragmentNode):
                total += self.selection_set(node.selection_set, depth + 1)
            elif isinstance(node, FragmentSpreadNode) and node.name.value in self.fragments:
                total += self.selection_set(self.fragments[node.name.value].selection_set, depth + 1)
        return total

    def field(self, field: FieldNode, depth: int) -> int:
        children = self.selection_set(field.selection_set, depth)
        name = field.name.value
        if name == "downloadStats":
            limit = _int(_argument(field, "limit", self.variables), 100)
            exact = _argument(field, "exact", self.variables) is True
            return STATS_BASE + (STATS_EXACT if exact else 0) + limit * max(1, children) // 10
        if name == "nodes" and _argument(field, "ids", self.variables) is not None:
            ids = _argument(field, "ids", self.variables)
            return 1 + (len(ids) if isinstance(ids, list) else 100) * children
        page = next(
            (
                _int(_argument(field, a, self.variables), DEFAULT_PAGE)
                for a in PAGED_ARGS
                if _argument(field, a, self.variables) is not None
            ),
            None,
        )
        if page is None and field.selection_set is not None and _is_connection(field):
            page = DEFAULT_PAGE
        return 1 + (page or 1) * children


def _is_connection(field: FieldNode) -> bool:
    names = {s.name.value for s in field.selection_set.selections if isinstance(s, FieldNode)}  # type: ignore[union-attr]
    return bool(names & {"edges", "nodes"})


def operation_cost(document: Any, operation_name: str | None, variables: Mapping[str, Any] | None) -> int:
    """The cost of the operation `operation_name` (or the only one) of a parsed document."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    chosen = [o for o in operations if operation_name is None or (o.name and o.name.value == operation_name)]
    counter = CostCounter(fragments, variables or {})
    return max((counter.selection_set(o.selection_set) for o in chosen[:1]), default=0)
