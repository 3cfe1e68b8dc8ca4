"""`dsdt gc` and `dsdt du` as a user runs them: each keep rule, lineage, dry runs, bad input."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest

from disdat_luigi import api
from disdat_luigi.store import bundle as bundle_module


@contextmanager
def _days_ago(days: float) -> Iterator[None]:
    """Bundles closed inside the block get a creation date `days` in the past."""
    moment = datetime.now(timezone.utc) - timedelta(days=days)

    class _Then(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
            return moment

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bundle_module, "datetime", _Then)
        yield


def _make(ctx: str, name: str, count: int, *, processing_name: str | None = None, size: int = 1000) -> list[str]:
    """`count` versions of `name`, oldest first, each holding `size` bytes in a file; their uuids."""
    made = []
    for i in range(count):
        with api.Bundle(ctx, name=name, processing_name=processing_name) as bundle:
            path = Path(bundle.get_file("blob.bin"))
            path.write_bytes(bytes([i % 256]) * size)
            bundle.add_data(str(path))
        made.append(bundle.uuid)
    return made


def _set_gc(disdat_env: Path, lines: str) -> None:
    """Replace the [gc] section of the test's config file by `lines`."""
    config = disdat_env / "config" / "disdat.cfg"
    head, _, tail = config.read_text().partition("[gc]\n")
    rest = tail[tail.find("\n[") :] if "\n[" in tail else ""
    config.write_text(f"{head}[gc]\n{lines}\n{rest}")


def _here(ctx: str, name: str | None = None) -> set[str]:
    return {b.uuid for b in api.search(ctx, name)}


