"""The transfer pool: which error a failed transfer raises, and what progress it reports."""

from __future__ import annotations

import base64
import hashlib
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from disdat_luigi.config import RemoteSettings
from disdat_luigi.errors import BundleCorrupt, TransferError
from disdat_luigi.store.remote import transfer
from disdat_luigi.store.remote.s3 import S3
from disdat_luigi.store.remote.transfer import FileTransfer, Moved

KIB = 1024


def _jobs(count: int, size: int = 1) -> list[FileTransfer]:
    return [FileTransfer(Path(f"/nowhere/{i}"), "bucket", f"key{i}", size, "0" * 64) for i in range(count)]


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def start(self, files: int, nbytes: int) -> None:
        self.calls.append(("start", nbytes))

    def advance(self, nbytes: int) -> None:
        with self.lock:
            self.calls.append(("advance", nbytes))

    def file_done(self, nbytes: int) -> None:
        with self.lock:
            self.calls.append(("done", nbytes))

    def close(self) -> None:
        self.calls.append(("close", 0))


@pytest.mark.parametrize("threads", [1, 3])
def test_first_failure_is_raised_when_jobs_outnumber_threads(threads: int) -> None:
    """With more files than threads, the failure itself is raised (not the cancellation of the
    files still waiting), and waiting files are not started after it."""
    started: list[str] = []
    failed = threading.Event()

    def action(job: FileTransfer, moved: Moved) -> bool:
        started.append(job.key)
        if job.key == "key0":
            failed.set()
            raise BundleCorrupt("key0 does not match the sha256 in its manifest")
        failed.wait(5)
        return True

    with pytest.raises(BundleCorrupt, match="key0 does not match"):
        transfer.run_all(_jobs(20), action, threads, None)
    assert len(started) <= 2 * threads


def test_a_foreign_failure_becomes_a_transfer_error_naming_it() -> None:
    """An error from outside the disdat tree is wrapped in TransferError with its type and message."""

    def action(job: FileTransfer, moved: Moved) -> bool:
        raise ConnectionResetError("peer went away")

    with pytest.raises(TransferError, match="ConnectionResetError: peer went away"):
        transfer.run_all(_jobs(8), action, 2, None)


def test_progress_reports_bytes_in_steps_and_adds_up() -> None:
    """Bytes reported in small pieces reach the progress in steps of at least METER_STEP; the
    rest comes with file_done, so every file's numbers add up to its size."""
    size = 2 * 1024 * KIB

    def action(job: FileTransfer, moved: Moved) -> bool:
        for _ in range(5):
            moved(300 * KIB)
        return True

    progress = _Recorder()
    assert transfer.run_all(_jobs(3, size), action, 2, progress) == 3
    advanced = [n for op, n in progress.calls if op == "advance"]
    done = [n for op, n in progress.calls if op == "done"]
    assert progress.calls[0] == ("start", 3 * size) and progress.calls[-1] == ("close", 0)
    assert advanced == [1200 * KIB] * 3  # four pieces of 300 KiB make the first step; the fifth waits
    assert done == [size - 1200 * KIB] * 3


def test_a_resent_part_counts_back() -> None:
    """A part sent again (negative report) takes its bytes off before they are counted twice."""

    def action(job: FileTransfer, moved: Moved) -> bool:
        moved(2048 * KIB)
        moved(-2048 * KIB)  # the part failed and is sent again
        moved(2048 * KIB)
        return True

    progress = _Recorder()
    transfer.run_all(_jobs(1, 2048 * KIB), action, 1, progress)
    assert [n for op, n in progress.calls if op == "advance"] == [2048 * KIB, -2048 * KIB, 2048 * KIB]
    assert ("done", 0) in progress.calls


# --- the skip-if-present decision trusts S3's checksum, never the sha256 label ----------------


def _stubbed_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[S3, Stubber]:
    """An S3 whose client answers from a botocore Stubber (no network, no ~/.aws)."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3 = S3(RemoteSettings())
    s3.client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    return s3, Stubber(s3.client)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _file_job(tmp_path: Path, data: bytes) -> FileTransfer:
    path = tmp_path / "value.bin"
    path.write_bytes(data)
    return FileTransfer(path, "bucket", "objects/u/value.bin", len(data), hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize(
    ("case", "checksum", "skipped"),
    [
        ("label only (replaced, or an earlier release)", None, False),
        ("label kept on other bytes' checksum", _b64(hashlib.sha256(b"b" * 5000).digest()), False),
        ("S3's checksum of these bytes", _b64(hashlib.sha256(b"a" * 5000).digest()), True),
    ],
)
def test_upload_is_skipped_only_when_s3s_checksum_proves_the_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, checksum: str | None, skipped: bool
) -> None:
    """An object already at the key, labelled with the right sha256, is kept only when the
    checksum S3 holds for it is this file's; otherwise the file is uploaded again, with a checksum."""
    job = _file_job(tmp_path, b"a" * 5000)
    s3, stub = _stubbed_s3(tmp_path, monkeypatch)
    head: dict[str, Any] = {"ContentLength": job.size, "Metadata": {"sha256": job.sha256}}
    if checksum is not None:
        head["ChecksumSHA256"] = checksum
    stub.add_response("head_object", head, {"Bucket": "bucket", "Key": job.key, "ChecksumMode": "ENABLED"})
    if not skipped:
        sent = {
            "Bucket": "bucket",
            "Key": job.key,
            "Body": b"a" * 5000,
            "ChecksumAlgorithm": "SHA256",
            "ChecksumSHA256": _b64(hashlib.sha256(b"a" * 5000).digest()),
            "Metadata": {"sha256": job.sha256},
        }
        stub.add_response("put_object", {}, sent)
    with stub:
        assert transfer.uploader(s3, absent=set())(job, lambda n: None) is not skipped
    stub.assert_no_pending_responses()


def test_a_forged_or_foreign_multipart_checksum_proves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A composite (multipart) checksum proves the content only when it is the one computed from
    the local file's 8 MiB parts; another one, or a file edited since its commit, proves nothing."""
    part = 8 * 1024 * 1024
    data = bytes(range(256)) * (part * 2 // 256) + b"tail"
    job = _file_job(tmp_path, data)
    s3, _ = _stubbed_s3(tmp_path, monkeypatch)
    parts = [hashlib.sha256(data[i : i + part]).digest() for i in range(0, len(data), part)]
    good = _b64(hashlib.sha256(b"".join(parts)).digest())
    assert s3.proves({"ChecksumSHA256": f"{good}-3"}, job.local, job.sha256) is True
    assert s3.proves({"ChecksumSHA256": good, "ETag": '"abc-3"'}, job.local, job.sha256) is True  # moto's form
    assert s3.proves({"ChecksumSHA256": f"{_b64(b'x' * 32)}-3"}, job.local, job.sha256) is None
    assert s3.proves({"ChecksumSHA256": f"{good}-2"}, job.local, job.sha256) is None  # other part sizes
    assert s3.proves({"ETag": '"abc-3"', "Metadata": {"sha256": job.sha256}}, job.local, job.sha256) is None
    job.local.write_bytes(data[:-4] + b"TAIL")  # edited in place, same size: its parts are not the manifest's
    assert s3.proves({"ChecksumSHA256": f"{good}-3"}, job.local, job.sha256) is None
    assert s3.proves({"ChecksumSHA256": _b64(b"y" * 32)}, job.local, job.sha256) is False
