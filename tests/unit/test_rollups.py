"""Rollup deltas and the rollup translation: what an event adds, and when rollups cannot answer (no server)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from beanie import PydanticObjectId
from bson.int64 import Int64

from graphql_api.analytics.histograms import duration_bucket, throughput_bucket
from graphql_api.analytics.rollups import delta_of
from graphql_api.analytics.stats import source_for
from graphql_api.db.engineers import bitmap_from, bitmap_of, words_of
from graphql_api.db.events import event_filter
from graphql_api.db.rollups import RollupBucket, RollupDelta, rollup_filter
from graphql_api.documents import DownloadEvent, DownloadMode, DownloadStatus
from graphql_api.queries import Dimension, EventQuery, Interval, StatsRequest, StatsSource

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def make_event(status: DownloadStatus, **fields: object) -> DownloadEvent:
    base: dict[str, object] = {
        "model_id": PydanticObjectId(),
        "model_name": "m",
        "model_version": 2,
        "project_name": "p",
        "size_bytes": 100,
        "engineer": "alice",
        "mode": DownloadMode.STREAM,
        "status": status,
        "started_at": T0 + timedelta(hours=5),
    }
    # Built without validation: a Beanie document needs an initialised database only to be validated.
    return DownloadEvent.model_construct(**{**base, **fields})


def test_a_started_event_counts_one_download_and_its_engineer() -> None:
    """At start an event adds one download, its engineer and its (engineer, model version) pair, and
    nothing about its outcome."""
    delta = delta_of(make_event(DownloadStatus.ISSUED), started=True, finished=False)
    assert delta == RollupDelta(downloads=1, engineers={"alice"}, pairs={("alice", "m", 2)})
    # alice is engineer number 70: bit 6 of word 1.
    assert delta.to_update({"alice": 70}) == {
        "$inc": {"downloads": 1},
        "$bit": {"engineer_bits.1": {"or": Int64(1 << 6)}},
    }


def test_a_completed_event_adds_its_outcome_bytes_and_duration() -> None:
    """At its end a completing event adds completed, bytes, its duration's histogram bucket and maxima."""
    finished = T0 + timedelta(hours=6)
    event = make_event(
        DownloadStatus.COMPLETED, bytes_sent=100, duration_seconds=2.5, finished_at=finished, completes=True
    )
    delta = delta_of(event, started=False, finished=True)
    bucket = duration_bucket(2.5)
    assert delta == RollupDelta(
        completed=1,
        bytes_sent=100,
        duration_count=1,
        duration_sum=2.5,
        duration_hist={bucket: 1},
        throughput_hist={throughput_bucket(100 / 2.5): 1},
        duration_max=2.5,
        last_completed_at=finished,
    )
    update = delta.to_update()
    assert update["$inc"][f"duration_hist.{bucket}"] == 1
    assert update["$max"] == {"duration_max": 2.5, "last_completed_at": finished}


def test_a_partial_fetch_adds_bytes_but_no_completed_download() -> None:
    """A COMPLETED Range fetch that does not complete a download adds its bytes, not a completion."""
    event = make_event(DownloadStatus.COMPLETED, bytes_sent=10, range_start=0, range_end=9, completes=False)
    delta = delta_of(event, started=True, finished=True)
    assert (delta.downloads, delta.completed, delta.bytes_sent, delta.last_completed_at) == (1, 0, 10, None)


def test_deltas_add_up_like_separate_bumps() -> None:
    """Summing deltas (the bulk builder) gives the same totals as applying them one by one."""
    total = RollupDelta()
    for status, duration in [(DownloadStatus.ABORTED, 1.0), (DownloadStatus.FAILED, 3.0)]:
        event = make_event(status, bytes_sent=10, duration_seconds=duration, engineer=status.value)
        total.add(delta_of(event, started=True, finished=True))
    assert (total.downloads, total.aborted, total.failed, total.bytes_sent) == (2, 1, 1, 20)
    assert total.duration_max == 3.0 and total.engineers == {"ABORTED", "FAILED"}
    assert total.last_completed_at is None


def test_engineer_bitmaps_round_trip_through_stored_words() -> None:
    """Engineer numbers → bitmap → signed 64-bit words (only the words in use) → the same bitmap; bit 63 of a
    word is stored as a negative word, and stored and named engineers merge into one set."""
    numbers = [0, 5, 63, 64, 200, 10_000]
    bits = bitmap_from(numbers)
    words = words_of(bits)
    assert sorted(words, key=int) == ["0", "1", "3", "156"] and words["0"] < 0
    assert all(-(1 << 63) <= w < 1 << 63 for w in words.values())
    assert bitmap_of(words) == bits and bits.bit_count() == len(numbers)
    merged = RollupDelta(engineers={"alice", "bob"}, engineer_bits=bits)
    assert merged.bitmap({"alice": 5, "bob": 7}).bit_count() == len(numbers) + 1
    assert words_of(0) == {}