def test_keep_last_per_recipe(dsdt, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """The newest N of each recipe stay: two recipes under one name keep their own histories."""
    a = _make(ctx, "model", 4, processing_name="Fit_a")
    b = _make(ctx, "model", 4, processing_name="Fit_b")
    result = dsdt("gc", "--keep-last", "2", "--force", "--yes")
    assert result.code == 0, result.err
    assert _here(ctx, "model") == {*a[2:], *b[2:]}
    assert "reclaimed 4 bundle(s) locally, 4000 bytes" in result.out
    assert "among the newest 2 of its recipe" in result.out
    objects = Path(api.search(ctx, "model")[0].local_dir).parent
    assert not [u for u in a[:2] + b[:2] if (objects / u).exists()]  # their files are gone too


def test_added_bundles_count_per_name_and_newest_of_name_is_kept(dsdt, ctx: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`dsdt add`ed bundles count per name; the newest of a name stays even when N would drop it."""
    source = tmp_path / "data.csv"
    for i in range(3):
        source.write_text(f"a,b\n{i},{i}\n")
        assert dsdt("add", "table", str(source)).code == 0
    newest = api.search(ctx, "table")[0].uuid
    result = dsdt("gc", "--keep-last", "1", "--force", "--yes")
    assert result.code == 0, result.err
    assert _here(ctx, "table") == {newest}
    assert api.cat(ctx, "table") is not None


def test_keep_days(dsdt, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """Bundles younger than D days stay whatever N says; older ones beyond N go."""
    with _days_ago(40):
        old = _make(ctx, "daily", 3)
    young = _make(ctx, "daily", 3)
    result = dsdt("gc", "--keep-last", "1", "--keep-days", "10", "--force", "--yes")
    assert result.code == 0, result.err
    assert _here(ctx, "daily") == set(young)
    assert "younger than 10 days" in result.out
    assert not set(old) & _here(ctx)


def test_keep_tag(dsdt, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """A bundle carrying a kept tag stays; the same tag with another value does not keep."""
    plain = _make(ctx, "run", 3)
    gold = api.Bundle(ctx, name="run", data=1, tags={"stage": "prod"})
    api.Bundle(ctx, name="run", data=2, tags={"stage": "dev"})
    newest = api.Bundle(ctx, name="run", data=3)
    result = dsdt("gc", "--keep-last", "1", "--keep-tag", "stage:prod", "--force", "--yes")
    assert result.code == 0, result.err
    assert _here(ctx, "run") == {gold.uuid, newest.uuid}
    assert "tagged stage:prod" in result.out
    assert not set(plain) & _here(ctx)


def test_unpushed_bundles_stay_without_force(dsdt, remote_ctx: str) -> None:  # type: ignore[no-untyped-def]
    """Local gc keeps bundles that exist only here; pushed ones beyond N go; --force takes the rest."""
    made = _make(remote_ctx, "thing", 4)
    for uuid in made[:2]:
        api.commit(remote_ctx, None, uuid=uuid)
        api.push(remote_ctx, uuid=uuid)
    result = dsdt("gc", "--keep-last", "1", "--yes")
    assert result.code == 0, result.err
    assert _here(remote_ctx, "thing") == set(made[2:])
    assert "not pushed" in result.out
    assert dsdt("gc", "--keep-last", "1", "--yes", "--force").code == 0
    assert _here(remote_ctx, "thing") == {made[3]}


def test_lineage_keeps_three_levels_upstream(dsdt, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """A kept model keeps the exact features and raw data it was made from, two levels up,
    although newer versions of both exist and N = 1."""
    raw_old = api.Bundle(ctx, name="raw", data=[1, 2, 3])
    features_old = api.Bundle(ctx, name="features", data=[2, 4, 6], dependencies={"raw": raw_old})
    model_old = api.Bundle(
        ctx, name="model", data={"w": 1}, dependencies={"features": features_old}, tags={"release": "v1"}
    )
    extra_raw = [api.Bundle(ctx, name="raw", data=[i]).uuid for i in range(2)]
    raw_new = api.Bundle(ctx, name="raw", data=[9])
    features_new = api.Bundle(ctx, name="features", data=[18], dependencies={"raw": raw_new})
    model_new = api.Bundle(ctx, name="model", data={"w": 2}, dependencies={"features": features_new})
    result = dsdt("gc", "--keep-last", "1", "--keep-tag", "release:v1", "--force")
    assert result.code == 0, result.err
    assert f"upstream of model {model_old.uuid[:8]}" in result.out
    assert dsdt("gc", "--keep-last", "1", "--keep-tag", "release:v1", "--force", "--yes").code == 0
    kept = _here(ctx)
    assert {raw_old.uuid, features_old.uuid, model_old.uuid} <= kept
    assert {raw_new.uuid, features_new.uuid, model_new.uuid} <= kept
    assert not set(extra_raw) & kept
    assert api.cat(ctx, None, uuid=raw_old.uuid) == [1, 2, 3]


def test_lineage_of_a_pipeline(ctx: str) -> None:
    """Bundles a PipeTask pipeline made: the newest output keeps the upstream it was made from."""
    from tests.functional.pipelines import Double

    api.apply(ctx, Double, params={"n": 2})
    api.apply(ctx, Double, params={"n": 2, "label": "other"})
    first = api.search(ctx, "Double")
    result = api.gc(ctx, keep_last=1, dry_run=False, force=True)
    kept = {c.uuid for c in result.plan.kept}
    assert {b.uuid for b in first} <= kept  # two recipes of Double: each the newest of its own
    source = api.search(ctx, "Source")
    assert source and all(b.uuid in kept for b in source)
    assert {d.uuid for b in first for d in b.dependencies} <= _here(ctx)


def test_dry_run_prints_and_changes_nothing(dsdt, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """Without --yes (and without a terminal) gc prints its plan, asks nothing and deletes nothing."""
    made = _make(ctx, "sweep", 5, size=2000)
    home = Path(api.search(ctx, "sweep")[0].local_dir).parent
    before = sorted(p.name for p in home.iterdir())
    result = dsdt("gc", "--keep-last", "2", "--force")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == ["NAME", "KEPT", "RECLAIMED", "BYTES", "RECLAIMED", "OLDEST", "KEPT", "BECAUSE"]
    assert lines[1].split()[:4] == ["sweep", "2", "3", "6000"]
    assert "dry run: nothing was deleted" in result.out
    assert _here(ctx) == set(made)
    assert sorted(p.name for p in home.iterdir()) == before
    planned = api.gc(ctx, keep_last=2, force=True)
    assert planned.dry_run and not planned.reclaimed and len(planned.plan.reclaimed) == 3
    assert _here(ctx) == set(made)


def test_config_defaults_and_flags_override(dsdt, ctx: str, disdat_env: Path) -> None:  # type: ignore[no-untyped-def]
    """The [gc] section is the team's default; a flag wins over it."""
    _set_gc(disdat_env, "keep_last = 4\nkeep_tags = pin:yes")
    made = _make(ctx, "cfg", 6)
    pinned = api.Bundle(ctx, name="cfg", data=0, tags={"pin": "yes"}).uuid
    made += _make(ctx, "cfg", 5)
    assert len(api.gc(ctx, force=True).plan.reclaimed) == len(made) - 4
    assert dsdt("gc", "--keep-last", "5", "--force", "--yes").code == 0
    assert _here(ctx, "cfg") == {*made[-5:], pinned}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--keep-last", "-1"], "keep-last must be a whole number of at least 1"),
        (["--keep-last", "0"], "keep-last must be a whole number of at least 1"),
        (["--keep-days", "-2"], "keep-days must be a number of days of at least 0"),
        (["--keep-days", "nan"], "keep-days must be a number of days of at least 0"),
        (["--keep-tag", "nocolon"], "keep-tag 'nocolon' is not key:value"),
        (
            ["--keep-tag", "release:v1 stage:prod"],
            "keep-tag 'release:v1 stage:prod' reads as the one tag release = 'v1 stage:prod', not 2 tags",
        ),
    ],
)
def test_bad_options_delete_nothing(dsdt, ctx: str, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    """A keep rule that makes no sense: one line on stderr, exit 1, nothing deleted."""
    made = _make(ctx, "keep", 4)
    result = dsdt("gc", *args, "--force", "--yes")
    assert result.code == 1
    first, *rest = result.err.splitlines()
    assert first.startswith("dsdt gc: ") and message in first
    assert all(line.startswith("hint: ") for line in rest)
    assert _here(ctx) == set(made)


def test_keep_tags_written_with_spaces_say_how_to_give_several(ctx: str) -> None:
    """One --keep-tag holding two tags separated by a space names the fix: repeat --keep-tag."""
    from disdat_luigi.errors import InvalidPolicy

    with pytest.raises(InvalidPolicy) as caught:
        api.gc(ctx, keep_tags=["release:v1 stage:prod"])
    assert caught.value.hint.startswith("repeat --keep-tag for each tag: --keep-tag release:v1 --keep-tag stage:prod")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("keep_last = -1", "[gc] keep_last must be at least 1"),
        ("keep_last = many", "[gc] keep_last must be a whole number"),
        ("keep_days = -3", "[gc] keep_days must not be negative"),
        ("keep_tags = nocolon", "[gc] keep_tags has 'nocolon', which is not key:value"),
        (
            "keep_tags = release:v1 stage:prod",
            "[gc] keep_tags has 'release:v1 stage:prod', which reads as the one tag release = 'v1 stage:prod'; "
            "separate tags with commas: keep_tags = release:v1, stage:prod",
        ),
        ("grace_hours = soon", "[gc] grace_hours must be a number"),
        ("keep_lst = 3", "[gc] keep_lst is not a setting of [gc] (known: keep_last, keep_days"),
    ],
)
def test_bad_config_deletes_nothing(dsdt, ctx: str, disdat_env: Path, section: str, message: str) -> None:  # type: ignore[no-untyped-def]
    """A bad [gc] key: one error line naming the section and key, exit 1, nothing deleted."""
    made = _make(ctx, "keep", 4)
    _set_gc(disdat_env, section)
    result = dsdt("gc", "--force", "--yes")
    assert result.code == 1
    errors = [line for line in result.err.splitlines() if line.startswith("dsdt gc: ")]
    assert len(errors) == 1 and message in errors[0]
    assert _here(ctx) == set(made)


