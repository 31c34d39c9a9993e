"""Today's S3 clients, with their default settings, against the local S3 server.

boto3 >= 1.36 sends flexible-checksum headers (``x-amz-checksum-crc32``,
``x-amz-sdk-checksum-algorithm``) on every PUT and asks for checksums on GET;
S3Proxy used to answer those with NotImplemented. These tests use boto3 exactly
as a user would: only the endpoint and the credentials are set.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid

import boto3  # the dev extra installs it
import pytest

from ipsp.config import Settings


@pytest.fixture
def client(stack_settings: Settings):  # type: ignore[no-untyped-def]
    return boto3.client(
        "s3",
        endpoint_url=stack_settings.s3_endpoint,
        aws_access_key_id=stack_settings.s3_access_key,
        aws_secret_access_key=stack_settings.s3_secret_key.get_secret_value(),
        region_name=stack_settings.s3_region,
    )


def test_default_boto3_puts_and_gets(client) -> None:  # type: ignore[no-untyped-def]
    key = f"tests/boto3-{uuid.uuid4().hex[:8]}/small.bin"
    body = b"frame bytes " * 100
    reply = client.put_object(Bucket="ipsp", Key=key, Body=body)
    assert reply["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert client.get_object(Bucket="ipsp", Key=key)["Body"].read() == body
    assert client.get_object(Bucket="ipsp", Key=key, Range="bytes=6-11")["Body"].read() == b"bytes "
    assert client.head_object(Bucket="ipsp", Key=key)["ContentLength"] == len(body)
    listed = client.list_objects_v2(Bucket="ipsp", Prefix=key.rsplit("/", 1)[0])
    assert [o["Key"] for o in listed["Contents"]] == [key]
    client.delete_object(Bucket="ipsp", Key=key)
    with pytest.raises(client.exceptions.NoSuchKey):
        client.get_object(Bucket="ipsp", Key=key)


def test_default_boto3_multipart_round_trip(client) -> None:  # type: ignore[no-untyped-def]
    """upload_fileobj splits anything over 8 MiB into parts, each with its own checksum header."""
    key = f"tests/boto3-{uuid.uuid4().hex[:8]}/big.bin"
    data = os.urandom(12 * 1024 * 1024)
    client.upload_fileobj(io.BytesIO(data), "ipsp", key)
    back = io.BytesIO()
    client.download_fileobj("ipsp", key, back)
    assert hashlib.sha256(back.getvalue()).digest() == hashlib.sha256(data).digest()
    client.delete_object(Bucket="ipsp", Key=key)
