"""The `Error` interface, its members, the one translation from domain exceptions, and masking."""

from __future__ import annotations

import functools
import typing
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaskErrors

from .. import errors


@strawberry.interface(description="An expected failure, returned as data in a mutation's result union.")
class Error:
    code: str
    message: str


@strawberry.type(description="An argument or input field is invalid; `field` names it. Nothing was written.")
class InvalidInput(Error):
    field: str


@strawberry.type(description="A model with this name and version is already registered.")
class ModelAlreadyExists(Error):
    name: str
    version: int


@strawberry.type(description="No object exists at the given bucket and key.")
class StorageObjectNotFound(Error):
    bucket: str
    key: str


@strawberry.type(description="No such model (or version).")
class ModelNotFound(Error):
    name: str
    version: int | None


@strawberry.type(description="The model version is archived and cannot be downloaded.")
class ModelArchived(Error):
    name: str
    version: int


# Domain exception → its result-union member: the one translation, used by every mutation.
_MEMBERS: dict[type[errors.DomainError], Callable[[Any], Error]] = {
    errors.InvalidInput: lambda e: InvalidInput(code=e.code, message=e.message, field=e.field),
    errors.ModelAlreadyExists: lambda e: ModelAlreadyExists(
        code=e.code, message=e.message, name=e.name, version=e.version
    ),
    errors.StorageObjectNotFound: lambda e: StorageObjectNotFound(
        code=e.code, message=e.message, bucket=e.bucket, key=e.key
    ),
    errors.ModelNotFound: lambda e: ModelNotFound(
        code=e.code, message=e.message, name=e.name, version=e.version
    ),
    errors.ModelArchived: lambda e: ModelArchived(
        code=e.code, message=e.message, name=e.name, version=e.version
    ),
}


def union_member(exc: errors.DomainError) -> Error | None:
    """The result-union member for a domain exception, if it has one."""
    build = _MEMBERS.get(type(exc))
    return build(exc) if build is not None else None


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
            return await resolver(*args, **kwargs)
        except errors.DomainError as exc:
            member = union_member(exc)
            if not allowed:
                allowed.extend(_union_members(resolver))
            if member is None or type(member) not in allowed:
                raise
            return cast(R, member)

    return wrapper


def _union_members(resolver: Callable[..., Any]) -> list[type[Any]]:
    hint = typing.get_type_hints(resolver, include_extras=True)["return"]
    union = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
    return list(typing.get_args(union))


def is_unexpected(error: GraphQLError) -> bool:
    """The one masking rule: an error raised on purpose (a GraphQLError, a domain error) or by validation
    has no original error or an expected one; anything else is a bug."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError | errors.DomainError)


def _request_error_code(error: GraphQLError) -> str:
    # Errors raised before execution carry no path: the document did not parse, did not validate against
    # the schema (an unknown enum value, field or argument), or its variables did not coerce.
    if error.message.startswith("Syntax Error"):
        return "GRAPHQL_PARSE_FAILED"
    if error.message.startswith("Variable '$"):
        return "BAD_USER_INPUT"
    return "GRAPHQL_VALIDATION_FAILED"


def label_error(error: GraphQLError) -> None:
    """Gives an expected top-level error the `extensions.code` clients branch on: a domain error's own
    code (and field), or the kind of pre-execution failure."""
    if (error.extensions or {}).get("code"):
        return
    original = error.original_error
    if isinstance(original, errors.DomainError):
        extra = {"field": original.field} if isinstance(original, errors.InvalidInput) else {}
        error.extensions = {**(error.extensions or {}), "code": original.code, **extra}
    elif error.path is None:
        error.extensions = {**(error.extensions or {}), "code": _request_error_code(error)}


class MaskUnexpectedErrors(MaskErrors):
    """Replaces unexpected errors with a generic message (Strawberry has already logged them in full), and
    gives every other error an `extensions.code` clients can branch on."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=is_unexpected, error_message="Internal server error.")

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        processed = super()._process_errors(errors)
        for error in processed:
            label_error(error)
        return processed

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        return GraphQLError(
            message=self.error_message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions={"code": "INTERNAL_SERVER_ERROR"},
        )
