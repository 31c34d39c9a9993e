"""``s3://bucket/prefix`` backend over the minio SDK (MinIO, S3Proxy, AWS S3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from ipsp.config import Settings
from ipsp.errors import ServiceUnavailable
from ipsp.storage.base import ObjectInfo, ObjectNotFound, ObjectStore, StorageError, check_key

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's smallest part; the SDK refuses a smaller part_size
SINGLE_PUT_MAX = 128 * 1024 * 1024  # above this, a multipart upload (the SDK's own part size)

_MISSING = {"NoSuchKey", "NoSuchObject", "NoSuchBucket", "ResourceNotFound"}


def make_client(settings: Settings):  # type: ignore[no-untyped-def]
    """A minio client for the configured endpoint and credentials."""
    from minio import Minio

    endpoint = urlparse(settings.s3_endpoint)
    if endpoint.scheme not in ("http", "https") or not endpoint.netloc:
        raise StorageError(f"IPSP_S3_ENDPOINT must look like http://host:port, got {settings.s3_endpoint!r}")
    return Minio(
        endpoint.netloc,
        access_key=settings.s3_access_key or None,
        secret_key=settings.s3_secret_key.get_secret_value() or None,
        secure=endpoint.scheme == "https",
        region=settings.s3_region,
    )


class S3Store(ObjectStore):
    """Objects under ``prefix`` in one bucket."""

    def __init__(self, root_uri: str, settings: Settings) -> None:
        parsed = urlparse(root_uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StorageError(f"not an S3 URI: {root_uri!r} (expected s3://bucket/prefix)")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.root = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.endpoint = settings.s3_endpoint
        self.client = make_client(settings)

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, key: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        """Run one SDK call, mapping errors to clear messages."""
        from minio.error import S3Error
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except S3Error as exc:
            if exc.code in _MISSING:
                raise ObjectNotFound(f"no such object: {self.uri(key) if key else self.root} ({exc.code})") from None
            raise StorageError(
                f"{what} {self.uri(key) if key else self.root} failed: {exc.code}: {exc.message}"
            ) from None
        except HTTPError as exc:
            raise ServiceUnavailable(
                f"S3 server at {self.endpoint} does not answer ({exc.__class__.__name__})"
            ) from None

    def put(self, key: str, data: bytes) -> None:
        import io

        self._call("put", key, self.client.put_object, self.bucket, self._name(key), io.BytesIO(data), len(data))

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        offset = start or 0
        length = 0 if end is None else max(0, end - offset)
        if end is not None and length == 0:
            return b""
        response = self._call(
            "get", key, self.client.get_object, self.bucket, self._name(key), offset=offset, length=length
        )
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()

    def stat(self, key: str) -> ObjectInfo:
        info = self._call("stat", key, self.client.stat_object, self.bucket, self._name(key))
        return ObjectInfo(key, int(info.size or 0))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        start = f"{self.prefix}/" if self.prefix else ""
        objects = self._call("list", "", self.client.list_objects, self.bucket, prefix=start + prefix, recursive=True)
        items = self._call("list", "", list, objects)
        for obj in sorted(items, key=lambda o: o.object_name or ""):
            if not obj.is_dir:
                yield ObjectInfo((obj.object_name or "")[len(start) :], int(obj.size or 0))

    def delete(self, key: str) -> None:
        self._call("delete", key, self.client.remove_object, self.bucket, self._name(key))

    def _upload(self, path: Path, key: str) -> None:
        # One PUT up to SINGLE_PUT_MAX: a multipart upload makes S3Proxy's filesystem
        # backend write every part and then concatenate them (measured here: 39 MB/s
        # multipart, 83 MB/s single PUT for 60 MB). The SDK holds the one part in
        # memory while it sends it, and S3Proxy holds a signed body in its heap to
        # check it, refusing one over 128 MiB (its v4-max-non-chunked-request-size).
        size = path.stat().st_size
        part_size = max(size, MIN_PART_SIZE) if size <= SINGLE_PUT_MAX else 0
        self._call("upload", key, self.client.fput_object, self.bucket, self._name(key), str(path), part_size=part_size)

    def _download(self, key: str, path: Path) -> None:
        self._call("download", key, self.client.fget_object, self.bucket, self._name(key), str(path))

    def ensure_bucket(self) -> None:
        """Create the bucket when missing (used by the local stack and the k8s setup Job)."""
        if not self._call("bucket check", "", self.client.bucket_exists, self.bucket):
            self._call("make bucket", "", self.client.make_bucket, self.bucket)
