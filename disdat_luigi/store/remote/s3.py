"""Thin wrappers around each boto3 S3 call, translating AWS failures into disdat errors.

One client per process and AWS profile (boto3 clients are thread-safe); endpoints, region and
credentials come from the standard AWS configuration (AWS_PROFILE, AWS_ENDPOINT_URL[_S3], ...).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import hashlib
import ipaddress
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.session
import botocore.utils
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from disdat_luigi.config import RemoteSettings
from disdat_luigi.errors import (
    BucketNotFound,
    BundleCorrupt,
    CredentialsError,
    LocalDiskError,
    RemoteError,
    TransferError,
    describe_os_error,
)

MULTIPART_THRESHOLD = 8 * 1024 * 1024
LOCAL_DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EISDIR, errno.ENOTDIR, errno.EPERM}
CHUNK = 1024 * 1024
WRITEBACK_STEP = 32 * 1024 * 1024


@dataclass(frozen=True)
class RemoteObject:
    key: str
    size: int
    modified: float = 0.0  # LastModified, epoch seconds (0 when the listing did not say)
    etag: str = ""  # without quotes; the MD5 of the body for a single-part upload without SSE-KMS

    def holds(self, raw: bytes) -> bool:
        """Whether this object's body is `raw`, as far as its listing can tell: True only when
        its ETag is the MD5 of `raw` (a single-part upload, not encrypted with KMS). False says
        "not shown", not "different": read the object to be sure."""
        return self.size == len(raw) and self.etag == hashlib.md5(raw, usedforsecurity=False).hexdigest()


class S3:
    """The S3 operations the remote needs, over one shared client."""

    def __init__(self, settings: RemoteSettings) -> None:
        self.settings = settings
        self.client = _client(aws_environment(), settings.transfer_threads, os.getpid())
        self.transfer_config = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=MULTIPART_THRESHOLD,
            max_concurrency=settings.multipart_concurrency,
            use_threads=True,
        )

    def _extra(self, sha256: str | None = None) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if sha256 is not None:
            extra["Metadata"] = {"sha256": sha256}
        if self.settings.server_side_encryption != "none":
            extra["ServerSideEncryption"] = self.settings.server_side_encryption
            if self.settings.server_side_encryption == "aws:kms" and self.settings.sse_kms_key_id:
                extra["SSEKMSKeyId"] = self.settings.sse_kms_key_id
        return extra

    def check_bucket(self, bucket: str) -> None:
        with _translate(f"s3://{bucket}"):
            self.client.head_bucket(Bucket=bucket)

    def upload(
        self, path: Path, bucket: str, key: str, sha256: str, size: int, moved: Callable[[int], None] | None = None
    ) -> None:
        """Upload a file that must have `size` bytes and digest `sha256`, hashing it while it is
        read: a small one is read, checked, then sent; a large one goes multipart and is checked
        when its last part is read, before the upload is completed (and, should a mismatch still
        be found after, the object is deleted again). A mismatch raises BundleCorrupt and nothing
        stays at `key`; a failed multipart upload is aborted.

        Every object goes up with S3's SHA-256 checksum (per part for multipart), which S3 checks
        against the bytes it receives and keeps: that, not the sha256 metadata label (still written
        for earlier releases, but anyone can write it), is what `proves` later relies on."""
        url = f"s3://{bucket}/{key}"
        with open(path, "rb") as handle:
            if size < MULTIPART_THRESHOLD:
                body = handle.read(size + 1)
                digest = hashlib.sha256(body)
                _check_content(url, path, len(body), digest.hexdigest(), size, sha256)
                checksum = base64.b64encode(digest.digest()).decode()  # botocore then hashes nothing more
                with _translate(url):
                    self.client.put_object(
                        Bucket=bucket,
                        Key=key,
                        Body=body,
                        ChecksumAlgorithm="SHA256",
                        ChecksumSHA256=checksum,
                        **self._extra(sha256),
                    )
                return
            reader = _HashingReader(handle, lambda n, digest: _check_content(url, path, n, digest, size, sha256))
            extra = {**self._extra(sha256), "ChecksumAlgorithm": "SHA256"}
            try:
                with _translate(url):
                    self.client.upload_fileobj(
                        reader, bucket, key, ExtraArgs=extra, Config=self.transfer_config, Callback=moved
                    )
            except BaseException:
                self.abort_uploads(bucket, key)
                raise
        try:
            _check_content(url, path, reader.size, reader.digest.hexdigest(), size, sha256)
        except BundleCorrupt:
            self.delete(bucket, [key])
            raise

    def abort_uploads(self, bucket: str, key: str) -> int:
        """Abort every unfinished multipart upload of `key` (their parts cost storage); a count."""
        aborted = 0
        with contextlib.suppress(_NotFound, RemoteError), _translate(f"s3://{bucket}/{key}"):
            listed = self.client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
            for upload in listed:
                if upload["Key"] == key:
                    self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
                    aborted += 1
        return aborted

    def put_bytes(self, bucket: str, key: str, data: bytes, create_only: bool = False) -> bool:
        """Write a small object; with `create_only` an existing object is kept and False returned."""
        return self.put_conditional(bucket, key, data, create_only=create_only) is not None

    def put_conditional(
        self, bucket: str, key: str, data: bytes, *, if_match: str | None = None, create_only: bool = False
    ) -> str | None:
        """Write a small object only if it is absent (`create_only`) or still the version whose
        ETag is `if_match`; its new ETag, or None when another writer got there first (S3's 412
        or 409: the caller reads the object again)."""
        extra = self._extra()
        if create_only:
            extra["IfNoneMatch"] = "*"
        if if_match is not None:
            extra["IfMatch"] = if_match
        try:
            with _translate(f"s3://{bucket}/{key}"):
                response = self.client.put_object(Bucket=bucket, Key=key, Body=data, **extra)
        except _Precondition:
            return None
        return str(response.get("ETag", ""))

    def get_versioned(self, bucket: str, key: str, limit: int) -> tuple[bytes, str] | None:
        """A small object's content and ETag (for a later `put_conditional(if_match=...)`), None
        when it does not exist, an error past `limit` bytes."""
        try:
            with _translate(f"s3://{bucket}/{key}"):
                response = self.client.get_object(Bucket=bucket, Key=key)
                if response["ContentLength"] > limit:
                    raise TransferError(f"s3://{bucket}/{key} is larger than {limit} bytes; refusing it")
                data: bytes = response["Body"].read()
                return data, str(response.get("ETag", ""))
        except _NotFound:
            return None

    def download(self, bucket: str, key: str, target: Path, moved: Callable[[int], None] | None = None) -> str:
        """Stream the object into `target` (constant memory), flush it to disk, return its sha256;
        `moved` hears of every chunk written.

        One streaming GET rather than parallel ranged GETs: it hashes on the fly, and servers
        that serve ranges by copying the object (moto) make ranged downloads many times slower.
        A large object is hashed and written back to disk in two more threads while it arrives."""
        try:
            with _translate(f"s3://{bucket}/{key}"):
                response = self.client.get_object(Bucket=bucket, Key=key)
        except _NotFound as err:
            raise BundleCorrupt(
                f"s3://{bucket}/{key} is missing from the remote", hint="push the bundle again from a copy that has it"
            ) from err
        with _translate(f"s3://{bucket}/{key}"):
            large = response["ContentLength"] >= MULTIPART_THRESHOLD
            hasher = _Hasher(threaded=large)
            try:
                with open(target, "wb", buffering=0) as handle:
                    writeback = _Writeback(handle.fileno()) if large else None
                    try:
                        for chunk in response["Body"].iter_chunks(CHUNK):
                            hasher.update(chunk)
                            handle.write(chunk)
                            if moved is not None:
                                moved(len(chunk))
                            if writeback is not None:
                                writeback.wrote(len(chunk))
                    finally:
                        if writeback is not None:
                            writeback.stop()
                    os.fsync(handle.fileno())
            finally:
                digest = hasher.hexdigest()
            return digest

    def copy(self, src_bucket: str, src_key: str, bucket: str, key: str) -> None:
        """Server-side copy (multipart for large objects)."""
        with _translate(f"s3://{src_bucket}/{src_key}"):
            self.client.copy(
                {"Bucket": src_bucket, "Key": src_key},
                bucket,
                key,
                ExtraArgs=self._extra(),
                Config=self.transfer_config,
            )

    def sha256_of(self, bucket: str, key: str) -> tuple[int, str]:
        """Size and sha256 of an object, streamed (nothing is stored)."""
        digest = hashlib.sha256()
        size = 0
        with _translate(f"s3://{bucket}/{key}"):
            for chunk in self.client.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        return size, digest.hexdigest()

    def get_bytes(self, bucket: str, key: str, limit: int) -> bytes | None:
        """A small object's content, None when it does not exist, an error past `limit` bytes."""
        found = self.get_versioned(bucket, key, limit)
        return None if found is None else found[0]

    def head(self, bucket: str, key: str, checksum: bool = False) -> dict[str, Any] | None:
        """The object's metadata, None when there is none; with `checksum` also the checksum S3
        keeps for it (ChecksumSHA256 when it was uploaded with one)."""
        extra = {"ChecksumMode": "ENABLED"} if checksum else {}
        try:
            with _translate(f"s3://{bucket}/{key}"):
                result: dict[str, Any] = self.client.head_object(Bucket=bucket, Key=key, **extra)
                return result
        except _NotFound:
            return None

    def proves(self, head: dict[str, Any], path: Path, sha256: str) -> bool | None:
        """Whether the SHA-256 checksum S3 keeps for an object (from `head(..., checksum=True)`)
        proves the object's content has digest `sha256`: True, False, or None when it cannot
        tell (no such checksum: the object was replaced by another writer or pushed by an earlier
        release). S3 checked that checksum against the bytes when they arrived. A multipart
        object's is a checksum of its parts' checksums: it is compared with the one computed from
        the local copy at `path` (read now, in our part size; None when that copy no longer has
        digest `sha256` or the object was cut into other parts)."""
        value = str(head.get("ChecksumSHA256") or "")
        if not value:
            return None
        value, _, parts = value.partition("-")
        if not parts:  # S3 writes a composite checksum as "...-N"; some servers leave that off
            parts = str(head.get("ETag", "")).strip('"').partition("-")[2]
        if not parts:
            return value == base64.b64encode(bytes.fromhex(sha256)).decode()
        if not parts.isdigit():
            return None
        composite = _composite_checksum(path, sha256, int(parts), self.transfer_config.multipart_chunksize)
        return True if composite is not None and value == composite else None

    def list_objects(self, bucket: str, prefix: str) -> Iterator[RemoteObject]:
        with _translate(f"s3://{bucket}/{prefix}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    modified = item.get("LastModified")
                    yield RemoteObject(
                        key=item["Key"],
                        size=item["Size"],
                        modified=modified.timestamp() if modified else 0.0,
                        etag=str(item.get("ETag", "")).strip('"'),
                    )

    def list_dirs(self, bucket: str, prefix: str) -> Iterator[str]:
        """The next path component of every key below `prefix`."""
        with _translate(f"s3://{bucket}/{prefix}"):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    yield common["Prefix"][len(prefix) :].rstrip("/")

    def delete(self, bucket: str, keys: list[str]) -> None:
        with _translate(f"s3://{bucket}"):
            for start in range(0, len(keys), 1000):
                batch = [{"Key": k} for k in keys[start : start + 1000]]
                response = self.client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
                if response.get("Errors"):
                    first = response["Errors"][0]
                    raise TransferError(f"could not delete s3://{bucket}/{first['Key']}: {first['Message']}")


class _HashingReader:
    """A file read once, front to back, hashed as it goes. It says it cannot seek, so the
    transfer manager reads it in order (and retries parts from its own buffers). At the end of
    the file `at_end(size, sha256)` is called: what it raises fails the upload before S3 is
    asked to complete it (the transfer manager then aborts it)."""

    def __init__(self, handle: Any, at_end: Callable[[int, str], None] | None = None) -> None:
        self._handle = handle
        self._at_end = at_end
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, amount: int = -1) -> bytes:
        chunk: bytes = self._handle.read(amount)
        self.digest.update(chunk)
        self.size += len(chunk)
        if self._at_end is not None and (amount < 0 or len(chunk) < amount):
            self._at_end(self.size, self.digest.hexdigest())
        return chunk

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


