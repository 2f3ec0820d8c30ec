"""Resume-token positions (db.events.reads): the order the live feed joins by and the present it checks
cursors against, for SecantusDB's tokens and a replica set's KeyString tokens."""

from __future__ import annotations

import bson
from pymongo.errors import OperationFailure

from graphql_api.db import events as events_db


def _secantus(seq: int, seconds: int = 1_700_000_000) -> dict[str, str]:
    inner = {"s": seq, "t": bson.Timestamp(seconds, 1), "n": "db.download_events", "k": {}}
    return {"_data": bson.encode(inner).hex()}


def _mongodb(seconds: int, increment: int, tail: str = "") -> dict[str, str]:
    """A KeyString token as mongod makes them: type 130 (Timestamp), then the cluster time big-endian."""
    return {"_data": (bytes([130]) + ((seconds << 32) | increment).to_bytes(8, "big")).hex().upper() + tail}


def test_secantus_tokens_are_ordered_by_sequence_alone() -> None:
    """SecantusDB resumes by `s` only: a made-up time does not move a token's position, its sequence does."""
    early, late = events_db.position(_secantus(5, 2**32 - 1)), events_db.position(_secantus(6, 1))
    assert early is not None and late is not None
    assert early.at_or_before(late) and not late.at_or_before(early)
    assert events_db.beyond(events_db.position(_secantus(7)), late)  # type: ignore[arg-type]
    assert not events_db.beyond(early, late)


def test_replica_set_tokens_are_ordered_bytewise_with_slack_on_their_cluster_time() -> None:
    """A KeyString token sorts by its bytes (cluster time first, then the rest), and only one more than
    FUTURE_SLACK_SECONDS past the present counts as beyond it."""
    now = events_db.position(_mongodb(1_700_000_000, 3))
    event = events_db.position(_mongodb(1_700_000_000, 3, "46645F69640064"))
    ahead = events_db.position(_mongodb(1_700_000_000 + events_db.FUTURE_SLACK_SECONDS, 1))
    forged = events_db.position(_mongodb(2**32 - 1, 1))
    assert now is not None and event is not None and ahead is not None and forged is not None
    assert now.seconds == 1_700_000_000
    assert now.at_or_before(event) and event.at_or_before(ahead) and not ahead.at_or_before(event)
    assert not events_db.beyond(ahead, now) and events_db.beyond(forged, now)


def test_tokens_without_a_position_are_never_compared() -> None:
    """Tokens this code cannot place (not hex, an unknown layout, another database's kind) have no
    position or compare as neither before nor beyond."""
    assert events_db.position({"_data": "zz"}) is None
    assert events_db.position({"_data": "00ff"}) is None
    assert events_db.position({"_data": b"\x82"}) is None
    secantus, mongodb = events_db.position(_secantus(1)), events_db.position(_mongodb(1, 1))
    assert secantus is not None and mongodb is not None
    assert not secantus.at_or_before(mongodb) and not mongodb.at_or_before(secantus)
    assert not events_db.beyond(secantus, mongodb)


def test_only_the_database_refusing_a_token_counts_as_a_bad_cursor() -> None:
    """Token errors (a malformed or unknown token, history lost, another namespace on SecantusDB) are the
    cursor's fault; an Unauthorized about the app's own privileges, or any other error, is not."""
    assert events_db.refused_token(OperationFailure("bad", 50811)) == 50811
    assert events_db.refused_token(OperationFailure("lost", 286)) == events_db.HISTORY_LOST
    namespace = "Resume token namespace does not match the change-stream watch scope"
    assert events_db.refused_token(OperationFailure(namespace, 13)) == 13
    assert events_db.refused_token(OperationFailure("not authorized on db to execute command", 13)) is None
    assert events_db.refused_token(OperationFailure("interrupted", 11601)) is None
    assert events_db.refused_token(RuntimeError("x")) is None
