"""The staging of chunked submissions (issue 13): pure bookkeeping, time given by the test."""

from __future__ import annotations

import pytest

from corral.controller.core.dynamic import MAX_WORKFLOW_TASKS
from corral.controller.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from corral.controller.rpc.staging import Staging, StagingLimits
from corral.controller.spec import Limits, WorkflowSpec

HEADER = b"header"


def test_the_task_limits_agree_and_allow_a_million() -> None:
    assert Limits.max_tasks == MAX_WORKFLOW_TASKS == 1_000_000
    assert WorkflowSpec.model_fields["tasks"].metadata[-1].max_length == Limits.max_tasks
    assert Limits.max_message_bytes == 64 * 1024 * 1024  # one message stays bounded


def test_chunks_in_order_complete_an_upload_and_take_hands_them_over() -> None:
    staging = Staging()
    upload = staging.append("alice", "u1", 0, 3, b"aa", 2, HEADER, now=0.0)
    staging.append("alice", "u1", 1, 3, b"bbb", 3, b"", now=1.0)
    assert not staging.complete(upload) and staging.staged_bytes == len(HEADER) + 5
    staging.append("alice", "u1", 2, 3, b"c", 1, b"", now=2.0)
    assert staging.complete(upload) and (upload.received, upload.tasks) == (3, 6)
    assert staging.take(upload) == (HEADER, [b"aa", b"bbb", b"c"])
    assert staging.staged_bytes == 0 and upload.sealing
    staging.sealed(upload, "wf-1", now=3.0)
    # Any chunk sent again after the seal finds the workflow it became.
    assert staging.append("alice", "u1", 2, 3, b"c", 1, b"", now=4.0).workflow_id == "wf-1"


def test_a_retried_chunk_is_accepted_once_and_other_content_is_refused() -> None:
    staging = Staging()
    staging.append("alice", "u1", 0, 3, b"aa", 2, HEADER, now=0.0)
    again = staging.append("alice", "u1", 0, 3, b"aa", 2, HEADER, now=0.5)
    assert (again.received, again.tasks) == (1, 2)
    with pytest.raises(FailedPrecondition, match="other content"):
        staging.append("alice", "u1", 0, 3, b"aa", 2, b"another header", now=0.6)
    with pytest.raises(FailedPrecondition, match="other content"):
        staging.append("alice", "u1", 0, 3, b"xx", 2, HEADER, now=0.7)
    with pytest.raises(FailedPrecondition, match="out of order: chunk 1 is next"):
        staging.append("alice", "u1", 2, 3, b"c", 1, b"", now=0.8)
    with pytest.raises(InvalidArgument, match="opened with 3"):
        staging.append("alice", "u1", 1, 4, b"b", 1, b"", now=0.9)


def test_uploads_belong_to_their_owner() -> None:
    staging = Staging()
    staging.append("alice", "u1", 0, 2, b"a", 1, HEADER, now=0.0)
    with pytest.raises(NotFound, match="resubmit"):
        staging.append("mallory", "u1", 1, 2, b"b", 1, b"", now=1.0)
    assert staging.append("alice", "u1", 1, 2, b"b", 1, b"", now=1.0).received == 2


def test_an_idle_upload_expires_and_its_next_chunk_is_not_found() -> None:
    staging = Staging(StagingLimits(idle_s=300.0))
    staging.append("alice", "u1", 0, 3, b"aa", 2, HEADER, now=0.0)
    staging.append("alice", "u1", 1, 3, b"bb", 2, b"", now=200.0)  # activity renews the upload
    assert staging.expire(now=499.0) == 0
    assert staging.expire(now=500.0) == 1 and staging.staged_bytes == 0
    with pytest.raises(NotFound, match="expired or unknown"):
        staging.append("alice", "u1", 2, 3, b"c", 1, b"", now=501.0)


def test_an_upload_being_sealed_does_not_expire() -> None:
    staging = Staging(StagingLimits(idle_s=10.0))
    upload = staging.append("alice", "u1", 0, 1, b"a", 1, HEADER, now=0.0)
    staging.take(upload)
    assert staging.expire(now=100.0) == 0
    with pytest.raises(FailedPrecondition, match="being sealed"):
        staging.append("alice", "u1", 0, 1, b"a", 1, HEADER, now=100.0)


def test_over_max_tasks_aborts_the_upload_for_good() -> None:
    staging = Staging(StagingLimits(max_tasks=5))
    with pytest.raises(InvalidArgument, match="over max_tasks=5"):
        staging.append("alice", "big", 0, 1, b"x", 6, HEADER, now=0.0)  # never opened
    staging.append("alice", "u1", 0, 3, b"aaa", 3, HEADER, now=0.0)
    with pytest.raises(InvalidArgument, match="6 tasks in the upload, over max_tasks=5"):
        staging.append("alice", "u1", 1, 3, b"bbb", 3, b"", now=1.0)
    assert staging.staged_bytes == 0  # its chunks are released at once
    with pytest.raises(FailedPrecondition, match="aborted: 6 tasks"):
        staging.append("alice", "u1", 2, 3, b"c", 1, b"", now=2.0)


def test_open_uploads_and_staged_bytes_are_bounded() -> None:
    staging = Staging(StagingLimits(max_open=2, max_bytes=100))
    staging.append("alice", "u1", 0, 2, b"a", 1, HEADER, now=0.0)
    staging.append("alice", "u2", 0, 2, b"a", 1, HEADER, now=0.0)
    with pytest.raises(ResourceExhausted, match="max_open_uploads=2"):
        staging.append("alice", "u3", 0, 2, b"a", 1, HEADER, now=0.0)
    staging.append("bob", "u1", 0, 2, b"a", 1, HEADER, now=0.0)  # per caller
    with pytest.raises(ResourceExhausted, match="max_staged_bytes=100"):
        staging.append("bob", "u1", 1, 2, b"x" * 80, 1, b"", now=0.0)
    assert staging.append("bob", "u1", 1, 2, b"x" * 70, 1, b"", now=0.0).received == 2  # still open, no harm


def test_chunk_numbering_is_checked() -> None:
    staging = Staging(StagingLimits(max_chunks=4))
    with pytest.raises(InvalidArgument, match="max_upload_chunks=4"):
        staging.append("alice", "u1", 0, 5, b"", 0, HEADER, now=0.0)
    with pytest.raises(InvalidArgument, match="between 1 and"):
        staging.append("alice", "u1", 0, 0, b"", 0, HEADER, now=0.0)
    with pytest.raises(InvalidArgument, match=r"0 \.\. 2"):
        staging.append("alice", "u1", 3, 3, b"", 0, b"", now=0.0)
    with pytest.raises(NotFound):
        staging.append("alice", "u1", 1, 3, b"", 0, b"", now=0.0)
