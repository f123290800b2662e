"""Write deploy/kubernetes/prometheusrule.yaml from deploy/prometheus/stella-rules.yml.

The rules have one definition (the Prometheus rules file, which promtool tests); the
PrometheusRule for the Prometheus Operator carries the same groups. Run after editing the rules:
    python3 scripts/render_prometheusrule.py
tests/deploy/test_alert_rules.py fails while the two differ.
"""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "stella-rules.yml"
TARGET = ROOT / "deploy" / "kubernetes" / "prometheusrule.yaml"
HEADER = (
    "# Generated from deploy/prometheus/stella-rules.yml by scripts/render_prometheusrule.py:\n"
    "# edit the rules file, then run the script (a test fails while the two differ).\n"
)


def render() -> str:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    document = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "stella-agent",
            "labels": {"app.kubernetes.io/name": "stella-agent"},
        },
        "spec": {"groups": groups},
    }
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=100)


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET.relative_to(ROOT)}")
