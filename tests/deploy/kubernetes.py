"""``deploy/k8s``: rendering overlays with ``kubectl kustomize`` and the PrometheusRule generated from
``deploy/prometheus/alerts.yml``.

``python -m tests.deploy.kubernetes rules`` rewrites ``deploy/k8s/base/prometheusrule.yaml``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_FILE = K8S / "base" / "prometheusrule.yaml"
HEADER = (
    "# GENERATED from deploy/prometheus/alerts.yml by `python -m tests.deploy.kubernetes rules`: do not\n"
    "# edit here (tests/deploy/test_kubernetes.py fails when the two differ).\n"
)


def prometheus_rule() -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "edujobs", "labels": {"app.kubernetes.io/name": "edujobs"}},
        "spec": yaml.safe_load(ALERTS.read_text()),
    }


def write_rules() -> None:
    RULE_FILE.write_text(HEADER + yaml.safe_dump(prometheus_rule(), sort_keys=False, width=110))


def overlays() -> list[Path]:
    return sorted(path.parent for path in K8S.glob("overlays/*/kustomization.yaml"))


def render(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


if __name__ == "__main__":
    if sys.argv[1:] != ["rules"]:
        sys.exit("usage: python -m tests.deploy.kubernetes rules")
    write_rules()
