"""The config file: created from the template, read into typed settings, errors name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from disdat_luigi.config import config_path, init_config, load_settings
from disdat_luigi.errors import ConfigError


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"DISDAT_CONFIG": str(tmp_path / "disdat.cfg"), "HOME": str(tmp_path), **extra}


def test_init_creates_the_template_once(tmp_path: Path) -> None:
    """init writes the template, and a second init keeps the user's edits."""
    env = _env(tmp_path)
    path = init_config(env)
    assert path == tmp_path / "disdat.cfg" and "[core]" in path.read_text()
    path.write_text("[core]\nignore_code_version = true\n")
    init_config(env)
    assert "ignore_code_version = true" in path.read_text()


def test_defaults_and_overrides(tmp_path: Path) -> None:
    """Template values become typed settings; DISDAT_HOME overrides the store root."""
    env = _env(tmp_path)
    init_config(env)
    settings = load_settings(env)
    assert settings.root == Path("~/.disdat").expanduser()
    assert settings.ignore_code_version is False
    assert settings.run.vcpus == 1 and settings.run.memory == 2048
    assert settings.docker.network_mode is None
    assert load_settings({**env, "DISDAT_HOME": str(tmp_path / "s")}).root == tmp_path / "s"


def test_values_are_typed(tmp_path: Path) -> None:
    """Booleans, integers and text come back with their types."""
    cfg = tmp_path / "disdat.cfg"
    cfg.write_text(
        "[core]\nroot = /data/store\nignore_code_version = yes\n"
        "[docker]\nnetwork_mode = host\nregistry = *ECR*\n[run]\nvcpus = 4\nmemory = 8192\n"
        "[remote]\nserver_side_encryption = aws:kms\nsse_kms_key_id = k1\n"
    )
    settings = load_settings(_env(tmp_path))
    assert settings.root == Path("/data/store") and settings.ignore_code_version is True
    assert settings.docker.network_mode == "host" and settings.docker.registry == "*ECR*"
    assert (settings.run.vcpus, settings.run.memory) == (4, 8192)
    assert settings.remote.server_side_encryption == "aws:kms" and settings.remote.sse_kms_key_id == "k1"


def test_missing_config_says_run_init(tmp_path: Path) -> None:
    """Without a file the error names the path and suggests `dsdt init`."""
    with pytest.raises(ConfigError, match="no disdat config at") as info:
        load_settings(_env(tmp_path))
    assert "dsdt init" in info.value.hint


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[core\nroot=x\n", "malformed config"),
        ("root = x\n", "malformed config"),
        ("[core]\nignore_code_version = maybe\n", r"\[core\] ignore_code_version must be true or false"),
        ("[run]\nvcpus = lots\n", r"\[run\] vcpus must be a whole number"),
        ("[run]\nmemory = 0\n", r"\[run\] memory must be at least 1"),
        ("[remote]\nserver_side_encryption = rot13\n", "server_side_encryption"),
    ],
)
def test_malformed_config_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    """Each malformed file gives a ConfigError naming the file (and the key when there is one)."""
    (tmp_path / "disdat.cfg").write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(_env(tmp_path))
    assert str(tmp_path / "disdat.cfg") in str(info.value)


def test_config_path_default(tmp_path: Path) -> None:
    """Without DISDAT_CONFIG the file lives in ~/.config/disdat/."""
    assert config_path({}) == Path("~/.config/disdat/disdat.cfg").expanduser()


