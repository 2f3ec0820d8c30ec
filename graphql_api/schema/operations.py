"""Persisted operations at the edge: documents split into operations and checked against the schema, and
the `registerOperations` mutation (ADMIN only)."""

from __future__ import annotations

from typing import Annotated, Any

import strawberry
from graphql import (
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    parse,
    validate,
)
from graphql.language import Visitor, visit

from .. import roles
from ..errors import InvalidInput as InvalidInputError
from .context import Info
from .document_limits import fragments_of
from .errors import InvalidInput, mutation


def split(text: str) -> list[tuple[str | None, str]]:
    """Each operation of a .graphql document as (name, its own text exactly as written, followed by the
    fragments it uses in the order they appear); the text a client sends, whose SHA-256 is its id."""
    document = parse(text)
    fragments = fragments_of(document)
    out = []
    for node in document.definitions:
        if not isinstance(node, OperationDefinitionNode):
            continue
        used: set[str] = set()
        _fragments_used(node, fragments, used)
        parts = [node, *(d for d in fragments.values() if d.name.value in used)]
        body = "\n\n".join(_source(text, part) for part in parts)
        out.append((node.name.value if node.name else None, body))
    return out


def _source(text: str, node: Any) -> str:
    return text[node.loc.start : node.loc.end]


def _fragments_used(node: Any, fragments: dict[str, FragmentDefinitionNode], used: set[str]) -> None:
    class Spreads(Visitor):
        def enter_fragment_spread(self, spread: FragmentSpreadNode, *_: Any) -> None:
            name = spread.name.value
            if name not in used and name in fragments:
                used.add(name)
                _fragments_used(fragments[name], fragments, used)

    visit(node, Spreads())


def check(schema: GraphQLSchema, body: str, field: str) -> str | None:
    """The operation's name; InvalidInput naming `field` unless `body` is one valid operation of this
    schema."""
    try:
        document = parse(body)
    except GraphQLError as exc:
        raise InvalidInputError(field, exc.message) from exc
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if len(operations) != 1:
        raise InvalidInputError(field, f"holds {len(operations)} operations; register each on its own")
    errors = validate(schema, document)
    if errors:
        raise InvalidInputError(field, errors[0].message)
    name = operations[0].name
    return name.value if name else None


@strawberry.type(description="A GraphQL operation registered by hash.")
class PersistedOperation:
    sha256_hash: str = strawberry.field(
        description="The hex SHA-256 of `body`: send it as `extensions.persistedQuery.sha256Hash`."
    )
    name: str | None = strawberry.field(description="The operation's name, if it has one.")
    body: str = strawberry.field(description="Its exact text.")
    created: bool = strawberry.field(description="False when it was registered already.")


@strawberry.type(description="The operations now registered.")
class RegisteredOperations:
    operations: list[PersistedOperation] = strawberry.field(description="One per operation, in input order.")


@strawberry.input(description="GraphQL operations to register for persisted-operation mode.")
class RegisterOperationsInput:
    operations: list[str] = strawberry.field(
        description="Operation texts, each exactly as the client will send it (one operation each, with "
        "the fragments it uses); each must be valid against this schema."
    )


RegisterOperationsResult = Annotated[
    RegisteredOperations | InvalidInput,
    strawberry.union("RegisterOperationsResult", description="The registered operations, or why not."),
]


@strawberry.type
class OperationMutations:
    @mutation(
        description="Registers operations by the SHA-256 of their text (ADMIN only); nothing is stored when "
        "any of them is invalid. `modelhub operations push FILE` calls it."
    )
    async def register_operations(
        self, info: Info, input: Annotated[RegisterOperationsInput, strawberry.argument(description="What.")]
    ) -> RegisterOperationsResult:
        who = info.context.principal
        who.require(roles.Role.ADMIN, "registering operations")
        if not 1 <= len(input.operations) <= 500:
            raise InvalidInputError("operations", "send 1..500 operations at a time")
        schema = info.schema._schema
        named = []
        for i, body in enumerate(input.operations):
            named.append((check(schema, body, f"operations[{i}]"), body))
        registry = info.context.services.persisted
        out = []
        for name, body in named:
            sha256, created = await registry.register(body, name, who.engineer)
            out.append(PersistedOperation(sha256_hash=sha256, name=name, body=body, created=created))
        return RegisteredOperations(operations=out)


def shipped(
    ui_operations: list[tuple[str | None, str]], sdk_documents: dict[str, str]
) -> list[tuple[str | None, str]]:
    """The operations this repo ships, as (name, text): each of the /ui page's operations (sent by hash) and
    each SDK/CLI document exactly as the SDK sends it. Registered at start-up so that its own clients work in
    enforce mode; tests/schema/test_documents.py checks every one against the schema."""
    return [*ui_operations, *sdk_documents.items()]
