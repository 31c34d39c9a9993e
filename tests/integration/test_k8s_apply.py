"""Every overlay applied to a real Kubernetes API server (``ipsp stack k8s``).

The control plane is etcd plus kube-apiserver v1.37 built from the Go module proxy, with
RBAC, Pod Security admission and ValidatingAdmissionPolicy as in any cluster, and no
kubelet or controllers: objects are admitted and stored, never run. Each overlay goes into a
fresh namespace (a kustomize wrapper renames ``ipsp``) and must pass, as a user would run it:

- ``kubectl apply --dry-run=server -k``, then a real apply, then a second apply that
  reports every object ``unchanged`` (no drift for GitOps tools to chase);
- Pod Security ``restricted``: a pod made from every workload's template (and the Spark
  executor templates, created as the driver's account) is admitted, a root pod is not;
- RBAC as ``kubectl auth can-i --as=...``: the driver account manages pods and nothing else;
- the Spark driver admission policy: a pod that mounts a root Secret, reads one through
  env, runs another image or mounts a volume claim is refused for the driver's account;
- ``kubectl create job --from=cronjob/...`` for every CronJob template;
- the SparkApplication (spark-operator overlay) admitted by a CRD built from our schema;
- credential rotation: ``gen-secrets.sh --rotate`` then apply updates the app Secrets, the
  setup Jobs made afterwards read the new values, and the root Secrets stay as they were.
"""

from __future__ import annotations

import base64
import copy
import json
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ipsp.config import load_settings
from ipsp.localstack import k8s

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "1_infrastructure"
FIXTURES = REPO / "tests" / "fixtures"
OVERLAYS = ("dev", "prod", "prod-gpu", "spark-operator")
SPARK_SCHEMA = FIXTURES / "k8s-schemas" / "sparkapplication-sparkoperator-v1beta2.json"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Kube:
    """kubectl (the one built with the control plane) pointed at the test API server."""

    kubectl: Path
    kubeconfig: Path

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run kubectl; with ``check`` a failure shows its output."""
        cmd = [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=300, check=False)
        if check:
            assert result.returncode == 0, f"kubectl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def get(self, kind: str, name: str, namespace: str) -> Manifest:
        """One object as stored."""
        return json.loads(self.run("get", kind, name, "-n", namespace, "-o", "json").stdout)  # type: ignore[no-any-return]

    def can_i(self, who: str, namespace: str, *what: str) -> bool:
        """``kubectl auth can-i ... --as=who``."""
        result = self.run("auth", "can-i", *what, "-n", namespace, f"--as={who}", check=False)
        return result.stdout.strip() == "yes"


@pytest.fixture(scope="module")
def kube() -> Kube:
    """The running control plane (started, and built the first time, by ``ipsp stack k8s up``)."""
    settings = load_settings()
    kubeconfig = k8s.up(settings)
    return Kube(kubectl=k8s.paths_for(settings).binary("kubectl"), kubeconfig=kubeconfig)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh-clone copy of the manifests with secrets generated as documented."""
    root = tmp_path_factory.mktemp("tree")
    for part in ("k8s", "grafana"):
        ignore = shutil.ignore_patterns("*.secret.env")
        shutil.copytree(INFRA / part, root / "1_infrastructure" / part, ignore=ignore)
    k8s_dir = root / "1_infrastructure" / "k8s"
    for overlay in ("dev", "prod"):
        subprocess.run(["bash", str(k8s_dir / "gen-secrets.sh"), str(k8s_dir / "overlays" / overlay)], check=True)
    return k8s_dir


# --- custom resource definitions ----------------------------------------------------------------