def test_a_gc_typo_is_never_silent(dsdt, ctx: str, disdat_env: Path) -> None:  # type: ignore[no-untyped-def]
    """A key [gc] does not know is a warning line on every command, an error of `dsdt du` and of
    `dsdt config check`, like a typo of any other section."""
    _make(ctx, "keep", 2)
    _set_gc(disdat_env, "keep_lst = 2")
    config = disdat_env / "config" / "disdat.cfg"
    line = config.read_text().splitlines().index("keep_lst = 2") + 1
    typo = f"{config}: [gc] keep_lst is not a setting of [gc] (known: keep_last, keep_days, keep_tags, grace_hours)"
    listed = dsdt("ls")
    assert listed.code == 0
    assert listed.err.splitlines() == [
        f"dsdt: warning: {typo}; gc and du refuse to run until it is fixed (fix line {line} of {config})"
    ]
    usage = dsdt("du")
    assert usage.code == 1 and usage.out == ""
    assert f"dsdt du: {typo}" in usage.err.splitlines()
    checked = dsdt("config", "check")
    assert checked.code == 1
    assert [line for line in checked.err.splitlines() if line.startswith("dsdt config: ")] == [f"dsdt config: {typo}"]


def test_du(dsdt, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """`dsdt du`: bundles and bytes per name, then the total."""
    _make(ctx, "big", 3, size=5000)
    _make(ctx, "small", 2, size=10)
    result = dsdt("du")
    assert result.code == 0, result.err
    rows = [line.split() for line in result.out.splitlines()]
    assert rows == [["NAME", "BUNDLES", "BYTES"], ["big", "3", "15000"], ["small", "2", "20"], ["total", "5", "15020"]]


def test_remote_only_bundles_free_nothing_locally(dsdt, remote_ctx: str) -> None:  # type: ignore[no-untyped-def]
    """A bundle whose files are only on the remote is reclaimed locally, and the plan says it frees nothing."""
    made = _make(remote_ctx, "far", 3, size=3000)
    for uuid in made:
        api.commit(remote_ctx, None, uuid=uuid)
        api.push(remote_ctx, uuid=uuid, delocalize=True)
    result = dsdt("gc", "--keep-last", "1")
    assert "2 bundle(s) to reclaim have their files only on the remote: they free no local bytes" in result.out
    assert result.out.splitlines()[1].split()[:4] == ["far", "1", "2", "0"]


# --- the remote ----------------------------------------------------------------------------------


def _pushed(ctx: str, name: str, count: int, size: int = 1000, **kwargs: str) -> list[str]:
    made = _make(ctx, name, count, size=size, **kwargs)
    for uuid in made:
        api.commit(ctx, None, uuid=uuid)
    api.push(ctx)
    return made


def _remote_keys(bucket: str) -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="team/")
    return [o["Key"] for o in listed.get("Contents", [])]


