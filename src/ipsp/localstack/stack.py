"""Start, check and stop the local stack: Kafka (KRaft), FerretDB, S3Proxy.

``up`` is idempotent: a service whose pid file points at a live process is left
alone (and only health-checked); anything else gets its port checked, its config
rendered and is started detached, then ``up`` waits until every server really
answers. ``down`` stops only the processes recorded in the pid files, the
optional Spark cluster of ``ipsp.localstack.spark`` included.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipsp.config import Settings, load_settings
from ipsp.errors import UserError
from ipsp.localstack import fetch, health, procs, render
from ipsp.localstack.layout import StackLayout, infra_dir
from ipsp.localstack.ports import require_free

Say = Callable[[str], None]

KAFKA_JVM = ["-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]
# S3Proxy holds a signed (non-chunked) request body in the heap to check its sha256,
# up to 128 MiB each: room for one shard-sized PUT per packing core, plus headroom
S3PROXY_JVM = ["-Xms64m", "-Xmx768m"]
COMMON_JVM = ["-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true"]


@dataclass(frozen=True)
class Credentials:
    """The S3 server's generated development credentials."""

    access_key: str
    secret_key: str


@dataclass(frozen=True)
class Service:
    """One server of the stack."""

    name: str  # pid/log file name
    title: str  # for messages
    start_timeout_s: float

    def ports(self, settings: Settings) -> list[tuple[int, str]]:
        """(port, setting variable) pairs the service listens on."""
        if self.name == "kafka":
            return [
                (settings.stack_kafka_port, "IPSP_STACK_KAFKA_PORT"),
                (settings.stack_kafka_controller_port, "IPSP_STACK_KAFKA_CONTROLLER_PORT"),
            ]
        if self.name == "ferretdb":
            return [(settings.stack_mongo_port, "IPSP_STACK_MONGO_PORT")]
        return [(settings.stack_s3_port, "IPSP_STACK_S3_PORT")]

    def healthy(self, settings: Settings, creds: Credentials | None, timeout_s: float = 3.0) -> bool:
        """Ask the server a real question."""
        if self.name == "kafka":
            return health.kafka_ok(render.kafka_bootstrap(settings), timeout_s)
        if self.name == "ferretdb":
            return health.mongo_ok(render.mongo_uri(settings), timeout_s)
        if creds is None:
            return False
        return health.s3_ok(render.s3_endpoint(settings), creds.access_key, creds.secret_key, timeout_s)


KAFKA = Service("kafka", "Kafka", 90.0)
FERRETDB = Service("ferretdb", "FerretDB", 60.0)
S3PROXY = Service("s3proxy", "S3Proxy", 90.0)
SERVICES = (KAFKA, FERRETDB, S3PROXY)


@dataclass(frozen=True)
class StackStatus:
    """What ``ipsp stack status`` reports."""

    kafka_bootstrap: str
    kafka_up: bool
    mongo_uri: str
    mongo_up: bool
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    s3_up: bool
    # the Spark cluster is optional (`ipsp stack spark up`): all_up does not wait for it
    spark_master: str = ""
    spark_ui: str = ""
    spark_workers: int = 0
    spark_up: bool = False

    @property
    def all_up(self) -> bool:
        """True when every service answers."""
        return self.kafka_up and self.mongo_up and self.s3_up

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """The one JSON object ``status --json`` prints."""
        return {
            "kafka": {"bootstrap": self.kafka_bootstrap, "up": self.kafka_up},
            "mongodb": {"uri": self.mongo_uri, "up": self.mongo_up},
            "s3": {
                "endpoint": self.s3_endpoint,
                "access_key": self.s3_access_key,
                "secret_key": self.s3_secret_key,
                "up": self.s3_up,
            },
            "spark": {
                "master": self.spark_master,
                "ui": self.spark_ui,
                "workers": self.spark_workers,
                "up": self.spark_up,
            },
        }


# ---------------------------------------------------------------- credentials


def read_credentials(layout: StackLayout) -> Credentials | None:
    """The generated S3 credentials, or None before the first ``up``."""
    try:
        values = render.parse_env_file(layout.env_file.read_text())
    except OSError:
        return None
    access, secret = values.get(render.ENV_S3_ACCESS), values.get(render.ENV_S3_SECRET)
    return Credentials(access, secret) if access and secret else None


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)


def ensure_env_file(layout: StackLayout, settings: Settings) -> Credentials:
    """Write ``stack.env`` (mode 0600): keep existing credentials, generate them the first time."""
    creds = read_credentials(layout)
    if creds is None:
        creds = Credentials(*render.new_credentials())
    values = render.client_env(settings, creds.access_key, creds.secret_key)
    _write_private(layout.env_file, render.format_env_file(values))
    return creds


