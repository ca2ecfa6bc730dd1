"""AnalyzeDependencies with its insights: redundant dependencies and immediate dominators."""

from __future__ import annotations

from corral.v1 import scheduler_pb2 as S
from tests.rpc.conftest import Controller, shell_task, workflow_spec


async def test_redundant_dependencies_and_dominators_are_reported(controller: Controller) -> None:
    spec = workflow_spec(
        "etl",
        [
            shell_task("extract"),
            shell_task("clean", "extract"),
            # "extract" is already implied through "clean".
            shell_task("load", "clean", "extract"),
            shell_task("report", "load"),
            shell_task("audit"),
        ],
    )
    response = await controller.scheduler.AnalyzeDependencies(S.AnalyzeDependenciesRequest(spec=spec))
    assert [(getattr(e, "from"), e.to) for e in response.redundant_edges] == [("extract", "load")]
    # load is reached directly from extract too, so extract (not clean) dominates it.
    assert dict(response.immediate_dominators) == {"clean": "extract", "load": "extract", "report": "load"}
    assert list(response.roots) == ["extract", "audit"]
    assert controller.stored() == (0, 0)
