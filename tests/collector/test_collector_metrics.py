"""`signals start --metrics-listen`: a real collection scraped over HTTP as Prometheus would.

Real eBPF, a real process and a real listener; the exposition is parsed with prometheus_client's
own parser. The map holds a lock-prefixed libcrypto function and a missing symbol, so the
attach failure counter has something to count.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from collector_support import LIBCRYPTO, WORKLOAD_PURL, start_workload
from prometheus_client.parser import text_string_to_metric_families
from service_support import (
    Scrape,
    free_port,
    function_map_file,
    http_get,
    scrape,
    wait_for,
    wait_ready,
)

from stella_bundle.agent.metrics import CATALOGUE
from stella_bundle.evidence.chain import verify_chain
from stella_bundle.formats.function_map import ExpectedNode

pytestmark = [pytest.mark.ebpf, pytest.mark.slow]

LOCK_PREFIXED = "EVP_ASYM_CIPHER_up_ref"
MISSING = "stella_work_not_in_this_binary"
WINDOW_SECONDS = 5  # the map's coverage window: the rate covers the last 10 s


def value(metrics: Scrape, name: str) -> float | None:
    series = metrics.get(name, ("", {}))[1]
    assert len(series) <= 1, series
    return next(iter(series.values()), None)


@pytest.mark.slow
def test_a_real_collection_is_scraped_and_its_values_move(
    ebpf: None, workload_bin: Path, tmp_path: Path, test_keys: Any
) -> None:
    nodes = [
        ExpectedNode.create(WORKLOAD_PURL, "stella_work_parse", binary_path=str(workload_bin)),
        ExpectedNode.create("pkg:deb/debian/libssl3", "EVP_Digest", binary_path=LIBCRYPTO),
        ExpectedNode.create(WORKLOAD_PURL, "stella_work_never", binary_path=str(workload_bin)),
        ExpectedNode.create("pkg:deb/debian/libssl3", LOCK_PREFIXED, binary_path=LIBCRYPTO),
        ExpectedNode.create(WORKLOAD_PURL, MISSING, binary_path=str(workload_bin)),
    ]
    fm = function_map_file(tmp_path / "fm.json", nodes)
    config = tmp_path / "stellaops.yaml"
    config.write_text("signals:\n  rotation:\n    max_age_seconds: 1\n")
    port = free_port()
    work = start_workload(workload_bin, "--crypto")
    agent = subprocess.Popen(
        [
            sys.executable, "-m", "stella_bundle", "signals", "start", "--function-map", str(fm),
            "--config", str(config), "--target", str(tmp_path / "evidence"),
            "--key", str(test_keys.private("collector")), "--chain-id", "metrics",
            "--pid", str(work.pid), "--aggregation-window", "200ms", "--verify-every", "0.5",
            "--metrics-listen", f"127.0.0.1:{port}", "--quiet",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )  # fmt: skip
    try:
        wait_ready(port, agent, 60)
        assert agent.poll() is None, agent.communicate()
        assert http_get(port, "/healthz") == (200, "ok\n")
        assert http_get(port, "/nothing-here")[0] == 404

        first = scrape(port)
        # Every catalogued name is exposed with its type (the alert rules rely on both).
        for spec in CATALOGUE:
            if spec.name in (
                "stella_observation_rate",  # appears after one lookback window
                "stella_last_seal_timestamp_seconds",  # after the first seal
                "stella_oldest_unsealed_timestamp_seconds",  # only while a chunk is open
                "stella_function_map_refused",  # a map directory's refused files
            ):
                continue
            assert spec.name in first, spec.name
            assert first[spec.name][0] == spec.type, spec.name
        labels = next(iter(first["stella_probes_attached"][1]))
        assert dict(labels) == {"chain": "metrics", "service": "stella-workload"}
        assert value(first, "stella_probes_attached") == 3
        assert value(first, "stella_probe_attach_failures_total") == 2  # lock prefix + missing
        assert value(first, "stella_probe_attach_attempts_total") == 5
        assert value(first, "stella_observations_total") == 0
        assert value(first, "stella_chunk_max_age_seconds") == 1
        assert "stella_observation_rate" not in first

        # The chunk opened for the failures is sealed by age within a second or two.
        sealed = wait_for(
            lambda: (m := scrape(port)) and value(m, "stella_chunks_sealed_total") and m,
            15,
            "a seal",
        )
        assert value(sealed, "stella_last_seal_timestamp_seconds") == pytest.approx(
            time.time(), abs=15
        )

        time.sleep(2)  # the workload's calls land inside the first full lookback window
        work.go()
        # Both hits counted, and counted in the rate: the rate first appears one lookback
        # window after the start, possibly before a loaded machine ran the workload.
        moved = wait_for(
            lambda: (
                (m := scrape(port))
                and value(m, "stella_observations_total") == 2
                and value(m, "stella_observation_rate") == pytest.approx(0.4)
                and m
            ),
            30,
            "the two hits in the observation rate",
        )
        # Coverage mode detaches a probe at its first hit: two of three are gone.
        assert value(moved, "stella_probes_attached") == 1
        # parse and EVP_Digest of five required paths, by the verifier's own rule (above).
        assert value(moved, "stella_unexpected_symbols") == 0
        assert value(moved, "stella_ringbuf_dropped_events_total") == 0
        assert value(moved, "stella_observation_buffer_full_total") == 0
        # Once the hits are older than the lookback window, the rate falls back.
        wait_for(
            lambda: value(scrape(port), "stella_observation_rate") == 0, 30, "the rate to fall"
        )
        seals_seen = value(scrape(port), "stella_chunks_sealed_total")
        assert seals_seen is not None and seals_seen >= 2
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=60)
    assert agent.returncode == 0, stderr
    assert f"metrics: http://127.0.0.1:{port}/metrics" in stderr
    chain = tmp_path / "evidence" / "metrics"
    assert len(list(chain.glob("*.seal.dsse.json"))) > seals_seen  # plus the final seal
    assert verify_chain(chain, test_keys.trust_root).passed


def test_ring_buffer_drops_move_their_counter_and_match_the_seals_loss(collect_run: Any) -> None:
    """A ring buffer far too small for a trace of 40,000 calls: the kernel drops events, the
    metric counts them, and drops plus full-table losses are what the seal calls
    ring_buffer_dropped (the seal's one count, split in two for operators)."""
    from prometheus_client import generate_latest

    from stella_bundle.agent.metrics import AgentMetrics
    from stella_bundle.collector.session import CollectorConfig

    metrics = AgentMetrics()
    chain = metrics.chain("drops", "stella-workload")
    run = collect_run("--calls", "40000", config=CollectorConfig(mode="trace"), ring_size=4096)
    chain.sync(run.collector, None, time.time())  # after the stop's last loss accounting
    families = {
        sample.name: sample.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for sample in family.samples
    }
    dropped = families["stella_ringbuf_dropped_events_total"]
    assert dropped > 0
    assert dropped == run.collector.drops["ring_buffer_full"]
    assert (
        dropped + families["stella_observation_buffer_full_total"]
        == run.collector.loss_totals["ring_buffer_dropped"]
        == run.sink.loss["ring_buffer_dropped"]
    )
    assert families["stella_observations_total"] == len(run.sink.records)


def test_a_real_prometheus_scrapes_the_agent_and_evaluates_the_rules(
    ebpf: None, workload_bin: Path, tmp_path: Path, test_keys: Any
) -> None:
    """The shipped rules, loaded by a real Prometheus scraping a real collection: the attach
    failure ratio (2 of 5) is computed from the two counters as exposed, so its alert is pending
    (its `for:` has not run out), and the alerts with nothing to say stay inactive."""
    import shutil

    prometheus = shutil.which("prometheus")
    if prometheus is None:
        message = "prometheus is missing (Debian package prometheus; scripts/setup.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    rules = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "stella-rules.yml"
    nodes = [
        ExpectedNode.create(WORKLOAD_PURL, "stella_work_parse", binary_path=str(workload_bin)),
        ExpectedNode.create("pkg:deb/debian/libssl3", "EVP_Digest", binary_path=LIBCRYPTO),
        ExpectedNode.create(WORKLOAD_PURL, "stella_work_never", binary_path=str(workload_bin)),
        ExpectedNode.create("pkg:deb/debian/libssl3", LOCK_PREFIXED, binary_path=LIBCRYPTO),
        ExpectedNode.create(WORKLOAD_PURL, MISSING, binary_path=str(workload_bin)),
    ]
    fm = function_map_file(tmp_path / "fm.json", nodes)
    agent_port, prometheus_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "scrape_configs": [
                    {
                        "job_name": "stella-agent",
                        "static_configs": [{"targets": [f"127.0.0.1:{agent_port}"]}],
                    }
                ],
            }
        )
    )
    agent = subprocess.Popen(
        [
            sys.executable, "-m", "stella_bundle", "signals", "start", "--function-map", str(fm),
            "--target", str(tmp_path / "evidence"), "--key", str(test_keys.private("collector")),
            "--chain-id", "scraped", "--pid", "1", "--metrics-listen", f"127.0.0.1:{agent_port}",
            "--quiet",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    server = subprocess.Popen(
        [
            prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}", "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def api(path: str) -> Any:
        status, body = http_get(prometheus_port, path)
        return json.loads(body)["data"] if status == 200 else None

    def alert_states() -> dict[str, str]:
        data = api("/api/v1/alerts")
        return {a["labels"]["alertname"]: a["state"] for a in data["alerts"]} if data else {}

    try:
        states = wait_for(
            lambda: (s := alert_states()).get("StellaProbeAttachFailures") and s,
            90,
            "the attach failure alert",
        )
        assert states["StellaProbeAttachFailures"] == "pending"  # for: 5m
        assert "StellaAgentDown" not in states and "StellaAgentAbsent" not in states
        assert "StellaUnexpectedSymbols" not in states
        ratio = api(
            "/api/v1/query?query=stella_probe_attach_failures_total"
            "%20/%20stella_probe_attach_attempts_total"
        )
        (series,) = ratio["result"]
        assert series["metric"]["chain"] == "scraped"
        assert series["metric"]["job"] == "stella-agent"
        assert float(series["value"][1]) == pytest.approx(0.4)
        rule_groups = api("/api/v1/rules")["groups"]
        assert all(r["health"] == "ok" for g in rule_groups for r in g["rules"]), rule_groups
    finally:
        server.terminate()
        server.communicate(timeout=30)
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=60)
    assert agent.returncode == 0, stderr
