"""Real health checks: each asks the server a question only a working server answers.

Kafka: a metadata request (kafka-python). FerretDB: ``ping`` (pymongo).
S3: an authenticated bucket list (minio SDK), so a server that runs but rejects
our credentials counts as down.
"""

from __future__ import annotations

import logging
from urllib.parse import urlparse

log = logging.getLogger(__name__)


def kafka_ok(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """True when the broker answers a cluster metadata request."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    ms = int(timeout_s * 1000)
    # kafka-python logs connection refusals at ERROR while we poll a starting broker
    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="ipsp-stack-health",
            request_timeout_ms=ms,
            bootstrap_timeout_ms=ms,
            reconnect_backoff_max_ms=500,
        )
        try:
            cluster = admin.describe_cluster()
            return bool(cluster.get("brokers"))
        finally:
            admin.close()
    except (KafkaError, OSError, ValueError) as exc:
        log.debug("kafka not ready: %s", exc)
        return False
    finally:
        kafka_log.setLevel(level)


def mongo_ok(uri: str, timeout_s: float = 3.0) -> bool:
    """True when the server answers ``ping``."""
    from pymongo.errors import PyMongoError

    from ipsp.mongo import connect

    client = connect(uri, timeout_ms=int(timeout_s * 1000))
    try:
        client.admin.command("ping")
        return True
    except PyMongoError as exc:
        log.debug("mongodb not ready: %s", exc)
        return False
    finally:
        client.close()


def s3_client(endpoint: str, access_key: str, secret_key: str, timeout_s: float = 5.0):  # type: ignore[no-untyped-def]
    """A minio client for an ``http://host:port`` endpoint, with short timeouts and no retries."""
    import urllib3
    from minio import Minio

    url = urlparse(endpoint)
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
        retries=urllib3.Retry(total=0),
    )
    return Minio(
        url.netloc,
        access_key=access_key,
        secret_key=secret_key,
        secure=url.scheme == "https",
        region="us-east-1",
        http_client=http,
    )


def s3_ok(endpoint: str, access_key: str, secret_key: str, timeout_s: float = 3.0) -> bool:
    """True when the server accepts an authenticated ``ListBuckets`` with these credentials."""
    from minio.error import MinioException

    try:
        s3_client(endpoint, access_key, secret_key, timeout_s).list_buckets()
        return True
    except (MinioException, OSError, ValueError) as exc:
        log.debug("s3 not ready: %s", exc)
        return False
    except Exception as exc:  # urllib3 raises its own MaxRetryError/ProtocolError types
        import urllib3.exceptions

        if isinstance(exc, urllib3.exceptions.HTTPError):
            log.debug("s3 not ready: %s", exc)
            return False
        raise
