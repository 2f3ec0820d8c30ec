"""The Strawberry schema: types, inputs, result unions, queries, mutations and the request context."""

from .build import SchemaLimits, build_schema

__all__ = ["SchemaLimits", "build_schema"]