def test_an_event_belongs_to_its_utc_day_bucket() -> None:
    """The bucket key is the UTC day, model, version, project, mode and client kind."""
    bucket = RollupBucket.of(make_event(DownloadStatus.ISSUED))
    assert bucket.key == "2026-03-02|m|2|p|STREAM|UNKNOWN" and bucket.start == T0


def test_rollups_translate_only_what_they_keep() -> None:
    """Model, version, project, mode and midnight bounds translate; engineer, status, bytes do not."""
    assert rollup_filter(EventQuery(model_names=["a", "b"], since=T0, until=T0 + timedelta(days=1))) == {
        "model_name": {"$in": ["a", "b"]},
        "day": {"$gte": T0, "$lt": T0 + timedelta(days=1)},
    }
    for query in (
        EventQuery(engineers=["alice"]),
        EventQuery(statuses=[DownloadStatus.COMPLETED]),
        EventQuery(min_bytes=0),
        EventQuery(since=T0 + timedelta(hours=1)),
    ):
        assert rollup_filter(query) is None, query


@dataclass
class ExtendedQuery(EventQuery):
    """EventQuery with a filter field added later that nobody taught the rollups."""

    color: str | None = None


def test_a_new_filter_field_falls_back_to_raw() -> None:
    """A filter field the rollup translation does not know makes the answer RAW instead of being dropped."""
    plain = StatsRequest(
        query=EventQuery(model_names=["m"]), group_by=[Dimension.MODEL], interval=Interval.DAY
    )
    assert source_for(plain) is StatsSource.ROLLUP
    extended = StatsRequest(
        query=ExtendedQuery(model_names=["m"], color="red"), group_by=[Dimension.MODEL], interval=Interval.DAY
    )
    assert source_for(extended) is StatsSource.RAW
    assert rollup_filter(ExtendedQuery(color=None)) == {}  # an unset field costs nothing


def test_raw_events_refuse_an_untranslatable_field_loudly() -> None:
    """Raw events hold every field, so a filter field without a translation there is a bug, not a no-op."""
    try:
        event_filter(ExtendedQuery(color="red"))
    except TypeError as exc:
        assert "no translation" in str(exc)
    else:
        raise AssertionError("the color filter was silently dropped")


def test_stats_shapes_rollups_cannot_answer() -> None:
    """Exact stats, engineer or status dimensions, HOUR buckets and other time zones go to RAW."""
    since = T0 - timedelta(days=1)
    base = {"query": EventQuery(since=since), "group_by": [Dimension.MODEL]}
    assert source_for(StatsRequest(**base)) is StatsSource.ROLLUP  # type: ignore[arg-type]
    for extra in (
        {"exact": True},
        {"group_by": [Dimension.ENGINEER]},
        {"group_by": [Dimension.STATUS]},
        {"interval": Interval.HOUR},
        {"time_zone": "Europe/Paris"},
    ):
        assert source_for(StatsRequest(**{**base, **extra})) is StatsSource.RAW, extra  # type: ignore[arg-type]


def test_a_range_splits_into_raw_minutes_whole_hours_and_whole_days() -> None:
    """[since, until) is cut at hour and day edges; the pieces cover it exactly, each source its own part."""
    from graphql_api.analytics.hybrid import split

    since, until = T0 + timedelta(hours=5, minutes=7), T0 + timedelta(days=3, hours=2, minutes=30)
    pieces = split(since, until)
    assert pieces.raw == [(since, T0 + timedelta(hours=6)), (T0 + timedelta(days=3, hours=2), until)]
    assert pieces.hours == [
        (T0 + timedelta(hours=6), T0 + timedelta(days=1)),
        (T0 + timedelta(days=3), T0 + timedelta(days=3, hours=2)),
    ]
    assert pieces.days == [(T0 + timedelta(days=1), T0 + timedelta(days=3))]
    inside = split(T0 + timedelta(minutes=5), T0 + timedelta(hours=3, minutes=1))
    assert inside.days == [] and inside.hours == [(T0 + timedelta(hours=1), T0 + timedelta(hours=3))]
    assert split(T0 + timedelta(minutes=5), T0 + timedelta(minutes=9)).raw == [
        (T0 + timedelta(minutes=5), T0 + timedelta(minutes=9))
    ]
    open_ended = split(since, None)
    assert open_ended.days == [(T0 + timedelta(days=1), None)] and open_ended.raw == [
        (since, T0 + timedelta(hours=6))
    ]


def test_ranges_off_midnights_go_hybrid_unless_something_else_needs_raw() -> None:
    """A range off midnights is HYBRID; with an engineer filter, HOUR buckets or exact it stays RAW."""
    since = T0 + timedelta(hours=3)
    base = StatsRequest(query=EventQuery(since=since), group_by=[Dimension.MODEL], interval=Interval.DAY)
    assert source_for(base) is StatsSource.HYBRID
    assert (
        source_for(StatsRequest(query=EventQuery(since=since, engineers=["a"]), group_by=[]))
        is StatsSource.RAW
    )
    assert source_for(StatsRequest(query=EventQuery(since=since), group_by=[], exact=True)) is StatsSource.RAW
