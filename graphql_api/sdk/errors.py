"""The SDK's exceptions: `ModelhubError`, a subclass per family of codes (`graphql_api.codes`)."""

from __future__ import annotations

from typing import Any

import httpx

from .. import codes


class ModelhubError(Exception):
    """The server refused a request (a typed result error, a top-level GraphQL error, an HTTP error), or
    could not be reached. `code` is the server's machine-readable code."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details or {}


class NotFoundError(ModelhubError):
    """No such model, version, alias, object or upload."""


class InvalidInputError(ModelhubError):
    """An argument was refused; `details.get("field")` names it when the server did."""


class AlreadyExistsError(ModelhubError):
    """The version number is taken."""


class ArchivedError(ModelhubError):
    """The version is archived: no downloads."""


class ObjectDeletedError(ArchivedError):
    """The version was pruned: its artifact is deleted (a tombstone keeps its history and figures)."""


class ChecksumMismatchError(ModelhubError):
    """The bytes are not those whose SHA-256 was declared (server side, or after a download)."""


class ArtifactChangedError(ModelhubError):
    """The object behind the version changed in the store since it was registered."""


class AuthError(ModelhubError):
    """Not authenticated, or not allowed."""


class RateLimitedError(ModelhubError):
    """Too many requests; try again later."""


class UnavailableError(ModelhubError):
    """The server, its database or its object store cannot be reached now; try again."""


ERRORS: dict[str, type[ModelhubError]] = {
    **dict.fromkeys(codes.NOT_FOUND_CODES, NotFoundError),
    **dict.fromkeys(codes.INVALID_INPUT_CODES, InvalidInputError),
    codes.MODEL_VERSION_ALREADY_EXISTS: AlreadyExistsError,
    codes.MODEL_VERSION_ARCHIVED: ArchivedError,
    codes.OBJECT_DELETED: ObjectDeletedError,
    codes.CHECKSUM_MISMATCH: ChecksumMismatchError,
    codes.ARTIFACT_CHANGED: ArtifactChangedError,
    **dict.fromkeys(codes.AUTH_CODES, AuthError),
    codes.RATE_LIMITED: RateLimitedError,
    **dict.fromkeys(codes.UNAVAILABLE_CODES, UnavailableError),
}


def error_for(code: str, message: str, details: dict[str, Any] | None = None) -> ModelhubError:
    """The `ModelhubError` subclass for a server's error `code` (`ModelhubError` for an unknown one)."""
    return ERRORS.get(code, ModelhubError)(code, message, details)


def unreachable(base_url: str, exc: httpx.HTTPError) -> UnavailableError:
    """The error raised when the server at `base_url` cannot be reached (code UNREACHABLE)."""
    return UnavailableError(codes.UNREACHABLE, f"cannot reach {base_url} ({type(exc).__name__})")
