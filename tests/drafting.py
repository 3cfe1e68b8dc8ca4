"""Helpers for tests of the store's writers: a context's LocalContext, and real manifests."""

from __future__ import annotations

from typing import Any

from disdat_luigi import api
from disdat_luigi.store.context import LocalContext
from disdat_luigi.store.manifest import BundleManifest


def context_of(ctx: str) -> LocalContext:
    return api.Bundle(ctx, name="probe").context


def manifest_for(uuid: str, data: Any) -> BundleManifest:
    """A real manifest for `uuid` holding `data`: made in a scratch context, so the context under
    test does not get the bundle."""
    api.context("scratch")
    made = api.Bundle("scratch", name=f"w-{uuid[:4]}").open(force_uuid=uuid)
    made.add_data(data)
    return made.close().context.load_manifest(uuid)
