"""The HTTP face of errors: what a caller may read in a message."""

from __future__ import annotations

import pytest

from service.errors import redact


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("judge http://user:pw@judge:8000/v1/chat?k=1 down", "judge http://judge:8000 down"),
        ("a 'https://tok@h2/x' and redis://:secret@cache:6379/0", "a 'https://h2' and redis://cache:6379"),
        ("no address here", "no address here"),
        # A scheme-like run of any length before `://` (linear time: the scheme is bounded) still loses the key.
        ("a+" * 5000 + "://user:pw@host/path", "a+" * 5000 + "://host"),
        ("x" * 20000 + "://k@h", "x" * 20000 + "://h"),
    ],
)
def test_redact_keeps_scheme_and_host_only(text, shown):
    assert redact(text) == shown
