"""The access commands of the real ``corral`` executable against a real controller with --auth."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import CORRAL, _child_env, require_server, start_controller, stop

pytestmark = pytest.mark.e2e

WORKFLOW = """
name: secretive
tasks:
  - name: t
    payload: {shell: "true", env: {DB: {secret: db-pass}}}
"""


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[tuple[str, str]]:
    require_server()
    proc, address = start_controller(tmp_path, extra=["--auth", "--secret-key-file", str(tmp_path / "secret.key")])
    try:
        yield address, (tmp_path / "admin.token").read_text().strip()
    finally:
        stop(proc)


def cli(
    tmp_path: Path, address: str, token: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``corral ARGS`` with the token in $CORRAL_TOKEN (``address`` "" for offline commands)."""
    env = _child_env(
        {"NO_COLOR": "1", "COLUMNS": "200", "CORRAL_TOKEN": token, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    )
    where = ["--address", address] if address else []
    return subprocess.run(
        [CORRAL, *args, *where], input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_tokens_namespaces_secrets_and_audit_from_the_command_line(controller: tuple[str, str], tmp_path: Path) -> None:
    address, root = controller
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    who = cli(tmp_path, address, root, "whoami")
    assert who.returncode == 0 and "role=admin" in who.stdout and "auth=on" in who.stdout

    assert cli(tmp_path, address, root, "namespace", "create", "team-a").returncode == 0
    listed = json.loads(cli(tmp_path, address, root, "namespace", "list", "-o", "json").stdout)
    assert {n["name"] for n in listed} >= {"default", "team-a"}

    created = cli(tmp_path, address, root, "token", "create", "--role", "submitter", "-n", "team-a", "--ttl", "1h")
    assert created.returncode == 0, created.stderr
    submitter = created.stdout.strip()
    assert submitter.startswith("corral_") and "not shown again" in created.stderr

    secret = cli(tmp_path, address, root, "secret", "set", "team-a", "db-pass", stdin="s3cr3t-value\n")
    assert secret.returncode == 0 and "created" in secret.stdout, secret.stderr
    names = cli(tmp_path, address, root, "secret", "list", "team-a")
    assert "db-pass" in names.stdout and "s3cr3t-value" not in names.stdout

    # The submitter's default namespace comes from `corral namespace set`.
    assert cli(tmp_path, "", submitter, "namespace", "set", "team-a").returncode == 0
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    submitted = cli(tmp_path, address, submitter, "submit", str(tmp_path / "wf.yaml"), "--no-start")
    assert submitted.returncode == 0, submitted.stderr
    workflow_id = submitted.stdout.strip()
    mine = json.loads(cli(tmp_path, address, submitter, "list", "-o", "json").stdout)
    assert [(w["workflow_id"], w["namespace"]) for w in mine] == [(workflow_id, "team-a")]

    # A submitter may not make tokens: one line saying what was missing, exit 1.
    denied = cli(tmp_path, address, submitter, "token", "list")
    assert denied.returncode == 1 and "needs role admin for Admin/ListTokens" in denied.stderr

    tokens = json.loads(cli(tmp_path, address, root, "token", "list", "-o", "json").stdout)
    submitter_id = next(t["token_id"] for t in tokens if t["role"] == "submitter")
    assert cli(tmp_path, address, root, "token", "revoke", submitter_id[:6]).returncode == 0
    refused = cli(tmp_path, address, submitter, "list")
    assert refused.returncode == 1 and "unknown, expired or revoked" in refused.stderr

    assert cli(tmp_path, address, root, "certs", "revoke", "agent-9", "--reason", "lost").returncode == 0
    audit = json.loads(cli(tmp_path, address, root, "audit", "--since", "1h", "-o", "json").stdout)
    methods = [r["method"].rsplit("/", 1)[1] for r in audit]
    for method in ("CreateNamespace", "CreateToken", "SetSecret", "SubmitWorkflow", "RevokeToken", "RevokeCertificate"):
        assert method in methods, methods
    submit = next(r for r in audit if r["method"].endswith("SubmitWorkflow"))
    assert submit["principal"] == f"token:{submitter_id}" and submit["target"] == workflow_id
    assert submit["namespace"] == "team-a" and submit["code"] == "OK"
    only = json.loads(cli(tmp_path, address, root, "audit", "-p", f"token:{submitter_id}", "-o", "json").stdout)
    assert {r["principal"] for r in only} == {f"token:{submitter_id}"}
    assert "s3cr3t-value" not in (tmp_path / "controller.log").read_text()
