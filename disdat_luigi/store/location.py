"""Where a remote context's objects live: `s3://bucket/prefix/context/<remote>/objects/<uuid>/...`,
its catalog (`catalog/<name>/<uuid>`, empty objects) and its manifest packs (`packs/`)."""

from __future__ import annotations

from dataclasses import dataclass

from disdat_luigi.errors import InvalidName, RemoteNotConfigured
from disdat_luigi.store.context import LocalContext
from disdat_luigi.store.manifest import MANIFEST_NAME
from disdat_luigi.store.names import check_name


@dataclass(frozen=True)
class S3Url:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_url(url: str) -> S3Url:
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise InvalidName(f"{url!r} is not an s3:// URL", hint="write it as s3://bucket/prefix")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket:
        raise InvalidName(f"{url!r} has no bucket", hint="write it as s3://bucket/prefix")
    return S3Url(bucket, key)


@dataclass(frozen=True)
class RemoteLocation:
    """One remote context under one S3 URL; every key of it comes from here."""

    bucket: str
    prefix: str
    context: str

    @classmethod
    def of(cls, local: LocalContext) -> RemoteLocation:
        meta = local.meta
        if not meta.remote_url or not meta.remote_context:
            raise RemoteNotConfigured(f"context {local.name!r} is not bound to a remote")
        return cls.parse(meta.remote_url, meta.remote_context)

    @classmethod
    def parse(cls, url: str, remote_context: str) -> RemoteLocation:
        parsed = parse_s3_url(url)
        return cls(parsed.bucket, parsed.key.strip("/"), check_name(remote_context, "remote context name"))

    @property
    def root(self) -> str:
        """Key prefix of the whole remote context (ends with '/')."""
        base = f"{self.prefix}/" if self.prefix else ""
        return f"{base}context/{self.context}/"

    @property
    def objects(self) -> str:
        return f"{self.root}objects/"

    def bundle_prefix(self, uuid: str) -> str:
        return f"{self.objects}{uuid}/"

    def file_key(self, uuid: str, rel: str) -> str:
        return f"{self.bundle_prefix(uuid)}{rel}"

    def manifest_key(self, uuid: str) -> str:
        return self.file_key(uuid, MANIFEST_NAME)

    def catalog_prefix(self, name: str | None = None) -> str:
        return f"{self.root}catalog/" + (f"{name}/" if name is not None else "")

    def catalog_key(self, name: str, uuid: str) -> str:
        return f"{self.catalog_prefix(name)}{uuid}"

    @property
    def claims_prefix(self) -> str:
        """Where the claims on pieces of work live: who submitted which task's job."""
        return f"{self.root}claims/"

    def claim_key(self, digest: str) -> str:
        """The claim on the work of one TaskIdentity digest."""
        return f"{self.claims_prefix}{digest}.json"

    @property
    def packs_prefix(self) -> str:
        """Where manifest packs live (see store/remote/packs.py): outside objects/ and catalog/,
        so releases that know no packs never see them."""
        return f"{self.root}packs/"

    def pack_key(self, name: str) -> str:
        return f"{self.packs_prefix}{name}"

    @property
    def holds_prefix(self) -> str:
        """`<root>holds/<uuid>/<store id>`: a store that dropped its local files keeps the bundle."""
        return f"{self.root}holds/"

    def hold_prefix(self, uuid: str) -> str:
        return f"{self.holds_prefix}{uuid}/"

    def hold_key(self, uuid: str, store_id: str) -> str:
        return f"{self.hold_prefix(uuid)}{store_id}"

    @property
    def intents_prefix(self) -> str:
        """`<root>intents/<uuid>`: a push in flight (written before its files, removed after its manifest)."""
        return f"{self.root}intents/"

    def intent_key(self, uuid: str) -> str:
        return f"{self.intents_prefix}{uuid}"

    @property
    def gc_prefix(self) -> str:
        """`<root>gc/<time>-<random>.json`: a remote gc's notice of what it is about to delete."""
        return f"{self.root}gc/"

    def gc_notice_key(self, name: str) -> str:
        return f"{self.gc_prefix}{name}.json"

    def driver_prefix(self, driver_job_id: str) -> str:
        """`<root>drivers/<job id>/`: the job records of a driver job's children, for its host."""
        return f"{self.root}drivers/{driver_job_id}/"

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"
