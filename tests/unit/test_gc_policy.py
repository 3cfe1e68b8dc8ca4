"""gc's keep rules on their own: each rule, reasons, lineage, and the [gc] config section."""

from __future__ import annotations

from pathlib import Path

import pytest

from disdat_luigi.config import GcSettings, init_config, load_settings
from disdat_luigi.errors import ConfigError, InvalidPolicy
from disdat_luigi.store.policy import US_PER_DAY, Candidate, KeepPolicy, NotPushed, plan

NOW = 1_000 * US_PER_DAY


def _c(uuid: str, name: str, age_days: float, **kw: object) -> Candidate:
    return Candidate(
        uuid=uuid,
        name=name,
        processing_name=str(kw.pop("recipe", name)),
        created_us=NOW - int(age_days * US_PER_DAY),
        **kw,  # type: ignore[arg-type]
    )


def _reasons(candidates: list[Candidate], remote: bool = False, **policy: object) -> dict[str, str | None]:
    made = plan(candidates, KeepPolicy(**policy), NOW, remote=remote)  # type: ignore[arg-type]
    return {v.candidate.uuid: v.reason for v in made.verdicts}


def test_each_rule_keeps_with_its_reason() -> None:
    """Newest of name, newest N of a recipe, age, tag, unpushed, held, claimed: each names itself."""
    found = _reasons(
        [
            _c("new", "x", 0.0),
            _c("r2", "x", 1.0, recipe="x-b"),
            _c("young", "x", 2.0),
            _c("tag", "x", 30.0, tags={"stage": "prod"}),
            _c("local", "x", 31.0, unpushed=NotPushed.ONLY_HERE),
            _c("held", "x", 32.0, held_by=("laptop",)),
            _c("claim", "x", 33.0, claimed=True),
            _c("gone", "x", 34.0),
        ],
        keep_last=1,
        keep_days=5,
        keep_tags=(("stage", "prod"),),
    )
    assert found["new"] == "newest of its name"
    assert found["r2"] == "among the newest 1 of its recipe"
    assert found["young"] == "younger than 5 days"
    assert found["tag"] == "tagged stage:prod"
    assert found["local"] == "not pushed: exists only here (--force reclaims it)"
    assert found["held"] == "held by laptop"
    assert found["claim"] == "an input of a running apply or job (live claim)"
    assert found["gone"] is None


def test_force_and_remote_drop_the_unpushed_and_held_rules() -> None:
    """--force reclaims unpushed (local) and held (remote) bundles; a claim still keeps."""
    candidates = [
        _c("new", "x", 0),
        _c("local", "x", 1, unpushed=NotPushed.ONLY_HERE),
        _c("held", "x", 2, held_by=("a",)),
    ]
    assert _reasons(candidates, keep_last=1, force=True) == {"new": "newest of its name", "local": None, "held": None}
    assert _reasons(candidates, remote=True, keep_last=1)["local"] is None


def test_upstream_of_kept_is_kept_transitively_and_reclaimed_otherwise() -> None:
    """A kept bundle keeps its upstream two levels up; the upstream of a reclaimed one goes."""
    found = _reasons(
        [
            _c("raw1", "raw", 10),
            _c("feat1", "feat", 9, upstream=("raw1",)),
            _c("model1", "model", 8, upstream=("feat1",), tags={"keep": "1"}),
            _c("raw2", "raw", 7),
            _c("feat2", "feat", 6, upstream=("raw2",)),
            _c("model2", "model", 5, upstream=("feat2",)),
            _c("raw3", "raw", 1),
            _c("feat3", "feat", 1, upstream=("raw3",)),
            _c("model3", "model", 0, upstream=("feat3",)),
        ],
        keep_last=1,
        keep_tags=(("keep", "1"),),
    )
    assert found["model1"] == "tagged keep:1"
    assert found["feat1"] == "upstream of model model1"
    assert found["raw1"] is not None and found["raw1"].startswith("upstream of feat")
    assert [found[u] for u in ("raw2", "feat2", "model2")] == [None, None, None]


@pytest.mark.parametrize(
    "policy",
    [{"keep_last": 0}, {"keep_last": -1}, {"keep_last": True}, {"keep_days": -1}, {"keep_days": float("inf")}],
)
def test_bad_policies_are_refused(policy: dict[str, object]) -> None:
    """Nonsense keep rules raise InvalidPolicy with a hint."""
    with pytest.raises(InvalidPolicy) as caught:
        KeepPolicy(**policy)  # type: ignore[arg-type]
    assert caught.value.hint


def test_gc_section_is_typed_and_read_only_when_asked(tmp_path: Path) -> None:
    """[gc] becomes GcSettings; a bad key breaks only `settings.gc`, naming section and key."""
    env = {"DISDAT_CONFIG": str(tmp_path / "disdat.cfg"), "HOME": str(tmp_path)}
    init_config(env)
    assert load_settings(env).gc == GcSettings()
    text = (
        (tmp_path / "disdat.cfg")
        .read_text()
        .replace("keep_last = 3", "keep_last = 5")
        .replace("keep_tags =", "keep_tags = a:b, c:d")
    )
    (tmp_path / "disdat.cfg").write_text(text)
    assert load_settings(env).gc == GcSettings(keep_last=5, keep_tags=(("a", "b"), ("c", "d")))
    (tmp_path / "disdat.cfg").write_text(text.replace("grace_hours = 24", "grace_hours = soon"))
    settings = load_settings(env)  # other commands still read the file
    with pytest.raises(ConfigError, match=r"\[gc\] grace_hours must be a number"):
        _ = settings.gc
    assert settings.check()
