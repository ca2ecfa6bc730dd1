"""What the SDK and the CLI put on the wire: the bearer token on every call, the env defaults, bad settings.

A real gRPC server in the test process records the metadata of each call it receives, so the
assertions are about what actually arrived, over plaintext (``--auth`` without TLS) and over TLS.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from corral.controller.certs import init_dir
from corral.controller.sdk import Client
from corral.controller.sdk.errors import InvalidArgumentError
from corral.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tests.procs import corral


class Recorder(orchestrator_pb2_grpc.OrchestratorServicer):
    """ListWorkflows answers an empty page and keeps each call's authorization metadata."""

    def __init__(self) -> None:
        self.authorization: list[str | None] = []

    async def ListWorkflows(self, request: Any, context: Any) -> orchestrator_pb2.ListWorkflowsResponse:
        metadata = dict(context.invocation_metadata())
        self.authorization.append(metadata.get("authorization"))
        return orchestrator_pb2.ListWorkflowsResponse()


@pytest.fixture
async def plaintext() -> AsyncIterator[tuple[str, Recorder]]:
    recorder = Recorder()
    server = grpc.aio.server()
    orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", recorder
    finally:
        await server.stop(None)


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("CORRAL_CA", "CORRAL_CERT", "CORRAL_KEY", "CORRAL_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch


async def test_the_token_goes_with_every_call_over_plaintext(
    plaintext: tuple[str, Recorder], no_env: pytest.MonkeyPatch
) -> None:
    address, recorder = plaintext
    async with Client(address, token="tok-1") as client:
        await client.list_workflows()
        await client.list_workflows()
    no_env.setenv("CORRAL_TOKEN", "tok-env")
    async with Client(address) as client:
        await client.list_workflows()
    async with Client(address, token="") as client:  # "" ignores the variable
        await client.list_workflows()
    assert recorder.authorization == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-env", None]


async def test_the_cli_sends_the_global_token(plaintext: tuple[str, Recorder]) -> None:
    address, recorder = plaintext
    # In a thread: the server answers on this test's event loop.
    by_flag = await asyncio.to_thread(corral, "--token", "tok-cli", "list", "-a", address)
    by_env = await asyncio.to_thread(corral, "list", "-a", address, env={"CORRAL_TOKEN": "tok-cli-env"})
    assert by_flag.returncode == 0 and by_env.returncode == 0, by_flag.stderr + by_env.stderr
    assert recorder.authorization == ["Bearer tok-cli", "Bearer tok-cli-env"]


async def test_tls_with_a_token(tmp_path: Path, no_env: pytest.MonkeyPatch) -> None:
    init_dir(tmp_path)
    recorder = Recorder()
    server = grpc.aio.server()
    orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(recorder, server)
    credentials = grpc.ssl_server_credentials(
        [((tmp_path / "controller-key.pem").read_bytes(), (tmp_path / "controller.pem").read_bytes())]
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        no_env.setenv("CORRAL_CA", str(tmp_path / "ca.pem"))
        async with Client(f"127.0.0.1:{port}", token="tok-tls") as client:
            assert client.credentials.tls
            await client.list_workflows()
    finally:
        await server.stop(None)
    assert recorder.authorization == ["Bearer tok-tls"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ca": "/nonexistent/ca.pem"}, "ca"),
        ({"ca": "CA", "cert": "CA"}, "key"),
        ({"ca": "CA", "key": "CA"}, "cert"),
        ({"cert": "CA", "key": "CA"}, "ca"),
        ({"token": "two words"}, "token"),
        ({"token": "caf\u00e9"}, "token"),
    ],
)
def test_unusable_settings_are_refused_at_once(
    tmp_path: Path, no_env: pytest.MonkeyPatch, kwargs: dict[str, str], field: str
) -> None:
    init_dir(tmp_path)
    resolved = {k: str(tmp_path / "ca.pem") if v == "CA" else v for k, v in kwargs.items()}
    with pytest.raises(InvalidArgumentError) as info:
        Client("127.0.0.1:1", **resolved)  # type: ignore[arg-type]
    assert [v.field for v in info.value.violations] == [field]


def test_the_cli_reports_unusable_settings_in_one_place(tmp_path: Path) -> None:
    result = corral("--cert", str(tmp_path / "c.pem"), "list", "-a", "127.0.0.1:1")
    assert result.returncode == 2
    assert "unusable --ca/--cert/--key/--token" in result.stderr and "key:" in result.stderr
