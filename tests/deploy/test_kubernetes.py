"""Kubernetes manifests: schema-valid (offline, kubernetes-validate's bundled schemas)
and consistent with the worker's drain and GPU settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

KUBERNETES_VERSION = "1.30"
"""Oldest Kubernetes release the manifests are checked against."""

KUBE_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUSTOMIZATIONS = sorted(KUBE_DIR.rglob("kustomization.yaml"))
MANIFESTS = sorted(p for p in KUBE_DIR.rglob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resource(kind: str, name: str) -> dict[str, Any]:
    for path in MANIFESTS:
        for doc in documents(path):
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no {kind} {name} under {KUBE_DIR}")


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def test_there_are_manifests() -> None:
    assert KUSTOMIZATIONS and MANIFESTS


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(KUBE_DIR)))
def test_manifest_matches_the_kubernetes_schema(path: Path) -> None:
    for doc in documents(path):
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            location = ".".join(str(part) for part in exc.path)
            name = f"{doc['kind']}/{doc['metadata']['name']}"
            pytest.fail(f"{path.name}: {name}: {location}: {exc.message}")


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(KUBE_DIR)))
def test_kustomization_lists_every_manifest_beside_it(path: Path) -> None:
    kustomization = yaml.safe_load(path.read_text())
    beside = {p.name for p in path.parent.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert set(kustomization["resources"]) == beside
    images = {c["image"] for p in beside for doc in documents(path.parent / p)
              if "template" in doc.get("spec", {}) for c in containers(doc)}
    renamed = {image["name"] for image in kustomization.get("images", [])}
    assert renamed <= images, "an images: entry that matches no container"


def test_no_secret_is_committed() -> None:
    kinds = {doc["kind"] for path in MANIFESTS for doc in documents(path)}
    assert "Secret" not in kinds, "create Secrets with kubectl, never in the repository"


def test_every_pod_runs_unprivileged() -> None:
    for path in MANIFESTS:
        for doc in documents(path):
            if "template" not in doc.get("spec", {}):
                continue
            assert doc["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
            for container in containers(doc):
                security = container["securityContext"]
                assert security["allowPrivilegeEscalation"] is False, container["name"]


def test_worker_deployment_gpu_and_drain(worker_grace) -> None:
    worker = resource("Deployment", "hpo-worker")
    pod = worker["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    gpus = int(args[args.index("--gpus-per-worker") + 1])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus == 1
    assert pod["terminationGracePeriodSeconds"] > worker_grace(args)
    strategy = worker["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxSurge"] == 0, "a surge pod would wait for a GPU that the old pod holds"


@pytest.mark.parametrize(
    "kind, name", [("Deployment", "hpo-worker"), ("Job", "hpo-coord-cifar100")]
)
def test_mongo_url_comes_from_the_secret(kind: str, name: str) -> None:
    (container,) = resource(kind, name)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["HPO_MONGO_URL"]["valueFrom"]["secretKeyRef"] == {"name": "hpo-mongo", "key": "url"}
    assert env["HPO_DATA_DIR"]["value"] in {m["mountPath"] for m in container["volumeMounts"]}


def test_coordinator_job() -> None:
    job = resource("Job", "hpo-coord-cifar100")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "hpo-queue-coordinator"
    assert container["args"][:3] == ["start", "--exp", "cifar100"]
    assert "command" not in container, "the image's ENTRYPOINT is hpo-coord"


def test_mongodb_replica_set() -> None:
    statefulset = resource("StatefulSet", "mongo")
    service = resource("Service", statefulset["spec"]["serviceName"])
    assert statefulset["spec"]["replicas"] == 3
    assert service["spec"]["clusterIP"] == "None"
    (mongod,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert "--replSet" in mongod["args"] and "--keyFile" in mongod["args"]
    init = resource("Job", "mongo-rs-init")
    script = init["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert "[0, 1, 2]" in script, "rs.initiate must name all three members"