def structural(node: Any) -> Any:
    """Our strict JSON schema of SparkApplication as a CRD (structural) schema.

    Kubernetes types it refers to become objects whose fields are kept (the API server's
    pod validation is not a CRD's job); ``additionalProperties: false`` is what a CRD does by
    default (unknown fields are refused by kubectl's strict field validation).
    """
    if isinstance(node, list):
        return [structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("$schema", "$id", "title") or (key == "additionalProperties" and value is False):
            continue
        if key == "const":
            out["type"], out["enum"] = "string", [value]
        elif key == "properties":
            out[key] = {name: structural(sub) for name, sub in value.items() if name != "metadata"}
        else:
            out[key] = structural(value)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def spark_application_crd() -> Manifest:
    """A CustomResourceDefinition for sparkoperator.k8s.io/v1beta2 from our fixture schema."""
    schema = structural(json.loads(SPARK_SCHEMA.read_text()))
    schema.pop("required", None)
    schema["required"] = ["spec"]
    for name in ("apiVersion", "kind"):
        schema["properties"][name] = {"type": "string"}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": "sparkapplications.sparkoperator.k8s.io",
            # a *.k8s.io group is protected; the operator's own CRD says the same
            "annotations": {"api-approved.kubernetes.io": "unapproved, test stand-in for the Spark operator's CRD"},
        },
        "spec": {
            "group": "sparkoperator.k8s.io",
            "scope": "Namespaced",
            "names": {"plural": "sparkapplications", "singular": "sparkapplication", "kind": "SparkApplication"},
            "versions": [{"name": "v1beta2", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}],
        },
    }


@pytest.fixture(scope="module")
def crds(kube: Kube) -> None:
    """The SparkApplication CRD (from our schema) and the stand-ins for the optional components."""
    documents = [yaml.safe_dump(spark_application_crd())]
    documents += [path.read_text() for path in sorted((FIXTURES / "k8s-crds").glob("*.yaml"))]
    kube.run("apply", "-f", "-", stdin="\n---\n".join(documents))
    names = ["sparkapplications.sparkoperator.k8s.io"] + [p.stem for p in (FIXTURES / "k8s-crds").glob("*.yaml")]
    kube.run("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{name}" for name in names))


# --- one overlay in a fresh namespace ------------------------------------------------------------


def in_namespace(tree: Path, overlay: str, namespace: str, components: tuple[str, ...] = ()) -> Path:
    """A kustomization that renders ``overlay`` (plus components) into ``namespace``."""
    wrapper = tree / "overlays" / f"test-{namespace}"
    wrapper.mkdir()
    text = f"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {namespace}\n"
    text += f"resources:\n  - ../{overlay}\n"
    if components:
        text += "components:\n" + "".join(f"  - ../../components/{name}\n" for name in components)
    wrapper.joinpath("kustomization.yaml").write_text(text)
    return wrapper


def fresh_namespace(overlay: str) -> str:
    """A namespace name no earlier run used (deleted namespaces linger: no controllers)."""
    return f"ipsp-{overlay}-{uuid.uuid4().hex[:6]}"


