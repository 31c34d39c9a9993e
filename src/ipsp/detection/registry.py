"""Model registry on the object store: versioned models with a card, sha256-checked, cached.

Layout under the registry root (``IPSP_MODEL_REGISTRY_URI``, default
``<storage_uri>/models``)::

    <name>/<version>/<file>        the model file as pushed (e.g. centernet.onnx, best.onnx, best.pt)
    <name>/<version>/card.json     its ModelCard, written last: a version exists once its card does

Versions are pushed once and never overwritten; without ``--version`` the next
integer is used. ``name`` alone means the highest version (integers compare as
numbers). Pulled files land in a local cache (``<home>/cache/models/<name>/<version>/``)
and are checked against the card's sha256 on every load.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer

from ipsp.config import Settings, get_settings
from ipsp.contracts import SHA256_PATTERN, UtcDatetime, utc_now
from ipsp.detection.errors import ModelError, ModelNotFound
from ipsp.detection.spec import ModelSpec, file_kind
from ipsp.storage import ObjectNotFound, ObjectStore, StorageError, open_store, sha256_file

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.\-]{0,63}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
CARD_FILE = "card.json"


class ModelCard(BaseModel):
    """What the registry records about one model version (``card.json``)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    schema_version: Literal["1.0"] = "1.0"
    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    file: str = Field(min_length=1, description="file name inside <name>/<version>/")
    sha256: str = Field(pattern=SHA256_PATTERN)
    size_bytes: int = Field(gt=0)
    backend: Literal["onnx", "ultralytics"]
    decoder: Literal["yolov8", "end2end", "centernet", "nanodet"]
    class_names: dict[int, str] = Field(min_length=1, description="model class id -> name")
    input_size: tuple[int, int] = Field(description="model input [height, width]")
    created_at: UtcDatetime
    source: str = Field("", description="where the weights come from (package, training run)")
    license: str = ""
    description: str = ""
    metrics: dict[str, float] = Field(default_factory=dict, description="e.g. mAP50, mAP50-95 on validation")
    provenance: dict[str, Any] = Field(
        default_factory=dict, description="base weights, dataset and its sha256, command, full metrics (model card)"
    )

    @field_serializer("class_names")
    def _names_as_strings(self, value: dict[int, str]) -> dict[str, str]:
        # JSON object keys are strings; keep them in id order for readable cards
        return {str(k): value[k] for k in sorted(value)}

    @property
    def ref(self) -> str:
        """``name:version``."""
        return f"{self.name}:{self.version}"

    def key(self, registry_file: str | None = None) -> str:
        """Object key (relative to the registry root) of this version's model file or another file."""
        return f"{self.name}/{self.version}/{registry_file or self.file}"


def parse_ref(ref: str) -> tuple[str, str | None]:
    """Split ``name[:version]``; refuse names the layout cannot hold."""
    name, _, version = ref.partition(":")
    if not re.match(NAME_PATTERN, name):
        raise ModelError(f"invalid model name {name!r}: lower-case letters, digits, '.', '_', '-'")
    if version and not re.match(VERSION_PATTERN, version):
        raise ModelError(f"invalid model version {version!r}")
    return name, version or None


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural sort key: ``2 < 10``, ``1.2 < 1.10``; text parts after numbers."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-_]", version))


def inspect_model(path: Path) -> ModelSpec:
    """Read a model file's spec (backend, decoder, names, input size) from its own metadata."""
    kind = file_kind(path)
    if kind == "onnx":
        from ipsp.detection.onnx_backend import OnnxBackend

        return OnnxBackend(path, threads=1).spec
    from ipsp.detection.ultralytics_backend import inspect_checkpoint

    return inspect_checkpoint(path)


def card_for(
    path: Path, name: str, version: str, sha256: str, source: str = "", license: str = "",
    description: str = "", metrics: dict[str, float] | None = None, provenance: dict[str, Any] | None = None,
) -> ModelCard:  # fmt: skip
    """Build the card of a local model file from its metadata."""
    spec = inspect_model(path)
    return ModelCard(
        name=name,
        version=version,
        file=path.name,
        sha256=sha256,
        size_bytes=path.stat().st_size,
        backend=spec.backend,
        decoder=spec.decoder,
        class_names=dict(spec.names),
        input_size=spec.input_size,
        created_at=utc_now(),
        source=source,
        license=license,
        description=description,
        metrics=metrics or {},
        provenance=provenance or {},
    )


