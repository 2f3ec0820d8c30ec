"""Token roles: a leaf module, so that the CLI can name them without importing the ODM."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a token may do: READER reads and downloads, ENGINEER also registers, ADMIN also manages others'
    models and tokens."""

    READER = "READER"
    ENGINEER = "ENGINEER"
    ADMIN = "ADMIN"
