"""Prometheus `/metrics` of a real controller (and agent) after a workflow: counters moved by the right amounts."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from corral.controller.address_file import wait_for_address
from tests.e2e.conftest import Cluster, WorkflowState, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base: str) -> Samples:
    """Every sample of ``base/metrics``: (name, sorted labels) -> value."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_controller_and_agent_metrics_count_a_workflow(cluster: Cluster, tmp_path: Path) -> None:
    http_file, agent_file = tmp_path / "http.addr", tmp_path / "agent-http.addr"
    api = cluster.start(
        {"alpha": 2},
        controller_flags=["--http", "127.0.0.1:0", "--http-address-file", str(http_file)],
        agent_flags=["--http", "127.0.0.1:0", "--http-address-file", str(agent_file)],
    )
    base = "http://" + wait_for_address(http_file, timeout=30)
    agent_base = "http://" + wait_for_address(agent_file, timeout=30)
    before = scrape(base)
    agent_before = scrape(agent_base)
    marker = tmp_path / "failed-once"
    # a -> (b, flaky); flaky fails its first attempt and succeeds on its retry: 4 placements, 1 retry.
    flaky = f'if [ -e "{marker}" ]; then echo 3; else touch "{marker}"; exit 7; fi'
    spec = {
        "name": "metered",
        "tasks": [
            {"name": "a", "agent_type": "shell", "payload": {"shell": "echo 1"}},
            {"name": "b", "agent_type": "shell", "payload": {"shell": "echo 2"}, "dependencies": ["a"]},
            {
                "name": "flaky",
                "agent_type": "shell",
                "payload": {"shell": flaky},
                "dependencies": ["a"],
                "retries": 1,
                "retry_backoff": 0.1,
            },
        ],
    }
    workflow_id = api.submit(spec)
    final = api.wait_done(workflow_id, timeout=45)
    assert final.state == WorkflowState.COMPLETED, final.error

    def settled() -> Samples | None:
        # The final commit and its count happen before the answer that says COMPLETED, but a
        # scrape races nothing else: wait for the workflow gauge to say so.
        now = scrape(base)
        return now if value(now, "corral_workflows", state="completed") >= 1 else None

    after = eventually(settled, 10, "the completed workflow in /metrics")

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("corral_placements_total") == 4
    assert moved("corral_retries_total") == 1
    assert moved("corral_task_events_total", kind="completed") == 3
    assert moved("corral_task_events_total", kind="failed") == 0  # the failed attempt was retried, not final
    assert moved("corral_workflow_events_total", kind="completed") == 1
    assert moved("corral_preemptions_total") == 0
    assert moved("corral_cache_hits_total") == 0
    assert value(after, "corral_tasks", state="completed") == 3
    assert value(after, "corral_workflows", state="completed") == 1
    # Every placement has its schedule latency; commits were timed and sized.
    assert moved("corral_schedule_latency_seconds_count") == 4
    assert moved("corral_commit_duration_seconds_count") >= 4
    assert moved("corral_commit_batch_records_count") == moved("corral_commit_duration_seconds_count")
    assert value(after, "corral_commit_batch_records_sum") > 0
    # One SubmitWorkflow call answered OK, timed; the agent's stream is open.
    submit = "/corral.v1.Orchestrator/SubmitWorkflow"
    assert moved("corral_rpc_duration_seconds_count", method=submit, code="OK") == 1
    assert value(after, "corral_rpc_streams", method="/corral.v1.AgentGateway/Connect") == 1
    # The agent's capacity and (now idle) usage, and the empty queue.
    assert value(after, "corral_agent_capacity", agent="alpha", resource="slots") == 2
    assert value(after, "corral_agent_allocated", agent="alpha", resource="slots") == 0
    assert value(after, "corral_agents", state="connected") == 1
    assert not [k for k in after if k[0] == "corral_queue_depth" and after[k] > 0]

    # The agent's own port: attempts by outcome (3 succeeded, the flaky one's first attempt failed).
    agent = scrape(agent_base)

    def agent_moved(name: str, **labels: str) -> float:
        return value(agent, name, **labels) - value(agent_before, name, **labels)

    assert agent_moved("corral_agent_attempts_finished_total", outcome="succeeded") == 3
    assert agent_moved("corral_agent_attempts_finished_total", outcome="failed") == 1
    assert value(agent, "corral_agent_slots") == 2
    assert value(agent, "corral_agent_inventory", resource="slots") == 2
    assert value(agent, "corral_agent_connected") == 1
    assert value(agent, "corral_agent_attempts_running") == 0
    assert value(agent, "process_cpu_seconds_total") > 0  # prometheus-client's process collector
