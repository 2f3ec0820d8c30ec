"""The machine-readable error codes the server reports and the SDK reads: one leaf module, importing nothing.

A code reaches a client as `extensions.code` of a top-level GraphQL error, as `code` of a result union's error
member, or as `error.code` of a route's JSON error. The server's exceptions take their `code` from here, and
the SDK maps these codes to its exception classes, so a client-only install (`pip install modelhub`) has them.
"""

from __future__ import annotations

from typing import Final

# Registry and artifacts (result union members).
MODEL_NOT_FOUND: Final = "MODEL_NOT_FOUND"
MODEL_VERSION_NOT_FOUND: Final = "MODEL_VERSION_NOT_FOUND"
MODEL_VERSION_ALREADY_EXISTS: Final = "MODEL_VERSION_ALREADY_EXISTS"
MODEL_VERSION_ARCHIVED: Final = "MODEL_VERSION_ARCHIVED"
OBJECT_DELETED: Final = "OBJECT_DELETED"
ALIAS_NOT_FOUND: Final = "ALIAS_NOT_FOUND"
STORAGE_OBJECT_NOT_FOUND: Final = "STORAGE_OBJECT_NOT_FOUND"
CHECKSUM_MISMATCH: Final = "CHECKSUM_MISMATCH"
CHECKSUM_PENDING: Final = "CHECKSUM_PENDING"
ARTIFACT_CHANGED: Final = "ARTIFACT_CHANGED"
UPLOAD_NOT_FOUND: Final = "UPLOAD_NOT_FOUND"
UPLOAD_ALREADY_RECEIVED: Final = "UPLOAD_ALREADY_RECEIVED"
UPLOAD_IN_PROGRESS: Final = "UPLOAD_IN_PROGRESS"
WEBHOOK_NOT_FOUND: Final = "WEBHOOK_NOT_FOUND"
DELIVERY_NOT_FOUND: Final = "DELIVERY_NOT_FOUND"

# Input.
INVALID_INPUT: Final = "INVALID_INPUT"
RANGE_BEYOND_RETENTION: Final = "RANGE_BEYOND_RETENTION"
RANGE_NOT_SATISFIABLE: Final = "RANGE_NOT_SATISFIABLE"
BAD_USER_INPUT: Final = "BAD_USER_INPUT"
BAD_REQUEST: Final = "BAD_REQUEST"
GRAPHQL_VALIDATION_FAILED: Final = "GRAPHQL_VALIDATION_FAILED"
GRAPHQL_PARSE_FAILED: Final = "GRAPHQL_PARSE_FAILED"
TICKET_INVALID: Final = "TICKET_INVALID"

# Who calls, and how much.
UNAUTHENTICATED: Final = "UNAUTHENTICATED"
FORBIDDEN: Final = "FORBIDDEN"
RATE_LIMITED: Final = "RATE_LIMITED"
COST_LIMIT_EXCEEDED: Final = "COST_LIMIT_EXCEEDED"
DEPTH_LIMIT_EXCEEDED: Final = "DEPTH_LIMIT_EXCEEDED"
ALIAS_LIMIT_EXCEEDED: Final = "ALIAS_LIMIT_EXCEEDED"
FIELD_LIMIT_EXCEEDED: Final = "FIELD_LIMIT_EXCEEDED"
PAYLOAD_TOO_LARGE: Final = "PAYLOAD_TOO_LARGE"

# Persisted operations.
PERSISTED_QUERY_NOT_FOUND: Final = "PERSISTED_QUERY_NOT_FOUND"
PERSISTED_QUERY_HASH_MISMATCH: Final = "PERSISTED_QUERY_HASH_MISMATCH"
OPERATION_NOT_PERSISTED: Final = "OPERATION_NOT_PERSISTED"

# The live feed.
SUBSCRIBER_TOO_SLOW: Final = "SUBSCRIBER_TOO_SLOW"
SUBSCRIPTION_LIMIT_REACHED: Final = "SUBSCRIPTION_LIMIT_REACHED"
FEED_ENDED: Final = "FEED_ENDED"

# Outages and the connection's limits: try again.
DATABASE_UNAVAILABLE: Final = "DATABASE_UNAVAILABLE"
DATABASE_TIMEOUT: Final = "DATABASE_TIMEOUT"
STORAGE_UNAVAILABLE: Final = "STORAGE_UNAVAILABLE"
TOO_MANY_CONNECTIONS: Final = "TOO_MANY_CONNECTIONS"
REQUEST_TIMEOUT: Final = "REQUEST_TIMEOUT"
HEADERS_TOO_LARGE: Final = "HEADERS_TOO_LARGE"

# Routes (HTTP) and the last resort.
NOT_FOUND: Final = "NOT_FOUND"
METHOD_NOT_ALLOWED: Final = "METHOD_NOT_ALLOWED"
INTERNAL_SERVER_ERROR: Final = "INTERNAL_SERVER_ERROR"
ERROR: Final = "ERROR"  # a domain error without a more precise code

# What only the SDK says, never the server: the server could not be reached, or a download came up short.
UNREACHABLE: Final = "UNREACHABLE"
INCOMPLETE: Final = "INCOMPLETE"

# Every code above (a constant's name is its value).
ALL: Final[frozenset[str]] = frozenset(
    value for name, value in dict(globals()).items() if name.isupper() and value == name
)

# The families the SDK raises as one exception class each.
NOT_FOUND_CODES: Final = frozenset(
    {MODEL_NOT_FOUND, MODEL_VERSION_NOT_FOUND, ALIAS_NOT_FOUND, STORAGE_OBJECT_NOT_FOUND, UPLOAD_NOT_FOUND,
     NOT_FOUND}
)  # fmt: skip
INVALID_INPUT_CODES: Final = frozenset(
    {INVALID_INPUT, BAD_USER_INPUT, BAD_REQUEST, GRAPHQL_VALIDATION_FAILED, GRAPHQL_PARSE_FAILED}
)
AUTH_CODES: Final = frozenset({UNAUTHENTICATED, FORBIDDEN})
# CHECKSUM_PENDING: the artifact is still being verified, try again after Retry-After.
UNAVAILABLE_CODES: Final = frozenset(
    {DATABASE_UNAVAILABLE, DATABASE_TIMEOUT, STORAGE_UNAVAILABLE, UNREACHABLE, CHECKSUM_PENDING,
     TOO_MANY_CONNECTIONS}
)  # fmt: skip
