"""The `UserError` interface, its members, the one translation from domain exceptions, and masking."""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import re
import typing
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, Protocol, TypeVar, cast

import strawberry
from graphql import (
    ArgumentNode,
    DocumentNode,
    GraphQLError,
    GraphQLInputType,
    ObjectFieldNode,
    ValueNode,
    VariableDefinitionNode,
    VariableNode,
    Visitor,
    visit,
)
from graphql.language import BREAK, SKIP, VisitorAction
from graphql.utilities.validate_input_value import validate_input_literal
from graphql.validation import ValidationContext, ValuesOfCorrectTypeRule
from pymongo.errors import ConnectionFailure, PyMongoError
from strawberry.extensions import MaskErrors

from .. import errors
from ..limits import RateLimited

log = logging.getLogger("modelhub.graphql")


@strawberry.interface(
    description="An expected failure of the request, returned as data in a mutation's result union (named "
    "so that generated TypeScript does not shadow the global `Error`). Outages and authentication or "
    "permission failures are top-level errors with `extensions.code` instead."
)
class UserError:
    code: str = strawberry.field(description="A stable, machine-readable code, e.g. `INVALID_INPUT`.")
    message: str = strawberry.field(description="A human-readable explanation.")


@strawberry.type(description="About a model.")
class ModelNamed(UserError):
    """The `name` the errors about a model start with (not in the schema itself)."""

    name: str = strawberry.field(description="The model name.")


@strawberry.type(description="An argument or input field is invalid; `field` names it. Nothing was written.")
class InvalidInput(UserError):
    field: str = strawberry.field(description="The argument or input field at fault, e.g. `input.name`.")


@strawberry.type(description="A version with this number is already registered for the model.")
class ModelVersionAlreadyExists(ModelNamed):
    version: int = strawberry.field(description="The version number that is taken.")


@strawberry.type(description="No object exists at the given bucket and key.")
class StorageObjectNotFound(UserError):
    bucket: str = strawberry.field(description="The bucket that was looked in.")
    key: str = strawberry.field(description="The key that was not found.")


@strawberry.type(description="No model has this name.")
class ModelNotFound(UserError):
    name: str = strawberry.field(description="The name that was looked for.")


@strawberry.type(description="The model exists but has no such version (or alias).")
class ModelVersionNotFound(ModelNamed):
    version: int | None = strawberry.field(description="The version number asked for, if any.")
    alias: str | None = strawberry.field(description="The alias asked for, if any.")


@strawberry.type(
    description="The version is archived: it keeps its history and stats but cannot be downloaded."
)
class ModelVersionArchived(ModelNamed):
    version: int = strawberry.field(description="The archived version.")


@strawberry.type(
    description="The version is a tombstone: `modelhub prune` deleted its artifact after nobody had "
    "downloaded it for a long time; its history and figures are kept (`objectDeleted: true`)."
)
class ObjectDeleted(ModelNamed):
    version: int = strawberry.field(description="The pruned version.")


@strawberry.type(description="The model has no alias with this name.")
class AliasNotFound(ModelNamed):
    alias: str = strawberry.field(description="The alias that does not exist.")


@strawberry.type(
    description="The artifact's bytes are not those whose SHA-256 was declared (at registration, at upload, "
    "or found later by the verifier: such a version refuses downloads)."
)
class ChecksumMismatch(UserError):
    expected: str = strawberry.field(description="The declared SHA-256 (hex).")
    actual: str = strawberry.field(description="The SHA-256 of the bytes in the store (hex).")


@strawberry.type(
    description="The version's declared SHA-256 is not verified yet and its store holds no checksum that "
    "vouches for the bytes: it is not served until they are hashed (a download hashes an object up to "
    "MODELHUB_VERIFY_ON_DOWNLOAD_MAX_BYTES itself; a larger one waits for the background verifier). Retry "
    "after `retryAfterSeconds`."
)
class ChecksumPending(ModelNamed):
    version: int = strawberry.field(description="The version whose checksum is pending.")
    retry_after_seconds: float = strawberry.field(description="When to try again, in seconds.")


@strawberry.type(
    description="The object behind this version changed in the store since it was registered (a new ETag): "
    "its downloads are refused; register the new object as a new version."
)
class ArtifactChanged(ModelNamed):
    version: int = strawberry.field(description="The version whose artifact changed.")
    registered_etag: str = strawberry.field(description="The ETag when the version was registered.")
    current_etag: str = strawberry.field(description="The ETag in the store now.")


@strawberry.type(description="No open upload has this id (never issued, someone else's, or expired).")
class UploadNotFound(UserError):
    upload_id: str = strawberry.field(description="The id that was given.")


