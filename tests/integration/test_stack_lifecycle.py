"""``ipsp stack`` as a user runs it: idempotent up, status/env output, clear errors, precise down."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ipsp.config import Settings
from ipsp.errors import UserError
from ipsp.localstack import stack
from ipsp.localstack.fetch import JarBundle, fetch_bundle
from ipsp.localstack.layout import StackLayout

IPSP = [sys.executable, "-m", "ipsp.cli"]


def _ipsp(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*IPSP, *args], capture_output=True, text=True, env=env, timeout=600, check=False)


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _env(home: Path, settings: Settings, ports: list[int] | None = None) -> dict[str, str]:
    kafka, controller, mongo, s3 = ports or [
        settings.stack_kafka_port,
        settings.stack_kafka_controller_port,
        settings.stack_mongo_port,
        settings.stack_s3_port,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPSP_")}
    env.update(
        IPSP_HOME=str(home),
        IPSP_STACK_KAFKA_PORT=str(kafka),
        IPSP_STACK_KAFKA_CONTROLLER_PORT=str(controller),
        IPSP_STACK_MONGO_PORT=str(mongo),
        IPSP_STACK_S3_PORT=str(s3),
    )
    return env


def test_up_twice_is_harmless(stack_settings: Settings) -> None:
    before = stack.pids(stack_settings)

    again = _ipsp("stack", "up")

    assert again.returncode == 0, again.stderr
    assert stack.pids(stack_settings) == before
    assert all(before.values())
    assert stack.status(stack_settings).all_up


def test_fetch_reuses_what_is_there(stack_settings: Settings) -> None:
    result = _ipsp("stack", "fetch")

    assert result.returncode == 0, result.stderr
    assert "everything already fetched" in result.stderr


def test_status_json_is_one_object_with_the_agreed_shape(stack_settings: Settings) -> None:
    result = _ipsp("stack", "status", "--json")

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # exactly one JSON document on stdout
    assert set(data) == {"kafka", "mongodb", "s3", "spark"}
    assert data["kafka"] == {"bootstrap": stack_settings.kafka_bootstrap, "up": True}
    assert data["mongodb"] == {"uri": stack_settings.mongo_uri.get_secret_value(), "up": True}
    assert data["s3"] == {
        "endpoint": stack_settings.s3_endpoint,
        "access_key": stack_settings.s3_access_key,
        "secret_key": stack_settings.s3_secret_key.get_secret_value(),
        "up": True,
    }
    # the optional Spark cluster: its addresses whether it runs or not
    assert data["spark"]["master"] == f"spark://127.0.0.1:{stack_settings.stack_spark_master_port}"
    assert data["spark"]["ui"] == f"http://127.0.0.1:{stack_settings.stack_spark_master_ui_port}"
    assert set(data["spark"]) == {"master", "ui", "workers", "up"}


def test_env_points_a_shell_at_the_stack(stack_settings: Settings) -> None:
    script = (
        'eval "$("$@" stack env)" && '
        'echo "$IPSP_KAFKA_BOOTSTRAP $IPSP_S3_ENDPOINT $IPSP_S3_ACCESS_KEY $IPSP_STORAGE_URI"'
    )
    result = subprocess.run(["bash", "-c", script, "bash", *IPSP], capture_output=True, text=True, check=True)

    assert result.stdout.split() == [
        stack_settings.kafka_bootstrap,
        stack_settings.s3_endpoint,
        stack_settings.s3_access_key,
        "s3://ipsp",
    ]


def test_a_taken_port_is_a_one_line_error(tmp_path: Path, stack_settings: Settings) -> None:
    # a second stack folder wanting the running stack's ports
    result = _ipsp("stack", "up", env=_env(tmp_path / "other", stack_settings))

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"port {stack_settings.stack_kafka_port}" in lines[0]
    assert "IPSP_STACK_KAFKA_PORT" in lines[0]
    assert "Traceback" not in result.stderr


def test_second_stack_on_other_ports_and_down_stops_only_its_own(tmp_path: Path, stack_settings: Settings) -> None:
    main_pids = stack.pids(stack_settings)
    main = StackLayout.from_settings(stack_settings)
    home = tmp_path / "home"
    other = StackLayout(root=home / "stack")
    # reuse the fetched software; data, configs and credentials stay separate
    for source, target in [
        (main.kafka_lib, other.kafka_lib),
        (main.s3proxy_lib, other.s3proxy_lib),
        (main.bin_dir, other.bin_dir),
        (main.spark_jars, other.spark_jars),
    ]:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source, target_is_directory=True)
    ports = _free_ports(6)
    env = _env(home, stack_settings, ports[:4])
    env.update(IPSP_STACK_SPARK_MASTER_PORT=str(ports[4]), IPSP_STACK_SPARK_MASTER_UI_PORT=str(ports[5]))

    started = _ipsp("stack", "up", env=env)
    assert started.returncode == 0, started.stderr
    # its own Spark cluster too, which `stack down` stops with the rest
    cluster = _ipsp("stack", "spark", "up", "--workers", "1", env=env)
    assert cluster.returncode == 0, cluster.stderr
    assert _ipsp("stack", "spark", "up", "--workers", "1", env=env).returncode == 0  # idempotent
    up_status = json.loads(_ipsp("stack", "status", "--json", env=env).stdout)
    stopped = _ipsp("stack", "down", env=env)
    down_status = json.loads(_ipsp("stack", "status", "--json", env=env).stdout)

    assert up_status["kafka"] == {"bootstrap": f"127.0.0.1:{ports[0]}", "up": True}
    assert up_status["mongodb"]["up"] and up_status["s3"]["up"]
    assert up_status["s3"]["access_key"] != stack_settings.s3_access_key  # generated per stack
    assert up_status["spark"] == {
        "master": f"spark://127.0.0.1:{ports[4]}", "ui": f"http://127.0.0.1:{ports[5]}", "workers": 1, "up": True,
    }  # fmt: skip
    assert "spark-worker-0" in stopped.stderr and "spark-master" in stopped.stderr
    assert stopped.returncode == 0, stopped.stderr
    assert not any(part["up"] for part in down_status.values())
    assert not list(other.run_dir.glob("*.pid"))
    # the main stack was not touched
    assert stack.pids(stack_settings) == main_pids
    assert stack.status(stack_settings).all_up


def test_failed_download_is_a_clear_error(tmp_path: Path, stack_settings: Settings) -> None:
    pom = tmp_path / "pom.xml"
    pom.write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>ipsp.test</groupId><artifactId>missing</artifactId><version>1</version>"
        "<packaging>pom</packaging><dependencies><dependency><groupId>org.apache.kafka</groupId>"
        "<artifactId>kafka-clients</artifactId><version>0.0.0-no-such-version</version>"
        "</dependency></dependencies></project>"
    )
    layout = StackLayout(root=tmp_path / "stack")

    with pytest.raises(UserError, match=r"fetching the broken jars from Maven Central failed .*log: "):
        fetch_bundle(JarBundle("broken", pom, tmp_path / "lib"), layout)
    assert not (tmp_path / "lib").exists()
