"""deploy/k8s: every manifest valid against the Kubernetes schemas (kubernetes-validate,
strict: unknown fields are errors), and the pieces refer to each other correctly."""

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

pytestmark = pytest.mark.unit

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
DOCKER = Path(__file__).resolve().parent.parent / "deploy" / "docker"
VERSION = "1.30.0"   # a release current clusters run; the manifests use only stable APIs


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def resources() -> list[dict]:
    docs = []
    for name in kustomization()["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in resources() if d["kind"] == kind}


def generated_secret() -> dict:
    """The Secret kustomize's secretGenerator makes from token.env."""
    (gen,) = kustomization()["secretGenerator"]
    data = {}
    for env in gen["envs"]:
        for line in (K8S / env).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, value = line.split("=", 1)
                data[key] = value
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": gen["name"], "namespace": "wl"},
            "type": "Opaque", "stringData": data}


@pytest.mark.parametrize("doc", resources() + [generated_secret()],
                         ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_is_valid_against_the_kubernetes_schema(doc):
    kubernetes_validate.validate(doc, VERSION, strict=True)   # raises ValidationError


def test_a_broken_manifest_is_caught():
    bad = by_kind("Deployment")["wl-router"] | {"spec": {"replicas": "one"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSION, strict=True)


def pods() -> dict[str, dict]:
    return {name: d["spec"]["template"] for kind in ("StatefulSet", "Deployment", "DaemonSet")
            for name, d in by_kind(kind).items()}


def test_services_select_pods_and_ports_exist():
    for name, svc in by_kind("Service").items():
        selector = svc["spec"]["selector"]
        matches = [p for p in pods().values() if selector.items() <= p["metadata"]["labels"].items()]
        assert matches, f"service {name} selects no pod"
        port_names = {p["name"] for c in matches[0]["spec"]["containers"] for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in port_names, f"service {name}: no container port {port['targetPort']}"


def test_every_container_has_requests_probes_and_the_token_secret():
    secret = generated_secret()["metadata"]["name"]
    for name, pod in pods().items():
        for c in pod["spec"]["containers"]:
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], name
            assert "readinessProbe" in c and "livenessProbe" in c, name
            refs = [e["valueFrom"]["secretKeyRef"] for e in c.get("env", [])
                    if "secretKeyRef" in e.get("valueFrom", {})]
            assert refs and all(r["name"] == secret and r["key"] == "token" for r in refs), name
            named = {p["name"] for p in c["ports"]}
            for probe in (c["readinessProbe"], c["livenessProbe"]):
                port = (probe.get("httpGet") or probe.get("tcpSocket"))["port"]
                assert port in named, f"{name}: probe port {port}"
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_registry_keeps_its_data_on_a_volume_and_nodes_register_themselves():
    registry = by_kind("StatefulSet")["wl-registry"]
    claim = registry["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    mounts = registry["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert any(m["name"] == claim and "--data-dir" in registry["spec"]["template"]["spec"]["containers"][0]["args"]
               for m in mounts)
    args = pods()["wl-node"]["spec"]["containers"][0]["args"]
    assert args[args.index("--register") + 1] == "http://wl-router:7701"
    assert args[args.index("--advertise") + 1] == "$(POD_IP):7710"


def test_images_are_built_by_the_dockerfiles():
    images = {i["name"] for i in kustomization()["images"]}
    used = {c["image"] for p in pods().values() for c in p["spec"]["containers"]}
    assert used == images
    for image in images:
        dockerfile = DOCKER / f"{image.removeprefix('wl-')}.Dockerfile"
        text = dockerfile.read_text()
        assert text.startswith("#") and "FROM python:3.11-slim" in text and "pip install ." in text
        module = f"wlruntime.{image.removeprefix('wl-')}"
        assert module in text, f"{dockerfile.name} does not run {module}"
