"""The `Error` interface, its members, and the translation from domain exceptions to them."""

from __future__ import annotations

from typing import Any

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


def invalid_input(exc: errors.InvalidInput) -> InvalidInput:
    return InvalidInput(code=exc.code, message=exc.message, field=exc.field)


def to_graphql_error(exc: errors.DomainError) -> Any:
    """The result-union member for a domain exception."""
    match exc:
        case errors.InvalidInput():
            return invalid_input(exc)
        case errors.ModelAlreadyExists():
            return ModelAlreadyExists(code=exc.code, message=exc.message, name=exc.name, version=exc.version)
        case errors.StorageObjectNotFound():
            return StorageObjectNotFound(code=exc.code, message=exc.message, bucket=exc.bucket, key=exc.key)
        case errors.ModelNotFound():
            return ModelNotFound(code=exc.code, message=exc.message, name=exc.name, version=exc.version)
        case errors.ModelArchived():
            return ModelArchived(code=exc.code, message=exc.message, name=exc.name, version=exc.version)
    raise exc


class BadUserInput(GraphQLError):
    """A top-level error for bad query arguments (queries have no result unions)."""

    def __init__(self, exc: errors.InvalidInput) -> None:
        super().__init__(exc.message, extensions={"code": "INVALID_INPUT", "field": exc.field})


class Forbidden(GraphQLError):
    def __init__(self, message: str) -> None:
        super().__init__(message, extensions={"code": "FORBIDDEN"})


def _should_mask(error: GraphQLError) -> bool:
    # A GraphQLError raised on purpose (or a validation error) has no original error; anything else is a bug.
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


def _request_error_code(error: GraphQLError) -> str:
    # Errors raised before execution carry no path: the document did not parse, did not validate against
    # the schema (an unknown enum value, field or argument), or its variables did not coerce.
    if error.message.startswith("Syntax Error"):
        return "GRAPHQL_PARSE_FAILED"
    if error.message.startswith("Variable '$"):
        return "BAD_USER_INPUT"
    return "GRAPHQL_VALIDATION_FAILED"


class MaskUnexpectedErrors(MaskErrors):
    """Replaces unexpected errors with a generic message (Strawberry has already logged them in full), and
    gives every other error an `extensions.code` clients can branch on."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=_should_mask, error_message="Internal server error.")

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        processed = super()._process_errors(errors)
        for error in processed:
            label_request_error(error)
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


def label_request_error(error: GraphQLError) -> None:
    """Gives a pre-execution error (no path, no code yet) the `extensions.code` clients branch on."""
    if error.path is None and not (error.extensions or {}).get("code"):
        error.extensions = {**(error.extensions or {}), "code": _request_error_code(error)}