def apply_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The ``kind/name verb`` lines of a kubectl apply."""
    return [line for line in result.stdout.splitlines() if line.strip()]


def rendered(kube: Kube, folder: Path) -> list[Manifest]:
    """``kubectl kustomize`` of a folder, as the built kubectl renders it."""
    return [doc for doc in yaml.safe_load_all(kube.run("kustomize", str(folder)).stdout) if doc]


@dataclass(frozen=True)
class Applied:
    """An overlay applied into its own namespace."""

    overlay: str
    namespace: str
    folder: Path
    resources: list[Manifest]
    first: list[str]
    second: list[str]
    dry_run: list[str]
    rewritten: list[str]  # objects whose resourceVersion the second apply changed


def apply_overlay(kube: Kube, tree: Path, overlay: str, components: tuple[str, ...] = ()) -> Applied:
    """Dry-run, apply, apply again; then give the namespace the default ServiceAccount.

    The ServiceAccount controller is one of the controllers this control plane lacks; a
    real cluster makes ``default`` in every namespace, and pods without one are refused.
    """
    namespace = fresh_namespace(overlay)
    folder = in_namespace(tree, overlay, namespace, components)
    resources = rendered(kube, folder)
    # the namespace first, as a server-side dry run of namespaced objects needs it to exist
    namespace_doc = next(r for r in resources if r["kind"] == "Namespace")
    kube.run("apply", "-f", "-", stdin=json.dumps(namespace_doc))
    dry = kube.run("apply", "--dry-run=server", "-k", str(folder))
    first = kube.run("apply", "-k", str(folder))
    stored = versions(kube, folder)
    second = kube.run("apply", "-k", str(folder))
    rewritten = sorted(key for key, version in versions(kube, folder).items() if stored.get(key) != version)
    kube.run("create", "serviceaccount", "default", "-n", namespace)
    lines = apply_lines(second)
    return Applied(overlay, namespace, folder, resources, apply_lines(first), lines, apply_lines(dry), rewritten)


def versions(kube: Kube, folder: Path) -> dict[str, str]:
    """resourceVersion of every object of a kustomization, by kind/name."""
    items = json.loads(kube.run("get", "-k", str(folder), "-o", "json").stdout)["items"]
    return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in items}


@pytest.fixture(scope="module")
def applied(kube: Kube, tree: Path, crds: None) -> Iterator[dict[str, Applied]]:
    """Every overlay, and dev with the optional components, applied once for the module."""
    results = {overlay: apply_overlay(kube, tree, overlay) for overlay in OVERLAYS}
    results["dev+components"] = apply_overlay(kube, tree, "dev", ("prometheus", "cilium-apiserver", "node-probes"))
    yield results


ALL = (*OVERLAYS, "dev+components")


# --- apply -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_overlay_applies_for_real_and_a_second_apply_changes_nothing(applied: dict[str, Applied], name: str) -> None:
    """Dry-run and apply take every object; the re-apply reports all of them unchanged.

    Cluster-wide objects (the admission policy) are shared by the overlays' namespaces, so
    the first apply may find them already there.
    """
    result = applied[name]
    assert len(result.dry_run) == len(result.resources), result.dry_run
    assert all(line.endswith("(server dry run)") for line in result.dry_run), result.dry_run
    assert len(result.first) == len(result.resources), "\n".join(result.first)
    namespaced = [line for line in result.first if "admissionregistration" not in line]
    fresh = [line for line in namespaced if not line.startswith("namespace/")]
    assert all(line.endswith(" created") for line in fresh), "\n".join(result.first)
    assert result.rewritten == [], f"{name}: the second apply rewrote objects (drift): {result.rewritten}"
    # kubectl always sends a PodDisruptionBudget's selector (its patch strategy is "replace")
    # and so prints "configured"; the server stores nothing new (checked just above)
    changed = [line for line in result.second if not line.endswith(" unchanged")]
    changed = [line for line in changed if not line.startswith("poddisruptionbudget.policy/")]
    assert changed == [], f"{name}: the second apply patched objects (drift):\n" + "\n".join(changed)
    assert len(result.second) == len(result.resources)


@pytest.mark.parametrize("name", ALL)
def test_kubectl_diff_sees_no_difference(kube: Kube, applied: dict[str, Applied], name: str) -> None:
    """``kubectl diff -k`` (a server-side dry run against the stored objects) is empty."""
    result = kube.run("diff", "-k", str(applied[name].folder), check=False)
    assert result.returncode == 0, f"{name}: kubectl diff found differences:\n{result.stdout[-4000:]}{result.stderr}"


def test_spark_application_is_admitted(kube: Kube, applied: dict[str, Applied]) -> None:
    """The spark-operator overlay's SparkApplication is stored, and the Deployment is gone."""
    namespace = applied["spark-operator"].namespace
    app = kube.get("sparkapplication", "ipsp-stream", namespace)
    assert app["spec"]["mode"] == "cluster" and app["spec"]["driver"]["serviceAccount"] == "spark-driver"
    missing = kube.run("get", "deployment", "ipsp-stream", "-n", namespace, check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_spark_application_crd_refuses_an_unknown_field(kube: Kube, applied: dict[str, Applied]) -> None:
    """The CRD built from our schema is strict: a misspelt field is an error, not ignored."""
    folder_resources = applied["spark-operator"].resources
    app = copy.deepcopy(next(r for r in folder_resources if r["kind"] == "SparkApplication"))
    app["metadata"]["name"] = "misspelt"
    app["spec"]["driver"]["coreLimits"] = "1"  # the operator's field is coreLimit
    result = kube.run("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(app), check=False)
    assert result.returncode != 0 and "coreLimits" in result.stderr


# --- Pod Security ------------------------------------------------------------------------------------


def pod_templates(resources: list[Manifest]) -> Iterator[tuple[str, Manifest, list[Manifest]]]:
    """(where, pod template, claim templates) of every workload."""
    for resource in resources:
        spec = resource.get("spec", {})
        where = f"{resource['kind']}/{resource['metadata']['name']}"
        if resource["kind"] == "CronJob":
            yield where, spec["jobTemplate"]["spec"]["template"], []
        elif resource["kind"] in ("Deployment", "StatefulSet"):
            yield where, spec["template"], spec.get("volumeClaimTemplates", [])


def as_pod(template: Manifest, name: str, namespace: str, claims: list[Manifest] | None = None) -> Manifest:
    """A Pod with a workload's pod template, as its controller would create it.

    A StatefulSet's controller adds one volume per claim template (its claim ``NAME-POD``).
    """
    spec = copy.deepcopy(template["spec"])
    for claim in claims or []:
        volume = claim["metadata"]["name"]
        spec.setdefault("volumes", []).append(
            {"name": volume, "persistentVolumeClaim": {"claimName": f"{volume}-{name}"}}
        )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": template["metadata"].get("labels", {})},
        "spec": spec,
    }


def executor_pods(resources: list[Manifest], namespace: str) -> Iterator[tuple[str, Manifest]]:
    """Executor pods as a driver builds them: its template file plus the driver's image."""
    conf = next(r for r in resources if r["kind"] == "ConfigMap" and r["metadata"]["name"].startswith("spark-conf"))
    policy = next(r for r in resources if r["kind"] == "ConfigMap" and r["metadata"]["name"] == "spark-pod-policy")
    for key, text in conf["data"].items():
        if not key.endswith(".yaml"):
            continue
        pod = yaml.safe_load(text)
        image = policy["data"]["image-gpu" if "gpu" in key else "image"]
        pod["metadata"]["name"] = f"exec-{uuid.uuid4().hex[:6]}"
        pod["metadata"]["namespace"] = namespace
        for container in pod["spec"]["containers"]:
            container["image"] = image
            container.setdefault("resources", {"requests": {"cpu": "1", "memory": "1Gi"}})
        yield key, pod


def driver(namespace: str) -> str:
    """The Spark driver's ServiceAccount as a user name."""
    return f"system:serviceaccount:{namespace}:spark-driver"


def create_pod(kube: Kube, pod: Manifest, *extra: str) -> subprocess.CompletedProcess[str]:
    """Server-side dry-run create of a pod (all admission runs; nothing is stored)."""
    return kube.run("create", "--dry-run=server", "-f", "-", *extra, stdin=json.dumps(pod), check=False)


def create_pods(kube: Kube, pods: list[Manifest], *extra: str) -> subprocess.CompletedProcess[str]:
    """Server-side dry-run create of many pods in one kubectl call (each is admitted alone)."""
    listing = {"apiVersion": "v1", "kind": "List", "items": pods}
    return kube.run("create", "--dry-run=server", "-f", "-", *extra, stdin=json.dumps(listing), check=False)


@pytest.mark.parametrize("name", ALL)
def test_every_pod_template_passes_pod_security_restricted(kube: Kube, applied: dict[str, Applied], name: str) -> None:
    """Pods from each workload template are admitted; executors as the driver's account."""
    result = applied[name]
    suffix = uuid.uuid4().hex[:6]
    where: dict[str, str] = {}
    pods = []
    for index, (origin, template, claims) in enumerate(pod_templates(result.resources)):
        # made by its controller in a cluster: created here as the admin
        pod = as_pod(template, f"check-{index}-{suffix}", result.namespace, claims)
        where[pod["metadata"]["name"]] = origin
        pods.append(pod)
    created = create_pods(kube, pods)
    assert created.returncode == 0, f"{name}: refused ({where}):\n{created.stderr}"
    assert "Warning" not in created.stderr, f"{name}: {created.stderr}"
    assert len(created.stdout.splitlines()) == len(pods) > 5, created.stdout
    executors = [pod for _key, pod in executor_pods(result.resources, result.namespace)]
    created = create_pods(kube, executors, f"--as={driver(result.namespace)}")
    assert created.returncode == 0, f"{name}: an executor pod was refused:\n{created.stderr}"
    assert len(created.stdout.splitlines()) == len(executors) >= 1


def test_pod_security_refuses_a_root_pod(kube: Kube, applied: dict[str, Applied]) -> None:
    """The control: the namespace really enforces ``restricted``."""
    namespace = applied["dev"].namespace
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root", "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "ipsp-app:0.1.0"}]},
    }
    created = create_pod(kube, pod)
    assert created.returncode != 0 and 'violates PodSecurity "restricted' in created.stderr