# ---------------------------------------------------------------- locking


@contextlib.contextmanager
def stack_lock(layout: StackLayout, say: Say) -> Iterator[None]:
    """One ``up``/``down``/``fetch`` at a time per stack folder (other processes wait)."""
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    with layout.lock_file.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("waiting for another `ipsp stack` command to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------- commands per service


def java_cmd(java: str, jvm: list[str], lib: Path, main: str, *args: str) -> list[str]:
    # java expands the 'dir/*' class path wildcard itself (no shell involved)
    return [java, *jvm, *COMMON_JVM, "-cp", str(lib / "*"), main, *args]


def _kafka_cmd(layout: StackLayout, java: str, main: str, *args: str) -> list[str]:
    jvm = [
        *KAFKA_JVM,
        f"-Dlog4j2.configurationFile={infra_dir() / 'kafka' / 'log4j2.xml'}",
        f"-Dkafka.logs.dir={layout.log_dir / 'kafka'}",
    ]
    return java_cmd(java, jvm, layout.kafka_lib, main, *args)


def _prepare_kafka(layout: StackLayout, settings: Settings, java: str) -> list[str]:
    props = layout.conf_dir / "server.properties"
    template = infra_dir() / "kafka" / "server.properties.in"
    props.write_text(render.kafka_properties(template, settings, layout.kafka_data))
    if not (layout.kafka_data / "meta.properties").exists():
        # format the KRaft storage once; later starts reuse it
        cmd = _kafka_cmd(
            layout, java, "kafka.tools.StorageTool", "format",
            "-t", render.new_cluster_id(), "-c", str(props), "--ignore-formatted",
        )  # fmt: skip
        log_file = layout.log_file("kafka-format")
        with log_file.open("wb") as log:
            result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=180, check=False)
        if result.returncode != 0:
            raise UserError(f"formatting the Kafka storage failed (log: {log_file})")
    return _kafka_cmd(layout, java, "kafka.Kafka", str(props))


def _prepare_ferretdb(layout: StackLayout, settings: Settings) -> list[str]:
    return [
        str(layout.ferretdb_bin),
        "--handler=sqlite",
        f"--sqlite-url=file:{layout.ferretdb_data}/",
        f"--listen-addr={render.LOOPBACK}:{settings.stack_mongo_port}",
        f"--state-dir={layout.ferretdb_state}",
        "--telemetry=disable",
        "--debug-addr=-",  # no extra HTTP port
        "--log-level=error",  # at warn it logs every error reply it sends
    ]


def _prepare_s3proxy(layout: StackLayout, settings: Settings, java: str, creds: Credentials) -> list[str]:
    conf = layout.conf_dir / "s3proxy.conf"
    template = infra_dir() / "s3proxy" / "s3proxy.conf.in"
    text = render.s3proxy_properties(template, settings, layout.s3_data, creds.access_key, creds.secret_key)
    _write_private(conf, text)
    jvm = [*S3PROXY_JVM, f"-Dlogback.configurationFile={infra_dir() / 's3proxy' / 'logback.xml'}"]
    return java_cmd(java, jvm, layout.s3proxy_lib, "org.gaul.s3proxy.Main", "--properties", str(conf))


def _command(svc: Service, layout: StackLayout, settings: Settings, java: str, creds: Credentials) -> list[str]:
    if svc is KAFKA:
        return _prepare_kafka(layout, settings, java)
    if svc is FERRETDB:
        return _prepare_ferretdb(layout, settings)
    return _prepare_s3proxy(layout, settings, java, creds)


# ---------------------------------------------------------------- waiting


