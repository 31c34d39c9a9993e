"""Where the stack keeps everything: binaries, data, configs, logs, pid files.

All paths hang off ``<settings.home>/stack/`` so one ``rm -rf .local`` resets the
stack. The repository's ``1_infrastructure/local/`` folder holds the poms and
config templates the stack is built from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ipsp.config import Settings
from ipsp.errors import UserError

INFRA_SUBDIR = Path("1_infrastructure") / "local"


@dataclass(frozen=True)
class StackLayout:
    """Paths of one stack installation, rooted at ``<home>/stack``."""

    root: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> StackLayout:
        """The layout under ``settings.home``."""
        return cls(root=Path(settings.home).resolve() / "stack")

    # fetched or built software
    @property
    def bin_dir(self) -> Path:
        """Go binaries (FerretDB)."""
        return self.root / "bin"

    @property
    def kafka_lib(self) -> Path:
        """Kafka broker jars."""
        return self.root / "kafka" / "lib"

    @property
    def s3proxy_lib(self) -> Path:
        """S3Proxy jars."""
        return self.root / "s3proxy" / "lib"

    @property
    def spark_jars(self) -> Path:
        """Spark Kafka connector jars that pyspark does not ship."""
        return self.root / "spark-jars"

    @property
    def src_dir(self) -> Path:
        """Writable source copies for builds (FerretDB)."""
        return self.root / "src"

    @property
    def ferretdb_bin(self) -> Path:
        """The FerretDB executable."""
        return self.bin_dir / "ferretdb"

    # state
    @property
    def kafka_data(self) -> Path:
        """Kafka log dirs (KRaft metadata and topic data)."""
        return self.root / "kafka" / "data"

    @property
    def ferretdb_data(self) -> Path:
        """FerretDB SQLite databases."""
        return self.root / "ferretdb" / "data"

    @property
    def ferretdb_state(self) -> Path:
        """FerretDB's own state file folder."""
        return self.root / "ferretdb" / "state"

    @property
    def s3_data(self) -> Path:
        """S3 buckets (one folder per bucket)."""
        return self.root / "s3"

    @property
    def spark_dir(self) -> Path:
        """The local Spark cluster's folder (workers' work and scratch folders)."""
        return self.root / "spark"

    def spark_work_dir(self, worker: str) -> Path:
        """A Spark worker's work folder: its executors' logs (``<app>/<executor>/stderr``) and fetched jars."""
        return self.spark_dir / "work" / worker

    def spark_local_dir(self, worker: str) -> Path:
        """A Spark worker's scratch folder for its executors (shuffle and block files)."""
        return self.spark_dir / "local" / worker

    def spark_shard_cache(self, worker: str) -> Path:
        """A Spark worker's shard cache (``IPSP_SHARD_CACHE_DIR`` of its executors): one per worker, as per machine."""
        return self.spark_dir / "shard-cache" / worker

    @property
    def conf_dir(self) -> Path:
        """Rendered configuration files."""
        return self.root / "conf"

    @property
    def log_dir(self) -> Path:
        """Process logs."""
        return self.root / "logs"

    @property
    def run_dir(self) -> Path:
        """Pid files and the stack lock."""
        return self.root / "run"

    @property
    def env_file(self) -> Path:
        """Generated client settings (credentials), mode 0600."""
        return self.root / "stack.env"

    @property
    def lock_file(self) -> Path:
        """Serialises ``up``/``down``/``fetch`` across processes."""
        return self.run_dir / "stack.lock"

    def pid_file(self, service: str) -> Path:
        """Pid file of one service."""
        return self.run_dir / f"{service}.pid"

    def log_file(self, service: str) -> Path:
        """Stdout/stderr log of one service."""
        return self.log_dir / f"{service}.log"

    def ensure_dirs(self) -> None:
        """Create every folder the stack writes to."""
        for path in (
            self.bin_dir,
            self.kafka_data,
            self.ferretdb_data,
            self.ferretdb_state,
            self.s3_data,
            self.conf_dir,
            self.log_dir,
            self.run_dir,
        ):
            path.mkdir(parents=True, exist_ok=True)


def _candidates() -> list[Path]:
    here = Path(__file__).resolve()
    return [*here.parents, Path.cwd().resolve(), *Path.cwd().resolve().parents]


def infra_dir() -> Path:
    """The repository's ``1_infrastructure/local`` folder (poms, templates)."""
    for base in _candidates():
        candidate = base / INFRA_SUBDIR
        if (candidate / "kafka" / "pom.xml").is_file():
            return candidate
    raise UserError(
        f"cannot find {INFRA_SUBDIR}/ (the stack's poms and templates): run ipsp from the repository checkout"
    )
