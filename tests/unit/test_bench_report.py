"""The bench's pure parts: the TLS column and suffixes, the run order, the 1M scale, the traces folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report
from bench.run import FIGURES, TLS_WORKLOADS, WORKLOADS, _parse, main, run_order
from bench.traces import DEFAULT_DIR, ENV, TRACES, traces_dir
from bench.workloads import Result, tls_suffixed
from bench.workloads.tasks_1m import scale


def test_tls_results_get_the_suffix_once_and_a_tag() -> None:
    result = tls_suffixed(Result({"noop_tasks_per_s": 10.0, "x_tls": 1.0}, [("noop: submit call", "1 s")]))
    assert result.figures == {"noop_tasks_per_s_tls": 10.0, "x_tls": 1.0}
    assert result.details == [("(TLS) noop: submit call", "1 s")]
    assert tls_suffixed(result).details == result.details


def test_base_keys_and_the_ratio() -> None:
    assert report.base_key("noop_tasks_per_s_tls_pg") == "noop_tasks_per_s"
    assert report.base_key("roundtrip_p50_ms_tls") == "roundtrip_p50_ms"
    figures = report.add_tls_ratio({"noop_tasks_per_s": 8000.0, "noop_tasks_per_s_tls": 6000.0})
    assert figures[report.TLS_RATIO] == pytest.approx(0.75)
    assert report.TLS_RATIO not in report.add_tls_ratio({"noop_tasks_per_s_tls": 6000.0})


def test_json_keeps_the_table_order_with_each_tls_twin_after_its_plain_figure() -> None:
    figures = {"dag_tasks_per_s_tls": 3.0, "noop_tasks_per_s": 1.0, "dag_tasks_per_s": 2.0, "unknown": 9.0}
    assert list(report.json_figures(figures, FIGURES)) == ["noop_tasks_per_s", "dag_tasks_per_s", "dag_tasks_per_s_tls"]
    assert list(report.json_figures(figures, FIGURES, "_pg")) == [
        "noop_tasks_per_s_pg",
        "dag_tasks_per_s_pg",
        "dag_tasks_per_s_tls_pg",
    ]


def test_rows_put_tls_figures_in_their_own_column() -> None:
    figures = report.add_tls_ratio(
        {
            "noop_tasks_per_s": 10_000.0,
            "noop_tasks_per_s_tls": 8_000.0,  # 0.80x: more than 15% slower
            "roundtrip_p50_ms": 1.0,
            "roundtrip_p50_ms_tls": 1.5,
            "roundtrip_server_p99_ms": 0.9,  # no target
            "tasks_1m_s_tls": 120.0,  # TLS only
        }
    )
    rows = {row[0]: row for row in report.rows(figures, FIGURES)}
    assert rows["noop_tasks_per_s"] == (
        "noop_tasks_per_s",
        "10,000 tasks/s",
        ">= 10,000",
        "ok",
        "8,000 tasks/s",
        "MISS (0.80x)",
    )
    assert rows["noop_tls_ratio"][1:4] == ("0.800", ">= 0.850", "MISS")
    assert rows["roundtrip_p50_ms"][3:] == ("ok", "1.50 ms", "MISS")
    assert rows["roundtrip_server_p99_ms"][2:] == ("-", "", "", "")
    assert rows["tasks_1m_s"][1:] == ("", "-", "", "120 s", "")
    assert "dag_tasks_per_s" not in rows


def test_issue_13_targets() -> None:
    targets = {key: (target, higher) for key, (_, _, target, higher) in FIGURES.items()}
    assert targets["noop_tasks_per_s"] == (10_000, True)
    assert targets["roundtrip_p50_ms"] == (1.2, False)
    assert targets["roundtrip_server_p50_ms"] == (0.4, False)
    assert targets["roundtrip_p99_ms"] == (2.5, False)
    assert targets["dag_tasks_per_s"] == (7_000, True)
    assert targets["sleep_efficiency"] == (0.985, True)
    assert targets["controller_peak_rss_mib"] == (100, False)
    assert targets["plan_100k_s"] == (1.5, False)
    assert targets["trace_makespan_ratio"] == (1.15, False)
    assert targets["agents_1000_heartbeat_cpu"] == (0.05, False)
    assert targets["agents_5000_heartbeat_cpu"] == (0.25, False)
    assert targets["tasks_1m_s"] == (None, False)
    assert targets["tasks_1m_peak_rss_mib"] == (1_536, False)
    assert targets["noop_tls_ratio"] == (0.85, True)
    assert all(workload in WORKLOADS for workload, _, _, _ in FIGURES.values())


def test_run_order_puts_each_tls_run_right_after_its_plain_one() -> None:
    everything = [w for w in WORKLOADS if w != "noop_tls"]
    steps = run_order(everything, tls_only=False, with_tls=False, default=True)
    assert [name for name, tls in steps if tls] == list(TLS_WORKLOADS) == ["noop", "roundtrip", "dag"]
    for name in TLS_WORKLOADS:
        at = steps.index((name, False))
        assert steps[at + 1] == (name, True)
    assert run_order(["noop", "dag"], tls_only=False, with_tls=False, default=False) == [
        ("noop", False),
        ("dag", False),
    ]
    assert run_order(["noop", "sleep"], tls_only=True, with_tls=False, default=False) == [
        ("noop", True),
        ("sleep", True),
    ]
    assert run_order(["noop", "sleep"], tls_only=False, with_tls=True, default=False) == [
        ("noop", False),
        ("noop", True),
        ("sleep", False),
        ("sleep", True),
    ]


def test_workloads_without_a_tls_run_run_plainly_with_tls_and_are_refused_with_tls_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_order(["heartbeat", "noop", "sim"], tls_only=False, with_tls=True, default=False) == [
        ("heartbeat", False),
        ("noop", False),
        ("noop", True),
        ("sim", False),
    ]
    with pytest.raises(SystemExit):
        _parse(["--tls", "--only", "noop,heartbeat"])
    assert "heartbeat has no TLS run: its simulated agents connect in plaintext" in capsys.readouterr().err


def test_a_failing_workload_is_reported_and_the_json_line_still_printed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The traces workload fails at once (before starting any process) when the traces are missing.
    monkeypatch.setenv(ENV, str(tmp_path))
    assert main(["--only", "traces", "--tls"]) == 0
    out = capsys.readouterr().out
    assert "traces (TLS): FAILED" in out
    assert json.loads(out.strip().splitlines()[-1]) == {}


def test_the_1m_scale_comes_from_the_environment() -> None:
    assert scale({}) == (1_000, 1_000)
    assert scale({"CORRAL_BENCH_1M_TASKS": "20_000"}) == (20, 1_000)
    assert scale({"CORRAL_BENCH_1M_TASKS": "2500"}) == (2, 1_000)  # whole layers
    assert scale({"CORRAL_BENCH_1M_TASKS": "300"}) == (1, 300)
    with pytest.raises(ValueError, match="CORRAL_BENCH_1M_TASKS"):
        scale({"CORRAL_BENCH_1M_TASKS": "0"})


def test_traces_come_from_the_override_or_beside_the_repository(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as missing:
        traces_dir({ENV: str(tmp_path)})
    message = str(missing.value)
    assert str(tmp_path) in message and str(DEFAULT_DIR) in message and ENV in message
    for name in TRACES:
        (tmp_path / name).write_text("{}")
    assert traces_dir({ENV: str(tmp_path)}) == tmp_path
    if all((DEFAULT_DIR / name).is_file() for name in TRACES):
        assert traces_dir({}) == DEFAULT_DIR
    else:
        with pytest.raises(FileNotFoundError, match="the default"):
            traces_dir({})
