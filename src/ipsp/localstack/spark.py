"""A Spark standalone cluster on loopback: one master and N workers from the venv's own pyspark.

``ipsp stack spark up`` runs the master and worker classes that ship in the
pyspark package (its ``jars/`` folder; pyspark's SPARK_HOME is the package
folder itself) as background processes with pid files and logs under the stack
layout, so that ``IPSP_SPARK_MASTER=spark://127.0.0.1:7077`` runs a job on
executors in processes of their own, as on a real cluster. Nothing is fetched:
the jars are pyspark's.

The master listens on the ports of the stack's port plan
(``IPSP_STACK_SPARK_MASTER_PORT``, ``IPSP_STACK_SPARK_MASTER_UI_PORT``);
workers bind port 0 and report the ports they got to the master, so any number
of them never collide. Executors run their Python tasks with this venv's
interpreter and write scratch files under the worker's own folders; the Kafka
connector reaches them through the driver's ``spark.jars`` (``ipsp.sparkutil``).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipsp.config import Settings, load_settings
from ipsp.errors import UserError
from ipsp.localstack import procs
from ipsp.localstack.layout import StackLayout
from ipsp.localstack.ports import require_free
from ipsp.localstack.render import LOOPBACK
from ipsp.localstack.stack import Say, java_cmd, last_line, stack_lock

MASTER = "spark-master"
WORKER = "spark-worker"  # worker i is spark-worker-<i> (pid file, log, work folder)
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
# the daemons only keep track of workers and executors: a small heap each (Spark's default is 1 GiB),
# and no optimising JIT or parallel GC threads: start-up is most of their CPU time, and it shares small machines
DAEMON_JVM = ["-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
# the master's REST submission server would take a third fixed port (6066); jobs reach the master over RPC
MASTER_JVM = ["-Dspark.master.rest.enabled=false"]
START_TIMEOUT_S = 120.0
MAX_WORKERS = 250  # worker i listens on 127.0.0.(i + 2)
MEMORY = re.compile(r"^[1-9]\d*[mMgG]$")


@dataclass(frozen=True)
class ClusterSpec:
    """How many workers, and what each offers to executors."""

    workers: int = 2
    cores: int = 1
    memory: str = "2g"

    def __post_init__(self) -> None:
        if self.workers < 1 or self.cores < 1:
            raise UserError(f"a cluster needs at least 1 worker of 1 core (got {self.workers} x {self.cores})")
        if not MEMORY.match(self.memory):
            raise UserError(f"worker memory {self.memory!r}: use a size like 1g or 512m")


@dataclass(frozen=True)
class ClusterStatus:
    """What the master reports about the cluster."""

    master_url: str
    ui_url: str
    up: bool  # the master answers and is the alive leader
    workers: int  # workers registered and alive
    cores: int  # their cores together


# ---------------------------------------------------------------- names and commands


def master_url(settings: Settings) -> str:
    """The URL jobs use (``IPSP_SPARK_MASTER``)."""
    return f"spark://{LOOPBACK}:{settings.stack_spark_master_port}"


def ui_url(settings: Settings) -> str:
    """The master's web UI; ``<ui>/json/`` is its status as JSON."""
    return f"http://{LOOPBACK}:{settings.stack_spark_master_ui_port}"


def worker_name(index: int) -> str:
    """Pid file, log and folder name of worker ``index``."""
    return f"{WORKER}-{index}"


def spark_home() -> Path:
    """pyspark's package folder, which is a complete SPARK_HOME (``jars/``, ``bin/``)."""
    try:
        import pyspark
    except ImportError:
        raise UserError(
            f"pyspark is not installed in this Python ({sys.executable}): run `make setup` (pip install -e .)"
        ) from None
    home = Path(pyspark.__file__).resolve().parent
    if not (home / "jars").is_dir():
        raise UserError(f"pyspark at {home} has no jars/ folder: reinstall it (pip install --force-reinstall pyspark)")
    return home


def master_cmd(java: str, home: Path, settings: Settings) -> list[str]:
    """The master on loopback, on the port plan's RPC and UI ports."""
    return java_cmd(
        java, [*DAEMON_JVM, *MASTER_JVM], home / "jars", MASTER_CLASS,
        "--host", LOOPBACK,
        "--port", str(settings.stack_spark_master_port),
        "--webui-port", str(settings.stack_spark_master_ui_port),
    )  # fmt: skip


def worker_host(index: int) -> str:
    """Worker ``index``'s own loopback address (127.0.0.2, .3, ...: all of 127.0.0.0/8 is loopback on Linux).

    Each worker is then a host of its own, as each machine of a real cluster is.
    It matters for locality: the Kafka source orders the executors by host to
    give each topic-partition its preferred executor, so an executor that
    replaces a lost one takes its place, and its cameras and shard cache stay.
    On one shared address a replacement sorted by its new id could swap every
    partition to the other executor, refilling both caches.
    """
    if not 0 <= index < MAX_WORKERS:
        raise UserError(f"a local cluster has at most {MAX_WORKERS} workers")
    return f"127.0.0.{index + 2}"