def test_remote_gc(dsdt, remote_ctx: str, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """`dsdt gc --remote`: the same rules on the remote; reclaimed bundles lose manifest, catalog
    entry and files; the rest pull and read back; `dsdt du --remote` shows what is left. Bytes
    reclaimed count data files, as local gc and du do (not manifests)."""
    made = _pushed(remote_ctx, "shared", 5, size=4000)
    doomed = 3 * 4000
    plan = dsdt("gc", "--remote", "--keep-last", "2")
    assert plan.code == 0, plan.err
    assert plan.out.splitlines()[1].split()[:4] == ["shared", "2", "3", str(doomed)]
    assert "dry run" in plan.out
    done = dsdt("gc", "--remote", "--keep-last", "2", "--yes")
    assert done.code == 0, done.err
    assert f"reclaimed 3 bundle(s) from the remote, {doomed} bytes" in done.out
    keys = _remote_keys(bucket)
    assert not [k for k in keys if any(u in k for u in made[:3])]
    assert all(any(u in k for k in keys) for u in made[3:])
    api.context("other")
    api.remote("other", "shared", f"s3://{bucket}/team")
    pulled = api.pull("other", "shared", localize=True)
    assert {b.uuid for b in pulled} == set(made[3:])
    assert all(Path(b.data).read_bytes() for b in pulled)
    assert _here(remote_ctx) == set(made)  # the local copies are left alone
    usage = dsdt("du", "--remote")
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="team/context/shared/objects/")
    total = sum(o["Size"] for o in listed["Contents"] if not o["Key"].endswith("/manifest.json"))  # data, as local du
    assert [line.split() for line in usage.out.splitlines()] == [
        ["NAME", "BUNDLES", "BYTES"],
        ["shared", "2", str(total)],
        ["total", "2", str(total)],
    ]


