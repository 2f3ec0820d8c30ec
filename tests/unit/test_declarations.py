"""The helpers that let one declaration serve where code was written twice: domain errors' class-level texts,
the union member built from an exception's fields, GraphQL enums over the domain's enums, and `from_doc`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import pytest
import strawberry
from strawberry.types.enum import has_enum_definition

from graphql_api import errors
from graphql_api.schema import errors as schema_errors
from graphql_api.schema.enums import graphql_enum
from graphql_api.schema.node import from_doc


def test_messages_are_the_class_texts_over_the_fields() -> None:
    """A domain error with fields says its class-level text filled with them (properties and formats too)."""
    assert errors.ModelVersionAlreadyExists("m", 3).message == "model 'm' version 3 already exists"
    assert errors.ModelVersionNotFound("m", alias="prod").message == "model 'm' has no alias 'prod'"
    assert errors.ModelVersionNotFound("m").message == "model 'm' has no a version"
    assert str(errors.ChecksumPending("m", 2, 1.5)).endswith("try again in 1.5 s")
    assert errors.UploadNotFound("u1", "is not an upload id").message == "upload u1 is not an upload id"
    assert errors.WebhookNotFound().message == "no webhook has this id"
    assert errors.Forbidden("not yours").message == "not yours"
    assert repr(errors.ModelNotFound("m")) == "ModelNotFound(\"model 'm' does not exist\")"
    assert len({errors.ModelNotFound("m"), errors.ModelNotFound("m")}) == 2  # hashable, compared by identity


def test_union_member_is_built_from_the_exceptions_fields() -> None:
    """Every domain error with a result-union member becomes the member of its name, its fields copied."""
    member = schema_errors.union_member(errors.ChecksumPending("m", 2, 1.5))
    assert member == schema_errors.ChecksumPending(
        code="CHECKSUM_PENDING", message=errors.ChecksumPending("m", 2, 1.5).message, name="m", version=2,
        retry_after_seconds=1.5,
    )  # fmt: skip
    assert schema_errors.union_member(errors.Forbidden("no")) is None
    assert schema_errors.union_member(errors.RangeBeyondRetention("since", "2026-01-01")) is None
    for exc_type, member_type in schema_errors._MEMBERS.items():
        assert exc_type.__name__ == member_type.__name__


def test_graphql_enum_needs_every_value_described() -> None:
    """A domain enum made a GraphQL enum must describe each of its values, and nothing else."""

    class Colour(StrEnum):
        RED = "RED"
        BLUE = "BLUE"

    with pytest.raises(ValueError, match="describe exactly"):
        graphql_enum(Colour, "A colour.", RED="Red.")

    class Shade(StrEnum):
        DARK = "DARK"

    graphql_enum(Shade, "A shade.", name="Tone", DARK="Dark.")
    assert has_enum_definition(Shade)
    definition = Shade.__strawberry_definition__
    assert (definition.name, definition.description) == ("Tone", "A shade.")
    assert [(v.name, v.description) for v in definition.values] == [("DARK", "Dark.")]


@dataclass
class _Doc:
    name: str
    size: int
    extra: str = "not a field"


def test_from_doc_copies_fields_by_name() -> None:
    """`from_doc` takes each field from the document's attribute of its name unless it is given."""

    @strawberry.type
    class Thing:
        name: str
        size: int
        label: str = "default"

    thing = from_doc(Thing, _Doc("a", 1), size=2)
    assert (thing.name, thing.size, thing.label) == ("a", 2, "default")