# --- RBAC ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_spark_driver_account_manages_pods_and_nothing_else(kube: Kube, applied: dict[str, Applied], name: str) -> None:
    """What ``kubectl auth can-i`` says for the driver's and the default account."""
    namespace = applied[name].namespace
    spark = driver(namespace)
    for verb in ("create", "delete", "list", "watch"):
        assert kube.can_i(spark, namespace, verb, "pods"), f"spark-driver cannot {verb} pods"
    assert kube.can_i(spark, namespace, "create", "configmaps")
    for what in (
        ("get", "secrets"),
        ("list", "secrets"),
        ("create", "pods", "--subresource=exec"),
        ("get", "pods", "--subresource=log"),
        ("create", "deployments.apps"),
        ("create", "jobs.batch"),
        ("update", "roles.rbac.authorization.k8s.io"),
        ("create", "serviceaccounts/token"),
    ):
        assert not kube.can_i(spark, namespace, *what), f"spark-driver may {' '.join(what)}"
    assert not kube.can_i(spark, "default", "create", "pods"), "spark-driver reaches another namespace"
    default = f"system:serviceaccount:{namespace}:default"
    assert not kube.can_i(default, namespace, "list", "pods")
    assert not kube.can_i(default, namespace, "get", "secrets")


# --- the Spark driver admission policy ------------------------------------------------------------------


