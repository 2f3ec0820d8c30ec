"""Every command shown to a person runs as written: the `modelhub ...` commands quoted in /ui, in error
messages, log lines and start-up output (anywhere in graphql_api/), in the CLI's help texts and in the README
resolve against the CLI's own command tree (each subcommand and option exists, option values convert, required
options and arguments are there); every `pip install "modelhub[...]"` names extras pyproject.toml has; every
`make X` names a Makefile target; GraphiQL's default document runs against a live server.

Commands are found by scanning the sources, so a new text is covered without touching this file. Placeholders
in capitals (`FILE`, `NAME`) or angle brackets (`<token>`) stand for any value; `[...]` marks an optional part
(its contents are checked too); a trailing `...` stands for more arguments and options (required ones
included).
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer

from graphql_api import cli
from graphql_api.http import assets
from tests.servers import LiveServer

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "graphql_api"
SHOWN_SUFFIXES = {".py", ".js", ".html", ".graphql", ".css"}
# A command quoted inline: optional VAR=value prefixes, then modelhub (or the README's .venv/bin/modelhub).
INLINE = re.compile(r"`((?:[A-Z_]+=\S+\s+)*(?:\.venv/bin/)?modelhub\s[^`]+)`")
PIP_EXTRAS = re.compile(r"""pip install\s+["']?modelhub\[([^\]]*)\]""")
MAKE = re.compile(r"`make ([a-z][\w-]*)`|^\s*(?:\$ )?make ([a-z][\w-]*)", re.MULTILINE)
FENCE = re.compile(r"```(?:bash|sh|shell|console)\n(.*?)```", re.DOTALL)
PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]*|<[^>]+>|\.\.\.)$")


def _shown_files() -> list[Path]:
    return sorted(p for p in SOURCES.rglob("*") if p.suffix in SHOWN_SUFFIXES and "vendor" not in p.parts)


def _readme_block_commands(text: str) -> Iterator[str]:
    """The modelhub command lines of the README's shell blocks (prompts, continuations, comments dropped)."""
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            words = line.split()
            while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
                words.pop(0)  # VAR=value prefixes (quoted values without spaces only)
            if words and words[0] in ("modelhub", ".venv/bin/modelhub"):
                yield line


def _help_texts(command: Any, path: str = "modelhub") -> Iterator[tuple[str, str]]:
    """(where, text) of every help text of the CLI: commands, groups, options and arguments."""
    yield path, " ".join(t for t in (command.help, command.short_help, command.epilog) if t)
    for param in command.params:
        if getattr(param, "help", None):
            yield f"{path} {param.name}", str(param.help)
    if _is_group(command):
        for name, sub in command.commands.items():
            yield from _help_texts(sub, f"{path} {name}")


def _root() -> Any:
    """The CLI's click command tree (typer's own copy of click: its classes are checked by duck typing)."""
    return typer.main.get_command(cli.app)


def _is_group(command: Any) -> bool:
    return isinstance(getattr(command, "commands", None), dict)


def commands_shown() -> list[tuple[str, str]]:
    """(where, command) of every modelhub command shown to a person."""
    found: list[tuple[str, str]] = []
    for path in _shown_files():
        text = path.read_text()
        for match in INLINE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{path.relative_to(ROOT)}:{line}", " ".join(match[1].split())))
    readme = (ROOT / "README.md").read_text()
    found += [("README.md", " ".join(m.split())) for m in INLINE.findall(readme)]
    found += [("README.md (block)", command) for command in _readme_block_commands(readme)]
    for where, text in _help_texts(_root()):
        found += [(f"help of {where}", " ".join(m.split())) for m in INLINE.findall(text)]
    return found


def _words(command: str) -> list[str]:
    """The command's words after `modelhub`: VAR= prefixes and a trailing comment dropped, `[`/`]` of
    optional parts removed (their contents stay, to be checked)."""
    words = shlex.split(command, comments=True)
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words.pop(0)
    if not words or words[0] not in ("modelhub", ".venv/bin/modelhub"):
        raise ValueError(f"not a modelhub command: {command}")
    return [w for w in (w.strip("[]") for w in words[1:]) if w]


