"""A big workflow is admitted off the event loop: the controller answers other calls meanwhile."""

from __future__ import annotations

import asyncio

from corral.v1 import orchestrator_pb2 as opb
from corral.v1 import types_pb2 as pb
from tests.rpc.conftest import Controller

TASKS = 30_000  # over _ADMIT_INLINE_TASKS: seconds of admission on this machine class


async def test_other_calls_are_served_while_a_big_workflow_is_admitted(controller: Controller) -> None:
    spec = pb.WorkflowSpec(name="big")
    for i in range(TASKS):
        spec.tasks.add(name=f"t{i:05d}", agent_type="ext", payload_json=b'{"i": 1}')
    submit = asyncio.ensure_future(controller.orchestrator.SubmitWorkflow(opb.SubmitWorkflowRequest(spec=spec)))
    served = 0
    while not submit.done():
        await controller.orchestrator.ListWorkflows(opb.ListWorkflowsRequest(limit=1))
        served += 1
    answer = await submit
    assert answer.workflow_id
    # With admission on the loop, calls queue behind it and at most one lands before the answer.
    assert served >= 3, f"only {served} calls were answered while the workflow was admitted"