def _check_content(url: str, path: Path, size: int, digest: str, want_size: int, want_sha256: str) -> None:
    if size != want_size or digest != want_sha256:
        raise BundleCorrupt(
            f"{path} no longer matches its bundle's manifest ({size} bytes, sha256 {digest[:12]}; "
            f"the manifest says {want_size} bytes, {want_sha256[:12]}); not published to {url}",
            hint="the file changed after its bundle was closed: `dsdt verify` lists such bundles; "
            "make a new bundle from the new content",
        )


def _composite_checksum(path: Path, sha256: str, parts: int, part_size: int) -> str | None:
    """The SHA-256 checksum S3 keeps for the file at `path` uploaded in `parts` parts of
    `part_size` bytes (base64 of the sha256 of the parts' sha256 digests); None when the file
    is not that many parts long or no longer has digest `sha256`."""
    whole = hashlib.sha256()
    digests: list[bytes] = []
    with open(path, "rb") as handle:
        while chunk := handle.read(part_size):
            whole.update(chunk)
            digests.append(hashlib.sha256(chunk).digest())
    if len(digests) != parts or whole.hexdigest() != sha256:
        return None
    return base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode()


class _Hasher:
    """sha256 of a stream; large streams are hashed in a second thread (hashlib releases the
    GIL) so hashing overlaps the download. The queue is bounded: memory stays flat."""

    def __init__(self, threaded: bool) -> None:
        self._digest = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] | None = None
        if threaded:
            self._queue = queue.Queue(maxsize=16)
            self._thread = threading.Thread(target=self._consume, daemon=True)
            self._thread.start()

    def _consume(self) -> None:
        assert self._queue is not None
        while (chunk := self._queue.get()) is not None:
            self._digest.update(chunk)

    def update(self, chunk: bytes) -> None:
        if self._queue is None:
            self._digest.update(chunk)
        else:
            self._queue.put(chunk)

    def hexdigest(self) -> str:
        if self._queue is not None:
            self._queue.put(None)
            self._thread.join()
        return self._digest.hexdigest()


