"""The committed schema.graphql is the public contract and must match the code."""

from __future__ import annotations

from pathlib import Path

from graphql_api.cli import schema_sdl

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema.graphql"


def test_schema_file_is_current() -> None:
    """schema.graphql equals what the code exports (run `modelhub export-schema` after a schema change)."""
    assert SCHEMA_FILE.read_text() == schema_sdl(), "schema.graphql is stale: run `modelhub export-schema`"


def test_schema_has_the_user_error_interface_and_long_scalar() -> None:
    """The contract has `interface UserError` (not `Error`, which shadows TypeScript's) and `Long` byte counts."""
    sdl = schema_sdl()
    assert "interface UserError {" in sdl and "interface Error " not in sdl
    assert "sizeBytes: Long!" in sdl
