"""The agent's side of the join-token flow, and how it takes a refusal, against a real gRPC gateway.

The controller's Join (token scope, name pattern, use counts) is tested with the auth interceptor;
here a small real AgentGateway server in the test process plays the controller's part of the
protocol, so the real agent process is observed from the other end of the wire: what it sends in
Join, which credential it presents on Connect, what it stores, how often it retries.
"""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from corral.controller.certs import init_dir
from corral.v1 import agent_pb2, agent_pb2_grpc
from tests.procs import start_agent, stop

pytestmark = pytest.mark.e2e

WAIT_S = 30.0
GOOD_TOKEN = "join-123"


class Gateway(agent_pb2_grpc.AgentGatewayServicer):
    """Join hands out ``cred-<name>`` for GOOD_TOKEN; Connect welcomes only that credential.

    ``taken`` makes Connect answer ALREADY_EXISTS, as the controller does for a live identity.
    """

    def __init__(self, *, taken: bool = False) -> None:
        self.taken = taken
        self.joins: list[tuple[float, str, str]] = []  # (monotonic time, token, name)
        self.connects: list[tuple[float, str]] = []  # (monotonic time, authorization metadata)
        self.hellos: list[agent_pb2.Hello] = []

    async def Join(self, request: agent_pb2.JoinRequest, context: Any) -> agent_pb2.JoinResponse:
        self.joins.append((time.monotonic(), request.join_token, request.name))
        if request.join_token != GOOD_TOKEN:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "join token not valid")
        return agent_pb2.JoinResponse(
            agent_id=request.name, credential=f"cred-{request.name}", labels={"pool": "batch"}, agent_types=["shell"]
        )

    async def Connect(
        self, request_iterator: AsyncIterator[agent_pb2.AgentMessage], context: Any
    ) -> AsyncIterator[agent_pb2.ControllerMessage]:
        metadata = {key: value for key, value in context.invocation_metadata()}
        self.connects.append((time.monotonic(), str(metadata.get("authorization", ""))))
        if self.taken:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, "agent j1 is connected from another address")
        if not str(metadata.get("authorization", "")).startswith("Bearer cred-"):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no agent credential")
        async for message in request_iterator:
            if message.WhichOneof("kind") == "hello":
                self.hellos.append(message.hello)
                welcome = agent_pb2.Welcome(agent_id=message.hello.agent_id, session_epoch=1, heartbeat_interval_s=1)
                yield agent_pb2.ControllerMessage(welcome=welcome)


async def _serve(gateway: Gateway, credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentGatewayServicer_to_server(gateway, server)
    listen = "127.0.0.1:0"
    port = server.add_insecure_port(listen) if credentials is None else server.add_secure_port(listen, credentials)
    await server.start()
    return server, f"127.0.0.1:{port}"


async def _until(check: Callable[[], object], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_join_once_store_the_credential_and_reuse_it(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    init_dir(pki)
    gateway = Gateway()
    tls = grpc.ssl_server_credentials(
        [((pki / "controller-key.pem").read_bytes(), (pki / "controller.pem").read_bytes())]
    )
    server, address = await _serve(gateway, tls)
    flags = ["--types", "shell", "--ca", str(pki / "ca.pem"), "--join-token", GOOD_TOKEN]
    credential = tmp_path / "work-j1" / "credential.json"
    try:
        agent = start_agent(tmp_path, address, "j1", extra=flags)
        try:
            await _until(lambda: gateway.hellos, "the agent's Hello after joining")
        finally:
            stop(agent)
        assert [(token, name) for _, token, name in gateway.joins] == [(GOOD_TOKEN, "j1")]
        assert gateway.connects[-1][1] == "Bearer cred-j1"
        assert gateway.hellos[0].agent_id == "j1"
        assert stat.S_IMODE(credential.stat().st_mode) == 0o600
        assert json.loads(credential.read_text()) == {"name": "j1", "agent_id": "j1", "credential": "cred-j1"}

        # A restart presents the stored credential and does not join again.
        agent = start_agent(tmp_path, address, "j1", extra=flags)
        try:
            await _until(lambda: len(gateway.hellos) == 2, "the restarted agent's Hello")
        finally:
            stop(agent)
        assert len(gateway.joins) == 1
        assert gateway.connects[-1][1] == "Bearer cred-j1"
    finally:
        await server.stop(None)


@pytest.mark.parametrize(
    ("taken", "flags", "line"),
    [
        (False, ["--join-token", "wrong"], "the controller refused this agent (UNAUTHENTICATED: join token not valid)"),
        (False, [], "the controller refused this agent (UNAUTHENTICATED: no agent credential)"),
        (True, ["--join-token", GOOD_TOKEN], "another live agent is connected as 'j1'"),
    ],
    ids=["bad-join-token", "no-credentials", "identity-in-use"],
)
async def test_a_refusal_is_one_log_line_and_backoff(tmp_path: Path, taken: bool, flags: list[str], line: str) -> None:
    gateway = Gateway(taken=taken)
    server, address = await _serve(gateway)
    attempts = gateway.connects if not flags or taken else gateway.joins
    try:
        agent = start_agent(tmp_path, address, "j1", extra=["--types", "shell", *flags])
        try:
            await _until(lambda: len(attempts) >= 3, "three attempts")
            assert agent.poll() is None  # it keeps trying; it does not exit
        finally:
            stop(agent)
    finally:
        await server.stop(None)
    log = (tmp_path / "agent-j1.log").read_text()
    assert log.count(line) == 1, log  # one line however many retries
    times = [entry[0] for entry in attempts]
    # Backoff after a refusal waits at least 0.5 s, then at least 1 s: three attempts take >= 1.5 s.
    assert times[2] - times[0] >= 1.0, times
    assert not gateway.hellos


def test_unusable_tls_settings_stop_the_agent_at_start(tmp_path: Path) -> None:
    from corral.controller.certs import agent_grant, issue_identity

    init_dir(tmp_path)
    issue_identity(tmp_path, "a1", agent_grant())
    ca, cert, key = (str(tmp_path / n) for n in ("ca.pem", "a1.pem", "a1-key.pem"))
    base = [sys.executable, "-m", "corral.agent", "--controller", "127.0.0.1:1", "--work-dir", str(tmp_path / "w")]
    cases = [
        (["--ca", ca, "--cert", cert, "--key", key, "--name", "a2"], "--name 'a2' is not the name in --cert ('a1')"),
        (["--cert", cert, "--key", key], "--cert needs --ca"),
        (["--ca", ca, "--cert", cert], "--cert and --key go together"),
        (["--ca", str(tmp_path / "missing.pem")], "--ca"),
    ]
    for flags, message in cases:
        done = subprocess.run([*base, *flags], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 2 and message in done.stderr, (flags, done.stderr)
    # Without --name, the certificate names the agent.
    from corral.agent.cli import build_parser, config_from_args

    config = config_from_args(build_parser().parse_args(["--ca", ca, "--cert", cert, "--key", key]))
    assert config.name == "a1"