class _Writeback:
    """Flushes a file being written to disk in a second thread, every `step` bytes, so the
    closing fsync of a large download has little left to do (and dirty pages do not pile up)."""

    def __init__(self, fd: int, step: int = WRITEBACK_STEP) -> None:
        self._fd = fd
        self._step = step
        self._unflushed = 0
        self._requests: queue.Queue[bool] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._flush, daemon=True)
        self._thread.start()

    def _flush(self) -> None:
        while self._requests.get():
            with contextlib.suppress(OSError):  # the writer's closing fsync reports it
                os.fdatasync(self._fd)

    def wrote(self, size: int) -> None:
        self._unflushed += size
        if self._unflushed >= self._step:
            try:
                self._requests.put_nowait(True)  # skipped while a flush is still running
                self._unflushed = 0
            except queue.Full:
                pass

    def stop(self) -> None:
        self._requests.put(False)
        self._thread.join()


class _NotFound(Exception):
    pass


class _Precondition(Exception):
    pass


AWS_VARIABLES = (
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
)


def aws_environment() -> tuple[tuple[str, str | None], ...]:
    """The AWS variables a client depends on: clients are cached per value of these."""
    return tuple((name, os.environ.get(name)) for name in AWS_VARIABLES)


@functools.lru_cache(maxsize=8)
def _client(aws_environment: tuple[tuple[str, str | None], ...], threads: int, pid: int) -> Any:
    """One client per AWS environment, pool size and process (clients do not survive a fork)."""
    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_parse_timestamp)
    try:
        session = boto3.session.Session(botocore_session=core, profile_name=dict(aws_environment).get("AWS_PROFILE"))
    except BotoCoreError as err:  # ProfileNotFound and friends
        raise CredentialsError(
            f"cannot use the AWS configuration: {err}", hint="check --profile / AWS_PROFILE"
        ) from err
    config = Config(
        max_pool_connections=max(threads * 2, 10),
        retries={"mode": "standard", "max_attempts": 8},
        connect_timeout=10,
        read_timeout=60,
    )
    try:
        client = session.client("s3", config=config)
        if _on_this_host(client.meta.endpoint_url):
            client = session.client("s3", config=config.merge(Config(s3={"payload_signing_enabled": False})))
        return client
    except BotoCoreError as err:
        raise RemoteError(f"cannot create an S3 client: {err}", hint="check the AWS region and profile") from err


