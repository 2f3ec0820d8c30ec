"""Relay's `Node` interface and opaque global ids (`base64url("Type:id")`) that Relay and Apollo caches
normalise on."""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Any, TypeVar, cast

import strawberry
from bson import ObjectId
from bson.errors import InvalidId

from ..errors import InvalidInput


@strawberry.interface(
    description="An object with a globally unique, opaque id; fetch any of them with `node(id:)`."
)
class Node:
    id: strawberry.ID = strawberry.field(description="Opaque and stable; pass it to `node(id:)`.")


T = TypeVar("T")


def from_doc(cls: type[T], doc: object, /, **given: Any) -> T:
    """An object of Strawberry type `cls` whose fields are `given` or else the document's attributes of the
    same name (a field the document does not have keeps its default)."""
    values = dict(given)
    for field in dataclasses.fields(cast(Any, cls)):
        if field.init and field.name not in values and hasattr(doc, field.name):
            values[field.name] = getattr(doc, field.name)
    return cls(**values)


def global_id(type_name: str, key: object) -> strawberry.ID:
    raw = f"{type_name}:{key}".encode()
    return strawberry.ID(base64.urlsafe_b64encode(raw).decode().rstrip("="))


def parse_global_id(value: str, field: str = "id") -> tuple[str, ObjectId]:
    """The (type name, ObjectId) inside a global id; InvalidInput when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        type_name, _, key = raw.partition(":")
        return type_name, ObjectId(key)
    except (ValueError, binascii.Error, UnicodeDecodeError, InvalidId, TypeError) as exc:
        raise InvalidInput(field, "is not a valid id") from exc