def refused_until_ready(
    kube: Kube, pod: Manifest, user: str, timeout_s: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Create as ``user`` until refused: a new policy takes a moment to be enforced."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = create_pod(kube, pod, f"--as={user}")
        if result.returncode != 0 or time.monotonic() > deadline:
            return result
        time.sleep(1)


def executor_pod(applied: Applied) -> Manifest:
    """A valid executor pod of the dev overlay (admitted for the driver's account)."""
    return next(pod for key, pod in executor_pods(applied.resources, applied.namespace) if "gpu" not in key)


def secret_name(applied: Applied, prefix: str) -> str:
    """The generated (hashed) name of a Secret."""
    names = [r["metadata"]["name"] for r in applied.resources if r["kind"] == "Secret"]
    return next(n for n in names if n == prefix or n.startswith(prefix + "-"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("root-secret-volume", "may read no Secret but ipsp-app"),
        ("root-secret-env", "may read no Secret but ipsp-app"),
        ("root-secret-projected", "may read no Secret but ipsp-app"),
        ("other-image", "must run the Spark image"),
        ("claim", "may only use emptyDir"),
        ("service-account", "runs as the default ServiceAccount"),
    ],
)
def test_driver_account_cannot_create_a_pod_beyond_its_executors(
    kube: Kube, applied: dict[str, Applied], change: str, message: str
) -> None:
    """Each way out of an executor's shape is refused for the driver, allowed for an admin."""
    dev = applied["dev"]
    pod = executor_pod(dev)
    root = secret_name(dev, "minio-root")
    spec = pod["spec"]
    container = spec["containers"][0]
    if change == "root-secret-volume":
        spec["volumes"].append({"name": "root", "secret": {"secretName": root}})
    elif change == "root-secret-env":
        ref = {"secretKeyRef": {"name": secret_name(dev, "mongodb-root"), "key": "MONGO_INITDB_ROOT_PASSWORD"}}
        container["env"].append({"name": "STOLEN", "valueFrom": ref})
    elif change == "root-secret-projected":
        spec["volumes"].append({"name": "root", "projected": {"sources": [{"secret": {"name": root}}]}})
    elif change == "other-image":
        container["image"] = "quay.io/minio/mc:RELEASE.2025-08-13T08-35-41Z"
    elif change == "claim":
        spec["volumes"].append({"name": "data", "persistentVolumeClaim": {"claimName": "data-mongodb-0"}})
    else:
        spec["serviceAccountName"] = "spark-driver"
    refused = refused_until_ready(kube, pod, driver(dev.namespace))
    assert refused.returncode != 0, f"{change}: admitted for the driver account"
    assert "ipsp-spark-driver-pods" in refused.stderr and message in refused.stderr, refused.stderr
    allowed = create_pod(kube, pod)  # the policy binds the driver account only
    assert allowed.returncode == 0, allowed.stderr


def test_the_driver_account_may_still_create_its_executors(kube: Kube, applied: dict[str, Applied]) -> None:
    """The control for the refusals above: the unchanged executor pod is admitted."""
    dev = applied["dev"]
    created = create_pod(kube, executor_pod(dev), f"--as={driver(dev.namespace)}")
    assert created.returncode == 0, created.stderr


# --- Job templates -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_a_job_is_created_from_every_cronjob_template(kube: Kube, applied: dict[str, Applied], name: str) -> None:
    """``kubectl create job --from=cronjob/...`` works for each template; apply stays a no-op."""
    result = applied[name]
    templates = [r["metadata"]["name"] for r in result.resources if r["kind"] == "CronJob"]
    assert {"minio-setup", "kafka-setup", "mongodb-setup", "ipsp-pack", "ipsp-produce", "ipsp-train"} <= set(templates)
    suffix = uuid.uuid4().hex[:4]
    for template in templates:
        kube.run("create", "job", f"{template}-{suffix}", f"--from=cronjob/{template}", "-n", result.namespace)
    jobs = json.loads(kube.run("get", "jobs", "-n", result.namespace, "-o", "json").stdout)["items"]
    owners = {j["metadata"]["name"]: j["metadata"]["ownerReferences"][0]["name"] for j in jobs}
    for template in templates:
        assert owners[f"{template}-{suffix}"] == template
    before = versions(kube, result.folder)
    kube.run("apply", "-k", str(result.folder))
    assert versions(kube, result.folder) == before, "re-applying after the Jobs rewrote objects"


# --- credential rotation -------------------------------------------------------------------------------------


def decoded(secret: Manifest) -> dict[str, str]:
    """A stored Secret's values."""
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def env_source(job: Manifest, variable: str) -> str:
    """The Secret a Job's first container reads ``variable`` from."""
    for entry in job["spec"]["template"]["spec"]["containers"][0]["env"]:
        if entry["name"] == variable:
            return str(entry["valueFrom"]["secretKeyRef"]["name"])
    raise AssertionError(f"{variable} not in the Job's env")


def test_rotation_reaches_the_setup_jobs_and_leaves_root_alone(kube: Kube, tree: Path, crds: None) -> None:
    """gen-secrets --rotate, apply, new setup Jobs: they carry the new app passwords."""
    root = tree.parents[1]  # the copy's root, holding 1_infrastructure/
    rotation_root = root.with_name(root.name + "-rotation")
    shutil.copytree(root, rotation_root, ignore=shutil.ignore_patterns("test-*"))
    k8s_dir = rotation_root / "1_infrastructure" / "k8s"
    before = apply_overlay(kube, k8s_dir, "dev")
    ns = before.namespace
    old_app = decoded(kube.get("secret", "ipsp-app", ns))
    old_api_name = secret_name(before, "ipsp-api")
    roots = {p: kube.get("secret", secret_name(before, p), ns)["data"] for p in ("minio-root", "mongodb-root")}

    rotate = subprocess.run(
        ["bash", str(k8s_dir / "gen-secrets.sh"), str(k8s_dir / "overlays" / "dev"), "--rotate"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rotate.returncode == 0, rotate.stderr
    after = rendered(kube, before.folder)
    reapplied = apply_lines(kube.run("apply", "-k", str(before.folder)))
    assert not [line for line in reapplied if "immutable" in line]
    new_api_name = secret_name(Applied("dev", ns, before.folder, after, [], [], [], []), "ipsp-api")
    assert new_api_name != old_api_name, "a rotated ipsp-api must get a new generated name (rolls the API)"
    new_app = decoded(kube.get("secret", "ipsp-app", ns))
    assert new_app["IPSP_S3_SECRET_KEY"] != old_app["IPSP_S3_SECRET_KEY"]
    assert new_app["IPSP_MONGO_URI"] != old_app["IPSP_MONGO_URI"]
    for prefix, data in roots.items():
        assert kube.get("secret", secret_name(before, prefix), ns)["data"] == data, f"{prefix} changed"
        assert secret_name(before, prefix) in {r["metadata"]["name"] for r in after if r["kind"] == "Secret"}

    for template in ("minio-setup", "mongodb-setup"):
        kube.run("create", "job", f"{template}-rotated", f"--from=cronjob/{template}", "-n", ns)
    minio_job = kube.get("job", "minio-setup-rotated", ns)
    source = env_source(minio_job, "IPSP_S3_SECRET_KEY")
    assert decoded(kube.get("secret", source, ns))["IPSP_S3_SECRET_KEY"] == new_app["IPSP_S3_SECRET_KEY"]
    mongo_job = kube.get("job", "mongodb-setup-rotated", ns)
    assert env_source(mongo_job, "API_MONGO_URI") == new_api_name
    assert decoded(kube.get("secret", env_source(mongo_job, "APP_MONGO_URI"), ns)) == new_app
    api = kube.get("deployment", "ipsp-api", ns)["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": new_api_name}} in api["envFrom"], "the API must roll onto the new Secret"
    settled = versions(kube, before.folder)
    kube.run("apply", "-k", str(before.folder))
    assert versions(kube, before.folder) == settled, "the apply after the rotation is not stable"


# --- the command line -----------------------------------------------------------------------------------------


def test_stack_k8s_env_points_kubectl_at_the_running_server(kube: Kube, tmp_path: Path) -> None:
    """``eval "$(ipsp stack k8s env)"`` then plain ``kubectl`` reaches this API server."""
    ipsp = shlex.quote(str(Path(sys.executable).with_name("ipsp")))  # the venv's command, on PATH or not
    script = f'eval "$({ipsp} stack k8s env)" && echo "KUBECONFIG=$KUBECONFIG" && kubectl version -o json'
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    first, _, rest = result.stdout.partition("\n")
    assert first == f"KUBECONFIG={kube.kubeconfig}"
    version = json.loads(rest)
    assert version["serverVersion"]["gitVersion"] == version["clientVersion"]["gitVersion"] == k8s.K8S_VERSION
