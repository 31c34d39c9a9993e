"""Offline validation of the Kubernetes manifests in ``1_infrastructure/k8s``.

Every overlay is built with ``kubectl kustomize`` from a copy of the tree in which the
git-ignored secret env files do not exist (as in a fresh clone) and are written by
``gen-secrets.sh``. The output then has to pass, with no cluster and no network:

- the Kubernetes JSON schemas bundled in kubernetes-validate, strict (unknown fields are
  errors), for every version in ``K8S_VERSIONS``; the one custom resource (SparkApplication)
  against our own strict schema in ``tests/fixtures/k8s-schemas``;
- the workload policy: requests and limits, probes on long-running containers, non-root,
  no privilege escalation, all capabilities dropped, read-only root filesystem,
  ``app.kubernetes.io/*`` labels, pinned images, no literal secrets;
- the settings contract: every ``IPSP_*`` name is a field of ``ipsp.config.Settings``, and
  every field is either set or listed as left to its default in ``base/params.env``;
- the images: the ``ipsp-*`` images are those ``1_infrastructure/docker`` builds, at the
  project's version.

The deliberately broken fixture ``tests/fixtures/k8s-broken`` goes through the same checks,
and each check must catch the defect aimed at it.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource
from yamllint import linter
from yamllint.config import YamlLintConfig

from ipsp.config import env_var_names

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "1_infrastructure"
K8S = INFRA / "k8s"
DOCKER = INFRA / "docker"
FIXTURES = REPO / "tests" / "fixtures"
DEPLOY_DOC = REPO / "0_pipelines" / "deploy.md"

OVERLAYS = ("dev", "prod", "prod-gpu", "spark-operator")
# the oldest and the newest Kubernetes minor versions supported upstream (late 2026)
K8S_VERSIONS = ("1.35", "1.37")
CUSTOM_SCHEMAS = {"SparkApplication": FIXTURES / "k8s-schemas" / "sparkapplication-sparkoperator-v1beta2.json"}

LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet"}
RUN_TO_COMPLETION = {"Job", "CronJob"}
# may mount an API token: Spark drivers create and delete their executor pods
API_SERVICE_ACCOUNTS = {"spark-driver"}
COMMON_LABELS = ("app.kubernetes.io/part-of", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by")
OWN_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/component")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL|MONGO_URI")
CREDENTIAL_URI = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:[^@\s/]+@")
IPSP_NAME = re.compile(r"\bIPSP_[A-Z0-9_]+\b")
DEFAULT_LINE = re.compile(r"^# default: (IPSP_[A-Z0-9_]+)\b", re.MULTILINE)

Manifest = dict[str, Any]


# --- building ------------------------------------------------------------------------


def kubectl() -> str:
    """Path of kubectl (it bundles kustomize); the validation cannot run without it."""
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is needed to build the kustomize overlays: install it (any version >= 1.27)")
    return path


def build(directory: Path) -> list[Manifest]:
    """``kubectl kustomize DIRECTORY`` as a list of resources."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _leave_out_real_secrets(_directory: str, names: list[str]) -> list[str]:
    """copytree filter: drop generated secret env files, as a fresh clone has none."""
    return [name for name in names if name.endswith(".secret.env")]


def fresh_copy(destination: Path) -> Path:
    """Copy k8s/ and grafana/ (the kustomize roots) without secrets; return the k8s folder."""
    for part in ("k8s", "grafana"):
        shutil.copytree(INFRA / part, destination / "1_infrastructure" / part, ignore=_leave_out_real_secrets)
    return destination / "1_infrastructure" / "k8s"


