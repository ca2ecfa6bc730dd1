"""The noop workload with TLS and mutual TLS on every connection: ``noop_tls_tasks_per_s``.

Compared with ``noop_tasks_per_s`` (same tasks, plaintext) it gives the cost of TLS; the issue asks
for TLS throughput within 15% of plaintext (``noop_tls_ratio``).
"""

from __future__ import annotations

from bench.workloads.noop import run_tls as run

__all__ = ["run"]