def worker_cmd(
    java: str, home: Path, settings: Settings, spec: ClusterSpec, work_dir: Path, host: str = LOOPBACK
) -> list[str]:
    """One worker on a loopback address; port 0 for RPC and UI: Spark binds free ports and tells the master."""
    return java_cmd(
        java, DAEMON_JVM, home / "jars", WORKER_CLASS,
        "--host", host,
        "--port", "0",
        "--webui-port", "0",
        "--cores", str(spec.cores),
        "--memory", spec.memory,
        "--work-dir", str(work_dir),
        master_url(settings),
    )  # fmt: skip


def scala_version(home: Path) -> str:
    """The Scala version of the Spark jars (``spark-core_2.13-4.2.0.jar`` -> ``2.13``)."""
    for jar in sorted((home / "jars").glob("spark-core_*.jar")):
        match = re.match(r"spark-core_(\d+\.\d+)-", jar.name)
        if match:
            return match.group(1)
    raise UserError(f"no spark-core jar in {home / 'jars'}: reinstall pyspark (pip install --force-reinstall pyspark)")


def daemon_env(
    base: Mapping[str, str],
    home: Path,
    python: str,
    local_dir: Path | None = None,
    shard_cache: Path | None = None,
    host: str = LOOPBACK,
) -> dict[str, str]:
    """The environment of a master or worker (a worker passes it on to the executors it launches)."""
    env = dict(base)
    env.update(
        {
            # a worker builds its executors' class path from <SPARK_HOME>/jars; Spark's launcher code
            # asks for the Scala version first, which only its shell scripts (or a source build) supply
            "SPARK_HOME": str(home),
            "SPARK_SCALA_VERSION": scala_version(home),
            # executors bind and advertise their worker's loopback address, like everything in the stack
            "SPARK_LOCAL_IP": host,
            # a job that names no interpreter still runs its Python tasks in this venv
            "PYSPARK_PYTHON": python,
        }
    )
    if local_dir is not None:
        env["SPARK_LOCAL_DIRS"] = str(local_dir)  # executors' scratch files in the stack, not in /tmp
    if shard_cache is not None:
        # a shard cache of its own, as each machine of a real cluster has: which executor fetched
        # which shards then shows here too, instead of every worker reading one shared folder
        env["IPSP_SHARD_CACHE_DIR"] = str(shard_cache)
    return env


# ---------------------------------------------------------------- health


def master_state(settings: Settings, timeout_s: float = 2.0) -> dict[str, Any] | None:
    """The master's ``/json/`` status, or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"{ui_url(settings)}/json/", timeout=timeout_s) as resp:
            state = json.loads(resp.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def alive_workers(state: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The workers a master status lists as alive (a stopped worker stays listed for a while, DEAD)."""
    if not state:
        return []
    return [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]


def master_alive(state: Mapping[str, Any] | None) -> bool:
    """True when the master has become the leader (it answers its UI a few seconds before)."""
    return bool(state) and state.get("status") == "ALIVE"  # type: ignore[union-attr]


def _wait(what: str, ready: Callable[[], bool], layout: StackLayout, names: list[str]) -> None:
    """Wait until ``ready()``; fail fast, with the log's last line, when one of ``names`` exits.

    ``what`` completes "<what> within N s": what did not happen.
    """
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        for name in names:
            if procs.running(layout.pid_file(name)) is None:
                log_file = layout.log_file(name)
                raise UserError(f"{name} exited during start-up (log: {log_file}): {last_line(log_file)}")
        if time.monotonic() > deadline:
            stop_all(layout, lambda _msg: None)  # no half-started cluster left behind
            raise UserError(
                f"{what} within {START_TIMEOUT_S:.0f} s and the cluster was stopped "
                f"(logs: {layout.log_dir}/{MASTER}.log, {WORKER}-*.log)"
            )
        time.sleep(0.5)


# ---------------------------------------------------------------- processes


def running_workers(layout: StackLayout) -> list[str]:
    """Names of the workers whose recorded process still runs."""
    names = sorted(path.stem for path in layout.run_dir.glob(f"{WORKER}-*.pid"))
    return [name for name in names if procs.running(layout.pid_file(name)) is not None]


def stop_all(layout: StackLayout, say: Say) -> list[str]:
    """Stop the workers, then the master (the caller holds the stack lock); returns what was stopped."""
    stopped = []
    for name in [*running_workers(layout), MASTER]:
        record = procs.stop(layout.pid_file(name))
        if record is not None:
            say(f"stopped {name} (pid {record.pid})")
            stopped.append(name)
    return stopped