def last_line(path: Path) -> str:
    """The last non-empty line of a log (200 characters at most), for a one-line error."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


def _wait_healthy(svc: Service, layout: StackLayout, settings: Settings, creds: Credentials) -> None:
    deadline = time.monotonic() + svc.start_timeout_s
    pid_file, log_file = layout.pid_file(svc.name), layout.log_file(svc.name)
    while True:
        if svc.healthy(settings, creds, timeout_s=2.0):
            return
        if procs.running(pid_file) is None:
            detail = last_line(log_file)
            raise UserError(f"{svc.title} exited during start-up (log: {log_file}): {detail}")
        if time.monotonic() > deadline:
            procs.stop(pid_file)
            raise UserError(
                f"{svc.title} did not answer within {svc.start_timeout_s:.0f} s and was stopped (log: {log_file})"
            )
        time.sleep(0.5)


def _ensure_bucket(settings: Settings, creds: Credentials, bucket: str = render.DEFAULT_BUCKET) -> None:
    client = health.s3_client(render.s3_endpoint(settings), creds.access_key, creds.secret_key)
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)


# ---------------------------------------------------------------- public API


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else load_settings()


def _require_ports(services: list[Service], settings: Settings) -> None:
    for svc in services:
        for port, setting in svc.ports(settings):
            require_free(port, svc.title, setting)


def up(settings: Settings | None = None, say: Say = lambda _msg: None) -> StackStatus:
    """Fetch what is missing, start what is not running, wait until all answer."""
    settings = _settings(settings)
    layout = StackLayout.from_settings(settings)
    layout.ensure_dirs()
    with stack_lock(layout, say):
        to_start = [svc for svc in SERVICES if procs.running(layout.pid_file(svc.name)) is None]
        # ports are checked before fetching (fail fast) and again before starting anything,
        # so a clash leaves no half-started stack
        _require_ports(to_start, settings)
        fetch.fetch_all(layout, say)
        java = fetch.require_java()
        creds = ensure_env_file(layout, settings)
        _require_ports(to_start, settings)
        for svc in to_start:
            say(f"starting {svc.title}")
            cmd = _command(svc, layout, settings, java, creds)
            procs.start(cmd, layout.log_file(svc.name), layout.pid_file(svc.name), cwd=layout.root)
        for svc in SERVICES:
            say(f"waiting for {svc.title}")
            _wait_healthy(svc, layout, settings, creds)
        _ensure_bucket(settings, creds)
    return status(settings)


def down(settings: Settings | None = None, say: Say = lambda _msg: None) -> list[str]:
    """Stop the services recorded in the pid files, the Spark cluster first; returns the names stopped."""
    from ipsp.localstack import spark

    settings = _settings(settings)
    layout = StackLayout.from_settings(settings)
    with stack_lock(layout, say):
        # its jobs read Kafka and write FerretDB: it goes before them
        stopped = spark.stop_all(layout, say)
        for svc in reversed(SERVICES):
            record = procs.stop(layout.pid_file(svc.name))
            if record is not None:
                say(f"stopped {svc.title} (pid {record.pid})")
                stopped.append(svc.name)
    return stopped


def status(settings: Settings | None = None) -> StackStatus:
    """Health-check every service and the Spark cluster (concurrently); report addresses and credentials."""
    from ipsp.localstack import spark

    settings = _settings(settings)
    layout = StackLayout.from_settings(settings)
    creds = read_credentials(layout)
    with ThreadPoolExecutor(max_workers=len(SERVICES) + 1) as pool:
        cluster = pool.submit(spark.status, settings)
        kafka, mongo, s3 = pool.map(lambda svc: svc.healthy(settings, creds), SERVICES)
        spark_state = cluster.result()
    return StackStatus(
        kafka_bootstrap=render.kafka_bootstrap(settings),
        kafka_up=kafka,
        mongo_uri=render.mongo_uri(settings),
        mongo_up=mongo,
        s3_endpoint=render.s3_endpoint(settings),
        s3_access_key=creds.access_key if creds else "",
        s3_secret_key=creds.secret_key if creds else "",
        s3_up=s3,
        spark_master=spark_state.master_url,
        spark_ui=spark_state.ui_url,
        spark_workers=spark_state.workers,
        spark_up=spark_state.up,
    )


def pids(settings: Settings | None = None) -> dict[str, int | None]:
    """Pid of each running service (None when not running)."""
    layout = StackLayout.from_settings(_settings(settings))
    result: dict[str, int | None] = {}
    for svc in SERVICES:
        record = procs.running(layout.pid_file(svc.name))
        result[svc.name] = record.pid if record else None
    return result


def fetch_missing(settings: Settings | None = None, say: Say = lambda _msg: None) -> list[str]:
    """Fetch or build what is missing (under the stack lock); returns what was done."""
    layout = StackLayout.from_settings(_settings(settings))
    layout.ensure_dirs()
    with stack_lock(layout, say):
        return fetch.fetch_all(layout, say)


def shell_exports(settings: Settings | None = None) -> str:
    """``export`` lines pointing a shell at the local stack (needs a prior ``up``)."""
    settings = _settings(settings)
    layout = StackLayout.from_settings(settings)
    creds = read_credentials(layout)
    if creds is None:
        raise UserError("the local stack has no credentials yet: run `ipsp stack up` first")
    client = render.client_env(settings, creds.access_key, creds.secret_key)
    return render.export_lines(render.shell_env(client))
