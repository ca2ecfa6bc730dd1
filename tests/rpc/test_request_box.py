"""A submission's decoded request is let go of before the core takes the workflow (issue 13).

grpc.aio and the interceptors hold the deserialized request of a unary call until the handler
returns; SubmitWorkflow and AppendTasks decode into a :class:`RequestBox`, so once admitted no
frame refers to the message any more (its protobuf memory leaves before the core's submit and
the commit, the controller's highest point). Checked through the real gRPC server: every request
of those methods is boxed, and when the core's submit arrives the message is referred to by no
frame (it would be if the handler or any caller still held it).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from corral.controller.core import requests as rq
from corral.controller.rpc.request_box import RequestBox, boxed, unbox
from corral.v1 import orchestrator_pb2 as OR
from corral.v1 import types_pb2 as pb
from tests.rpc.conftest import Controller
from tests.rpc.test_chunked_submit import chain, chunked, drain, send


@pytest.fixture
def boxes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[RequestBox[Any], Any]]:
    """Every box the server makes, with its message (kept alive here, in a tuple: not a frame)."""
    made: list[tuple[RequestBox[Any], Any]] = []
    real_init = RequestBox.__init__

    def recording(self: RequestBox[Any], message: Any) -> None:
        real_init(self, message)
        made.append((self, message))

    monkeypatch.setattr(RequestBox, "__init__", recording)
    return made


def _frames_holding(message: Any) -> list[str]:
    """What refers to ``message`` besides the fixture's record of it: frames and coroutines
    (suspended Python coroutines and grpc's Cython ones), any container."""
    holders = []
    for referrer in gc.get_referrers(message):  # a loop: a comprehension would make `message` a cell
        if not (isinstance(referrer, tuple) and len(referrer) == 2 and referrer[1] is message):
            holders.append(type(referrer).__name__)
    return holders


@dataclass
class AtSubmit:
    """``probe()`` is called as the core takes each workflow's submission; ``seen`` its answers."""

    probe: Callable[[], Any]
    seen: list[Any] = field(default_factory=list)


@pytest.fixture
def at_submit(controller: Controller, monkeypatch: pytest.MonkeyPatch) -> AtSubmit:
    spy = AtSubmit(lambda: None)
    real_handle = controller.runtime.handle

    async def handle(event: Any, then: Any = None) -> Any:
        if not isinstance(event, rq.SubmitRequest):
            return await real_handle(event, then)

        def probed(machine: Any, answer: Any, now: float) -> Any:
            # In the state loop's tick, while the handler's coroutine waits for the answer: only a
            # suspended coroutine shows its locals to gc.get_referrers.
            spy.seen.append(spy.probe())
            return then(machine, answer, now) if then is not None else answer

        return await real_handle(event, probed)

    monkeypatch.setattr(controller.runtime, "handle", handle)
    return spy


async def test_submit_workflow_lets_go_of_its_request_before_the_core_submit(
    controller: Controller, boxes: list[tuple[RequestBox[Any], Any]], at_submit: AtSubmit
) -> None:
    at_submit.probe = lambda: [(box._message is None, _frames_holding(message)) for box, message in boxes]
    spec = pb.WorkflowSpec(name="let-go", tasks=chain(3))
    answer = await controller.orchestrator.SubmitWorkflow(OR.SubmitWorkflowRequest(spec=spec))
    assert answer.workflow_id
    assert [len(message.spec.tasks) for _, message in boxes] == [3]  # the server boxed it
    assert at_submit.seen == [[(True, [])]]  # out of its box, and no frame holds it


async def test_the_last_chunk_of_an_upload_is_let_go_of_before_the_core_submit(
    controller: Controller, boxes: list[tuple[RequestBox[Any], Any]], at_submit: AtSubmit
) -> None:
    at_submit.probe = lambda: [_frames_holding(message) for _, message in boxes]
    requests = chunked(chain(5), 2, start=True)
    await send(controller, requests[:-1])
    last = asyncio.ensure_future(controller.orchestrator.AppendTasks(requests[-1]))
    await drain(controller, 5)
    assert (await asyncio.wait_for(last, 10)).submitted.workflow_id
    # The three chunks, boxed by the server, are held by nobody; the fourth box is the header the
    # servicer seals them with (no tasks: it stays with the upload's end, which reads its options).
    assert [type(message).__name__ for _, message in boxes] == ["AppendTasksRequest"] * 3 + ["SubmitWorkflowRequest"]
    assert len(boxes[3][1].spec.tasks) == 0
    assert [holders for holders in at_submit.seen[0][:3]] == [[], [], []]


def test_a_box_gives_its_message_once_and_a_bare_message_passes_through() -> None:
    request = OR.SubmitWorkflowRequest(idempotency_key="k")
    box = boxed(OR.SubmitWorkflowRequest)(request.SerializeToString())
    assert unbox(box).idempotency_key == "k"
    with pytest.raises(RuntimeError, match="already taken"):
        box.take()
    assert unbox(request) is request