def test_a_bad_executor_section_breaks_only_what_uses_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One bad key in an unused [executor.badmem] leaves every other command working; an apply
    that uses it, and `dsdt config check`, name the line to fix and exit non-zero."""
    from disdat_luigi.cli.main import main

    env = {"DISDAT_CONFIG": str(tmp_path / "disdat.cfg"), "DISDAT_HOME": str(tmp_path / "home")}
    init_config(env)
    cfg = Path(env["DISDAT_CONFIG"])
    cfg.write_text(
        cfg.read_text() + "\n[executor.badmem]\ntype = docker\nmemory = lots\n\n[executor.good]\ntype = docker\n"
    )
    line = cfg.read_text().splitlines().index("memory = lots") + 1
    settings = load_settings(env)  # reading the file does not fail
    assert settings.executor("good").type == "docker"
    with pytest.raises(ConfigError, match=r"\[executor.badmem\] memory must be a whole number, not 'lots'") as bad:
        settings.executor("badmem")
    assert bad.value.hint == f"fix line {line} of {cfg}"
    assert [p.message for p in settings.check()] == [
        f"{cfg}: [executor.badmem] memory must be a whole number, not 'lots'"
    ]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        assert main(["config", "check"]) == 1
        assert f"hint: fix line {line} of {cfg}" in capsys.readouterr().err
        cfg.write_text(cfg.read_text().replace("memory = lots", "memory = 4096"))
        assert main(["config", "check"]) == 0
        assert capsys.readouterr().out == f"ok: {cfg}\n"


def test_typos_are_never_silent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelled key of an executor section fails the apply that uses it (it would otherwise
    run its tasks here: `typ = docker` is no type); a section without a type says so; a misspelled
    key or section elsewhere is a warning naming the line on every command, and `dsdt config
    check` fails on it."""
    from disdat_luigi.cli.main import main

    env = {"DISDAT_CONFIG": str(tmp_path / "disdat.cfg"), "DISDAT_HOME": str(tmp_path / "home")}
    init_config(env)
    cfg = Path(env["DISDAT_CONFIG"])
    text = cfg.read_text().replace("[core]\n", "[core]\nignore_code_versoin = true\n", 1)
    cfg.write_text(text + "\n[executor.dbg2]\ntyp = docker\n\n[executor.bare]\nmemory = 512\n\n[gcc]\nkeep_last = 2\n")
    lines = cfg.read_text().splitlines()
    with pytest.warns(UserWarning) as warned:
        settings = load_settings(env)
    said = [str(w.message) for w in warned]
    assert any(
        "[core] ignore_code_versoin is not a setting of [core]" in s
        and f"line {lines.index('ignore_code_versoin = true') + 1}" in s
        for s in said
    )
    assert any("[gcc] is not a section of disdat.cfg" in s for s in said)
    with pytest.raises(ConfigError, match=r"\[executor.dbg2\] typ is not an executor setting") as typo:
        settings.executor("dbg2")
    assert typo.value.hint == f"fix line {lines.index('typ = docker') + 1} of {cfg}"
    with pytest.raises(ConfigError, match=r"\[executor.bare\] has no type"):
        settings.executor("bare")
    assert len(settings.check()) == 4
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        assert main(["config", "check"]) == 1
        err = capsys.readouterr().err
        assert "ignore_code_versoin" in err and "[gcc]" in err and "typ is not" in err and "has no type" in err


def test_tags_separated_by_spaces_name_the_fix(tmp_path: Path) -> None:
    """`tags = team:ml project:x` would read as the one tag team = 'ml project:x' (the job's cost
    tags silently wrong): in [run] and in an executor's section it is an error naming the fix."""
    cfg = tmp_path / "disdat.cfg"
    cfg.write_text("[run]\ntags = team:ml project:x\n")
    with pytest.raises(ConfigError) as run:
        load_settings(_env(tmp_path))
    assert (
        "[run] tags has 'team:ml project:x', which reads as the one tag team = 'ml project:x'; "
        "separate tags with commas: tags = team:ml, project:x" in run.value.message
    )
    cfg.write_text("[run]\ntags = team:ml, project:x\n[executor.b]\ntype = aws_batch\ntags = a:1 b:2\n")
    settings = load_settings(_env(tmp_path))
    assert settings.run.tags == (("team", "ml"), ("project", "x"))
    with pytest.raises(ConfigError, match=r"\[executor.b\] tags has 'a:1 b:2'.*tags = a:1, b:2"):
        settings.executor("b")
    cfg.write_text("[run]\ntags = note:a b c\n")  # spaces inside one value stay allowed
    assert load_settings(_env(tmp_path)).run.tags == (("note", "a b c"),)
