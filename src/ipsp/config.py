"""Typed settings for every stage.

One flat settings class with the ``IPSP_`` prefix, so a deployment's environment
is easy to check against it (the Kubernetes tests do exactly that). Precedence is
explicit argument > environment > the local stack's generated env file > default.
Defaults point at the single-machine stack on loopback.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "IPSP_"


def default_home() -> Path:
    """Local state folder: stack data, caches, checkpoints; the same from every working folder.

    ``IPSP_HOME`` when set; else the git-ignored ``.local`` of the checkout this
    package runs from (found by walking up from the package itself, which also
    finds a venv inside the checkout); else, installed outside any checkout, a
    per-user data folder (``$XDG_DATA_HOME/ipsp``, by default ``~/.local/share/ipsp``).
    Never the working folder: a command run from a subfolder would otherwise see
    no stack credentials and start a second checkpoint tree.
    """
    if os.environ.get("IPSP_HOME"):
        return Path(os.environ["IPSP_HOME"]).expanduser().resolve()
    checkout = find_checkout(Path(__file__).resolve())
    if checkout is not None:
        return checkout / ".local"
    return user_data_dir() / "ipsp"


def find_checkout(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` that is an IPSP checkout (pyproject.toml, CONTRACTS.md, src/ipsp)."""
    for folder in [start, *start.parents]:
        if (
            (folder / "pyproject.toml").is_file()
            and (folder / "CONTRACTS.md").is_file()
            and (folder / "src" / "ipsp").is_dir()
        ):
            return folder
    return None


