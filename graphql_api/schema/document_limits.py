"""The document limits (depth, aliases, expanded fields), checked in one pass that measures each fragment
once: its figures are computed the first time a spread needs them and reused (multiplied) at every other
spread, so the work grows with the document's text, never with its expansion."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)
from graphql.validation import OverlappingFieldsCanBeMergedRule, ValidationContext


@dataclass(frozen=True)
class Shape:
    """A selection set as execution would expand it: the deepest field level under it (its own fields are
    level 0; introspection fields and what they select do not count, as in Strawberry's depth limiter),
    how many fields and aliased fields it holds once every fragment is spread out."""

    depth: int = 0
    fields: int = 0
    aliases: int = 0


@dataclass
class _Local:
    """What one definition holds in its own text, and which fragments it spreads at which field level."""

    depth: int = 0
    fields: int = 0
    aliases: int = 0
    # (fragment name, field level of the spread, whether the spread sits under an introspection field)
    spreads: list[tuple[str, int, bool]] = field(default_factory=list)


def fragments_of(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    """A document's fragment definitions by name."""
    return {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}


class DocumentShapes:
    """The shapes of a document's operations and fragments. Each definition's own text is walked once and
    each fragment's shape is computed once (without recursion, so a long chain of fragments cannot exhaust
    the stack); a spread closing a cycle adds nothing (graphql-core's NoFragmentCycles refuses it)."""

    def __init__(self, document: DocumentNode) -> None:
        self.fragments = fragments_of(document)
        self.visits = 0  # selections walked: the work done, for tests
        self._locals: dict[str, _Local] = {}
        self._shapes: dict[str, Shape] = {}

    def operation(self, operation: OperationDefinitionNode) -> Shape:
        return self._combine(self._walk(operation.selection_set), self.fragment)

    def fragment(self, name: str) -> Shape:
        """The shape of fragment `name` (an unknown fragment is empty: KnownFragmentNames refuses it)."""
        if name in self._shapes:
            return self._shapes[name]
        # Post-order over the fragments it reaches, iteratively; a fragment on the path is a cycle.
        on_path = {name}
        stack: list[tuple[str, Iterator[str]]] = [(name, iter(self._targets(name)))]
        while stack:
            current, pending = stack[-1]
            target = next(pending, None)
            if target is None:
                stack.pop()
                on_path.discard(current)
                # Every fragment it spreads is measured by now, or is on the path (a cycle: nothing).
                self._shapes[current] = self._combine(self._local(current), self._shapes.get)
            elif target not in self._shapes and target not in on_path:
                on_path.add(target)
                stack.append((target, iter(self._targets(target))))
        return self._shapes[name]

    def _targets(self, name: str) -> list[str]:
        return list(dict.fromkeys(target for target, _, _ in self._local(name).spreads))

    def _local(self, name: str) -> _Local:
        found = self._locals.get(name)
        if found is None:
            definition = self.fragments.get(name)
            found = self._locals[name] = (
                _Local() if definition is None else self._walk(definition.selection_set)
            )
        return found

    def _combine(self, local: _Local, shape_of: Callable[[str], Shape | None]) -> Shape:
        depth, fields, aliases = local.depth, local.fields, local.aliases
        for target, level, ignored in local.spreads:
            shape = shape_of(target)
            if shape is None:
                continue
            fields += shape.fields
            aliases += shape.aliases
            if not ignored:
                depth = max(depth, level + shape.depth)
        return Shape(depth, fields, aliases)

    def _walk(self, selection_set: SelectionSetNode) -> _Local:
        """One definition's own selections (the parser bounds their nesting), spreads noted, not followed."""
        local = _Local()
        stack: list[tuple[SelectionSetNode, int, bool]] = [(selection_set, 0, False)]
        while stack:
            selections, level, ignored = stack.pop()
            for node in selections.selections:
                self.visits += 1
                if isinstance(node, FieldNode):
                    local.fields += 1
                    local.aliases += node.alias is not None
                    under_introspection = ignored or node.name.value.startswith("__")
                    if not under_introspection:
                        local.depth = max(local.depth, level)
                    if node.selection_set is not None:
                        stack.append((node.selection_set, level + 1, under_introspection))
                elif isinstance(node, InlineFragmentNode):
                    stack.append((node.selection_set, level, ignored))
                elif isinstance(node, FragmentSpreadNode):
                    local.spreads.append((node.name.value, level, ignored))
        return local


@dataclass(frozen=True)
class DocumentLimits:
    max_depth: int
    max_aliases: int
    max_fields: int


class DocumentLimitExceeded(GraphQLError):
    def __init__(self, message: str, code: str, nodes: Any) -> None:
        super().__init__(message, nodes, extensions={"code": code})


def check(document: DocumentNode, limits: DocumentLimits) -> list[GraphQLError]:
    """The limit errors of every operation in `document` (the one that runs is among them)."""
    shapes = DocumentShapes(document)
    errors: list[GraphQLError] = []
    for operation in document.definitions:
        if not isinstance(operation, OperationDefinitionNode):
            continue
        shape = shapes.operation(operation)
        name = operation.name.value if operation.name else "anonymous"
        if shape.depth > limits.max_depth:
            errors.append(
                DocumentLimitExceeded(
                    f"'{name}' nests fields {shape.depth} deep, over the limit of {limits.max_depth}",
                    "DEPTH_LIMIT_EXCEEDED",
                    operation,
                )
            )
        if shape.aliases > limits.max_aliases:
            errors.append(
                DocumentLimitExceeded(
                    f"'{name}' has {shape.aliases} aliases once its fragments are spread, over the limit of "
                    f"{limits.max_aliases}",
                    "ALIAS_LIMIT_EXCEEDED",
                    operation,
                )
            )
        if shape.fields > limits.max_fields:
            errors.append(
                DocumentLimitExceeded(
                    f"'{name}' selects {shape.fields} fields once its fragments are spread, over the limit "
                    f"of {limits.max_fields}: spread fragments fewer times",
                    "FIELD_LIMIT_EXCEEDED",
                    operation,
                )
            )
    return errors


def overlap_rule(budget: int) -> type[OverlappingFieldsCanBeMergedRule]:
    """graphql-core's OverlappingFieldsCanBeMergedRule with a work budget of `budget` units (a comparison of
    two fields costs two) instead of its 500,000: within the token limit, 1,240 copies of
    `models { totalCount }` spent that in 2 s, and 330 fragments selecting the same field 435,000 units in
    1.5 s, a valid document. Past the budget validation stops: "Validation aborted."."""

    class BoundedOverlapRule(OverlappingFieldsCanBeMergedRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self.rule_context.remaining_complexity_budget = budget

    return BoundedOverlapRule
