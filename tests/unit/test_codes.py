"""Error codes live in one leaf module (`graphql_api.codes`) that the server's exceptions and the SDK share, and
the SDK (with the client commands' import path) reaches no server module."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from graphql_api import codes
from graphql_api.client import ERRORS, error_for
from graphql_api.errors import DomainError

PACKAGE = Path(codes.__file__).resolve().parent
# The modules that define DomainError subclasses (importing them registers the subclasses).
RAISERS = ["graphql_api.errors", "graphql_api.limits", "graphql_api.operations", "graphql_api.analytics.feed",
           "graphql_api.schema.guards"]  # fmt: skip
# A code written as a literal where it is reported: `code = "X"`, `{"code": "X"}`, error and outage responses.
LITERAL = re.compile(
    r"""(?:\bcode\s*=\s*|"code":\s*|error_response\(\d+,\s*|outage_response\()"([A-Z][A-Z_]+)\""""
)
SDK_FILES = [*sorted((PACKAGE / "sdk").glob("*.py")), PACKAGE / "client.py", PACKAGE / "client_types.py"]


def _relative_imports(path: Path) -> set[str]:
    """The graphql_api modules a file imports, as dotted names under graphql_api."""
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            target = ".".join([*base, node.module] if node.module else base)
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            found |= set(names)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            found |= {n for n in names if n.startswith("graphql_api")}
    return found


def _subclasses(cls: type) -> list[type]:
    return [cls, *(s for sub in cls.__subclasses__() for s in _subclasses(sub))]


def test_codes_is_a_leaf() -> None:
    """graphql_api/codes.py imports nothing but `__future__` and `typing`, so anything may import it."""
    tree = ast.parse((PACKAGE / "codes.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imported <= {"__future__", "typing"}, imported


def test_every_code_the_server_raises_is_declared() -> None:
    """Each domain exception's code, and each code written as a literal where the server reports it, is one
    of `codes.ALL` (a constant named as its value)."""
    for module in RAISERS:
        importlib.import_module(module)
    raised = {cls.code for cls in _subclasses(DomainError)}
    assert len(raised) > 20 and raised <= codes.ALL, sorted(raised - codes.ALL)
    written = {m for p in PACKAGE.rglob("*.py") for m in LITERAL.findall(p.read_text())}
    assert "BAD_USER_INPUT" in written and written <= codes.ALL, sorted(written - codes.ALL)
    assert all(getattr(codes, code) == code for code in codes.ALL)


def test_the_sdk_maps_declared_codes_to_its_exceptions() -> None:
    """Every code the SDK maps is declared, each family maps to one exception class, and an unknown code is a
    plain ModelhubError."""
    assert set(ERRORS) <= codes.ALL
    for family in (
        codes.NOT_FOUND_CODES,
        codes.INVALID_INPUT_CODES,
        codes.AUTH_CODES,
        codes.UNAVAILABLE_CODES,
    ):
        assert family <= codes.ALL and len({ERRORS[c] for c in family}) == 1
    assert type(error_for(codes.MODEL_NOT_FOUND, "m")).__name__ == "NotFoundError"
    assert type(error_for("SOMETHING_NEW", "m")).__name__ == "ModelhubError"


def test_the_sdk_imports_no_server_module() -> None:
    """The SDK's modules (graphql_api.sdk, graphql_api.client, graphql_api.client_types) import only each
    other and the leaf graphql_api.codes."""
    for path in SDK_FILES:
        for name in _relative_imports(path):
            allowed = name.startswith("graphql_api.sdk") or name in ("graphql_api.codes", "graphql_api.sdk")
            assert allowed, f"{path.relative_to(PACKAGE.parent)} imports {name}"
