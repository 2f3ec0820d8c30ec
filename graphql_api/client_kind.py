"""Who a download is for (CI, BOT, HUMAN, UNKNOWN) and which SDK release asked, decided once per request.

The rules, in order; the first that applies decides and is recorded as `client_kind_rule`:

| rule | kind | when |
|---|---|---|
| `token` | the token's | the token was created with a kind (`modelhub token create --kind ci ...`) |
| `header` | CI or HUMAN | `X-Modelhub-Client-Kind: CI` or `HUMAN` (SDK: a CI variable or `--ci`; a tty) |
| `user-agent` | BOT | the user agent matches `BOT_PATTERNS` (bot, crawl, spider, slurp, previews) |
| `default` | UNKNOWN | anything else (curl, wget, scripts, browsers that declare nothing) |

A header cannot override a token's kind (a CI token stays CI whatever the job claims), and it may claim only
CI or HUMAN: BOT is never a claim, UNKNOWN is the absence of one. curl and wget are UNKNOWN: people and
scripts use them alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .documents import ClientKind

HEADER = "x-modelhub-client-kind"
SDK_AGENT = "modelhub-sdk"
# Case-insensitive patterns of user agents that are crawlers or automated fetchers, not a person or a job.
BOT_PATTERNS = (r"bot\b", r"bot/", r"crawl", r"spider", r"slurp", r"facebookexternalhit", r"preview")
_BOT = re.compile("|".join(BOT_PATTERNS), re.IGNORECASE)
_CLAIMS = {ClientKind.CI.value: ClientKind.CI, ClientKind.HUMAN.value: ClientKind.HUMAN}
# `modelhub-sdk/<version>`: a version of digits and dots with an optional short suffix (1.4.0, 2.0.0rc1).
_SDK = re.compile(rf"(?:^|\s){SDK_AGENT}/(\d{{1,4}}(?:\.\d{{1,4}}){{0,3}}(?:[a-z]{{1,5}}\d{{0,3}})?)(?:\s|$)")


def decide(
    token_kind: ClientKind | None, headers: Mapping[str, str], user_agent: str | None
) -> tuple[ClientKind, str]:
    """The kind of a download request and the rule that decided it (see the module's table)."""
    if token_kind is not None:
        return token_kind, "token"
    claim = _CLAIMS.get((headers.get(HEADER) or "").strip().upper())
    if claim is not None:
        return claim, "header"
    if user_agent and _BOT.search(user_agent):
        return ClientKind.BOT, "user-agent"
    return ClientKind.UNKNOWN, "default"


def client_version(user_agent: str | None) -> str | None:
    """The SDK release named in the user agent (`modelhub-sdk/1.4.0 ...`), None for any other client: a
    bounded form (at most 4 numbers of 4 digits and a short suffix), so the dimension cannot be flooded with
    arbitrary strings."""
    if not user_agent:
        return None
    found = _SDK.search(user_agent[:512])
    return found.group(1) if found else None
