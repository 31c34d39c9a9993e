"""Pure parts of the local Spark cluster: port plan, command lines, environments, master status."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from ipsp.config import Settings
from ipsp.errors import UserError
from ipsp.localstack import spark
from ipsp.localstack.layout import StackLayout
from ipsp.localstack.stack import StackStatus


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, stack_spark_master_port=17077, stack_spark_master_ui_port=18080)


def option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_default_port_plan_is_sparks_own() -> None:
    fields = Settings.model_fields
    assert fields["stack_spark_master_port"].default == 7077
    assert fields["stack_spark_master_ui_port"].default == 8080


def test_master_and_ui_urls_follow_the_port_plan_on_loopback(settings: Settings) -> None:
    assert spark.master_url(settings) == "spark://127.0.0.1:17077"
    assert spark.ui_url(settings) == "http://127.0.0.1:18080"


def test_master_command_binds_loopback_on_the_planned_ports(settings: Settings, tmp_path: Path) -> None:
    cmd = spark.master_cmd("/usr/bin/java", tmp_path, settings)

    assert cmd[0] == "/usr/bin/java"
    assert option(cmd, "-cp") == str(tmp_path / "jars" / "*")
    assert spark.MASTER_CLASS in cmd
    assert (option(cmd, "--host"), option(cmd, "--port"), option(cmd, "--webui-port")) == (
        "127.0.0.1", "17077", "18080",
    )  # fmt: skip
    # no REST submission server: it would need a third fixed port
    assert "-Dspark.master.rest.enabled=false" in cmd
    # JVM options come before the main class, program options after it
    assert cmd.index("-Xmx256m") < cmd.index(spark.MASTER_CLASS) < cmd.index("--host")


def test_worker_command_takes_free_ports_and_offers_the_spec(settings: Settings, tmp_path: Path) -> None:
    spec = spark.ClusterSpec(workers=3, cores=2, memory="1g")
    cmd = spark.worker_cmd("java", tmp_path, settings, spec, tmp_path / "work", spark.worker_host(1))

    assert spark.WORKER_CLASS in cmd
    assert option(cmd, "--host") == "127.0.0.3"  # a loopback address of its own: a host, as on a real cluster
    assert option(cmd, "--port") == "0" and option(cmd, "--webui-port") == "0"
    assert (option(cmd, "--cores"), option(cmd, "--memory")) == ("2", "1g")
    assert option(cmd, "--work-dir") == str(tmp_path / "work")
    assert cmd[-1] == "spark://127.0.0.1:17077"


def fake_spark_home(folder: Path) -> Path:
    (folder / "jars").mkdir(parents=True)
    (folder / "jars" / "spark-core_2.13-4.2.0.jar").touch()
    return folder


def test_worker_environment_points_executors_at_this_venv_and_the_stack(tmp_path: Path) -> None:
    base = {"PATH": "/bin", "PYTHONPATH": "/src"}
    home = fake_spark_home(tmp_path / "pyspark")
    env = spark.daemon_env(base, home, sys.executable, tmp_path / "local", tmp_path / "cache", "127.0.0.2")

    assert env["SPARK_HOME"] == str(home)
    # Spark's launcher (building the executors' command) needs it without the shell scripts
    assert env["SPARK_SCALA_VERSION"] == "2.13"
    assert env["PYSPARK_PYTHON"] == sys.executable
    assert env["SPARK_LOCAL_IP"] == "127.0.0.2"  # executors bind their worker's address
    assert env["SPARK_LOCAL_DIRS"] == str(tmp_path / "local")
    assert env["IPSP_SHARD_CACHE_DIR"] == str(tmp_path / "cache")  # a shard cache per worker, as per machine
    assert env["PYTHONPATH"] == "/src" and env["PATH"] == "/bin"  # the caller's environment passes through
    master = spark.daemon_env(base, home, sys.executable)
    assert "SPARK_LOCAL_DIRS" not in master and "IPSP_SHARD_CACHE_DIR" not in master  # the master has none
    assert master["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert base == {"PATH": "/bin", "PYTHONPATH": "/src"}


def test_each_worker_has_a_loopback_address_of_its_own() -> None:
    hosts = [spark.worker_host(i) for i in range(spark.MAX_WORKERS)]
    assert hosts[:2] == ["127.0.0.2", "127.0.0.3"] and hosts[-1] == "127.0.0.251"
    assert len(set(hosts)) == spark.MAX_WORKERS and "127.0.0.1" not in hosts  # the master and the stack keep .1
    with pytest.raises(UserError):
        spark.worker_host(spark.MAX_WORKERS)


def test_workers_have_their_own_folders_under_the_stack(settings: Settings) -> None:
    layout = StackLayout.from_settings(settings)
    names = [spark.worker_name(i) for i in range(2)]

    assert names == ["spark-worker-0", "spark-worker-1"]
    work = {layout.spark_work_dir(n) for n in names}
    local = {layout.spark_local_dir(n) for n in names}
    caches = {layout.spark_shard_cache(n) for n in names}
    assert len(work | local | caches) == 6
    assert all(layout.root in path.parents for path in work | local | caches)
    assert layout.pid_file(names[1]) == layout.run_dir / "spark-worker-1.pid"


@pytest.mark.parametrize(
    ("workers", "cores", "memory", "words"),
    [(0, 1, "1g", "at least 1 worker"), (1, 0, "1g", "at least 1 worker"), (1, 1, "lots", "size like 1g")],
)
def test_a_bad_spec_is_one_clear_error(workers: int, cores: int, memory: str, words: str) -> None:
    with pytest.raises(UserError, match=words):
        spark.ClusterSpec(workers=workers, cores=cores, memory=memory)


def test_alive_workers_skip_the_dead_ones_a_master_still_lists() -> None:
    state = {
        "status": "ALIVE",
        "workers": [
            {"id": "w1", "state": "ALIVE", "cores": 1},
            {"id": "w0", "state": "DEAD", "cores": 1},
            {"id": "w2", "state": "ALIVE", "cores": 2},
        ],
    }
    assert [w["id"] for w in spark.alive_workers(state)] == ["w1", "w2"]
    assert spark.master_alive(state)
    assert not spark.master_alive({"status": "STANDBY", "workers": []})
    assert spark.alive_workers(None) == [] and not spark.master_alive(None)


def test_status_of_a_cluster_that_is_not_running(tmp_path: Path) -> None:
    # port 1 on loopback: nothing answers
    settings = Settings(home=tmp_path, stack_spark_master_ui_port=1)
    status = spark.status(settings)

    assert status == spark.ClusterStatus(spark.master_url(settings), "http://127.0.0.1:1", False, 0, 0)
    assert spark.running_workers(StackLayout.from_settings(settings)) == []


def test_stack_status_shows_the_optional_cluster_without_needing_it() -> None:
    status = StackStatus(
        "127.0.0.1:9092", True, "mongodb://127.0.0.1:27017/", True, "http://h:1", "a", "s", True,
        spark_master="spark://127.0.0.1:7077", spark_ui="http://127.0.0.1:8080", spark_workers=2, spark_up=False,
    )  # fmt: skip

    assert status.as_dict()["spark"] == {
        "master": "spark://127.0.0.1:7077", "ui": "http://127.0.0.1:8080", "workers": 2, "up": False,
    }  # fmt: skip
    assert status.all_up  # the stack is up without a Spark cluster


def test_spark_home_is_the_pyspark_package() -> None:
    import pyspark

    home = spark.spark_home()
    assert home == Path(pyspark.__file__).resolve().parent
    assert (home / "jars").is_dir()
    assert re.fullmatch(r"2\.\d+", spark.scala_version(home))


def test_jars_without_spark_core_are_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "jars").mkdir()
    with pytest.raises(UserError, match="no spark-core jar"):
        spark.scala_version(tmp_path)
