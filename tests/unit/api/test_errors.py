"""The HTTP face of errors: what a caller may read in a message."""

from __future__ import annotations

import pytest

from service.api.errors import redact


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("judge http://user:pw@judge:8000/v1/chat?k=1 down", "judge http://judge:8000 down"),
        ("a 'https://tok@h2/x' and redis://:secret@cache:6379/0", "a 'https://h2' and redis://cache:6379"),
        ("no address here", "no address here"),
        # A scheme-like run of any length before `://` (linear time: the scheme is bounded) still loses the key.
        ("a+" * 5000 + "://user:pw@host/path", "a+" * 5000 + "://host"),
        ("x" * 20000 + "://k@h", "x" * 20000 + "://h"),
        # A message cut right after the user-info: the host is empty, the secret is not shown.
        ("cannot reach http://medix:S3cretPassw0rd@", "cannot reach http://"),
        ("http://a@b@host:1/p", "http://host:1"),
    ],
)
def test_redact_keeps_scheme_and_host_only(text, shown):
    assert redact(text) == shown


async def test_readiness_redacts_before_it_cuts_a_message_short():
    """A probe's error is cut to 300 characters; cutting first could leave `user:secret@` with no host after it."""
    from service.api.routes.ops import _probe

    for pad in range(250, 300):
        url = "http://medix:S3cretPassw0rd@judge-replica-" + "x" * 40 + ":8000/v1"

        async def down(url: str = url, pad: int = pad) -> None:
            raise OSError("a" * pad + " cannot reach " + url)

        _, _, err = await _probe("judge", down())
        assert err is not None and "S3cret" not in err and "medix:" not in err
