"""Platform properties of the rendered overlays that a schema cannot see.

Sizing (the dev overlay fits a 2-CPU / 4-GiB node), scaling (dynamic allocation bounded by
the topic's partitions, an autoscaler that owns the API's replica count), least privilege
(no Mongo URI where none is needed), scraping annotations, and the manifest shapes that
make a second ``kubectl apply`` change nothing (no empty env values, no Jobs, claim
templates that spell out what the API server would add). The same overlays are applied to
a real API server by ``tests/integration/test_k8s_apply.py``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "1_infrastructure"
OVERLAYS = ("dev", "prod", "prod-gpu", "spark-operator")
OPTIONAL_COMPONENTS = ("prometheus", "cilium-apiserver", "node-probes")

# what a 2-CPU / 4-GiB minikube or kind node has left for workloads: allocatable minus the
# control plane's and CoreDNS's requests (about 0.75 CPU and 0.2 GiB)
SMALL_NODE_CPU = 1.25
SMALL_NODE_MEMORY_GIB = 3.5

Manifest = dict[str, Any]


def render(overlay: Path) -> list[Manifest]:
    """``kubectl kustomize`` of one overlay folder."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to build the overlays"
    result = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh-clone copy of the manifests (no secret files) with secrets generated."""
    root = tmp_path_factory.mktemp("tree")
    for part in ("k8s", "grafana"):
        ignore = shutil.ignore_patterns("*.secret.env")
        shutil.copytree(INFRA / part, root / "1_infrastructure" / part, ignore=ignore)
    k8s = root / "1_infrastructure" / "k8s"
    for overlay in ("dev", "prod"):
        script = ["bash", str(k8s / "gen-secrets.sh"), str(k8s / "overlays" / overlay)]
        subprocess.run(script, check=True, capture_output=True)
    return k8s


@pytest.fixture(scope="module")
def rendered(tree: Path) -> dict[str, list[Manifest]]:
    """Every overlay, rendered."""
    return {name: render(tree / "overlays" / name) for name in OVERLAYS}


def find(resources: list[Manifest], kind: str, name: str) -> Manifest:
    """The one resource of ``kind`` named ``name``."""
    hits = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} found"
    return hits[0]


def pod_spec(resource: Manifest) -> Manifest | None:
    """The pod spec inside a workload, or None."""
    spec = resource.get("spec", {})
    if resource["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    if "template" in spec:
        return spec["template"]["spec"]  # type: ignore[no-any-return]
    return None


def env_of(container: Manifest) -> dict[str, str]:
    """A container's literal env values."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def cpu(quantity: str) -> float:
    """A CPU quantity in cores."""
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def gib(quantity: str) -> float:
    """A memory quantity (Kubernetes or Spark notation) in GiB."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", quantity)
    assert match, quantity
    scale = {"Gi": 1, "g": 1, "G": 1, "Mi": 1 / 1024, "m": 1 / 1024, "M": 1 / 1024, "Ki": 1 / 1024**2, "": 1 / 1024**3}
    return float(match[1]) * scale[match[2]]


def driver_share(container: Manifest, executors_key: str) -> tuple[float, float]:
    """(CPU, GiB) requested by a Spark driver container and its executors at their maximum."""
    env = env_of(container)
    count = int(env[executors_key])
    requests = container["resources"]["requests"]
    executor_memory = gib(env["EXECUTOR_MEMORY"]) + gib(env["EXECUTOR_MEMORY_OVERHEAD"])
    return (
        cpu(requests["cpu"]) + count * cpu(env["EXECUTOR_REQUEST_CORES"]),
        gib(requests["memory"]) + count * executor_memory,
    )


# --- sizing ---------------------------------------------------------------------------------


def test_dev_overlay_fits_a_two_cpu_four_gib_node(rendered: dict[str, list[Manifest]]) -> None:
    """Long-running pods plus the stream executors fit; a pack fits in the stream job's share."""
    resources = rendered["dev"]
    total_cpu = total_gib = 0.0
    for resource in resources:
        if resource["kind"] not in ("Deployment", "StatefulSet"):
            continue
        replicas = resource["spec"].get("replicas", 1)
        spec = pod_spec(resource)
        assert spec is not None
        for container in spec["containers"]:
            requests = container["resources"]["requests"]
            total_cpu += replicas * cpu(requests["cpu"])
            total_gib += replicas * gib(requests["memory"])
    stream = find(resources, "Deployment", "ipsp-stream")["spec"]["template"]["spec"]["containers"][0]
    stream_cpu, stream_gib = driver_share(stream, "EXECUTOR_MAX_INSTANCES")
    executors_cpu = stream_cpu - cpu(stream["resources"]["requests"]["cpu"])
    executors_gib = stream_gib - gib(stream["resources"]["requests"]["memory"])
    total_cpu += executors_cpu
    total_gib += executors_gib
    assert total_cpu <= SMALL_NODE_CPU, f"dev requests {total_cpu:.2f} CPU"
    assert total_gib <= SMALL_NODE_MEMORY_GIB, f"dev requests {total_gib:.2f} GiB"
    pack = pod_spec(find(resources, "CronJob", "ipsp-pack"))
    assert pack is not None
    pack_cpu, pack_gib = driver_share(pack["containers"][0], "EXECUTOR_INSTANCES")
    assert pack_cpu <= stream_cpu and pack_gib <= stream_gib, "a pack must fit where the stream job was"


