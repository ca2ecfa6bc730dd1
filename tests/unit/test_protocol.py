"""Issue 12: address lists, leader hints, protocol versions and which calls may be sent twice."""

from __future__ import annotations

import pytest

from corral.controller.sdk.follow import retry_safe
from corral.protocol import (
    LEADER_METADATA,
    MAX_ADDRESSES,
    PROTOCOL_METADATA,
    UNVERSIONED,
    leader_hint,
    parse_addresses,
    peer_version,
    refusal,
)
from corral.v1 import orchestrator_pb2, scheduler_pb2


def test_an_address_list_is_split_stripped_and_deduplicated_in_order() -> None:
    assert parse_addresses("a:7070") == ("a:7070",)
    assert parse_addresses(" b:1 , a:2,b:1 ") == ("b:1", "a:2")
    assert parse_addresses("[::1]:7070,unix:/run/corral.sock") == ("[::1]:7070", "unix:/run/corral.sock")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no controller address"),
        ("  ", "no controller address"),
        ("a:1,,b:2", "an empty address"),
        ("a:1,", "an empty address"),
        ("a 1:2", "not a controller address"),
        ("x" * 300, "not a controller address"),
        (",".join(f"h{i}:1" for i in range(MAX_ADDRESSES + 1)), "over the limit"),
    ],
)
def test_a_bad_address_list_is_refused_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_addresses(text)


def test_the_leader_hint_distinguishes_absent_unknown_and_known() -> None:
    assert leader_hint(None) is None
    assert leader_hint((("other", "x"),)) is None  # not a standby's answer
    assert leader_hint(((LEADER_METADATA, ""),)) == ""  # a standby that knows no leader
    assert leader_hint(((LEADER_METADATA, " ctl-2:7070 "),)) == "ctl-2:7070"
    assert leader_hint(((LEADER_METADATA, b"ctl-3:7070"),)) == "ctl-3:7070"
    # Followed blindly, so anything but one plain address counts as "unknown".
    assert leader_hint(((LEADER_METADATA, "a:1,b:2"),)) == ""
    assert leader_hint(((LEADER_METADATA, "evil host:1"),)) == ""


def test_the_peer_version_comes_from_metadata() -> None:
    assert peer_version(()) == UNVERSIONED
    assert peer_version(((PROTOCOL_METADATA, "12"),)) == 12
    assert peer_version(((PROTOCOL_METADATA, "x"),)) == -1
    assert peer_version(((PROTOCOL_METADATA, "9" * 20),)) == -1
    assert refusal(-1, "client") is not None and "unreadable" in str(refusal(-1, "client"))


def test_only_reads_idempotent_starts_and_keyed_writes_are_sent_twice() -> None:
    assert retry_safe("GetWorkflowStatus", None) and retry_safe("ExecuteWorkflow", None)
    assert not retry_safe("CancelWorkflow", None) and not retry_safe("CreateToken", None)
    assert not retry_safe("GetNextTask", None)  # a pull hands out work: not a read
    assert not retry_safe("SubmitWorkflow", orchestrator_pb2.SubmitWorkflowRequest())
    assert retry_safe("SubmitWorkflow", orchestrator_pb2.SubmitWorkflowRequest(idempotency_key="k"))
    assert retry_safe("ScheduleTask", scheduler_pb2.ScheduleTaskRequest(idempotency_key="k"))