def gen_secrets(k8s: Path, overlay: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run gen-secrets.sh for one overlay."""
    return subprocess.run(
        ["bash", str(k8s / "gen-secrets.sh"), str(overlay), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh-clone copy of the manifests with secrets generated the documented way."""
    k8s = fresh_copy(tmp_path_factory.mktemp("clone"))
    for overlay in sorted((k8s / "overlays").iterdir()):
        if "secretGenerator" in (overlay / "kustomization.yaml").read_text():
            result = gen_secrets(k8s, overlay)
            assert result.returncode == 0, result.stderr
    return k8s


@pytest.fixture(scope="module")
def rendered(clone: Path) -> dict[str, list[Manifest]]:
    """Every overlay, built."""
    return {name: build(clone / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="module")
def broken() -> list[Manifest]:
    """The deliberately broken fixture, built like an overlay."""
    return build(FIXTURES / "k8s-broken")


# --- walking the manifests -------------------------------------------------------------


def generated_name(resource: Manifest) -> str:
    """A resource's name without the hash suffix kustomize gives generated ConfigMaps and Secrets."""
    name = str(resource["metadata"]["name"])
    if resource["kind"] in {"ConfigMap", "Secret"}:
        return re.sub(r"-[a-z0-9]{10}$", "", name)
    return name


def find(resources: list[Manifest], kind: str, name: str) -> Manifest:
    """The resource of this kind and (generated) name."""
    for resource in resources:
        if resource["kind"] == kind and generated_name(resource) == name:
            return resource
    raise AssertionError(f"{kind}/{name} is not in the manifests")


def where(resource: Manifest) -> str:
    """``Kind/name`` for messages."""
    return f"{resource['kind']}/{resource['metadata']['name']}"


def strings(node: Any) -> Iterator[str]:
    """Every string (mapping keys included) inside a parsed YAML/JSON node."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def pod_template(resource: Manifest) -> Manifest | None:
    """The pod template (metadata + spec) of a workload, or None."""
    kind = resource["kind"]
    if kind in LONG_RUNNING or kind == "Job":
        return resource["spec"]["template"]
    if kind == "CronJob":
        return resource["spec"]["jobTemplate"]["spec"]["template"]
    return None


def executor_templates(resources: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    """Spark executor pod templates kept as files in ConfigMaps (Spark creates those pods)."""
    for resource in resources:
        if resource["kind"] != "ConfigMap":
            continue
        for key, text in (resource.get("data") or {}).items():
            if key.endswith("pod-template.yaml") or key.endswith("pod-template-gpu.yaml"):
                yield f"{where(resource)}[{key}]", yaml.safe_load(text)


def spark_pods(resource: Manifest) -> Iterator[tuple[str, Manifest]]:
    """Driver and executor specs of a SparkApplication."""
    if resource["kind"] == "SparkApplication":
        for role in ("driver", "executor"):
            yield f"{where(resource)}.{role}", resource["spec"][role]


def containers(pod_spec: Manifest) -> Iterator[Manifest]:
    """Init and regular containers of a pod spec."""
    yield from pod_spec.get("initContainers") or []
    yield from pod_spec.get("containers") or []


def all_containers(resources: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    """(where, container-like mapping) of every workload, template and SparkApplication pod."""
    for resource in resources:
        template = pod_template(resource)
        if template is not None:
            for container in containers(template["spec"]):
                yield f"{where(resource)}/{container['name']}", container
        for name, spec in spark_pods(resource):
            yield name, spec
    for name, pod in executor_templates(resources):
        for container in containers(pod["spec"]):
            yield f"{name}/{container['name']}", container


# --- the checks (each returns a list of problems; empty means pass) --------------------


def full_version(version: str) -> str:
    """The bundled schema version (``1.37.0``) for a minor version (``1.37``)."""
    for candidate in kubernetes_validate.utils.all_versions():
        if candidate.startswith(version + "."):
            return candidate
    raise AssertionError(f"kubernetes-validate has no {version} schemas: upgrade it (>=1.37)")


@functools.cache
def definitions(version: str) -> Any:
    """kubernetes-validate's strict type definitions for one version (parsed once)."""
    return kubernetes_validate.utils.schema_contents(
        f"kubernetes-json-schema/v{full_version(version)}-local-strict/_definitions.json", version
    )


@functools.cache
def validator(kind: str, api_version: str, version: str) -> jsonschema.protocols.Validator:
    """Strict validator for one kind, cached.

    The same schema files and resolution as ``kubernetes_validate.validate(strict=True)``
    (test_validator_agrees_with_kubernetes_validate checks it), parsed once per kind instead of
    once per resource. Custom resources use our schemas in CUSTOM_SCHEMAS, whose Kubernetes
    types resolve against the same definitions.
    """
    if kind in CUSTOM_SCHEMAS:
        schema = json.loads(CUSTOM_SCHEMAS[kind].read_text())
    else:
        group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        name = f"kubernetes-json-schema/v{full_version(version)}-local-strict/{kind.lower()}-{group_version}.json"
        try:
            schema = kubernetes_validate.utils.schema_contents(name, version)
        except FileNotFoundError:
            raise kubernetes_validate.SchemaNotFoundError(kind, version, api_version) from None
    registry: Registry[Any] = Resource.from_contents(definitions(version)) @ Registry()
    registry = Resource.from_contents(schema) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def schema_problems(resources: list[Manifest], version: str) -> list[str]:
    """Strict schema validation against Kubernetes ``version`` (and our CRD schemas)."""
    problems = []
    for resource in resources:
        try:
            check = validator(resource["kind"], resource["apiVersion"], version)
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{where(resource)}: {exc.message} (add a schema to CUSTOM_SCHEMAS)")
            continue
        for error in check.iter_errors(resource):
            path = ".".join(str(part) for part in error.absolute_path)
            problems.append(f"{where(resource)}: {path}: {error.message}")
    return problems


def label_problems(resources: list[Manifest]) -> list[str]:
    """app.kubernetes.io labels: common ones everywhere, name/component on workloads and pods."""
    problems = []
    for resource in resources:
        labels = resource["metadata"].get("labels") or {}
        for label in (*COMMON_LABELS, *OWN_LABELS):
            if label not in labels:
                problems.append(f"{where(resource)}: label {label} missing")
        template = pod_template(resource)
        if template is not None:
            pod_labels = (template.get("metadata") or {}).get("labels") or {}
            for label in (*OWN_LABELS, "app.kubernetes.io/part-of"):
                if label not in pod_labels:
                    problems.append(f"{where(resource)}: pod template label {label} missing")
    for name, pod in executor_templates(resources):
        for label in (*OWN_LABELS, "app.kubernetes.io/part-of"):
            if label not in (pod["metadata"].get("labels") or {}):
                problems.append(f"{name}: pod template label {label} missing")
    return problems


def pinned(image: str) -> bool:
    """A digest, or a tag that is not ``latest``."""
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and not last.endswith(":latest")


def container_problems(name: str, container: Manifest, sized_by_spark: bool) -> list[str]:
    """Security context, resources and image of one container."""
    problems = []
    security = container.get("securityContext") or {}
    if security.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{name}: allowPrivilegeEscalation must be false")
    if security.get("privileged"):
        problems.append(f"{name}: privileged")
    capabilities = security.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        problems.append(f"{name}: capabilities must drop ALL")
    if capabilities.get("add"):
        problems.append(f"{name}: adds capabilities {capabilities['add']}")
    if security.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{name}: readOnlyRootFilesystem must be true (mount an emptyDir where it writes)")
    if not sized_by_spark:
        resources = container.get("resources") or {}
        for section in ("requests", "limits"):
            for quantity in ("cpu", "memory"):
                if quantity not in (resources.get(section) or {}):
                    problems.append(f"{name}: no resources.{section}.{quantity}")
    image = container.get("image")
    if image is not None and not pinned(image):
        problems.append(f"{name}: image {image} is not pinned")
    return problems


def pod_security_problems(name: str, pod_spec: Manifest) -> list[str]:
    """Pod-level security: non-root user, seccomp, no host namespaces, token only for drivers."""
    problems = []
    security = pod_spec.get("securityContext") or {}
    if security.get("runAsNonRoot") is not True:
        problems.append(f"{name}: runAsNonRoot must be true")
    if not isinstance(security.get("runAsUser"), int) or security["runAsUser"] <= 0:
        problems.append(f"{name}: runAsUser must be a non-zero UID")
    if (security.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append(f"{name}: seccompProfile RuntimeDefault missing")
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(field):
            problems.append(f"{name}: {field}")
    if any("hostPath" in volume for volume in pod_spec.get("volumes") or []):
        problems.append(f"{name}: hostPath volume")
    token = pod_spec.get("automountServiceAccountToken")
    if pod_spec.get("serviceAccountName") in API_SERVICE_ACCOUNTS:
        if token is not True:
            problems.append(f"{name}: Spark drivers need automountServiceAccountToken: true")
    elif token is not False:
        problems.append(f"{name}: automountServiceAccountToken must be false (no API access needed)")
    return problems


def workload_problems(resources: list[Manifest]) -> list[str]:
    """The workload policy for every pod the manifests create, directly or through Spark."""
    problems = []
    for resource in resources:
        template = pod_template(resource)
        if template is None:
            continue
        name, spec = where(resource), template["spec"]
        problems += pod_security_problems(name, spec)
        for container in containers(spec):
            problems += container_problems(f"{name}/{container['name']}", container, sized_by_spark=False)
        if resource["kind"] in LONG_RUNNING:
            for container in spec.get("containers") or []:
                for probe in ("readinessProbe", "livenessProbe"):
                    if probe not in container:
                        problems.append(f"{name}/{container['name']}: no {probe}")
        if resource["kind"] in RUN_TO_COMPLETION:
            # Jobs have no probes: completion is their health, bounded by a deadline and retries
            job = resource["spec"] if resource["kind"] == "Job" else resource["spec"]["jobTemplate"]["spec"]
            for field in ("activeDeadlineSeconds", "backoffLimit"):
                if field not in job:
                    problems.append(f"{name}: no {field}")
    # pods Spark creates: resources come from spark.executor.* / the SparkApplication fields
    for name, pod in executor_templates(resources):
        problems += pod_security_problems(name, pod["spec"] | {"automountServiceAccountToken": False})
        for container in containers(pod["spec"]):
            problems += container_problems(f"{name}/{container['name']}", container, sized_by_spark=True)
    for resource in resources:
        for name, spec in spark_pods(resource):
            # the operator creates these pods and mounts the driver's token itself
            pod = {"securityContext": spec.get("podSecurityContext") or {}, "automountServiceAccountToken": False}
            problems += pod_security_problems(name, pod)
            problems += container_problems(name, spec, sized_by_spark=True)
            for field in ("cores", "memory"):
                if field not in spec:
                    problems.append(f"{name}: no {field}")
    return problems


def secret_problems(resources: list[Manifest]) -> list[str]:
    """No credential written into a manifest: only Secrets hold them, referenced by name."""
    problems = []
    for name, container in all_containers(resources):
        for entry in container.get("env") or []:
            if SECRET_NAME.search(entry["name"]) and entry.get("value"):
                problems.append(f"{name}: {entry['name']} has a literal value (use secretKeyRef)")
    for resource in resources:
        if resource["kind"] == "Secret":
            continue
        if resource["kind"] == "ConfigMap":
            for key in resource.get("data") or {}:
                if SECRET_NAME.search(key):
                    problems.append(f"{where(resource)}: key {key} belongs in a Secret")
        for text in strings(resource):
            if CREDENTIAL_URI.search(text):
                problems.append(f"{where(resource)}: a URI with a password: {CREDENTIAL_URI.search(text)[0]}")
    return problems


def env_problems(resources: list[Manifest], accepted: set[str]) -> list[str]:
    """Every IPSP_* name anywhere in the manifests is a setting (the settings reject others)."""
    found = {match for text in (s for r in resources for s in strings(r)) for match in IPSP_NAME.findall(text)}
    return [f"{name} is not a field of ipsp.config.Settings" for name in sorted(found - accepted)]


def names_set(resources: list[Manifest]) -> set[str]:
    """IPSP_* names the manifests put in some container's environment."""
    data: dict[tuple[str, str], set[str]] = {}
    for resource in resources:
        if resource["kind"] in {"ConfigMap", "Secret"}:
            keys = set(resource.get("data") or {}) | set(resource.get("stringData") or {})
            data[(resource["kind"], resource["metadata"]["name"])] = keys
    names: set[str] = set()
    for _, container in all_containers(resources):
        names |= {entry["name"] for entry in container.get("env") or []}
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                names |= data.get(("ConfigMap", source["configMapRef"]["name"]), set())
            if "secretRef" in source:
                names |= data.get(("Secret", source["secretRef"]["name"]), set())
    return {name for name in names if name.startswith("IPSP_")}


def project_version() -> str:
    """The version in pyproject.toml, which the ipsp-* image tags follow."""
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def built_images() -> dict[str, tuple[str, Path]]:
    """Image name -> (tag, Dockerfile), from each Dockerfile's ``docker build ... -t NAME:TAG`` lines."""
    images = {}
    for dockerfile in sorted(DOCKER.glob("*.Dockerfile")):
        for name, tag in re.findall(r"-t (ipsp-[a-z0-9-]+):(\S+)", dockerfile.read_text()):
            images[name] = (tag, dockerfile)
    return images


def image_references(resources: list[Manifest]) -> Iterator[tuple[str, str]]:
    """(where, image) of every container, SPARK_IMAGE variable and SparkApplication."""
    for name, container in all_containers(resources):
        if container.get("image"):
            yield name, container["image"]
        for entry in container.get("env") or []:
            if entry["name"] == "SPARK_IMAGE":
                yield f"{name} SPARK_IMAGE", entry["value"]
    for resource in resources:
        if resource["kind"] == "SparkApplication":
            yield where(resource), resource["spec"]["image"]


def image_problems(resources: list[Manifest]) -> list[str]:
    """Pinned images; ipsp-* ones built by our Dockerfiles at the project's version."""
    built, version, problems = built_images(), project_version(), []
    for name, image in image_references(resources):
        repository, _, tag = image.rpartition("/")[2].partition(":")
        if not pinned(image):
            problems.append(f"{name}: {image} is not pinned to a tag or digest")
        if repository.startswith("ipsp-"):
            if repository not in built:
                problems.append(f"{name}: {image}: no Dockerfile in {DOCKER.relative_to(REPO)} builds it")
            elif tag != version:
                problems.append(f"{name}: {image}: the images are tagged with the project version {version}")
    return problems


# --- tests: build and schemas ----------------------------------------------------------


def test_every_overlay_is_validated() -> None:
    """A new overlay cannot slip past the validation."""
    assert sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir()) == sorted(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_the_whole_system(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    """Each overlay has every component of the system, in the ipsp namespace."""
    kinds = {(r["kind"], r["metadata"]["name"]) for r in rendered[overlay]}
    stream = ("SparkApplication" if overlay == "spark-operator" else "Deployment", "ipsp-stream")
    for expected in [
        ("Namespace", "ipsp"),
        ("StatefulSet", "minio"),
        ("CronJob", "minio-setup"),
        ("StatefulSet", "kafka"),
        ("CronJob", "kafka-setup"),
        ("StatefulSet", "mongodb"),
        ("CronJob", "mongodb-setup"),
        stream,
        ("Role", "spark-driver"),
        ("CronJob", "ipsp-pack"),
        ("CronJob", "ipsp-produce"),
        ("CronJob", "ipsp-train"),
        ("Deployment", "ipsp-api"),
        ("Service", "ipsp-api"),
        ("Deployment", "grafana"),
        ("NetworkPolicy", "default-deny"),
        ("Secret", "ipsp-app"),
        ("ConfigMap", "ipsp-params"),
    ]:
        assert expected in kinds, f"{overlay}: {expected} missing"
    for resource in rendered[overlay]:
        if resource["kind"] != "Namespace":
            assert resource["metadata"].get("namespace") == "ipsp", f"{overlay}: {where(resource)}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_strict_schemas(rendered: dict[str, list[Manifest]], overlay: str, version: str) -> None:
    """kubernetes-validate --strict, per resource, for each supported Kubernetes version."""
    assert schema_problems(rendered[overlay], version) == []


def test_validator_agrees_with_kubernetes_validate(rendered: dict[str, list[Manifest]], broken: list[Manifest]) -> None:
    """The cached validator accepts and rejects exactly what the library's own entry point does."""
    version = K8S_VERSIONS[-1]
    for resource in [*broken, *rendered["prod"][:12]]:
        try:
            kubernetes_validate.validate(resource, version, strict=True)
            library = True
        except jsonschema.ValidationError:
            library = False
        assert (schema_problems([resource], version) == []) == library, where(resource)


def test_sparkapplication_schema_rejects_what_the_operator_would(rendered: dict[str, list[Manifest]]) -> None:
    """Our CRD schema catches a misspelt field, a bad enum value and a bad Kubernetes type inside."""
    app = copy.deepcopy(find(rendered["spark-operator"], "SparkApplication", "ipsp-stream"))
    assert schema_problems([app], K8S_VERSIONS[-1]) == []
    app["spec"]["executor"]["instance"] = 2
    app["spec"]["mode"] = "local"
    app["spec"]["driver"]["securityContext"]["runAsNonroot"] = True
    problems = " ".join(schema_problems([app], K8S_VERSIONS[-1]))
    for expected in ("'instance' was unexpected", "'local' is not one of", "'runAsNonroot' was unexpected"):
        assert expected in problems, problems


def test_kubernetes_validate_cli_passes_the_dev_overlay(clone: Path, tmp_path: Path) -> None:
    """The command line as CI documents it: kubectl kustomize | kubernetes-validate --strict."""
    output = tmp_path / "dev.yaml"
    output.write_text(yaml.safe_dump_all(build(clone / "overlays" / "dev")))
    cli = Path(sys.executable).parent / "kubernetes-validate"
    checked = subprocess.run(
        [str(cli), "--strict", "--quiet", "-k", K8S_VERSIONS[-1], str(output)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_yaml_files_pass_yamllint() -> None:
    """yamllint (the repository's .yamllint.yaml) on every YAML file of the infrastructure."""
    config = YamlLintConfig(file=str(REPO / ".yamllint.yaml"))
    problems = []
    for path in sorted([*INFRA.rglob("*.yaml"), *INFRA.rglob("*.yml"), REPO / ".yamllint.yaml"]):
        for problem in linter.run(path.read_text(), config, str(path)):
            problems.append(f"{path.relative_to(REPO)}:{problem.line}: {problem.desc} ({problem.rule})")
    assert problems == []


# --- tests: policy ---------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_follow_the_policy(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    """Limits, probes, non-root, no escalation, capabilities dropped, read-only root, labels."""
    assert workload_problems(rendered[overlay]) + label_problems(rendered[overlay]) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_literal_secrets(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    """Credentials reach pods only from Secrets."""
    assert secret_problems(rendered[overlay]) == []


def test_sources_hold_no_secrets() -> None:
    """No Secret object in git; the env templates carry placeholders, never a credential."""
    for path in K8S.rglob("*.yaml"):
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict)]
        assert all(doc.get("kind") != "Secret" for doc in docs), f"{path}: a Secret in git"
    templates = sorted((K8S / "secrets").glob("*.secret.env.example"))
    assert templates
    for template in templates:
        for line in template.read_text().splitlines():
            if line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            # the S3 access key is a user name; its secret key is the credential
            credential = bool(SECRET_NAME.search(key)) and key != "IPSP_S3_ACCESS_KEY"
            if credential or "://" in value:
                assert "@GENERATE@" in value, f"{template.name}: {key} must be generated, not written down"
            assert not CREDENTIAL_URI.search(value.replace("@GENERATE@", "")), f"{template.name}: {key}"


def test_secret_env_files_are_git_ignored() -> None:
    """The files gen-secrets.sh writes can never be committed."""
    for overlay in ("dev", "prod"):
        path = f"1_infrastructure/k8s/overlays/{overlay}/secrets/app.secret.env"
        result = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", path], check=False)
        assert result.returncode == 0, f"{path} is not git-ignored: add '1_infrastructure/k8s/**/*.secret.env'"


# --- tests: settings -------------------------------------------------------------------


def documented_defaults() -> set[str]:
    """Settings params.env lists as intentionally left to their defaults."""
    return set(DEFAULT_LINE.findall((K8S / "base" / "params.env").read_text()))


def dockerfile_settings() -> set[str]:
    """IPSP_* names the images set themselves (ENV)."""
    names: set[str] = set()
    for dockerfile in DOCKER.glob("*.Dockerfile"):
        for block in re.findall(r"^ENV ((?:.*\\\n)*.*)$", dockerfile.read_text(), re.MULTILINE):
            names |= set(re.findall(r"\b(IPSP_[A-Z0-9_]+)=", block))
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_manifests_only_name_settings(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    """An unknown IPSP_* variable would make every ipsp process refuse to start."""
    assert env_problems(rendered[overlay], set(env_var_names())) == []


def test_settings_are_set_or_left_to_defaults_on_purpose(rendered: dict[str, list[Manifest]]) -> None:
    """The env the deployment sets is exactly the settings, less those documented as defaults."""
    accepted, defaults = set(env_var_names()), documented_defaults()
    set_somewhere = set().union(*(names_set(r) for r in rendered.values())) | dockerfile_settings()
    assert dockerfile_settings() <= accepted
    assert defaults <= accepted, f"params.env lists unknown settings: {sorted(defaults - accepted)}"
    assert set_somewhere & defaults == set(), "set, yet listed as left to its default in params.env"
    missing = accepted - set_somewhere - defaults
    assert missing == set(), (
        f"settings neither set nor documented: {sorted(missing)}; set them in base/params.env "
        "or add a '# default: NAME (why)' line there"
    )


def test_secrets_hold_exactly_the_secret_settings(rendered: dict[str, list[Manifest]]) -> None:
    """The four secret settings come from Secrets, and the ConfigMap holds none of them."""
    app = set(find(rendered["dev"], "Secret", "ipsp-app")["data"])
    api = set(find(rendered["dev"], "Secret", "ipsp-api")["data"])
    assert app == {"IPSP_S3_ACCESS_KEY", "IPSP_S3_SECRET_KEY", "IPSP_MONGO_URI"}
    assert api == {"IPSP_MONGO_URI", "IPSP_API_TOKEN"}
    params = set(find(rendered["dev"], "ConfigMap", "ipsp-params")["data"])
    assert params & (app | api) == set()


# --- tests: images ---------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_built_here_and_pinned(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    """ipsp-* images come from 1_infrastructure/docker at the project's version; all pinned."""
    assert image_problems(rendered[overlay]) == []


def test_every_built_image_is_deployed(rendered: dict[str, list[Manifest]]) -> None:
    """No Dockerfile builds an image no manifest uses."""
    used = {image.rpartition("/")[2].partition(":")[0] for r in rendered.values() for _, image in image_references(r)}
    assert set(built_images()) <= used
    for name, (tag, _) in built_images().items():
        assert tag == project_version(), f"{name}: build lines tag {tag}, the project is {project_version()}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_executors_run_their_drivers_image(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    """SPARK_IMAGE (executors) comes from the driver's Dockerfile at the driver's tag."""
    built = built_images()
    for name, container in all_containers(rendered[overlay]):
        for entry in container.get("env") or []:
            if entry["name"] == "SPARK_IMAGE":
                driver_repo, _, driver_tag = container["image"].rpartition("/")[2].partition(":")
                exec_repo, _, exec_tag = entry["value"].rpartition("/")[2].partition(":")
                assert built[exec_repo][1] == built[driver_repo][1], f"{name}: {entry['value']}"
                assert exec_tag == driver_tag, f"{name}: {entry['value']} vs {container['image']}"


# --- tests: consistency between the parts -----------------------------------------------


def component_selectors(node: Any) -> Iterator[str]:
    """app.kubernetes.io/component values named by a NetworkPolicy's pod selectors."""
    if isinstance(node, dict):
        if "podSelector" in node:
            selector = node["podSelector"] or {}
            label = (selector.get("matchLabels") or {}).get("app.kubernetes.io/component")
            if label:
                yield label
            for expression in selector.get("matchExpressions") or []:
                if expression["key"] == "app.kubernetes.io/component":
                    yield from expression["values"]
        for value in node.values():
            yield from component_selectors(value)
    elif isinstance(node, list):
        for item in node:
            yield from component_selectors(item)


def pod_components(resources: list[Manifest]) -> set[str]:
    """Component labels of every pod the manifests create (Spark's pods included)."""
    found = set()
    for resource in resources:
        template = pod_template(resource)
        if template is not None:
            found.add(template["metadata"]["labels"]["app.kubernetes.io/component"])
        for _, spec in spark_pods(resource):
            found.add(spec["labels"]["app.kubernetes.io/component"])
    for _, pod in executor_templates(resources):
        found.add(pod["metadata"]["labels"]["app.kubernetes.io/component"])
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_cover_every_pod(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    """Default deny, and every pod has explicit flows; no policy names a component that does not exist."""
    policies = [r for r in rendered[overlay] if r["kind"] == "NetworkPolicy"]
    deny = next(p for p in policies if p["metadata"]["name"] == "default-deny")
    assert deny["spec"]["podSelector"] == {} and sorted(deny["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    components = pod_components(rendered[overlay])
    named = {c for policy in policies for c in component_selectors(policy["spec"])}
    assert named - components == set(), "policies name components no pod has"
    targeted = {c for policy in policies for c in component_selectors({"podSelector": policy["spec"]["podSelector"]})}
    assert components - targeted == set(), "pods without any allowed flow"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_quorum_matches_replicas(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    """start.sh builds the KRaft quorum from KAFKA_NODES: it must equal the replica count."""
    kafka = find(rendered[overlay], "StatefulSet", "kafka")
    env = {e["name"]: e.get("value") for e in kafka["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert int(env["KAFKA_NODES"]) == kafka["spec"]["replicas"]


def test_mongodb_setup_creates_the_indexes_the_code_uses() -> None:
    """setup.js creates exactly the one index list the stream job creates (the API's read-only user cannot)."""
    from ipsp.mongo import INDEXES

    text = (K8S / "base" / "mongodb" / "setup.js").read_text()
    block = text.split("// BEGIN INDEXES", 1)[1].split("// END INDEXES", 1)[0]
    literal = block.split("=", 1)[1].strip().rstrip(";")
    script = {c: {tuple(spec.items()) for spec in specs} for c, specs in json.loads(literal).items()}
    code = {c: {tuple((k, int(d)) for k, d in keys) for keys in specs} for c, specs in INDEXES.items()}
    assert script == code


def test_grafana_kustomization_lists_every_provisioning_file() -> None:
    """kustomize has no globs: a dashboard not listed would silently not be deployed."""
    kustomization = yaml.safe_load((INFRA / "grafana" / "kustomization.yaml").read_text())
    listed = {f for generator in kustomization["configMapGenerator"] for f in generator.get("files", [])}
    on_disk = {
        str(path.relative_to(INFRA / "grafana"))
        for pattern in ("datasources/*.yaml", "providers/*.yaml", "dashboards/*.json")
        for path in (INFRA / "grafana").glob(pattern)
    }
    assert on_disk - listed == set()


# --- tests: secrets generation -----------------------------------------------------------


def test_gen_secrets_writes_random_private_files_and_keeps_them(tmp_path: Path) -> None:
    """Fresh random values per field and per run; existing files survive a second run."""
    k8s = fresh_copy(tmp_path)
    overlay = k8s / "overlays" / "dev"
    assert gen_secrets(k8s, overlay).returncode == 0
    app = overlay / "secrets" / "app.secret.env"
    first = app.read_text()
    assert stat.S_IMODE(os.stat(app).st_mode) == 0o600
    values = dict(line.split("=", 1) for line in first.splitlines() if line and not line.startswith("#"))
    assert not any("@GENERATE@" in value for value in values.values())
    password = re.search(r"://ipsp_app:([A-Za-z0-9]{24})@", values["IPSP_MONGO_URI"])
    assert password and re.fullmatch(r"[A-Za-z0-9]{24}", values["IPSP_S3_SECRET_KEY"])
    assert password[1] != values["IPSP_S3_SECRET_KEY"]
    assert gen_secrets(k8s, overlay).returncode == 0 and app.read_text() == first


def env_values(path: Path) -> dict[str, str]:
    """KEY=value lines of a secret env file."""
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_gen_secrets_rotate_changes_app_credentials_and_never_root(tmp_path: Path) -> None:
    """--rotate: new app/API passwords (same users); root and Grafana admin files untouched."""
    k8s = fresh_copy(tmp_path)
    overlay = k8s / "overlays" / "dev"
    assert gen_secrets(k8s, overlay).returncode == 0
    secrets = overlay / "secrets"
    before = {path.name: path.read_text() for path in secrets.glob("*.secret.env")}
    result = gen_secrets(k8s, overlay, "--rotate")
    assert result.returncode == 0, result.stderr
    assert sorted(line.split()[0] for line in result.stdout.splitlines()).count("rotated") == 2
    for name in ("minio.secret.env", "mongodb.secret.env", "grafana.secret.env"):
        assert (secrets / name).read_text() == before[name], f"{name} must never be rotated"
    user = re.compile(r"://([^:]+):")
    for name in ("app.secret.env", "api.secret.env"):
        template = env_values(k8s / "secrets" / f"{name}.example")
        old = dict(line.split("=", 1) for line in before[name].splitlines() if line and not line.startswith("#"))
        new = env_values(secrets / name)
        assert old.keys() == new.keys() == template.keys()
        for key, pattern in template.items():
            if "@GENERATE@" in pattern:
                assert new[key] != old[key], f"{name}: {key} was not rotated"
            else:
                assert new[key] == old[key] == pattern
        if "IPSP_MONGO_URI" in new:  # same MongoDB user, new password: setup.js updates it
            assert user.search(new["IPSP_MONGO_URI"])[1] == user.search(old["IPSP_MONGO_URI"])[1]  # type: ignore[index]
        assert stat.S_IMODE(os.stat(secrets / name).st_mode) == 0o600


def test_gen_secrets_refuses_the_old_force_flag(tmp_path: Path) -> None:
    """--force used to rotate the root passwords and lock the setup Jobs out: now a clear error."""
    k8s = fresh_copy(tmp_path)
    result = gen_secrets(k8s, k8s / "overlays" / "dev", "--force")
    assert result.returncode == 2 and "--rotate" in result.stderr
    assert not (k8s / "overlays" / "dev" / "secrets").exists()


def test_gen_secrets_rejects_a_folder_that_is_not_an_overlay(tmp_path: Path) -> None:
    """A wrong path is a clear error, not files written somewhere."""
    result = gen_secrets(K8S, tmp_path)
    assert result.returncode == 2 and "no kustomization.yaml" in result.stderr
    assert list(tmp_path.iterdir()) == []


# --- tests: the broken fixture -----------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        (lambda rs: schema_problems(rs, K8S_VERSIONS[-1]), ["readOnlyRootFileSystem"]),
        (label_problems, ["app.kubernetes.io/component missing", "app.kubernetes.io/part-of missing"]),
        (
            workload_problems,
            [
                "no resources.limits.memory",
                "no readinessProbe",
                "no livenessProbe",
                "runAsNonRoot must be true",
                "capabilities must drop ALL",
                "automountServiceAccountToken must be false",
                "ipsp-app:latest is not pinned",
            ],
        ),
        (secret_problems, ["IPSP_MONGO_URI has a literal value", "a URI with a password"]),
        (lambda rs: env_problems(rs, set(env_var_names())), ["IPSP_API_TOKN is not a field"]),
        (image_problems, ["ipsp-app:latest is not pinned", "tagged with the project version"]),
    ],
    ids=["schema", "labels", "workload", "secrets", "env", "images"],
)
def test_broken_fixture_is_caught(broken: list[Manifest], check: Any, expected: list[str]) -> None:
    """Each check finds the defect aimed at it in tests/fixtures/k8s-broken."""
    problems = check(broken)
    for text in expected:
        assert any(text in problem for problem in problems), (text, problems)


# --- tests: the deployment guide matches the manifests -----------------------------------


def doc_lines() -> list[str]:
    """Command lines of deploy.md's shell blocks (continuations joined, comments dropped)."""
    blocks = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", DEPLOY_DOC.read_text(), re.DOTALL)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def doc_commands() -> list[str]:
    """The kubectl command lines of deploy.md."""
    return [line for line in doc_lines() if line.startswith("kubectl ")]


def test_deploy_doc_paths_and_images_exist() -> None:
    """Files, scripts and image builds the guide names are the repository's."""
    built, version = built_images(), project_version()
    for line in doc_lines():
        for path in re.findall(r"(?:\s|^)(1_infrastructure/[^\s;&|]+)", line):
            generated = re.fullmatch(r"1_infrastructure/k8s/overlays/[a-z-]+/secrets/[a-z]+\.secret\.env", path)
            assert generated or (REPO / path).exists(), f"{line}: {path} does not exist"
        for dockerfile, name, tag in re.findall(r"docker build -f (\S+) .*?-t (ipsp-[a-z-]+):(\S+)", line):
            assert (REPO / dockerfile).is_file(), line
            assert name in built and built[name][1] == REPO / dockerfile, f"{line}: {dockerfile} does not build {name}"
            assert tag == version, f"{line}: tag {tag}, the project version is {version}"


def test_deploy_doc_commands_match_the_manifests(rendered: dict[str, list[Manifest]]) -> None:
    """Every resource, path, port and variable a kubectl command in deploy.md names exists."""
    everything = [r for resources in rendered.values() for r in resources]
    names = {(r["kind"].lower(), generated_name(r)) for r in everything}
    aliases = {"deploy": "deployment", "svc": "service", "sts": "statefulset", "cm": "configmap", "cj": "cronjob"}
    commands = doc_commands()
    assert len(commands) >= 10, "deploy.md lost its commands"
    created_jobs = {m for c in commands for m in re.findall(r"create job (\S+) --from=", c)}
    for command in commands:
        for path in re.findall(r"(?:apply|delete|kustomize|diff) -k (\S+)", command):
            assert (REPO / path / "kustomization.yaml").is_file(), f"{command}: no kustomization at {path}"
        refs = re.findall(
            r"\b(deployment|deploy|statefulset|sts|cronjob|cj|job|service|svc|configmap|cm|"
            r"secret|pod|sparkapplication)/([a-z0-9-]+)",
            command,
        )
        for kind, name in refs:
            kind = aliases.get(kind, kind)
            if (kind == "job" and name in created_jobs) or kind == "pod":
                continue
            assert (kind, name) in names, f"{command}: {kind}/{name} is not in the manifests"
        if refs or " create job " in command or " logs " in command:
            assert "-n ipsp" in command, f"{command}: every namespaced command needs -n ipsp"
        for component in re.findall(r"-l app\.kubernetes\.io/component=([a-z0-9-]+)", command):
            assert component in set().union(*(pod_components(r) for r in rendered.values())), command
        for service, port in re.findall(r"port-forward svc/([a-z0-9-]+) \d+:(\d+)", command):
            ports = {
                p["port"]
                for r in everything
                if r["kind"] == "Service" and r["metadata"]["name"] == service
                for p in r["spec"]["ports"]
            }
            assert int(port) in ports, f"{command}: service {service} has no port {port}"
        for kind, name, variables in re.findall(r"set env (deployment|cronjob)/([a-z0-9-]+) ((?:\S+=\S+ ?)+)", command):
            resource = next(r for r in everything if r["kind"].lower() == kind and r["metadata"]["name"] == name)
            env = {e["name"] for _, c in all_containers([resource]) for e in c.get("env") or []}
            for variable in re.findall(r"(\S+)=", variables):
                assert variable in env, f"{command}: {name} has no variable {variable}"
