"""luigi's retry settings as the in-process runner reads them."""

from __future__ import annotations

import luigi

from disdat_luigi.apply.local import RetryPolicy, run_with_retries


class Plain(luigi.Task):
    pass


class Once(luigi.Task):
    retry_count = 1  # a class may bound its own retries, as under luigi's worker


def test_no_retries_unless_the_worker_is_kept_alive() -> None:
    assert RetryPolicy(keep_alive=False, retry_count=5).attempts(Plain()) == 1
    assert RetryPolicy(keep_alive=True, retry_count=5).attempts(Plain()) == 5
    assert RetryPolicy(keep_alive=True, retry_count=5).attempts(Once()) == 1


def test_retries_wait_the_delay_and_stop_at_the_count(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Three failures with three attempts: two waits of `delay`, the last failure returned."""
    failures = iter([ValueError("1"), ValueError("2"), ValueError("3")])
    monkeypatch.setattr("disdat_luigi.apply.local.run_in_process", lambda task: next(failures))
    slept: list[float] = []
    lines: list[str] = []
    last = run_with_retries(Plain(), RetryPolicy(keep_alive=True, retry_count=3, delay=7), lines.append, slept.append)
    assert str(last) == "3" and slept == [7, 7]
    assert lines[-1].endswith("retrying in 7 s (attempt 3 of 3)")
