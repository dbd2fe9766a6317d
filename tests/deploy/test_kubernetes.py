"""``deploy/k8s``: every overlay renders with ``kubectl kustomize`` and validates against the Kubernetes
schemas (``kubernetes-validate``) and the vendored KEDA and Prometheus Operator CRD schemas
(``deploy/schemas``); the manifests keep the promises docs/deploy.md makes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import dramatiq.cli
import jsonschema
import kubernetes_validate
import pytest
import yaml

from brokers.consumer import CLOSE_WAIT_SECONDS
from brokers.settings import ENV_PREFIX, Settings
from brokers.topology import ALL_QUEUES
from tests.deploy.kubernetes import K8S, RULE_FILE, overlays, prometheus_rule, render

pytestmark = pytest.mark.deploy

SCHEMAS = K8S.parent / "schemas"
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobject_v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_triggerauthentication_v1alpha1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_podmonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrule_v1.json",
}
KUBERNETES_VERSION = "1.30.0"
SETTINGS = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
DIRECTORIES = [K8S / "base", *overlays()]


@pytest.fixture(scope="module", params=DIRECTORIES, ids=lambda p: str(p.relative_to(K8S)))
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is needed to render the manifests (kubectl kustomize)")
    return render(request.param)


def test_there_is_a_production_overlay() -> None:
    assert K8S / "overlays" / "production" in overlays()


def validate(doc: dict[str, Any]) -> None:
    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_SCHEMAS:
        schema = json.loads((SCHEMAS / CRD_SCHEMAS[key]).read_text())
        jsonschema.Draft7Validator(schema).validate(doc)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_object_is_valid(rendered: list[dict[str, Any]]) -> None:
    problems = []
    for doc in rendered:
        try:
            validate(doc)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as e:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {e}")
    assert not problems, "\n".join(problems)


def test_the_validation_catches_a_wrong_field() -> None:
    [scaled] = [d for d in render(K8S / "base") if d["kind"] == "ScaledObject"][:1]
    scaled["spec"]["minReplicas"] = 0  # KEDA spells it minReplicaCount
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)
    [deployment] = [d for d in render(K8S / "base") if d["kind"] == "Deployment"][:1]
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 60
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


def objects(rendered: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in rendered if d["kind"] == kind}


def worker_queues(deployment: dict[str, Any]) -> list[str]:
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args[args.index("--queues") + 1 : args.index("--processes")]


def test_the_pools_shut_down_within_their_grace_period(rendered: list[dict[str, Any]]) -> None:
    # Dramatiq's worker waits --worker-shutdown-timeout for its threads, then our consumer waits
    # CLOSE_WAIT_SECONDS for messages still running to be acked: the pod must be given both.
    defaults = dramatiq.cli.make_argument_parser().parse_args(["actors"])  # type: ignore[no-untyped-call]
    shutdown_s = defaults.worker_shutdown_timeout / 1000 + CLOSE_WAIT_SECONDS
    workers = {n: d for n, d in objects(rendered, "Deployment").items() if n.startswith("worker-")}
    assert sorted(q for d in workers.values() for q in worker_queues(d)) == sorted(ALL_QUEUES)
    for name, deployment in workers.items():
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--worker-shutdown-timeout" not in args, name  # the default the figure above assumes
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > shutdown_s, name


def test_pods_run_as_a_user_on_a_read_only_root_with_probes_and_resources(
    rendered: list[dict[str, Any]],
) -> None:
    for name, deployment in objects(rendered, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"] + pod.get("initContainers", []):
            security = container["securityContext"]
            assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"], name
            assert not security["allowPrivilegeEscalation"], name
            assert {"requests", "limits"} <= container["resources"].keys(), name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], name
        main = pod["containers"][0]
        for probe in ("readinessProbe", "livenessProbe"):
            if name != "api":
                assert main[probe]["exec"]["command"] == ["edujobs", "health"], (name, probe)
            else:
                assert main[probe]["httpGet"]["path"] in ("/healthz", "/readyz")
        env = {e["name"]: e for e in main.get("env", [])}
        if name == "worker-media":
            temp = env["EDUJOBS_MEDIA_TEMP_DIR"]["value"]
            mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
            assert "emptyDir" in volumes[mounts[temp]]
        refs = [next(iter(source.values()))["name"] for source in main["envFrom"]]
        assert refs == ["edujobs-config", "edujobs-secrets"] or refs[1] == "edujobs-secrets", refs


def test_every_edujobs_variable_is_a_setting(rendered: list[dict[str, Any]]) -> None:
    names = set()
    for config in objects(rendered, "ConfigMap").values():
        names |= set(config["data"])
    for deployment in objects(rendered, "Deployment").values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            names |= {e["name"] for e in container.get("env", [])}
    edujobs = {n for n in names if n.startswith(ENV_PREFIX)}
    assert edujobs and edujobs <= SETTINGS, edujobs - SETTINGS


def test_every_pool_has_a_pdb_and_a_scaled_object_on_its_queues(rendered: list[dict[str, Any]]) -> None:
    deployments = objects(rendered, "Deployment")
    budgets = objects(rendered, "PodDisruptionBudget")
    scaled = objects(rendered, "ScaledObject")
    assert deployments["scheduler"]["spec"]["replicas"] == 2
    for name, deployment in deployments.items():
        pool = deployment["spec"]["template"]["metadata"]["labels"]["pool"]
        assert any(b["spec"]["selector"]["matchLabels"].get("pool") == pool for b in budgets.values()), name
        if not name.startswith("worker-"):
            continue
        triggers = scaled[name]["spec"]["triggers"]
        watched = {t["metadata"]["queueName"] for t in triggers}
        queues = worker_queues(deployment)
        # each queue and its delay queue (delayed and retried messages wait there)
        assert watched == {q for queue in queues for q in (queue, queue + ".DQ")}, name
        assert scaled[name]["spec"]["scaleTargetRef"]["name"] == name
    assert scaled["worker-media"]["spec"]["minReplicaCount"] == 0
    # a woken media pool must outlive the in-memory wait of a delayed message it holds
    park_bound = Settings().park_threshold_seconds
    assert scaled["worker-media"]["spec"]["cooldownPeriod"] > park_bound


def test_the_prometheus_rule_is_alerts_yml(rendered: list[dict[str, Any]]) -> None:
    [rule] = objects(rendered, "PrometheusRule").values()
    assert rule["spec"] == prometheus_rule()["spec"], (
        f"{RULE_FILE} differs from alerts.yml: run python -m tests.deploy.kubernetes rules"
    )
    assert yaml.safe_load(RULE_FILE.read_text().split("\n", 2)[2])["spec"] == prometheus_rule()["spec"]


def test_the_pod_monitor_gives_the_labels_the_alerts_use(rendered: list[dict[str, Any]]) -> None:
    [monitor] = objects(rendered, "PodMonitor").values()
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/component"
    assert "pool" in monitor["spec"]["podTargetLabels"]
    components = {
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        for d in objects(rendered, "Deployment").values()
    }
    alerts = Path(K8S.parent / "prometheus" / "alerts.yml").read_text()
    for job in ("edujobs-worker", "edujobs-scheduler"):
        assert job in components and job in alerts