class ModelRegistry:
    """Push, list and pull models under one registry root; pulls are cached and verified."""

    def __init__(self, uri: str, cache_dir: Path, settings: Settings | None = None) -> None:
        self.uri = uri
        self.cache_dir = cache_dir
        self.settings = settings
        self._store: ObjectStore | None = None

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ModelRegistry:
        """The registry the settings point at, cached under ``<home>/cache/models``."""
        s = settings or get_settings()
        return cls(s.model_registry_uri, s.home / "cache" / "models", s)

    @property
    def store(self) -> ObjectStore:
        """The object store (opened on first use so listing a local cache needs no server)."""
        if self._store is None:
            self._store = open_store(self.uri, self.settings)
        return self._store

    def push(
        self,
        path: Path,
        name: str,
        version: str | None = None,
        source: str = "",
        license: str = "",
        description: str = "",
        metrics: dict[str, float] | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> ModelCard:
        """Upload a model file and its card as a new version; returns the card."""
        parse_ref(name)
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist")
        existing = [c.version for c in self.list(name)]
        if version is None:
            numbers = [int(v) for v in existing if v.isdigit()]
            version = str(max(numbers, default=0) + 1)
        parse_ref(f"{name}:{version}")
        if version in existing:
            raise ModelError(f"model {name}:{version} already exists in {self.uri}; push a new version")
        sha = sha256_file(path)
        card = card_for(path, name, version, sha, source, license, description, metrics, provenance)
        self.store.upload_file(path, card.key(), sha256=sha)
        self.store.put(card.key(CARD_FILE), card.model_dump_json(indent=2).encode())
        return card

    def list(self, name: str | None = None) -> list[ModelCard]:
        """Cards of every version (of one model when ``name`` is given), by name then version."""
        prefix = f"{parse_ref(name)[0]}/" if name else ""
        cards = []
        for info in self.store.list(prefix):
            parts = info.key.split("/")
            if len(parts) == 3 and parts[2] == CARD_FILE:
                cards.append(self._read_card(info.key))
        return sorted(cards, key=lambda c: (c.name, version_key(c.version)))

    def card(self, ref: str) -> ModelCard:
        """The card of ``name:version``, or of the highest version for ``name``."""
        name, version = parse_ref(ref)
        if version is not None:
            try:
                return self._read_card(f"{name}/{version}/{CARD_FILE}")
            except ObjectNotFound:
                known = ", ".join(c.version for c in self.list(name)) or "none"
                raise ModelNotFound(f"model {name}:{version} not in registry {self.uri} (versions: {known})") from None
        cards = self.list(name)
        if not cards:
            raise ModelNotFound(f"model {name!r} not in registry {self.uri}")
        return cards[-1]

    def _read_card(self, key: str) -> ModelCard:
        raw = self.store.get(key)
        try:
            return ModelCard.model_validate_json(raw)
        except ValidationError as exc:
            raise ModelError(f"{self.store.uri(key)}: invalid model card ({exc.errors()[0]['msg']})") from exc

    def cached(self, card: ModelCard) -> Path:
        """Where a version's file lives in the local cache."""
        return self.cache_dir / card.name / card.version / card.file

    def pull(self, ref: str, dest: Path | None = None) -> tuple[Path, ModelCard]:
        """Fetch a model into the cache (or ``dest``), verifying its sha256; return path and card.

        A pinned version already in the cache is used without asking the store.
        """
        name, version = parse_ref(ref)
        card = self._cached_card(name, version) if version and dest is None else None
        if card is None:
            card = self.card(ref)
        target = dest or self.cached(card)
        if target.is_file() and sha256_file(target) == card.sha256:
            return target, card
        try:
            self.store.download_file(card.key(), target, sha256=card.sha256)
        except ObjectNotFound as exc:
            raise ModelError(f"model {card.ref}: file missing in the registry ({exc})") from exc
        except StorageError as exc:
            raise ModelError(f"model {card.ref}: {exc}") from exc
        if dest is None:
            (target.parent / CARD_FILE).write_text(card.model_dump_json(indent=2))
        return target, card

    def _cached_card(self, name: str, version: str) -> ModelCard | None:
        path = self.cache_dir / name / version / CARD_FILE
        if not path.is_file():
            return None
        try:
            card = ModelCard.model_validate_json(path.read_text())
        except ValidationError:
            return None
        return card if self.cached(card).is_file() else None


def verify_file(path: Path, sha256: str, what: str) -> None:
    """Refuse a model file whose bytes are not the ones its card or provenance names."""
    actual = sha256_file(path)
    if actual != sha256:
        raise ModelError(f"{what}: {path} has sha256 {actual}, expected {sha256}; the file is corrupt or replaced")


def bundled_dir(settings: Settings) -> Path:
    """Folder of the models shipped with the project (``4_model_training/models`` in a checkout)."""
    if settings.models_dir is not None:
        return settings.models_dir
    return Path(__file__).resolve().parents[3] / "4_model_training" / "models"


def bundled_model(name: str, settings: Settings) -> tuple[Path, ModelCard] | None:
    """A shipped model by name (``<name>.onnx`` + ``<name>.provenance.json``), sha256-checked."""
    folder = bundled_dir(settings)
    provenance = folder / f"{name}.provenance.json"
    if not provenance.is_file():
        return None
    record = json.loads(provenance.read_text())
    path = folder / record["file"]
    if not path.is_file():
        raise ModelError(f"shipped model {name}: {path} is missing (see {provenance.name})")
    verify_file(path, record["sha256"], f"shipped model {name}")
    source = record.get("source", {})
    card = card_for(
        path, name, str(record.get("version", "1")), record["sha256"],
        source=f"{source.get('registry', '')}:{source.get('package', '')}@{source.get('version', '')}",
        license=str(source.get("license", "")), description=str(record.get("architecture", "")),
        provenance={"input_size": record["input_size"]} if record.get("input_size") else None,
    )  # fmt: skip
    return path, card


def ship_model(
    registry: ModelRegistry, ref: str, folder: Path, as_name: str | None = None, input_size: str = ""
) -> tuple[Path, dict[str, Any]]:
    """Copy a registry model and its card into the shipped folder as ``<name>.onnx`` + ``<name>.provenance.json``.

    The provenance record is the one ``bundled_model`` reads (file, sha256, version,
    source, licence, and the ``input_size`` to run it at when ``IPSP_INPUT_SIZE`` is
    empty: ``input_size``, else the card's), with the whole card beside it.
    """
    path, card = registry.pull(ref)
    input_size = input_size or str(card.provenance.get("input_size", ""))
    name = parse_ref(as_name or card.name)[0]
    target = folder / f"{name}{path.suffix}"
    folder.mkdir(parents=True, exist_ok=True)
    target.write_bytes(path.read_bytes())
    verify_file(target, card.sha256, f"shipped copy of {card.ref}")
    record: dict[str, Any] = {
        "name": name,
        "file": target.name,
        "sha256": card.sha256,
        "size_bytes": card.size_bytes,
        "version": card.version,
        "source": {"registry": "ipsp model registry", "package": card.name, "version": card.version,
                   "license": card.license},
        "architecture": card.description,
        **({"input_size": input_size} if input_size else {}),
        "card": json.loads(card.model_dump_json()),
    }  # fmt: skip
    (folder / f"{name}.provenance.json").write_text(json.dumps(record, indent=2) + "\n")
    return target, record


def resolve_model(ref: str | Path, settings: Settings | None = None) -> tuple[Path, ModelCard | None]:
    """Find a model: an existing file path, else registry ``name[:version]``, else a shipped model.

    Registry models are pulled into the cache and sha256-verified; the card is ``None``
    for a plain file.
    """
    s = settings or get_settings()
    path = Path(ref)
    if path.suffix in (".onnx", ".pt") or path.is_file():
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist")
        return path, None
    name, version = parse_ref(str(ref))
    registry = ModelRegistry.from_settings(s)
    try:
        return registry.pull(str(ref))
    except ModelNotFound:
        shipped = bundled_model(name, s)
        if shipped is None or (version is not None and version != shipped[1].version):
            raise
        return shipped


def iter_versions(cards: Iterable[ModelCard]) -> list[dict[str, object]]:
    """Rows for a listing table."""
    return [
        {
            "name": c.name,
            "version": c.version,
            "backend": c.backend,
            "decoder": c.decoder,
            "classes": len(c.class_names),
            "input": f"{c.input_size[0]}x{c.input_size[1]}",
            "size_mb": round(c.size_bytes / 1e6, 2),
            "sha256": c.sha256[:12],
            "created_at": c.created_at.isoformat(timespec="seconds") if isinstance(c.created_at, datetime) else "",
        }
        for c in cards
    ]
