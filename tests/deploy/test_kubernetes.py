"""deploy/kubernetes/: rendered by `kubectl kustomize` and checked as an operator would read it:
the kinds, what the DaemonSet mounts from the host (each with its reason), its security
context, probes and ports agreeing with the listener, and the config and rules it ships."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE_DIR = ROOT / "deploy" / "kubernetes"
IN_CI = bool(os.environ.get("CI"))
NAMESPACE = "stella-system"

HOST_PATHS = {
    "/sys/fs/bpf": "/sys/fs/bpf",
    "/sys/kernel/btf": "/sys/kernel/btf",
    "/sys/kernel/tracing": "/sys/kernel/tracing",
    "/sys/fs/cgroup": "/sys/fs/cgroup",
    "/var/lib/stella/evidence": "/var/lib/stella/evidence",
    # Container names, images and digests: containerd's metadata store, CRI-O's run root.
    "/var/lib/containerd/io.containerd.metadata.v1.bolt": (
        "/var/lib/containerd/io.containerd.metadata.v1.bolt"
    ),
    "/run/containers/storage": "/run/containers/storage",
    "/var/lib/containers/storage/overlay-containers": (
        "/var/lib/containers/storage/overlay-containers"
    ),
    "/var/lib/containers/storage/overlay-images": "/var/lib/containers/storage/overlay-images",
}
WRITABLE_HOST_PATHS = {"/sys/kernel/tracing", "/var/lib/stella/evidence"}


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        message = "kubectl is missing (Debian package kubernetes-client; scripts/setup.sh)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [kubectl, "kustomize", str(KUSTOMIZE_DIR)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in documents if doc["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


def agent_container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(documents, "DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def test_the_kinds_and_their_namespace(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted(doc["kind"] for doc in rendered)
    assert kinds == sorted(
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "Service",
            "ServiceMonitor",
            "PrometheusRule",
        ]
    )
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for doc in rendered:
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]
    assert one(rendered, "Namespace")["metadata"]["name"] == NAMESPACE


def test_the_daemonset_mounts_what_it_needs_from_the_host(rendered: list[dict[str, Any]]) -> None:
    pod = one(rendered, "DaemonSet")["spec"]["template"]["spec"]
    # The host's /proc reaches the agent through the host PID namespace (runc refuses a mount
    # over /proc); the host's network namespace keeps the node's hostname in records.
    assert pod["hostPID"] is True
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["name"]: mount for mount in agent_container(rendered)["volumeMounts"]}
    host_volumes = {
        volume["hostPath"]["path"]: name for name, volume in volumes.items() if "hostPath" in volume
    }
    assert set(host_volumes) == set(HOST_PATHS)
    for host_path, mount_path in HOST_PATHS.items():
        mount = mounts[host_volumes[host_path]]
        assert mount["mountPath"] == mount_path
        assert mount.get("readOnly", False) == (host_path not in WRITABLE_HOST_PATHS), host_path
    # Each host path says why it is there, right above it in the manifest.
    text = (KUSTOMIZE_DIR / "daemonset.yaml").read_text()
    for host_path in HOST_PATHS:
        before = text[: text.index(f"path: {host_path}\n")].rstrip().splitlines()
        comment_lines = [line for line in before[-6:] if line.strip().startswith("#")]
        assert comment_lines, f"no comment says why {host_path} is mounted"
    assert "hostPID: true" in text and "# The host's process tree" in text
    # Secrets and config: read-only, the key not world-readable.
    assert volumes["collector-key"]["secret"]["defaultMode"] == 0o400
    for name in ("config", "function-map", "collector-key"):
        assert mounts[name]["readOnly"] is True


def test_the_security_context_is_capabilities_not_privileged(
    rendered: list[dict[str, Any]],
) -> None:
    context = agent_container(rendered)["securityContext"]
    assert context["privileged"] is False
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    # The same set as the systemd unit's bounding set (there with the reason for each).
    unit = (ROOT / "deploy" / "systemd" / "stella-agent.service").read_text()
    bounding = re.search(r"^CapabilityBoundingSet=(.*)$", unit, re.M)
    assert bounding is not None
    assert {f"CAP_{cap}" for cap in context["capabilities"]["add"]} == set(
        bounding.group(1).split()
    )
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    pod = one(rendered, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 60  # detach and final seal before SIGKILL


def test_probes_ports_and_the_listener_agree(rendered: list[dict[str, Any]]) -> None:
    container = agent_container(rendered)
    (port,) = container["ports"]
    assert port["name"] == "metrics"
    listen = next(a for a in container["args"] if a.startswith("--metrics-listen="))
    assert listen == f"--metrics-listen=$(HOST_IP):{port['containerPort']}"
    assert {e["name"] for e in container["env"]} >= {"HOST_IP"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["command"] == ["stella"]
    assert container["args"][:3] == ["agent", "run", "--config=/etc/stella/config/stellaops.yaml"]
    assert container["image"] == "stella-bundle:0.1.0"

    service = one(rendered, "Service")
    assert service["metadata"]["name"] == "stella-agent"  # the `job` label the rules select
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True  # a failing agent stays scraped
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == "metrics"
    assert service_port["port"] == port["containerPort"]
    labels = one(rendered, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()

    monitor = one(rendered, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [service_port["name"]]


def test_rbac_binds_the_agents_account_read_only(rendered: list[dict[str, Any]]) -> None:
    pod = one(rendered, "DaemonSet")["spec"]["template"]["spec"]
    account = one(rendered, "ServiceAccount")["metadata"]["name"]
    assert pod["serviceAccountName"] == account
    binding = one(rendered, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]
    assert binding["roleRef"]["name"] == one(rendered, "ClusterRole")["metadata"]["name"]
    for rule in one(rendered, "ClusterRole")["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}


def test_the_config_is_the_services_and_writes_to_the_mounted_evidence(
    rendered: list[dict[str, Any]],
) -> None:
    config_map = one(rendered, "ConfigMap")
    shipped = (ROOT / "deploy" / "config" / "stellaops.yaml").read_text()
    assert config_map["data"]["stellaops.yaml"] == shipped
    pod = one(rendered, "DaemonSet")["spec"]["template"]["spec"]
    config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert config_volume["configMap"]["name"] == config_map["metadata"]["name"]  # hashed name
    document = yaml.safe_load(shipped)
    mounts = {m["mountPath"] for m in agent_container(rendered)["volumeMounts"]}
    # Every path the config names is mounted: evidence, key, map directory and trust root.
    assert document["runtime_agent"]["export"]["output_path"] in mounts
    assert document["runtime_agent"]["function_maps"]["directory"] in mounts
    for path in (
        document["signals"]["signing"]["key_file"],
        document["runtime_agent"]["trust_root"],
    ):
        assert str(Path(path).parent) in mounts, path


def test_the_prometheusrule_is_the_rules_file(rendered: list[dict[str, Any]]) -> None:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "stella-rules.yml").read_text())
    assert one(rendered, "PrometheusRule")["spec"]["groups"] == rules["groups"]
