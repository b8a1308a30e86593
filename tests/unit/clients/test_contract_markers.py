"""clients.contract.strip_end_markers (used on every /get_reward query): the same result as stripping marker by
marker, in time linear in the query (issue 24, item 10: 4.3 ms per 20,000-character query of markers, quadratic)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.contract import END_MARKERS, _end_run_pattern, strip_end_markers


def reference(text: str) -> str:
    """The obvious definition: strip whitespace, then any marker the text ends with, until nothing changes."""
    text = text.rstrip()
    changed = True
    while changed:
        changed = False
        for marker in END_MARKERS:
            if text.endswith(marker):
                text, changed = text[: -len(marker)].rstrip(), True
    return text


# Pieces that make runs of markers hard to read: whole markers, pieces of them, whitespace of several kinds
# (\u3000 and \x1c are whitespace to str.rstrip), and plain text.
PIECES = [*END_MARKERS, *(m[1:] for m in END_MARKERS), *(m[:-1] for m in END_MARKERS), " ", "\n", "\t", "\u3000",
          "\x1c", "\u00a0", "<", ">", "|", "end", "answer", "x", "▁"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40))
def test_same_result_as_stripping_marker_by_marker(pieces: list[str]) -> None:
    text = "".join(pieces)
    assert strip_end_markers(text) == reference(text)


@pytest.mark.parametrize("text", [
    "", "   ", "answer", " answer</s>", "answer<|im_end|>\n<|endoftext|>  ", "<eos>" * 4000,
    "answer" + "<eos>" * 4000, "answer" + "<|im_end|>\n</s> " * 1250, "<eos>" * 4000 + "x", "a <eos" + ">" * 50,
])
def test_examples_including_20000_characters_of_markers(text: str) -> None:
    assert strip_end_markers(text) == reference(text)


def test_a_million_characters_of_markers_is_linear_work() -> None:
    """1.2 million characters of markers and spaces. Stripping marker by marker copied the text per marker:
    about 7 s here; one pass takes milliseconds. The bound is loose, for a loaded machine."""
    text = "answer" + " <eos>" * 200_000
    start = time.perf_counter()
    out = strip_end_markers(text)
    elapsed = time.perf_counter() - start
    assert out == "answer"
    assert elapsed < 0.5, f"{elapsed:.3f} s"


def test_markers_that_end_one_another_are_refused() -> None:
    """The one-pass reading needs that no marker ends another (else the order of stripping would matter)."""
    with pytest.raises(ValueError, match="end one another"):
        _end_run_pattern(("<|end|>", "end|>"))
    with pytest.raises(ValueError, match="whitespace"):
        _end_run_pattern(("<end of turn>",))