def _parse_timestamp(value: str) -> datetime:
    """A response's timestamp (every listed object has one): the ISO 8601 form S3 sends, read by
    the standard library; anything else by botocore's own parser (dateutil, a hundred times
    slower: a listing of 100,000 keys spent seconds there)."""
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return botocore.utils.parse_timestamp(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _on_this_host(endpoint_url: str) -> bool:
    """Whether the endpoint is plain HTTP to a loopback address (a local moto or MinIO).

    botocore hashes every upload body with SHA-256 for its signature when there is no TLS; with
    TLS it relies on TLS plus the checksum it sends with each request (SHA-256 for data files,
    CRC32 otherwise). Loopback traffic never leaves this host, so that extra pass over the data
    protects nothing there and is skipped; the checksum still goes with every request."""
    url = urlsplit(endpoint_url)
    if url.scheme != "http" or url.hostname is None:
        return False
    if url.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(url.hostname).is_loopback
    except ValueError:
        return False


class _translate:
    """Context manager mapping boto errors for `what` onto the disdat error tree."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            return
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            raise CredentialsError(f"no AWS credentials found for {self.what}") from exc
        if isinstance(exc, EndpointConnectionError):
            raise TransferError(f"cannot reach the S3 endpoint for {self.what}: {exc}") from exc
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchBucket",) or (code in ("404", "NotFound") and "/" not in self.what[5:]):
                raise BucketNotFound(f"bucket {self.what} does not exist") from exc
            if code in ("NoSuchKey", "404", "NotFound"):
                raise _NotFound() from exc
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412:
                raise _Precondition() from exc
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "AccessDenied", "403"):
                raise CredentialsError(f"access to {self.what} was denied ({code})") from exc
            raise TransferError(f"S3 error on {self.what}: {code}: {exc}") from exc
        if isinstance(exc, OSError) and exc.errno in LOCAL_DISK_ERRNOS:
            raise LocalDiskError(f"while transferring {self.what}: {describe_os_error(exc)}") from exc
        if isinstance(exc, (BotoCoreError, OSError)) and not isinstance(exc, FileNotFoundError):
            raise TransferError(f"transfer of {self.what} failed: {exc}") from exc
