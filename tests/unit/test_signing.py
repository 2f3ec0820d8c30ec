"""HMAC tokens: round trip, purpose separation, tampering and expiry (no server, no sleeping)."""

from __future__ import annotations

import time

import pytest

from graphql_api.errors import TicketInvalid, TicketProblem
from graphql_api.signing import Signer

SIGNER = Signer(b"k" * 32)


def test_round_trip_keeps_the_payload() -> None:
    """A token verifies under its own purpose and gives back its payload with the expiry."""
    token = SIGNER.sign("download", {"e": "abc", "v": 3}, time.time() + 60)
    payload = SIGNER.verify("download", token)
    assert payload["e"] == "abc" and payload["v"] == 3 and isinstance(payload["exp"], int)


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda t: t.replace(".", ""), TicketProblem.MALFORMED),
        (lambda t: "x" + t, TicketProblem.FORBIDDEN),
        (lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), TicketProblem.FORBIDDEN),
        (lambda t: "", TicketProblem.MALFORMED),
    ],
)
def test_tampered_tokens_are_refused(mutate: object, problem: TicketProblem) -> None:
    """A token with its body or MAC changed, or cut, is refused with the right problem."""
    token = SIGNER.sign("download", {"e": "abc"}, time.time() + 60)
    with pytest.raises(TicketInvalid) as info:
        SIGNER.verify("download", mutate(token))  # type: ignore[operator]
    assert info.value.problem is problem


def test_purpose_and_key_separate_tokens() -> None:
    """A token signed for one purpose, or with another key, does not verify."""
    token = SIGNER.sign("object", {"b": "x"}, time.time() + 60)
    with pytest.raises(TicketInvalid):
        SIGNER.verify("download", token)
    with pytest.raises(TicketInvalid):
        Signer(b"other" * 8).verify("object", token)


def test_expiry_is_checked_against_the_given_clock() -> None:
    """A token is good until its expiry and refused as EXPIRED after it, by an injected `now`."""
    token = SIGNER.sign("download", {}, 1_000)
    assert SIGNER.verify("download", token, now=999)["exp"] == 1_000
    with pytest.raises(TicketInvalid) as info:
        SIGNER.verify("download", token, now=1_001)
    assert info.value.problem is TicketProblem.EXPIRED