def test_remote_hold_keeps_a_delocalized_bundle(dsdt, remote_ctx: str, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """A second store's `push -d` leaves a hold: remote gc from the first keeps that bundle and
    says whose hold kept it; once the holder re-localizes it the hold is gone and gc may reclaim it."""
    api.context("laptop")
    api.remote("laptop", "shared", f"s3://{bucket}/team")
    held = _make("laptop", "shared", 1, size=2000)[0]
    api.commit("laptop", None, uuid=held)
    api.push("laptop", uuid=held, delocalize=True)
    newer = _pushed(remote_ctx, "shared", 3)
    result = dsdt("gc", "--remote", "--keep-last", "1", "--yes")
    assert result.code == 0, result.err
    assert "held by " in result.out and "-laptop-" in result.out
    keys = _remote_keys(bucket)
    assert any(held in k and k.endswith("manifest.json") for k in keys)
    assert not [k for k in keys if any(u in k for u in newer[:2])]
    api.pull("laptop", uuid=held, localize=True)  # local again (the hold is released)
    assert Path(api.get("laptop", None, uuid=held).data).read_bytes() == b"\0" * 2000
    assert not [k for k in _remote_keys(bucket) if "/holds/" in k]
    assert dsdt("gc", "--remote", "--keep-last", "1", "--yes").code == 0
    assert not [k for k in _remote_keys(bucket) if held in k]


def test_remote_force_reclaims_held_bundles(remote_ctx: str, bucket: str) -> None:
    """--force reclaims a held bundle (and its hold goes with it)."""
    made = _pushed(remote_ctx, "h", 2)
    api.push(remote_ctx, uuid=made[0], delocalize=True)
    result = api.gc(remote_ctx, keep_last=1, remote=True, dry_run=False, force=True)
    assert result.reclaimed == (made[0],)
    assert not [k for k in _remote_keys(bucket) if made[0] in k]


def test_remote_claims_keep_inputs(remote_ctx: str, bucket: str) -> None:
    """A live claim (not done, not expired) keeps the bundles it names as inputs; a done or
    expired one does not."""
    import json
    import time

    made = _pushed(remote_ctx, "c", 4)
    s3 = boto3.client("s3")
    root = "team/context/shared/claims/"
    live = {"state": "submitted", "expires": time.time() + 600, "inputs": [made[0]]}
    done = {"state": "done", "expires": time.time() + 600, "inputs": [made[1]]}
    expired = {"state": "pending", "expires": time.time() - 5, "inputs": [made[2]]}
    for i, claim in enumerate([live, done, expired]):
        s3.put_object(Bucket=bucket, Key=f"{root}{i:04x}.json", Body=json.dumps(claim).encode())
    result = api.gc(remote_ctx, keep_last=1, remote=True, dry_run=False)
    assert set(result.reclaimed) == {made[1], made[2]}
    reasons = {v.candidate.uuid: v.reason for v in result.plan.verdicts}
    assert "live claim" in str(reasons[made[0]])


def test_remote_orphans_wait_for_the_grace_period(dsdt, remote_ctx: str, bucket: str, disdat_env: Path) -> None:  # type: ignore[no-untyped-def]
    """Objects no manifest names are reported by `dsdt verify` and stay while younger than [gc]
    grace_hours; past it they are deleted, and the dry run counts them."""
    s3 = boto3.client("s3")
    orphan = "team/context/shared/objects/00000000-0000-4000-8000-000000000001/blob.bin"
    s3.put_object(Bucket=bucket, Key=orphan, Body=b"x" * 100)
    _pushed(remote_ctx, "o", 1)
    assert api.gc(remote_ctx, remote=True).orphans == 0  # younger than 24 hours
    report = dsdt("verify")
    assert f"UNNAMED s3://{bucket}/{orphan}" in report.out
    assert "the remote holds 1 object(s) no manifest names" in report.out
    _set_gc(disdat_env, "grace_hours = 0")
    time.sleep(1.1)  # S3 times have whole seconds
    planned = api.gc(remote_ctx, remote=True)
    assert planned.orphans == 1 and planned.orphan_bytes == 100
    assert orphan in _remote_keys(bucket)
    api.gc(remote_ctx, remote=True, dry_run=False)
    assert orphan not in _remote_keys(bucket)


def test_deleting_a_context_releases_its_holds(remote_ctx: str, bucket: str) -> None:
    """A store that deletes its context no longer relies on the remote: its holds go."""
    api.context("laptop")
    api.remote("laptop", "shared", f"s3://{bucket}/team")
    held = _make("laptop", "gone", 1)[0]
    api.commit("laptop", None, uuid=held)
    api.push("laptop", uuid=held, delocalize=True)
    assert [k for k in _remote_keys(bucket) if "/holds/" in k]
    api.delete_context("laptop")
    assert not [k for k in _remote_keys(bucket) if "/holds/" in k]
    assert any(held in k for k in _remote_keys(bucket))  # the bundle itself stays on the remote


def test_remote_gc_keeps_what_this_context_has_only_on_the_remote(remote_ctx: str, bucket: str) -> None:
    """Bundles this context has without their files (pulled as metadata, or made by an executor)
    are kept by remote gc run from it, the plan naming this store as what keeps them; its
    bundles stay readable."""
    made = _pushed(remote_ctx, "model", 3, size=1500)
    api.context("reader")
    api.remote("reader", "shared", f"s3://{bucket}/team")
    api.pull("reader", "model")  # metadata only: the files stay on the remote
    outcome = api.gc("reader", keep_last=1, remote=True, dry_run=False)
    assert outcome.reclaimed == ()  # every version is one this context reads from the remote
    held = {v.candidate.uuid: v.candidate.held_by for v in outcome.plan.verdicts if v.candidate.uuid in made}
    assert held.keys() == set(made) and all(len(by) == 1 and "-reader-" in by[0] for by in held.values())
    for uuid in made:  # still whole on the remote: the files come when asked for
        api.pull("reader", uuid=uuid, localize=True)
        assert len(Path(api.get("reader", None, uuid=uuid).data).read_bytes()) == 1500
    assert api.verify("reader").ok


def test_a_context_without_a_remote_says_why_nothing_goes(dsdt, ctx: str) -> None:  # type: ignore[no-untyped-def]
    """With no remote every bundle exists only here: the plan says that is why they are kept, and
    how to reclaim them anyway."""
    _make(ctx, "solo", 4)
    planned = dsdt("gc", "--keep-last", "1")
    assert planned.code == 0
    assert "this context has no remote, so every bundle exists only here: 3 kept for that alone" in planned.out
    forced = dsdt("gc", "--keep-last", "1", "--force", "--yes")
    assert forced.code == 0 and len(_here(ctx, "solo")) == 1


# --- what counts as pushed -----------------------------------------------------------------------


def _reason(result: api.GcResult, uuid: str) -> str | None:
    return next(v.reason for v in result.plan.verdicts if v.candidate.uuid == uuid)


def test_a_catalog_entry_alone_does_not_make_a_bundle_pushed(remote_ctx: str, bucket: str) -> None:
    """An entry planted under the remote's catalog/ (any name) names bundles that were never
    pushed: local gc keeps them and says why; a planted damaged manifest keeps its bundle, saying
    the remote's manifest of it is damaged."""
    s3 = boto3.client("s3")
    uncommitted, committed, forged, newest = _make(remote_ctx, "zz", 4)
    for uuid in (committed, forged):
        api.commit(remote_ctx, None, uuid=uuid)
    for uuid in (uncommitted, committed, forged):
        s3.put_object(Bucket=bucket, Key=f"team/context/shared/catalog/anything/{uuid}", Body=b"")
    s3.put_object(Bucket=bucket, Key=f"team/context/shared/objects/{forged}/manifest.json", Body=b"{}")
    result = api.gc(remote_ctx, keep_last=1, dry_run=False)
    assert result.reclaimed == ()
    assert _here(remote_ctx, "zz") == {uncommitted, committed, forged, newest}
    assert _reason(result, uncommitted) == "not pushed: uncommitted, exists only here (--force reclaims it)"
    assert _reason(result, committed) == "not pushed: exists only here (--force reclaims it)"
    assert _reason(result, forged) == "not pushed: the remote's manifest of it is damaged (--force reclaims it)"
    assert result.uuid_taken_on_remote == []


def _forced(ctx: str, uuid: str, made_by: str) -> None:
    """Bundle `uuid` of name "fu" made with a forced uuid, committed, and a newer version of the name."""
    bundle = api.Bundle(ctx, name="fu")
    bundle.open(force_uuid=uuid)
    bundle.add_data({"made by": made_by})
    bundle.close()
    api.Bundle(ctx, name="fu", data={"newer": made_by})
    api.commit(ctx, None, uuid=uuid)


def test_another_stores_bundle_under_a_forced_uuid_is_not_this_ones_copy(dsdt, remote_ctx: str, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """Store A publishes its bundle under a forced uuid; store B's own bundle of that uuid is
    refused on push, and B's gc keeps it (its only copy), saying the remote holds another bundle."""
    import uuid as uuidlib

    from disdat_luigi.errors import UuidConflict

    forced = str(uuidlib.uuid4())
    api.context("laptop")
    api.remote("laptop", "shared", f"s3://{bucket}/team")
    _forced("laptop", forced, "A")
    api.push("laptop", uuid=forced)
    _forced(remote_ctx, forced, "B")
    with pytest.raises(UuidConflict):
        api.push(remote_ctx, uuid=forced)
    planned = dsdt("gc", "--keep-last", "1")
    assert planned.code == 0, planned.err
    assert planned.out.splitlines()[1].split()[:3] == ["fu", "2", "0"]
    assert "not pushed: the remote holds another bundle under its uuid (--force reclaims it)" in planned.out
    assert (
        f"the remote holds another bundle under the uuid of 1 bundle(s) here (fu {forced[:8]}): "
        "they cannot be pushed, so they are kept; --force would delete the only copy"
    ) in planned.out.splitlines()
    done = dsdt("gc", "--keep-last", "1", "--yes")
    assert done.code == 0, done.err
    assert "reclaimed 0 bundle(s) locally" in done.out
    assert api.cat(remote_ctx, None, uuid=forced) == {"made by": "B"}


def test_pushed_and_pulled_bundles_count_as_pushed(remote_ctx: str, bucket: str) -> None:
    """A pushed bundle is reclaimed locally (its manifest's ETag vouches for it), so is one whose
    remote manifest the ETag cannot vouch for (multipart, as with KMS: read and compared), or
    that says the same in another layout, and so are bundles another context pulled."""
    import json

    made = _pushed(remote_ctx, "p", 4)
    s3 = boto3.client("s3")
    key = f"team/context/shared/objects/{made[0]}/manifest.json"
    relaid = json.dumps(json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()), indent=2)
    s3.put_object(Bucket=bucket, Key=key, Body=relaid.encode())
    key = f"team/context/shared/objects/{made[1]}/manifest.json"
    raw = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=raw)["ETag"]
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": [{"ETag": etag, "PartNumber": 1}]}
    )
    assert s3.head_object(Bucket=bucket, Key=key)["ETag"].endswith('-1"')  # not the MD5 of the bytes
    result = api.gc(remote_ctx, keep_last=1, dry_run=False)
    assert set(result.reclaimed) == set(made[:3])
    api.context("reader")
    api.remote("reader", "shared", f"s3://{bucket}/team")
    api.pull("reader", "p", localize=True)
    assert set(api.gc("reader", keep_last=1, dry_run=False).reclaimed) == set(made[:3])


