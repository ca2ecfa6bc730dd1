"""Learned durations: preference order, EWMA, fingerprints, LRU eviction and its store changes."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.controller.core.durations import (
    DurationBook,
    DurationChanges,
    DurationSource,
    LearnedDuration,
    fingerprint,
)


def test_estimate_beats_history_and_history_beats_fingerprint() -> None:
    book = DurationBook()
    assert book.expected("ns", "wf", "a", 0.0, "python:m:f") == (0.0, DurationSource.STRUCTURAL)
    book.learn("ns", "other-wf", "b", "python:m:f", 8.0, now=1.0)
    assert book.expected("ns", "wf", "a", 0.0, "python:m:f") == (8.0, DurationSource.FINGERPRINT)
    assert book.expected("ns", "wf", "a", 0.0, "") == (0.0, DurationSource.STRUCTURAL)  # level skipped
    book.learn("ns", "wf", "a", "python:m:f", 2.0, now=2.0)
    assert book.expected("ns", "wf", "a", 0.0, "python:m:f") == (2.0, DurationSource.LEARNED)
    assert book.expected("ns", "wf", "a", 30.0, "python:m:f") == (30.0, DurationSource.ESTIMATE)
    # Namespaces do not see each other's history.
    assert book.expected("other-ns", "wf", "a", 0.0, "python:m:f")[1] is DurationSource.STRUCTURAL


def test_ewma_follows_runs_with_weight_alpha() -> None:
    book = DurationBook(alpha=0.3)
    book.learn("ns", "wf", "a", "", 10.0, now=1.0)
    book.learn("ns", "wf", "a", "", 20.0, now=2.0)
    book.learn("ns", "wf", "a", "", 20.0, now=3.0)
    seconds, _ = book.expected("ns", "wf", "a", 0.0, "")
    assert seconds == pytest.approx(10.0 + 3.0 + 0.3 * (20.0 - 13.0))
    entry = book.get(("task", "ns", "wf", "a"))
    assert entry is not None and entry.samples == 3 and entry.updated_at == 3.0


def test_usage_is_learned_alongside_and_a_run_without_it_keeps_it() -> None:
    book = DurationBook(alpha=0.5)
    assert book.usage("ns", "wf", "a") is None
    book.learn("ns", "wf", "a", "python:m:f", 1.0, now=1.0)  # measured nothing
    assert book.usage("ns", "wf", "a") is None
    book.learn("ns", "wf", "a", "python:m:f", 1.0, now=2.0, peak_rss_bytes=100 << 20, cpu_s=2.0)
    book.learn("ns", "wf", "a", "python:m:f", 1.0, now=3.0, peak_rss_bytes=200 << 20, cpu_s=4.0)
    book.learn("ns", "wf", "a", "python:m:f", 1.0, now=4.0)  # an agent without the meter
    entry = book.usage("ns", "wf", "a")
    assert entry is not None
    assert (entry.peak_rss_bytes, entry.cpu_s) == (150 << 20, 3.0)
    printed = book.get(("fingerprint", "ns", "", "python:m:f"))
    assert printed is not None and printed.peak_rss_bytes == 150 << 20
    book.learn("ns", "wf", "b", "", 1.0, now=5.0, peak_rss_bytes=-5, cpu_s=math.nan)  # garbage: unknown
    assert book.usage("ns", "wf", "b") is None


def test_bad_samples_and_settings_are_refused() -> None:
    book = DurationBook()
    for bad in (math.nan, math.inf, -1.0):
        book.learn("ns", "wf", "a", "", bad, now=1.0)
    assert len(book) == 0 and not book.take_changes()
    with pytest.raises(ValueError, match="max_entries"):
        DurationBook(max_entries=0)
    with pytest.raises(ValueError, match="alpha"):
        DurationBook(alpha=0.0)


def _names(changes: DurationChanges) -> dict[tuple[str, str, str], set[str]]:
    return {group: {entry.name for entry in entries} for group, entries in changes.groups.items()}


def test_the_least_recently_used_group_loses_its_oldest_entries_and_is_rewritten() -> None:
    book = DurationBook(max_entries=3)
    book.learn("ns", "wf", "a", "", 1.0, now=1.0)
    book.learn("ns", "wf", "b", "", 2.0, now=2.0)
    book.learn("ns", "other", "c", "", 3.0, now=3.0)
    assert _names(book.take_changes()) == {("task", "ns", "wf"): {"a", "b"}, ("task", "ns", "other"): {"c"}}
    book.expected("ns", "wf", "a", 0.0, "")  # reading is use: the group "other" is now the oldest
    book.learn("ns", "third", "d", "", 4.0, now=4.0)
    assert book.expected("ns", "other", "c", 0.0, "")[1] is DurationSource.STRUCTURAL
    assert book.expected("ns", "wf", "b", 0.0, "")[1] is DurationSource.LEARNED
    # "other" emptied (sent empty: its row is deleted), "third" gained d.
    assert book.take_changes().groups == {
        ("task", "ns", "other"): (),
        ("task", "ns", "third"): (LearnedDuration("d", 4.0, 1, 4.0),),
    }
    book.learn("ns", "third", "e", "", 5.0, now=5.0)  # over again: wf (least recently used) loses a
    assert book.expected("ns", "wf", "a", 0.0, "")[1] is DurationSource.STRUCTURAL
    assert _names(book.take_changes()) == {("task", "ns", "wf"): {"b"}, ("task", "ns", "third"): {"d", "e"}}
    assert not book.take_changes()  # taken once
    assert len(book) == 3


def test_a_group_emptied_by_eviction_is_sent_empty_for_deletion() -> None:
    book = DurationBook(max_entries=1)
    book.learn("ns", "wf", "a", "", 1.0, now=1.0)
    book.learn("ns", "other", "b", "", 2.0, now=2.0)
    changes = book.take_changes()
    assert changes.groups[("task", "ns", "wf")] == ()
    assert _names(changes)[("task", "ns", "other")] == {"b"}
    assert changes.entries() == 1


def test_fingerprints_of_a_namespace_share_a_group() -> None:
    book = DurationBook()
    book.learn("ns", "wf", "a", "python:m:f", 1.0, now=1.0)
    book.learn("ns", "wf2", "b", "shell:gzip", 2.0, now=2.0)
    groups = _names(book.take_changes())
    assert groups[("fingerprint", "ns", "")] == {"python:m:f", "shell:gzip"}


def test_restore_orders_by_update_time_and_caps() -> None:
    book = DurationBook(max_entries=2)
    book.restore(
        [
            (("task", "ns", "wf"), LearnedDuration("new", 3.0, 1, 30.0)),
            (("task", "ns", "wf"), LearnedDuration("old", 1.0, 1, 10.0)),
            (("task", "ns", "wf"), LearnedDuration("mid", 2.0, 1, 20.0)),
        ]
    )
    assert len(book) == 2
    assert book.expected("ns", "wf", "old", 0.0, "")[1] is DurationSource.STRUCTURAL
    assert _names(book.take_changes()) == {("task", "ns", "wf"): {"new", "mid"}}  # the store drops old too


def test_fingerprints() -> None:
    assert fingerprint("python", b'{"function": "etl.jobs:extract", "args": [1]}') == "python:etl.jobs:extract"
    assert fingerprint("shell", b'{"command": ["/usr/bin/gzip", "-9", "x"]}') == "shell:/usr/bin/gzip"
    assert fingerprint("shell", b'{"shell": "  sort -u in > out"}') == "shell:sort"
    assert fingerprint("gpu-trainer", b'{"model": "x"}') == "gpu-trainer"
    assert fingerprint("python", b"not json") == "python"
    assert fingerprint("shell", b'{"command": []}') == "shell"
    assert len(fingerprint("shell", b'{"command": ["' + b"x" * 5000 + b'"]}')) == len("shell:") + 256


@settings(max_examples=300, deadline=None)
@given(
    st.text(min_size=1, max_size=40),
    st.lists(st.text(max_size=5), max_size=3),
    st.sampled_from([(", ", ": "), (",", ":")]),
    st.booleans(),
)
def test_fingerprint_reads_the_first_key_as_json_would(
    word: str, rest: list[str], separators: tuple[str, str], ascii_only: bool
) -> None:
    """The no-parse path for ``{"function": ...`` / ``{"command": [...`` agrees with a JSON parse."""
    python = json.dumps({"function": word, "args": rest}, separators=separators, ensure_ascii=ascii_only).encode()
    assert fingerprint("python", python) == f"python:{word[:256]}"
    shell = json.dumps({"command": [word, *rest]}, separators=separators, ensure_ascii=ascii_only).encode()
    assert fingerprint("shell", shell) == f"shell:{word[:256]}"


def test_knows_fingerprints_per_namespace_through_learning_eviction_and_restore() -> None:
    book = DurationBook(max_entries=2)
    assert not book.knows_fingerprints("ns")
    book.learn("ns", "wf", "a", "python:m:f", 1.0, now=1.0)  # a task entry and a fingerprint entry
    assert book.knows_fingerprints("ns") and not book.knows_fingerprints("other")
    book.learn("ns", "wf", "b", "", 1.0, now=2.0)  # the fingerprint's group is now the oldest: evicted
    book.learn("ns", "wf", "c", "", 1.0, now=3.0)  # then the task entry a
    assert not book.knows_fingerprints("ns")
    fresh = DurationBook()
    fresh.restore([(("fingerprint", "ns", ""), LearnedDuration("shell:gzip", 2.0, 1, 1.0))])
    assert fresh.knows_fingerprints("ns")
