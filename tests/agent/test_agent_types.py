"""Operator-declared agent types: the runner registry, the config file and the flags."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from corral.agent.cli import build_parser, config_from_args
from corral.agent.config import AgentConfig, read_config_file
from corral.v1 import types_pb2

from .conftest import AgentFactory, ExecutorFactory, FakeGateway, RecordingSink, _assignment, shell_task

SUCCEEDED = types_pb2.ATTEMPT_OUTCOME_SUCCEEDED
FAILED = types_pb2.ATTEMPT_OUTCOME_FAILED
# A declared type whose command takes a script as its first argument (like Rscript -e).
SH = {"sh-e": ("/bin/sh", "-c")}


def declared_task(attempt_id: str, agent_type: str, payload: object) -> types_pb2.TaskAssignment:
    raw = json.dumps(payload).encode()
    return _assignment(attempt_id, agent_type, {}, raw_payload=raw)


async def test_a_declared_type_runs_its_command_with_the_payload_args(
    make_executor: ExecutorFactory, sink: RecordingSink
) -> None:
    executor = await make_executor(declared_types=SH, agent_types=("shell", "python", "sh-e"))
    executor.submit([declared_task("d1", "sh-e", {"args": ['echo "$1 $CORRAL_ATTEMPT_ID" >&2; echo 7', "x", "hi"]})])
    result = await sink.result("d1")
    assert result.outcome == SUCCEEDED and result.result_json == b"7"
    assert sink.stderr("d1") == b"hi d1\n"  # args after the script are its $0, $1...; the task env is set
    assert "d1" in sink.pids


async def test_a_declared_type_runs_under_no_shell(make_executor: ExecutorFactory, sink: RecordingSink) -> None:
    config = AgentConfig(no_shell=True, declared_types=dict(SH), agent_types=("shell",))
    assert config.offered_types == ("sh-e",)
    executor = await make_executor(declared_types=SH, agent_types=config.offered_types, policy=config.policy)
    executor.submit([declared_task("d2", "sh-e", {"args": ["echo 1"]}), shell_task("s2", "echo 1")])
    assert (await sink.result("d2")).outcome == SUCCEEDED
    refused = await sink.result("s2")
    assert refused.outcome == FAILED and not refused.retryable and "--no-shell" in refused.error


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"args": "echo 1"}, "payload.args must be a list of strings"),
        ({"args": [1]}, "payload.args must be a list of strings"),
        ({"shell": "echo 1"}, "payload of agent type 'sh-e' takes only args, env and cwd; got shell"),
        ([1], "payload must be a JSON object"),
        ({"args": ["true"], "cwd": "../.."}, "cwd"),
    ],
)
async def test_a_bad_declared_payload_fails_without_retry(
    make_executor: ExecutorFactory, sink: RecordingSink, payload: object, error: str
) -> None:
    executor = await make_executor(declared_types=SH, agent_types=("sh-e",))
    executor.submit([declared_task("bad", "sh-e", payload)])
    result = await sink.result("bad")
    assert result.outcome == FAILED and not result.retryable
    assert error in result.error
    assert "bad" not in sink.pids  # nothing started


async def test_an_unknown_type_fails_without_retry(make_executor: ExecutorFactory, sink: RecordingSink) -> None:
    executor = await make_executor(declared_types=SH, agent_types=("shell", "sh-e"))
    executor.submit([declared_task("u", "rscript", {"args": []})])
    result = await sink.result("u")
    assert result.outcome == FAILED and not result.retryable
    assert result.error == "agent type 'rscript' is not offered here"


async def test_declared_types_are_offered_in_hello(make_agent: AgentFactory, gateway: FakeGateway) -> None:
    await make_agent(declared_types={"rscript": ("Rscript", "-e")})
    conn = await gateway.connection()
    assert list(conn.hello.agent_types) == ["shell", "python", "rscript"]


# -- configuration --------------------------------------------------------------------------------------


def test_config_file_and_flags(tmp_path: Path) -> None:
    config_file = tmp_path / "agent.toml"
    config_file.write_text(
        '[agent_types.rscript]\ncommand = ["Rscript", "-e"]\n\n[agent_types.julia]\ncommand = ["julia", "-e"]\n'
    )
    args = build_parser().parse_args(
        ["--config", str(config_file), "--agent-type", "julia=/opt/julia/bin/julia --startup-file=no -e"]
    )
    config = config_from_args(args)
    # The flag wins over the file for the same name.
    assert config.declared_types == {
        "rscript": ("Rscript", "-e"),
        "julia": ("/opt/julia/bin/julia", "--startup-file=no", "-e"),
    }
    assert config.offered_types == ("shell", "python", "rscript", "julia")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[agent_types.r]\ncommand = []\n", "the command of agent type 'r' must be a non-empty list of strings"),
        ('[agent_types.r]\ncommand = "Rscript"\n', "must be a non-empty list of strings"),
        ("[agent_types.r]\nargs = []\n", "agent_types.r: unknown key 'args' (known: command)"),
        ("[agent_types.r]\n", "agent_types.r needs a command"),
        ('[agent_types.shell]\ncommand = ["sh"]\n', "'shell' is a built-in agent type"),
        ('[agent_types."bad name"]\ncommand = ["x"]\n', "is not a valid name"),
        ('slots = 3\n[agent_types.r]\ncommand = ["x"]\n', "unknown key 'slots' (known: agent_types)"),
        ("agent_types = 3\n", "agent_types must be a table"),
        ("[agent_types\n", "not valid TOML"),
    ],
)
def test_bad_config_files_are_refused_precisely(tmp_path: Path, text: str, error: str) -> None:
    config_file = tmp_path / "agent.toml"
    config_file.write_text(text)
    with pytest.raises(ValueError, match="--config") as raised:
        read_config_file(config_file)
    assert error in str(raised.value)


def test_a_missing_config_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="No such file"):
        read_config_file(tmp_path / "missing.toml")


@pytest.mark.parametrize("flag", ["noequals", "=cmd", "r=", "r='unclosed"])
def test_bad_agent_type_flags_are_refused(flag: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--agent-type", flag])


def test_the_agent_refuses_to_start_with_a_bad_config(tmp_path: Path) -> None:
    config_file = tmp_path / "agent.toml"
    config_file.write_text("[agent_types.r]\ncommand = []\n")
    argv = [sys.executable, "-m", "corral.agent", "--config", str(config_file), "--work-dir", str(tmp_path / "w")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "the command of agent type 'r' must be a non-empty list of strings" in done.stderr
    # --types may name a declared type; an undeclared one is refused with a hint.
    argv = [sys.executable, "-m", "corral.agent", "--types", "python,rscript", "--work-dir", str(tmp_path / "w")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown agent types: rscript" in done.stderr and "--agent-type" in done.stderr
