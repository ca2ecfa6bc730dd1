"""The container health probe (the image's ``HEALTHCHECK``): ``python -m corral.controller.healthprobe``.

What it probes comes from ``$CORRAL_HEALTHCHECK`` (default ``grpc://127.0.0.1:7072``, the
controller's plaintext health-only port):

- ``grpc://HOST:PORT[/SERVICE]``: the standard ``grpc.health.v1`` Check of SERVICE (default
  ``corral.v1.Orchestrator``, which is SERVING once the controller accepts work);
- ``http://HOST:PORT/PATH``: an HTTP GET answered with a 2xx status (e.g. the controller's
  ``--http`` port and ``/readyz``);
- ``none``: always healthy (agents serve no port by default: they dial out, and the controller's
  lease is their health check).

Exit 0 when healthy, 1 when not (one line on stderr says why), 2 for an unusable setting.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

__all__ = ["DEFAULT", "main", "probe"]

DEFAULT = "grpc://127.0.0.1:7072"
_SERVICE = "corral.v1.Orchestrator"
_TIMEOUT_S = 3.0


def _grpc(target: str) -> str | None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    address, _, service = target.partition("/")
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service or _SERVICE), timeout=_TIMEOUT_S
            )
    except grpc.RpcError as exc:
        return f"grpc health of {address}: {exc.code().name}"
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return f"grpc health of {address}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
    return None


def _http(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return f"GET {url}: HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return f"GET {url}: {exc}"
    return None if 200 <= status < 300 else f"GET {url}: HTTP {status}"


def probe(setting: str) -> str | None:
    """None when what ``setting`` names is healthy, else why not; ValueError for a bad setting."""
    if setting == "none":
        return None
    if setting.startswith("grpc://"):
        return _grpc(setting.removeprefix("grpc://"))
    if setting.startswith("http://"):
        return _http(setting)
    raise ValueError(
        f"CORRAL_HEALTHCHECK must be grpc://HOST:PORT[/SERVICE], http://HOST:PORT/PATH or none: {setting!r}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Probe ``argv[0]`` or ``$CORRAL_HEALTHCHECK``; the exit code says healthy (0) or not (1)."""
    args = list(sys.argv[1:] if argv is None else argv)
    setting = args[0] if args else os.environ.get("CORRAL_HEALTHCHECK", DEFAULT)
    try:
        problem = probe(setting)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