@strawberry.type(description="No webhook has this id (or it was deleted).")
class WebhookNotFound(UserError):
    pass


@strawberry.type(description="No webhook delivery has this id (or its webhook was deleted).")
class DeliveryNotFound(UserError):
    pass


# Domain exception → its result-union member, the type of the same name: the one translation, used by every
# mutation. A member's fields are the exception's attributes of the same name, but for those renamed here.
def _subclasses(kind: type[UserError]) -> list[type[UserError]]:
    return [kind, *(sub for direct in kind.__subclasses__() for sub in _subclasses(direct))]


_MEMBERS: dict[type[errors.DomainError], type[UserError]] = {
    getattr(errors, member.__name__): member
    for member in _subclasses(UserError)
    if hasattr(errors, member.__name__)
}
_ATTRIBUTES = {"retry_after_seconds": "retry_after"}


def union_member(exc: errors.DomainError) -> UserError | None:
    """The result-union member for a domain exception, if it has one."""
    member = _MEMBERS.get(type(exc))
    if member is None:
        return None
    fields = (field.name for field in dataclasses.fields(member))
    return member(**{name: getattr(exc, _ATTRIBUTES.get(name, name)) for name in fields})


P = ParamSpec("P")
R = TypeVar("R")


def expected_errors(resolver: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turns the domain errors a mutation's result union lists into that union's members.

    A domain error the union does not list stays a top-level error (UNAUTHENTICATED, INVALID_INPUT on
    a query argument); anything else is a bug and is masked.
    """
    allowed: list[type[Any]] = []

    @functools.wraps(resolver)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result = await resolver(*args, **kwargs)
        except errors.DomainError as exc:
            member = union_member(exc)
            if not allowed:
                allowed.extend(_union_members(resolver))
            if member is None or type(member) not in allowed:
                raise
            _note_outcome(kwargs.get("info"), exc.code)
            return cast(R, member)
        _note_outcome(kwargs.get("info"), _type_name(result), getattr(result, "project_name", None))
        return result

    return wrapper


def mutation(*, description: str) -> Callable[[Callable[P, Awaitable[R]]], Any]:
    """A root mutation field (`strawberry.mutation`) whose expected errors are data (`expected_errors`)."""

    def field(resolver: Callable[P, Awaitable[R]]) -> Any:
        return strawberry.mutation(description=description)(expected_errors(resolver))

    return field


def _note_outcome(info: Any, outcome: str, project: object = None) -> None:
    """Tells the audit trail (schema/audit.py) how this root mutation field ended, and the project of the
    model or version it returned (so the trail need not look it up)."""
    outcomes = getattr(getattr(info, "context", None), "audit_outcomes", None)
    if outcomes is not None and info.path.prev is None:
        outcomes[str(info.path.key)] = (outcome, project if isinstance(project, str) else None)


def _type_name(value: object) -> str:
    definition = getattr(type(value), "__strawberry_definition__", None)
    return str(getattr(definition, "name", None) or type(value).__name__)


def _union_members(resolver: Callable[..., Any]) -> list[type[Any]]:
    hint = typing.get_type_hints(resolver, include_extras=True)["return"]
    union = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
    return list(typing.get_args(union))


def outage_code(exc: BaseException | None) -> str | None:
    """The code of a dependency outage (an expected failure, reported as such), or None."""
    if isinstance(exc, errors.StorageUnavailable):
        return "STORAGE_UNAVAILABLE"
    if isinstance(exc, errors.DatabaseUnavailable):
        return "DATABASE_UNAVAILABLE"
    if isinstance(exc, PyMongoError) and exc.timeout:
        return "DATABASE_TIMEOUT"
    if isinstance(exc, ConnectionFailure):
        return "DATABASE_UNAVAILABLE"
    return None


def is_unexpected(error: GraphQLError) -> bool:
    """The one masking rule: an error raised on purpose (a GraphQLError, a domain error), a dependency
    outage, or a validation error is expected; anything else is a bug."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError | errors.DomainError):
        return False
    return outage_code(original) is None


def _request_error_code(error: GraphQLError) -> str:
    # Errors raised before execution carry no path: the document did not parse, did not validate against
    # the schema (an unknown enum value, field or argument), or its variables did not coerce.
    if error.message.startswith("Syntax Error"):
        return "GRAPHQL_PARSE_FAILED"
    if error.message.startswith("Variable '$"):
        return "BAD_USER_INPUT"
    return "GRAPHQL_VALIDATION_FAILED"


class TypedValues(ValuesOfCorrectTypeRule):
    """The spec's rule for literals written in a document, whose errors are BAD_USER_INPUT and name the
    argument or input field at fault (`filter.since`), like a variable's; a scalar's own complaint (a
    ValueError from its parser) is kept as the message and not taken for a bug."""

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        self._names: list[str] = []

    def enter_argument(self, node: ArgumentNode, *_args: Any) -> None:
        self._names.append(node.name.value)

    def leave_argument(self, node: ArgumentNode, *_args: Any) -> None:
        self._names.pop()

    def enter_variable_definition(self, node: VariableDefinitionNode, *_args: Any) -> None:
        self._names.append("$" + node.variable.name.value)  # its default value

    def leave_variable_definition(self, node: VariableDefinitionNode, *_args: Any) -> None:
        self._names.pop()

    def is_valid_value_node(self, node: ValueNode, input_type: GraphQLInputType | None) -> VisitorAction:
        if input_type:

            def on_error(error: GraphQLError, path: list[str | int]) -> None:
                field = ".".join([*self._names, *(p for p in path if isinstance(p, str))])
                extensions = {"code": "BAD_USER_INPUT", "field": field}
                self.report_error(GraphQLError(error.message, error.nodes or node, extensions=extensions))

            validate_input_literal(node, input_type, on_error, None, None, self.context.hide_suggestions)
        return SKIP


_VARIABLE_ERROR = re.compile(r"Variable '\$(\w+)' (?:has invalid value(?: at ([^:]*))?:)?")


def _variable_field(document: DocumentNode, message: str) -> str | None:
    """The argument or input field a variable's value was given for (`filter.since` for `$f` at
    `.since` in `downloads(filter: $f)`), from a variable coercion error's message."""
    found = _VARIABLE_ERROR.match(message)
    if found is None:
        return None
    name, inner = found.group(1), re.findall(r"\.(\w+)", found.group(2) or "")
    names: list[str] = []
    usage: list[str] = []

    class Uses(Visitor):
        def enter_argument(self, node: ArgumentNode, *_args: Any) -> None:
            names.append(node.name.value)

        def leave_argument(self, node: ArgumentNode, *_args: Any) -> None:
            names.pop()

        def enter_object_field(self, node: ObjectFieldNode, *_args: Any) -> None:
            names.append(node.name.value)

        def leave_object_field(self, node: ObjectFieldNode, *_args: Any) -> None:
            names.pop()

        def enter_variable(self, node: VariableNode, *_args: Any) -> VisitorAction:
            if node.name.value == name and names:
                usage.extend(names)
                return BREAK
            return None

    visit(document, Uses())
    return ".".join([*(usage or ["$" + name]), *inner])


def label_error(error: GraphQLError, document: DocumentNode | None = None) -> None:
    """Gives an expected top-level error the `extensions.code` clients branch on: a domain error's own
    code (and field), or the kind of pre-execution failure (with the argument or input field at fault
    when a variable's value was wrong, found in `document`)."""
    if (error.extensions or {}).get("code"):
        return
    original = error.original_error
    if isinstance(original, errors.DomainError):
        extra: dict[str, object] = {}
        if isinstance(original, errors.InvalidInput):
            extra["field"] = original.field
        if isinstance(original, RateLimited):  # WebSocket clients have no Retry-After header
            extra["retryAfter"] = max(1, math.ceil(original.retry_after))
        error.extensions = {**(error.extensions or {}), "code": original.code, **extra}
    elif (code := outage_code(original)) is not None:
        log.warning("dependency outage (%s): %r", code, original)
        error.message = errors.OUTAGE_MESSAGES[code]  # the driver's text names hosts and paths: never sent
        error.extensions = {**(error.extensions or {}), "code": code}
    elif error.path is None:
        code = _request_error_code(error)
        field = _variable_field(document, error.message) if code == "BAD_USER_INPUT" and document else None
        named = {"field": field} if field else {}
        error.extensions = {**(error.extensions or {}), "code": code, **named}


MASKED_MESSAGE = "Internal server error."


class _WithErrors(Protocol):
    errors: list[GraphQLError] | None


class MaskUnexpectedErrors(MaskErrors):
    """Replaces unexpected errors with a generic message (Strawberry has already logged them in full), and
    gives every other error an `extensions.code` clients can branch on."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=is_unexpected, error_message=MASKED_MESSAGE)

    def _process_result(self, result: object) -> None:
        """As Strawberry's, without its runtime-Protocol `isinstance` (2-3 % of a trivial query's CPU)."""
        errors = getattr(result, "errors", None)
        if errors:
            cast(_WithErrors, result).errors = self._process_errors(errors)

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        processed = super()._process_errors(errors)
        document = self.execution_context.graphql_document
        for error in processed:
            label_error(error, document)
        return processed

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        where = (error.nodes, error.source, error.positions, error.path)
        return GraphQLError(self.error_message, *where, extensions={"code": "INTERNAL_SERVER_ERROR"})