# --- scaling --------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["dev", "prod", "prod-gpu"])
def test_stream_executors_scale_dynamically_up_to_the_partitions(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    """Dynamic allocation is on, between 1..max executors, whose cores have a partition each (a task per batch)."""
    resources = rendered[overlay]
    params = find(resources, "ConfigMap", "ipsp-params")["data"]
    driver = find(resources, "Deployment", "ipsp-stream")["spec"]["template"]["spec"]["containers"][0]
    env = env_of(driver)
    low, high = int(env["EXECUTOR_MIN_INSTANCES"]), int(env["EXECUTOR_MAX_INSTANCES"])
    assert 1 <= low <= high
    assert high * int(env["EXECUTOR_CORES"]) <= int(params["IPSP_KAFKA_PARTITIONS"]), "cores with no task"
    args = env["PYSPARK_SUBMIT_ARGS"]
    for conf in (
        "spark.dynamicAllocation.enabled=true",
        "spark.dynamicAllocation.shuffleTracking.enabled=true",
        "spark.dynamicAllocation.minExecutors=$(EXECUTOR_MIN_INSTANCES)",
        "spark.dynamicAllocation.maxExecutors=$(EXECUTOR_MAX_INSTANCES)",
    ):
        assert f"--conf {conf}" in args
    assert "spark.executor.instances" not in args, "a fixed count would override the allocation"


def test_prod_starts_every_stream_executor_at_once(rendered: dict[str, list[Manifest]]) -> None:
    """A change of executor count moves most cameras (and their shards) to another executor: prod never climbs."""
    for overlay in ("prod", "prod-gpu"):
        driver = find(rendered[overlay], "Deployment", "ipsp-stream")["spec"]["template"]["spec"]["containers"][0]
        env = env_of(driver)
        assert env["EXECUTOR_MIN_INSTANCES"] == env["EXECUTOR_MAX_INSTANCES"], overlay


def test_spark_application_scales_dynamically_up_to_the_partitions(rendered: dict[str, list[Manifest]]) -> None:
    """The operator's stream job has the same dynamic allocation and bound as the Deployment."""
    resources = rendered["spark-operator"]
    partitions = int(find(resources, "ConfigMap", "ipsp-params")["data"]["IPSP_KAFKA_PARTITIONS"])
    conf = find(resources, "SparkApplication", "ipsp-stream")["spec"]["sparkConf"]
    assert conf["spark.dynamicAllocation.enabled"] == "true"
    assert conf["spark.dynamicAllocation.shuffleTracking.enabled"] == "true"
    low, high = int(conf["spark.dynamicAllocation.minExecutors"]), int(conf["spark.dynamicAllocation.maxExecutors"])
    cores = int(find(resources, "SparkApplication", "ipsp-stream")["spec"]["executor"]["cores"])
    assert 1 <= low <= high and high * cores <= partitions
    # Spark would run the executors as the driver's account, which the pod policy refuses
    assert conf["spark.kubernetes.authenticate.executor.serviceAccountName"] == "default"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_replicas_belong_to_its_autoscaler(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    """An HPA scales ipsp-api; the Deployment sets no count an apply would reset."""
    resources = rendered[overlay]
    hpa = find(resources, "HorizontalPodAutoscaler", "ipsp-api")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ipsp-api"}
    assert "replicas" not in find(resources, "Deployment", "ipsp-api")["spec"]
    floor = 2 if overlay.startswith("prod") else 1
    assert floor <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


# --- least privilege --------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", ["ipsp-produce", "ipsp-train"])
def test_stages_without_mongodb_get_no_mongo_uri(rendered: dict[str, list[Manifest]], overlay: str, name: str) -> None:
    """Produce and train read S3 only: they see the S3 keys, never IPSP_MONGO_URI."""
    spec = pod_spec(find(rendered[overlay], "CronJob", name))
    assert spec is not None
    for container in spec["containers"] + spec.get("initContainers", []):
        assert all("secretRef" not in source for source in container.get("envFrom", [])), container["name"]
        names = {e["name"] for e in container.get("env", [])}
        assert "IPSP_MONGO_URI" not in names
        assert {"IPSP_S3_ACCESS_KEY", "IPSP_S3_SECRET_KEY"} <= names


# --- metrics ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "path"), [("ipsp-api", "/metrics"), ("ipsp-stream", "/metrics/prometheus")])
def test_metrics_endpoints_are_announced(rendered: dict[str, list[Manifest]], name: str, path: str) -> None:
    """prometheus.io annotations name a port the container really has."""
    template = find(rendered["dev"], "Deployment", name)["spec"]["template"]
    notes = template["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/path"] == path
    ports = {p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
    assert int(notes["prometheus.io/port"]) in ports
    conf = (INFRA / "k8s" / "base" / "spark" / "spark-defaults.conf").read_text()
    assert re.search(r"^spark\.metrics\.conf\.\*\.sink\.prometheusServlet\.path\s+/metrics/prometheus$", conf, re.M)


def test_optional_components_build_on_the_dev_overlay(tree: Path) -> None:
    """components/prometheus and components/cilium-apiserver render on top of dev."""
    wrapper = tree / "overlays" / "dev-all-components"
    wrapper.mkdir()
    components = "".join(f"  - ../../components/{name}\n" for name in OPTIONAL_COMPONENTS)
    wrapper.joinpath("kustomization.yaml").write_text(
        f"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../dev\n"
        f"components:\n{components}"
    )
    resources = render(wrapper)
    monitors = {r["metadata"]["name"] for r in resources if r["kind"] == "ServiceMonitor"}
    assert monitors == {"ipsp-api", "ipsp-stream"}
    service = find(resources, "Service", "ipsp-stream-metrics")
    stream = find(resources, "Deployment", "ipsp-stream")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= stream.items()
    find(resources, "CiliumNetworkPolicy", "spark-driver-apiserver")


# --- no drift -----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_env_value_is_empty(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    """The API server drops ``value: ""``, so every apply would patch it back in."""
    for resource in rendered[overlay]:
        spec = pod_spec(resource)
        for container in (spec or {}).get("containers", []) + (spec or {}).get("initContainers", []):
            empty = [e["name"] for e in container.get("env", []) if e.get("value", None) == ""]
            assert not empty, f"{resource['kind']}/{resource['metadata']['name']}: empty {empty}"


#: CronJobs that really run on their schedule; every other CronJob is a suspended template
SCHEDULED = {"ipsp-prune"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_job_is_a_suspended_template(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    """No Job objects (their pod template is immutable: a re-apply after a change fails)."""
    kinds = {r["kind"] for r in rendered[overlay]}
    assert "Job" not in kinds
    cronjobs = {r["metadata"]["name"]: r["spec"] for r in rendered[overlay] if r["kind"] == "CronJob"}
    assert set(cronjobs) >= SCHEDULED
    for name, spec in cronjobs.items():
        assert spec.get("suspend", False) is (name not in SCHEDULED), name


# --- images pinned by digest ------------------------------------------------------------------


def pin(k8s: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run pin-images.sh on the prod overlay."""
    cmd = ["bash", str(k8s / "pin-images.sh"), str(k8s / "overlays" / "prod"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def image_values(resources: list[Manifest]) -> set[str]:
    """Every image reference: containers, the drivers' SPARK_IMAGE, the pod policy's params."""
    found: set[str] = set()
    for resource in resources:
        spec = pod_spec(resource) or {}
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            found.add(container["image"])
            found.update(v for k, v in env_of(container).items() if k == "SPARK_IMAGE")
        if resource["kind"] == "ConfigMap" and resource["metadata"]["name"] == "spark-pod-policy":
            found.update(v for k, v in resource["data"].items() if k.startswith("image"))
    return found


def test_pin_images_pins_every_reference_by_digest(tree: Path) -> None:
    """Digests reach containers, executors (SPARK_IMAGE) and the admission policy, GPU included."""
    names = ("ipsp-spark", "ipsp-spark-gpu", "ipsp-app", "ipsp-train", "ipsp-grafana")
    digest = "sha256:" + "0123456789abcdef" * 4
    result = pin(tree, *(f"{name}=registry.example.com/ipsp/{name}@{digest}" for name in names))
    assert result.returncode == 0, result.stderr
    try:
        images = image_values(render(tree / "overlays" / "prod-gpu"))
        ours = {image for image in images if "ipsp-" in image}
        assert ours == {f"registry.example.com/ipsp/{name}@{digest}" for name in names}
    finally:
        (tree / "overlays" / "prod" / "images" / "kustomization.yaml").write_text(
            (INFRA / "k8s" / "overlays" / "prod" / "images" / "kustomization.yaml").read_text()
        )


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("ipsp-app=registry.example.com/ipsp/ipsp-app:0.1.0", "is not NAME=REPOSITORY@sha256"),
        ("ipsp-app=registry.example.com/ipsp/ipsp-app@sha256:abc", "is not NAME=REPOSITORY@sha256"),
        ("nginx=registry.example.com/nginx@sha256:" + "a" * 64, "not an image this project builds"),
    ],
)
def test_pin_images_rejects_what_is_not_a_digest_of_ours(tree: Path, ref: str, message: str) -> None:
    """A tag, a short digest or a foreign image: one clear error, the file left as it was."""
    target = tree / "overlays" / "prod" / "images" / "kustomization.yaml"
    before = target.read_text()
    result = pin(tree, ref)
    assert result.returncode == 2 and message in result.stderr
    assert target.read_text() == before


# kustomize writes a Secret value's base64 with a line break every 70 characters; the API
# server stores it without, so a longer value makes every client-side apply patch it again
KUSTOMIZE_BASE64_LINE = 70


def test_generated_secret_values_fit_one_base64_line(tree: Path) -> None:
    """Every value gen-secrets.sh writes encodes to at most one base64 line (no drift)."""
    for path in sorted((tree / "overlays").glob("*/secrets/*.secret.env")):
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                key, value = line.split("=", 1)
                encoded = 4 * ((len(value.encode()) + 2) // 3)
                assert encoded <= KUSTOMIZE_BASE64_LINE, f"{path.name}: {key} is {len(value)} bytes"
