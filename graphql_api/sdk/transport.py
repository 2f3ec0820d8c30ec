"""How the SDK talks: the steps a flow yields (`Call`, `Put`, `Fetch`, `Blocking`), the headers it sends, and
the server's answers read into data or typed exceptions. Shared by the sync and the async client."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx

from .errors import ModelhubError, error_for, unreachable
from .files import Sink

DEFAULT_URL = "http://127.0.0.1:8000"
T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """A GraphQL operation → its `data` (top-level errors raised as typed exceptions)."""

    query: str
    variables: dict[str, Any]


@dataclass(frozen=True)
class Put:
    """PUT `length` bytes of `path` from `start` to a presigned or app URL → the response's ETag."""

    url: str
    path: Path
    start: int
    length: int
    headers: dict[str, str]
    sent: Callable[[int], None]


@dataclass(frozen=True)
class Fetch:
    """GET `url` (no credentials: the URL carries its own) → its status, the body handed to `sink`."""

    url: str
    headers: dict[str, str]
    sink: Sink


@dataclass(frozen=True)
class Blocking:
    """Local work that may take a while (hashing a file) → its result; run off the event loop when async."""

    work: Callable[[], Any]


Step = Call | Put | Fetch | Blocking
Flow = Generator[Step, Any, T]


SDK_VERSION = "0.2"
USER_AGENT = f"modelhub-sdk/{SDK_VERSION}"
# The environment variables CI services set: any of them makes the SDK declare its downloads CI.
CI_VARIABLES = (
    "CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "JENKINS_URL", "TF_BUILD", "CIRCLECI", "TRAVIS",
    "BITBUCKET_BUILD_NUMBER", "TEAMCITY_VERSION", "DRONE", "CODEBUILD_BUILD_ID", "BUILD_ID",
    "MODELHUB_CI",  # what `modelhub download --ci REF` sets
)  # fmt: skip


def declared_kind(environ: Mapping[str, str] | None = None, terminal: bool | None = None) -> str | None:
    """What the SDK tells the server it is (X-Modelhub-Client-Kind): CI when a CI variable is set (and not
    "false" or "0"), HUMAN on a terminal, else nothing (the server then decides by the user agent)."""
    env = os.environ if environ is None else environ
    if any(env.get(name, "").strip().lower() not in ("", "0", "false") for name in CI_VARIABLES):
        return "CI"
    if terminal is None:
        terminal = sys.stdin.isatty() and sys.stdout.isatty()
    return "HUMAN" if terminal else None


def client_headers(engineer: str | None, token: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT}
    kind = declared_kind()
    if kind:
        headers["X-Modelhub-Client-Kind"] = kind
    engineer = engineer if engineer is not None else os.environ.get("MODELHUB_ENGINEER")
    token = token if token is not None else os.environ.get("MODELHUB_TOKEN")
    if engineer:
        headers["X-Engineer-ID"] = engineer
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def resolve_base_url(base_url: str | None) -> str:
    return (base_url or os.environ.get("MODELHUB_URL") or DEFAULT_URL).rstrip("/")


def graphql_data(resp: httpx.Response) -> dict[str, Any]:
    if "application/json" not in resp.headers.get("content-type", ""):
        raise error_for(f"HTTP_{resp.status_code}", resp.text[:200] or resp.reason_phrase)
    body = resp.json()
    if body.get("errors"):
        error = body["errors"][0]
        extensions = error.get("extensions") or {}
        raise error_for(extensions.get("code", "GRAPHQL_ERROR"), error["message"], extensions)
    data: dict[str, Any] = body["data"]
    return data


def mutation_result(value: dict[str, Any]) -> dict[str, Any]:
    """A mutation's result union: the success member, or its error member raised as a typed exception."""
    if "code" in value and "message" in value:
        details = {k: v for k, v in value.items() if k not in ("code", "message")}
        raise error_for(value["code"], value["message"], details)
    return value


def http_error(resp: httpx.Response) -> ModelhubError:
    """An error answer of a download or upload URL (our JSON errors, or S3's XML)."""
    try:
        error = resp.json().get("error", {})
    except (ValueError, AttributeError):
        error = {}
    return error_for(error.get("code", f"HTTP_{resp.status_code}"), error.get("message", resp.text[:200]))


def step_failure(base_url: str, exc: Exception) -> Exception:
    """What a failed step throws into its flow: an unreachable server as `UnavailableError`."""
    if isinstance(exc, httpx.TransportError):
        failure = unreachable(base_url, exc)
        failure.__cause__ = exc
        return failure
    return exc


class Driver(Generic[T]):
    """Drives a flow for a client: iterating gives its steps; the client hands each step's answer back with
    `answer`, or its failure with `fail` (thrown into the flow, which may handle it); `result` is what the
    flow returned. The sync and async clients differ only in how they take a step."""

    def __init__(self, flow: Flow[T], base_url: str) -> None:
        self.flow = flow
        self.base_url = base_url
        self._answer: Any = None
        self._failure: Exception | None = None
        self.result: T

    def __iter__(self) -> Iterator[Step]:
        while True:
            try:
                if self._failure is None:
                    step = self.flow.send(self._answer)
                else:
                    step = self.flow.throw(self._failure)
            except StopIteration as done:
                self.result = done.value
                return
            self._answer, self._failure = None, None
            yield step

    def answer(self, value: Any) -> None:
        self._answer = value

    def fail(self, exc: Exception) -> None:
        self._failure = step_failure(self.base_url, exc)