def user_data_dir() -> Path:
    """The per-user data folder (XDG): ``$XDG_DATA_HOME`` or ``~/.local/share``."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    return Path(xdg).expanduser().resolve() if xdg else Path.home() / ".local" / "share"


def stack_env_file() -> Path:
    """Env file the local stack writes with its generated development credentials."""
    return default_home() / "stack" / "stack.env"


class Settings(BaseSettings):
    """All knobs of the pipeline; see CONTRACTS.md section 'Environment variables'."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        env_file=None,
        validate_default=True,
    )

    # local state
    home: Path = Field(default_factory=default_home, description="Local state folder (stack, caches).")
    log_level: str = Field("INFO", description="Python log level.")

    # object storage
    storage_uri: str = Field("", description="Root URI for shards, manifests, models (file:// or s3://).")
    s3_endpoint: str = Field("http://127.0.0.1:9000", description="S3 endpoint URL.")
    s3_access_key: str = Field("", description="S3 access key.")
    s3_secret_key: SecretStr = Field(SecretStr(""), description="S3 secret key.")
    s3_region: str = Field("us-east-1", description="S3 region.")

    # Kafka
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    kafka_topic: str = Field("traffic-metadata", description="Topic carrying frame metadata.")
    kafka_partitions: int = Field(4, ge=1, description="Partitions when the producer creates the topic.")

    # MongoDB
    mongo_uri: SecretStr = Field(SecretStr("mongodb://127.0.0.1:27017/"), description="MongoDB URI.")
    mongo_db: str = Field("traffic_db", description="MongoDB database.")

    # detection
    # model and score_threshold: the fidelity table's choice (benchmarks/results/fidelity.json); its input
    # size ships in the model's record (4_model_training/models/<name>.provenance.json, "input_size")
    model: str = Field("traffic", description="Model to load: registry name[:version] or a file path.")
    model_registry_uri: str = Field("", description="Model registry root (default: <storage_uri>/models).")
    score_threshold: float = Field(0.4, ge=0.0, le=1.0, description="Minimum detection score.")
    input_size: str = Field(
        "", pattern=r"^(\d+x\d+)?$",
        description="Model input WIDTHxHEIGHT for models whose graph leaves the size free (others keep theirs; "
        "empty: the size the shipped model's record names, else the model's own).",
    )  # fmt: skip
    batch_size: int = Field(8, ge=1, le=256, description="Frames per inference batch.")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads (0: the task's cores).")
    prefetch_batches: int = Field(
        2, ge=0, le=16, description="Batches a stream task fetches and decodes ahead of inference (0: no overlap)."
    )
    cameras_config: Path | None = Field(None, description="YAML with per-camera ROI and thresholds.")
    models_dir: Path | None = Field(
        None, description="Folder of shipped model files (default: the checkout's 4_model_training/models)."
    )
    shard_cache_bytes: int = Field(2 << 30, ge=1 << 20, description="Local LMDB shard cache bound.")
    shard_cache_dir: Path | None = Field(
        None,
        description="Local LMDB shard cache folder (default: <home>/shard-cache); read where the task runs, so an "
        "executor's own value wins over the driver's and each machine (each local-stack worker) keeps its own.",
    )

    # Spark and streaming
    spark_master: str = Field("local[2]", description="Spark master URL.")
    spark_driver_memory: str = Field("2g", description="Spark driver memory.")
    spark_cores_max: int = Field(
        0, ge=0,
        description="Cores the stream job takes on a Spark cluster (spark.cores.max); it waits until they all "
        "registered before it warms up and sizes its batches (0: whatever the cluster has at start).",
    )  # fmt: skip
    spark_jars_dir: Path | None = Field(
        None, description="Spark Kafka connector jars for spark.jars (default: <home>/stack/spark-jars)."
    )
    checkpoint_uri: str = Field("", description="Streaming checkpoint root (default: <home>/checkpoints).")
    max_offsets_per_trigger: int = Field(
        0, ge=0, description="Kafka offsets per micro-batch (0: about 8 s of the work measured at start)."
    )
    trigger_seconds: float = Field(2.0, ge=0.0, description="Micro-batch trigger interval.")
    window_seconds: int = Field(60, ge=1, description="Tumbling window length.")
    watermark_seconds: int = Field(120, ge=0, description="Event-time watermark delay.")
    window_idle_seconds: float = Field(
        300.0, gt=0.0, description="A camera silent this long (wall time) has its open windows closed."
    )

    # serving
    api_token: SecretStr = Field(SecretStr(""), description="Bearer token for the API (empty: no auth).")
    api_cors_origins: str = Field("", description="Comma-separated CORS origins (empty: closed).")
    api_cache_seconds: float = Field(
        5.0,
        ge=0.0,
        le=300.0,
        description="API: how long a read of the serving state is trusted (new batches show after it).",
    )
    api_warm_hours: int = Field(
        6, ge=0, le=168, description="API: hours of serving documents read into its cache at start (0: none)."
    )

    # retention (`ipsp prune`; 0 keeps forever); serving rollups are kept, with their totals
    retention_frames_days: float = Field(7.0, ge=0.0, description="Keep analysis_results this many days.")
    retention_windows_days: float = Field(90.0, ge=0.0, description="Keep traffic_windows this many days.")
    retention_progress_days: float = Field(7.0, ge=0.0, description="Keep pipeline_progress this many days.")
    retention_dead_letters_days: float = Field(30.0, ge=0.0, description="Keep dead_letters this many days.")

    # local stack ports (loopback only)
    stack_kafka_port: int = Field(9092, description="Local Kafka broker port.")
    stack_kafka_controller_port: int = Field(9093, description="Local Kafka controller port.")
    stack_mongo_port: int = Field(27017, description="Local FerretDB port.")
    stack_s3_port: int = Field(9000, description="Local S3 server port.")
    stack_k8s_port: int = Field(6443, description="Local kube-apiserver port (manifest tests).")
    stack_etcd_port: int = Field(2379, description="Local etcd client port (peer port: this plus one).")
    stack_spark_master_port: int = Field(
        7077, description="Local Spark standalone master port (`ipsp stack spark up`; workers take free ports)."
    )
    stack_spark_master_ui_port: int = Field(8080, description="Local Spark master web UI and JSON status port.")

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_env(cls, data: Any) -> Any:
        known = {ENV_PREFIX + name.upper() for name in cls.model_fields}
        unknown = sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)
        if unknown:
            raise ValueError(f"unknown setting(s) in the environment: {', '.join(unknown)}")
        return data

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        if not self.storage_uri:
            self.storage_uri = (self.home / "store").as_uri()
        if not self.model_registry_uri:
            self.model_registry_uri = self.storage_uri.rstrip("/") + "/models"
        if not self.checkpoint_uri:
            self.checkpoint_uri = (self.home / "checkpoints").as_uri()
        return self


def load_settings(**overrides: Any) -> Settings:
    """Build settings: explicit overrides > env > the local stack's env file > defaults."""
    env_file = stack_env_file()
    clean = {k: v for k, v in overrides.items() if v is not None}
    if env_file.exists():
        return Settings(_env_file=env_file, **clean)  # type: ignore[call-arg]
    return Settings(**clean)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings from the environment (cached; tests call cache_clear)."""
    return load_settings()


def env_var_names() -> list[str]:
    """Every environment variable the settings accept (used by docs and k8s tests)."""
    return sorted(ENV_PREFIX + name.upper() for name in Settings.model_fields)


def env_table_markdown() -> str:
    """The CONTRACTS.md table of environment variables, generated from the fields."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None or field.default in ("", None):
            default = "(derived)" if name in _DERIVED else "(empty)"
        elif isinstance(field.default, SecretStr):
            default = f"`{field.default.get_secret_value()}`" if field.default.get_secret_value() else "(empty)"
        else:
            default = f"`{field.default}`"
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {default} | {field.description} |")
    return "\n".join(rows)


_DERIVED = {"home", "storage_uri", "model_registry_uri", "checkpoint_uri"}
