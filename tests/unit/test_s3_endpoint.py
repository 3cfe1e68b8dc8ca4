"""Which endpoints skip botocore's SHA-256 pass over upload bodies."""

from __future__ import annotations

import pytest

from disdat_luigi.store.remote.s3 import _on_this_host


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:5000", True),
        ("http://127.8.9.10", True),
        ("http://localhost:9000", True),
        ("http://[::1]:9000", True),
        ("https://127.0.0.1:5000", False),  # TLS: botocore's own rule applies
        ("http://10.1.2.3:9000", False),
        ("http://minio.example:9000", False),
        ("http://localhost.example", False),
        ("https://s3.us-east-1.amazonaws.com", False),
    ],
)
def test_only_plain_http_to_a_loopback_address_counts_as_this_host(url: str, expected: bool) -> None:
    assert _on_this_host(url) is expected


def test_timestamps_read_fast_mean_the_same_instant() -> None:
    """The stdlib reading of listing timestamps gives the instant botocore's own parser gives,
    and forms it does not know still go to botocore's parser."""
    import botocore.utils

    from disdat_luigi.store.remote.s3 import _parse_timestamp

    for value in ("2026-12-07T20:13:11.000Z", "2026-12-07T20:13:11Z", "2026-12-07T22:13:11.250+02:00"):
        assert _parse_timestamp(value) == botocore.utils.parse_timestamp(value)
        assert _parse_timestamp(value).tzinfo is not None
    assert _parse_timestamp("Mon, 07 Dec 2026 20:13:11 GMT") == botocore.utils.parse_timestamp(
        "Mon, 07 Dec 2026 20:13:11 GMT"
    )