def problems(command: str) -> list[str]:
    """Why `command` would not run as written against the CLI (empty: it resolves)."""
    try:
        words = _words(command)
    except ValueError as exc:
        return [str(exc)]
    node = _root()
    trail = "modelhub"
    while _is_group(node) and words and not words[0].startswith("-"):
        name = words.pop(0)
        if name == "...":
            return []  # `modelhub token ...`: the group, whichever subcommand
        sub = node.commands.get(name)
        if sub is None:
            return [f"`{trail}` has no subcommand {name!r} (it has {', '.join(sorted(node.commands))})"]
        node, trail = sub, f"{trail} {name}"
    if _is_group(node):
        if words == ["--help"] or (not words and node.no_args_is_help):
            return []
        return [f"`{trail}` needs a subcommand"]
    ctx = node.context_class(node, info_name=trail)
    options = {o: p for p in node.params if p.param_type_name == "option" for o in p.opts + p.secondary_opts}
    arguments = [p for p in node.params if p.param_type_name == "argument"]
    given: set[str] = set()
    positional = 0
    elided = False  # a `...`: the rest (arguments, required options) left out on purpose
    found: list[str] = []
    while words:
        word = words.pop(0)
        if word == "...":
            positional = max(positional, len(arguments))
            elided = True
            continue
        if word == "--help":
            return found
        if word.startswith("-") and len(word) > 1:
            name, eq, value = word.partition("=")
            param = options.get(name)
            if param is None:
                found.append(f"`{trail}` has no option {name}")
                continue
            given.add(param.name or "")
            if param.is_flag or param.count:
                if eq:
                    found.append(f"`{trail} {name}` takes no value")
                continue
            if not eq:
                if not words:
                    found.append(f"`{trail} {name}` needs a value")
                    continue
                value = words.pop(0)
            if PLACEHOLDER.match(value):
                continue
            try:
                param.process_value(ctx, [value] if param.multiple else value)
            except Exception as exc:  # click's BadParameter
                found.append(f"`{trail} {name} {value}`: {getattr(exc, 'message', exc)}")
            continue
        positional += 1
    capacity = sum(a.nargs if a.nargs > 0 else 10**6 for a in arguments)
    if positional > capacity:
        found.append(f"`{trail}` takes {capacity} argument(s), {positional} given")
    required = sum(a.nargs for a in arguments if a.required and a.nargs > 0)
    if positional < required:
        found.append(f"`{trail}` needs {', '.join(str(a.name).upper() for a in arguments)}")
    for param in node.params:
        if (
            param.param_type_name == "option"
            and param.required
            and param.name not in given
            and not param.envvar
            and not elided
        ):
            found.append(f"`{trail}` needs {param.opts[0]}")
    return found


def test_the_scan_finds_the_texts_people_see() -> None:
    """The scan finds commands in each kind of place: /ui, error messages, start-up output, the README's
    prose and blocks (so a scan that silently finds nothing cannot pass)."""
    where = " ".join(w for w, _ in commands_shown())
    for place in ("graphql_api/ui/ui.js", "graphql_api/operations.py", "graphql_api/cli/", "graphql_api/app.py",
                  "graphql_api/http/assets.py", "README.md (block)", "README.md "):  # fmt: skip
        assert place in where + " ", f"no command found in {place}"


def test_the_resolver_refuses_what_would_not_run() -> None:
    """Misspelt subcommands, unknown options, bad values, missing required options and extra arguments are
    caught; placeholders, optional parts and `--help` are accepted."""
    assert problems("modelhub tokens create NAME --role READER")
    assert problems("modelhub token create --name a --principal b --role owner")
    assert problems("modelhub token create --role READER")  # no --name, no --principal
    assert problems("modelhub push FILE")  # no --name, --project
    assert problems("modelhub list --projects vision")
    assert problems("modelhub info a b")
    assert problems("modelhub serve --workers many")
    assert problems("modelhub token")
    assert not problems("modelhub token create --name NAME --principal WHO --role reader")
    assert not problems(".venv/bin/modelhub push model.bin --name resnet --project vision --tag baseline")
    assert not problems("modelhub rebuild-rollups [--since 2026-11-01]")
    assert not problems("MODELHUB_AUTH=token .venv/bin/modelhub serve --workers N  # comment")
    assert not problems("modelhub download resnet@1 -o resnet.bin --no-presigned")
    assert not problems("modelhub operations")  # a group that shows its help


@pytest.mark.parametrize(("where", "command"), commands_shown())
def test_command_shown_resolves(where: str, command: str) -> None:
    """This command, as shown, names an existing subcommand with existing options and valid values."""
    assert not problems(command), f"{where}: `{command}`: {problems(command)}"


def test_pip_extras_and_make_targets_shown_exist() -> None:
    """Every `pip install "modelhub[...]"` shown (messages, README) names extras pyproject.toml defines, and
    every `make X` shown names a Makefile target."""
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    texts = {str(p.relative_to(ROOT)): p.read_text() for p in _shown_files()}
    texts["README.md"] = (ROOT / "README.md").read_text()
    pips = makes = 0
    for where, text in texts.items():
        for wanted in PIP_EXTRAS.findall(text):
            pips += 1
            unknown = {e.strip() for e in wanted.split(",") if not PLACEHOLDER.match(e.strip())} - extras
            assert not unknown, f"{where}: modelhub[{wanted}]: no extra {sorted(unknown)}"
        for match in MAKE.finditer(text):
            makes += 1
            target = match[1] or match[2]
            assert target in targets, f"{where}: `make {target}`: no such target"
    assert pips >= 3 and makes >= 2


@pytest.mark.parametrize("store_kind", ["local"])
def test_graphiql_default_document_runs(live: LiveServer) -> None:
    """The document GraphiQL opens with (as the live server serves the page) runs without errors."""
    page = httpx.get(f"{live.url}/graphql", headers={"Accept": "text/html"}, timeout=30)
    assert page.status_code == 200
    match = re.search(r"const EXAMPLE_QUERY = `(.*?)`;", page.text, re.DOTALL)
    assert match and match[1] == assets.DEFAULT_DOCUMENT
    answer = httpx.post(
        f"{live.url}/graphql", json={"query": match[1]}, headers={"X-Engineer-ID": "graphiql"}, timeout=30
    ).json()
    assert "errors" not in answer and answer["data"]["models"]["nodes"] == []
