"""The checked-in protobuf stubs must match what `make protos` generates from the .proto files."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUBS = ROOT / "protos" / "corral" / "v1"


def test_checked_in_stubs_are_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "tools" / "gen_protos.sh"), str(tmp_path)],
        check=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    generated = sorted(p.name for p in (tmp_path / "corral" / "v1").glob("*_pb2*.py*"))
    checked_in = sorted(p.name for p in STUBS.glob("*_pb2*.py*"))
    assert generated == checked_in, "stub files differ: run `make protos` and commit"
    stale = [
        name for name in generated if (tmp_path / "corral" / "v1" / name).read_bytes() != (STUBS / name).read_bytes()
    ]
    assert not stale, f"stale stubs {stale}: run `make protos` and commit the result"


def test_every_service_in_the_contract_is_served() -> None:
    """Every service the .proto files declare is registered on the server (and nothing else)."""
    from corral.controller.server import SERVICE_NAMES

    modules = [importlib.import_module(f"corral.v1.{proto.stem}_pb2") for proto in STUBS.glob("*.proto")]
    declared = {service.full_name for module in modules for service in module.DESCRIPTOR.services_by_name.values()}
    assert declared == set(SERVICE_NAMES)


def test_no_rpc_is_left_unimplemented() -> None:
    """Every method of every generated servicer base is overridden (none answers UNIMPLEMENTED)."""
    from corral.controller.rpc.admin import AdminService
    from corral.controller.rpc.cluster import ClusterService
    from corral.controller.rpc.gateway import AgentGatewayService
    from corral.controller.rpc.orchestrator import OrchestratorService
    from corral.controller.rpc.scheduler import SchedulerService

    for service in (OrchestratorService, SchedulerService, AgentGatewayService, ClusterService, AdminService):
        # The generated base (servicers may add mixins of their own, e.g. RunsServicer).
        base = next(b for b in service.__mro__ if b.__module__.endswith("_pb2_grpc"))
        rpcs = [name for name in vars(base) if name[0].isupper()]
        assert rpcs, base
        missing = [name for name in rpcs if getattr(service, name) is getattr(base, name)]
        assert not missing, f"{service.__name__} leaves {missing} unimplemented"
