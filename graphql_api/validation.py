"""Input rules shared by the use cases: names, versions, aliases, tags, descriptions and metadata."""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import InvalidInput

NAME_RE = re.compile(r"^[A-Za-z0-9._/-]{1,128}$")
ALIAS_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_METADATA_BYTES = 64 * 1024
MAX_TAGS = 64
MAX_DESCRIPTION = 10_000


# A JSON \u escape of a UTF-16 surrogate (D800-DFFF): only such an escape can put one in a parsed value.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


LONE_SURROGATE = (
    "a string holds a lone UTF-16 surrogate (a \\uD800-\\uDFFF escape not in a pair), which no UTF-8 holds"
)


def lone_surrogate(raw: str | bytes, value: Any) -> bool:
    """Whether JSON text `raw`, parsed as `value`, holds a lone UTF-16 surrogate: a string no UTF-8 can
    hold, which the database refuses to store or even match. Escaped pairs (an emoji) decode to one
    character and pass; text without a surrogate escape costs one regex search."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if _SURROGATE_ESCAPE.search(text) is None:
        return False
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def validate_name(value: str, field: str = "name") -> None:
    if not value:
        raise InvalidInput(field, "must not be empty")
    if len(value) > 128:
        raise InvalidInput(field, f"must be at most 128 characters, got {len(value)}")
    if not NAME_RE.match(value):
        raise InvalidInput(field, "may use only letters, digits and . _ - /")


def validate_version(version: int | None, field: str = "version") -> None:
    if version is not None and not 1 <= version <= 2**31 - 1:
        raise InvalidInput(field, f"must be at least 1, got {version}")


def _check_keys(value: Any, path: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k.startswith("$") or "\x00" in k:
                raise InvalidInput(path, f"key {k!r} must not start with $ or contain NUL")
            _check_keys(v, path)
    elif isinstance(value, list):
        for v in value:
            _check_keys(v, path)


MAX_METADATA_DEPTH = 20


def _depth(value: Any) -> int:
    """How deeply `value` nests objects and lists, measured without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if level + 1 > MAX_METADATA_DEPTH:
                    return level + 1
                stack.append((child, level + 1))
        deepest = max(deepest, level)
    return deepest


def validate_metadata(metadata: Any) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata", "must be a JSON object")
    if _depth(metadata) > MAX_METADATA_DEPTH:
        raise InvalidInput("metadata", f"must be nested at most {MAX_METADATA_DEPTH} levels deep")
    try:
        size = len(json.dumps(metadata, separators=(",", ":"), allow_nan=False).encode())
    except ValueError as exc:
        raise InvalidInput("metadata", "must be valid JSON (no NaN or Infinity)") from exc
    if size > MAX_METADATA_BYTES:
        raise InvalidInput("metadata", f"must be at most 64 KB as JSON, got {size} bytes")
    _check_keys(metadata, "metadata")
    return metadata


def validate_tags(tags: list[str] | None) -> list[str]:
    if not tags:
        return []
    if len(tags) > MAX_TAGS:
        raise InvalidInput("tags", f"at most {MAX_TAGS} tags")
    for tag in tags:
        if not tag or len(tag) > 64 or any(ord(ch) < 32 for ch in tag):
            raise InvalidInput("tags", f"tag {tag!r} must be 1 to 64 printable characters")
    return list(dict.fromkeys(tags))


def validate_alias(alias: str, field: str = "alias") -> None:
    """An alias names a version (`prod`, `staging`); it is never all digits, so never a version number."""
    if not ALIAS_RE.match(alias):
        raise InvalidInput(field, "must be 1 to 64 letters, digits or . _ -")
    if alias.isdigit():
        raise InvalidInput(field, "must not be all digits (that would read as a version number)")


def validate_description(description: str | None) -> None:
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise InvalidInput("description", f"must be at most {MAX_DESCRIPTION} characters")
