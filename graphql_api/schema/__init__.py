"""The Strawberry schema: types, inputs, result unions, queries, mutations and the request context."""

from .root import build_schema

__all__ = ["build_schema"]