def test_a_bundle_whose_remote_files_are_missing_or_cut_is_not_pushed(dsdt, remote_ctx: str, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """A pushed bundle whose file another writer deleted on the remote, and one whose file it
    replaced by one of another size, are kept by local gc, which says how many files the remote
    lacks; both still read back here."""
    made = _pushed(remote_ctx, "lf", 3)
    s3 = boto3.client("s3")
    s3.delete_object(Bucket=bucket, Key=f"team/context/shared/objects/{made[0]}/data/blob.bin")
    s3.put_object(Bucket=bucket, Key=f"team/context/shared/objects/{made[1]}/data/blob.bin", Body=b"x" * 10)
    planned = dsdt("gc", "--keep-last", "1", "--yes")
    assert planned.code == 0, planned.err
    assert "not pushed: the remote lacks 1 of its files (--force reclaims it)" in planned.out
    assert _here(remote_ctx, "lf") == set(made)
    for uuid, byte in zip(made[:2], (0, 1)):
        assert Path(api.get(remote_ctx, None, uuid=uuid).data).read_bytes() == bytes([byte]) * 1000


def test_local_gc_that_cannot_reach_the_remote_says_so(dsdt, remote_ctx: str, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A remote endpoint nobody answers at: local gc deletes nothing and its hint is gc's own."""
    from tests.conftest import free_port

    made = _make(remote_ctx, "far", 3)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    result = dsdt("gc", "--keep-last", "1", "--yes")
    assert result.code == 1
    message, hint = result.err.splitlines()
    assert message.startswith("dsdt gc: cannot reach the S3 endpoint")
    assert hint == (
        "hint: local gc asks the remote which bundles it holds before deleting any, and the remote did "
        "not answer: nothing was deleted; check the endpoint (AWS_ENDPOINT_URL) and the network and "
        "retry, or run with --force to reclaim without asking the remote (which may delete a bundle's only copy)"
    )
    assert _here(remote_ctx) == set(made)


def test_an_interrupted_gc_says_what_it_reclaimed(dsdt, ctx: str, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Ctrl-C while gc deletes: exit 130, one line saying how many bundles went before it; the
    rest are whole and `dsdt verify` is clean."""
    from disdat_luigi.store import fsutil
    from disdat_luigi.store import gc as local_gc

    made = _make(ctx, "many", 7)
    monkeypatch.setattr(local_gc, "BATCH", 2)
    removals = []
    remove_tree = fsutil.remove_tree

    def interrupted_at_the_third(path: Path) -> None:  # the first of the second batch's deletions
        removals.append(path)
        if len(removals) == 3:
            raise KeyboardInterrupt
        remove_tree(path)

    monkeypatch.setattr(fsutil, "remove_tree", interrupted_at_the_third)
    result = dsdt("gc", "--keep-last", "1", "--force", "--yes")
    assert result.code == 130
    assert result.err.splitlines() == [
        "dsdt: interrupted: 4 bundle(s) reclaimed before it; every other bundle is whole "
        "(`dsdt verify` lists again any it left unlisted)"
    ]
    monkeypatch.setattr(fsutil, "remove_tree", remove_tree)
    left = _here(ctx, "many")
    assert len(left) == 7 - 4 and made[-1] in left
    assert dsdt("verify").code == 0
    assert all(api.cat(ctx, None, uuid=uuid) for uuid in _here(ctx))


def test_remote_plan_names_objects_waiting_out_the_grace_period(dsdt, remote_ctx: str, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """Objects of no bundle younger than the grace period (a killed gc's, a dead push's) are not
    deleted yet, and the plan says how many, how big, and why they stay."""
    _pushed(remote_ctx, "w", 1)
    s3 = boto3.client("s3")
    for i in range(2):
        s3.put_object(Bucket=bucket, Key=f"team/context/shared/objects/{_UUID}/data/f{i}.bin", Body=b"x" * 150)
    planned = dsdt("gc", "--remote")
    assert planned.code == 0, planned.err
    assert (
        "2 object(s) of no bundle (300 bytes) wait out the grace period ([gc] grace_hours = 24); gc deletes them after"
        in planned.out
    )
    assert "nothing to reclaim" in planned.out
    done = api.gc(remote_ctx, remote=True, dry_run=False)
    assert (done.orphans, done.waiting, done.waiting_bytes) == (0, 2, 300)
    assert len(_remote_keys(bucket)) == 5  # the bundle's file, manifest and catalog entry, and the two


_UUID = "00000000-0000-4000-8000-0000000000aa"


def test_catalog_keys_that_name_no_bundle_are_ignored(dsdt, remote_ctx: str, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """A planted `catalog/a/b/c/<uuid>` (no bundle name has a slash) changes neither `du --remote`
    nor what gc keeps or deletes."""
    made = _pushed(remote_ctx, "real", 2)
    before = dsdt("du", "--remote").out
    planted = f"team/context/shared/catalog/a/b/c/{made[0]}"
    boto3.client("s3").put_object(Bucket=bucket, Key=planted, Body=b"")
    assert dsdt("du", "--remote").out == before
    result = api.gc(remote_ctx, keep_last=1, remote=True, dry_run=False)
    assert result.reclaimed == (made[0],) and result.orphans == 0
    assert planted in _remote_keys(bucket)


def test_a_failed_push_leaves_no_intent(remote_ctx: str, bucket: str) -> None:
    """A push that fails (a file gone locally, and the remote lacks it) removes the intents it wrote."""
    from disdat_luigi.errors import BundleCorrupt

    made = _make(remote_ctx, "broken", 2)
    for uuid in made:
        api.commit(remote_ctx, None, uuid=uuid)
    bundle = api.get(remote_ctx, None, uuid=made[1])
    Path(bundle.data).unlink()
    with pytest.raises(BundleCorrupt, match="lacks data/blob.bin locally and the remote does not have it"):
        api.push(remote_ctx)
    assert not [k for k in _remote_keys(bucket) if "/intents/" in k]


@pytest.mark.parametrize(
    "kid", [{"data": {"t": "a-kind-of-a-newer-release", "v": 1}}, {"oops": "not a manifest"}], ids=["newer", "damaged"]
)
def test_remote_gc_keeps_what_an_unreadable_manifest_names(dsdt, remote_ctx: str, bucket: str, kid: dict) -> None:  # type: ignore[no-untyped-def,type-arg]
    """A bundle whose manifest this release cannot read (a newer release wrote it, or it is
    damaged) is left alone, and so is every bundle its bytes name: its upstream is not deleted
    under it, and gc says why."""
    import json
    import uuid as uuidlib

    old, _new = _pushed(remote_ctx, "up", 2)
    kid_uuid = str(uuidlib.uuid4())
    body = {"uuid": kid_uuid, "name": "kid", "dependencies": [{"name": "up", "uuid": old}], **kid}
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key=f"team/context/shared/objects/{kid_uuid}/manifest.json", Body=json.dumps(body))
    plan = dsdt("gc", "--remote", "--keep-last", "1")
    assert plan.code == 0, plan.err
    assert "1 bundle(s) with an unreadable manifest are left alone; what they name is kept" in plan.out
    result = api.gc(remote_ctx, keep_last=1, remote=True, dry_run=False)
    assert old not in result.reclaimed
    assert _reason(result, old) == f"named by the unreadable manifest of {kid_uuid}"
    assert any(kid_uuid in k for k in _remote_keys(bucket))


def test_remote_gc_that_cannot_reach_the_remote_says_so(dsdt, remote_ctx: str, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A remote endpoint nobody answers at: remote gc's hint is its own, not push's."""
    from tests.conftest import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    result = dsdt("gc", "--remote", "--keep-last", "1", "--yes")
    assert result.code == 1
    message, hint = result.err.splitlines()
    assert message.startswith("dsdt gc: cannot reach the S3 endpoint")
    assert hint.startswith("hint: remote gc lost the remote: check the endpoint (AWS_ENDPOINT_URL)")
    assert "completed files" not in hint