def _start(name: str, cmd: list[str], env: dict[str, str], layout: StackLayout, say: Say) -> None:
    say(f"starting {name}")
    procs.start(cmd, layout.log_file(name), layout.pid_file(name), env=env, cwd=layout.spark_dir)


def _ensure_master(layout: StackLayout, settings: Settings, java: str, home: Path, say: Say) -> None:
    """Start the master unless it runs with exactly this command (another port plan restarts the cluster).

    Does not wait for it: the workers start meanwhile (JVM start-up takes most
    of the time) and keep trying to register until the master is up.
    """
    cmd = master_cmd(java, home, settings)
    record = procs.running(layout.pid_file(MASTER))
    if record is not None and record.cmd != cmd:
        say("the running master has other settings: restarting the cluster")
        stop_all(layout, say)
        record = None
    if record is None:
        require_free(settings.stack_spark_master_port, "the Spark master", "IPSP_STACK_SPARK_MASTER_PORT")
        require_free(settings.stack_spark_master_ui_port, "the Spark master UI", "IPSP_STACK_SPARK_MASTER_UI_PORT")
        _start(MASTER, cmd, daemon_env(os.environ, home, sys.executable), layout, say)


def _ensure_workers(
    layout: StackLayout, settings: Settings, spec: ClusterSpec, java: str, home: Path, say: Say
) -> list[str]:
    """Run exactly workers 0..N-1 with this spec: extra or differently started ones are stopped."""
    hosts = {worker_name(i): worker_host(i) for i in range(spec.workers)}
    wanted = {
        name: worker_cmd(java, home, settings, spec, layout.spark_work_dir(name), host) for name, host in hosts.items()
    }
    for name in running_workers(layout):
        record = procs.read_pid_file(layout.pid_file(name))
        if name not in wanted or record is None or record.cmd != wanted[name]:
            say(f"stopping {name} (not part of {spec.workers} x {spec.cores} core(s), {spec.memory})")
            procs.stop(layout.pid_file(name))
    for name, cmd in wanted.items():
        if procs.running(layout.pid_file(name)) is None:
            layout.spark_work_dir(name).mkdir(parents=True, exist_ok=True)
            layout.spark_local_dir(name).mkdir(parents=True, exist_ok=True)
            env = daemon_env(
                os.environ, home, sys.executable, layout.spark_local_dir(name), layout.spark_shard_cache(name),
                hosts[name],
            )  # fmt: skip
            _start(name, cmd, env, layout, say)
    return list(wanted)


# ---------------------------------------------------------------- public API


def up(
    settings: Settings | None = None, spec: ClusterSpec | None = None, say: Say = lambda _msg: None
) -> ClusterStatus:
    """Start the master and the workers that are not running; wait until all registered. Idempotent."""
    from ipsp.localstack.fetch import require_java
    from ipsp.sparkutil import connector_jars

    settings = settings or load_settings()
    spec = spec or ClusterSpec()
    layout = StackLayout.from_settings(settings)
    home = spark_home()
    java = require_java()
    connector_jars(settings)  # a job on the cluster needs the Kafka connector: say so now, not in the first job
    layout.ensure_dirs()
    layout.spark_dir.mkdir(parents=True, exist_ok=True)
    with stack_lock(layout, say):
        _ensure_master(layout, settings, java, home, say)
        names = _ensure_workers(layout, settings, spec, java, home, say)
        _wait("the Spark master did not become alive", lambda: master_alive(master_state(settings)), layout, [MASTER])
        say(f"waiting for {spec.workers} worker(s) to register")
        _wait(
            f"{spec.workers} worker(s) did not register with the master",
            lambda: len(alive_workers(master_state(settings))) == spec.workers,
            layout,
            [MASTER, *names],
        )
    return status(settings)


def down(settings: Settings | None = None, say: Say = lambda _msg: None) -> list[str]:
    """Stop the workers and the master (only the processes ``up`` started)."""
    layout = StackLayout.from_settings(settings or load_settings())
    with stack_lock(layout, say):
        return stop_all(layout, say)


def status(settings: Settings | None = None) -> ClusterStatus:
    """Ask the master how the cluster stands."""
    settings = settings or load_settings()
    state = master_state(settings)
    workers = alive_workers(state)
    return ClusterStatus(
        master_url=master_url(settings),
        ui_url=ui_url(settings),
        up=master_alive(state),
        workers=len(workers),
        cores=sum(int(w.get("cores", 0)) for w in workers),
    )


def master_pid(settings: Settings | None = None) -> int | None:
    """The master's pid when it runs."""
    layout = StackLayout.from_settings(settings or load_settings())
    record = procs.running(layout.pid_file(MASTER))
    return record.pid if record else None
