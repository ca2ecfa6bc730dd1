"""The controller's HTTP port (``--http``): probes and Prometheus metrics on a real controller process."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from corral.controller.address_file import wait_for_address
from tests.procs import start_controller, stop


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read().decode()


def test_http_port_serves_probes_and_metrics_without_a_token(tmp_path: Path) -> None:
    http_file = tmp_path / "http.addr"
    # --auth: gRPC callers need a token; the probes and /metrics on the HTTP port do not.
    proc, _ = start_controller(
        tmp_path, extra=["--auth", "--http", "127.0.0.1:0", "--http-address-file", str(http_file)]
    )
    try:
        base = "http://" + wait_for_address(http_file, exited=proc.poll)
        assert _get(base + "/healthz")[:1] == (200,)
        status, _, body = _get(base + "/readyz")
        assert (status, body) == (200, "ready\n")
        status, content_type, body = _get(base + "/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        assert "process_cpu_seconds_total" in body  # prometheus-client's process collector
        assert _get(base + "/nothing-here")[0] == 404
    finally:
        stop(proc)


def test_a_bad_http_address_is_refused_before_anything_starts() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "corral.controller", "--memory", "--listen", "127.0.0.1:0", "--http", "nonsense"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "--http wants host:port" in done.stderr + done.stdout
