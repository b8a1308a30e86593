"""Profile `medix-r1` against a second, deliberately plain reading of the published rules.

`plain_published` below is written straight from the rule text (docs/reward-rules.md, rules 1-6 and 9) with
the slow, obvious regexes; the service's linear-time rules (through `settle` and the scorer's `prepare`)
must agree with it component by component on adversarial generated outputs. The generated cases that ran
are counted and printed by the last test of the file.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from service.evaluation.rubric import strip_reasoning
from service.reward import rules
from service.reward.profiles import PROFILES
from service.reward.prompt import read_verdict
from service.reward.rules import Modality
from service.reward.scorer import prepare
from service.reward.wire import RewardItem

RAN: Counter[str] = Counter()


def runs(n: int) -> settings:
    # No example database: nothing is written into the working tree, and each run draws afresh.
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

FORBIDDEN = ("__", ":", "?")


# -- the plain reading ------------------------------------------------------------------------------------
def plain_published(response: str, ground_truth: str) -> dict[str, object]:
    """Rules 1-6 and 9 as worded, for a tagged ground truth `<TAG>answer`."""
    text = re.sub(r"\s*([<>/])\s*", r"\1", response)  # 1
    first = text.find("<thinking>")
    if first < 0:  # 2
        fmt = 0.0
    else:
        whole = re.fullmatch(r"<thinking>.*?</thinking>\s*<answer>.*?</answer>", text[first:].strip(), re.DOTALL)
        fmt = 1.0 if whole else 0.0
    tag, reference = ground_truth.split(">", 1)  # 3
    tag += ">"
    reference = reference.strip().strip(".")
    block = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)  # 4
    answer = (block.group(1) if block else text).strip().strip(".")
    if answer == "" or len(answer) == 1 or any(s in answer for s in FORBIDDEN):  # 5
        decided = "invalid"
    elif answer == reference:  # 6
        decided = "exact"
    else:
        decided = "backends"
    modality = 0.0 if first < 0 else float(text[:first].strip().upper() == tag.upper())  # 9
    return {"format": fmt, "modality": modality, "answer": answer, "reference": reference, "decided_by": decided}


def components(s: rules.Settled | object) -> dict[str, object]:
    return {k: getattr(s, k) for k in ("format", "modality", "answer", "reference", "decided_by")}


# -- generators -------------------------------------------------------------------------------------------
SPACES = st.lists(st.sampled_from([" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2003", "\u3000", "\x0b", "\x1c",
                                   "\x85"]), max_size=3).map("".join)
# Characters whose upper case is an ASCII part of a tag, but whose lower case is not (str.upper vs str.lower).
LOOKALIKES = {"S": "\u017f", "I": "\u0131", "FL": "\ufb02", "FI": "\ufb01"}


@st.composite
def spaced_tag(draw: st.DrawFn, name: str, closing: bool) -> str:
    """`<answer>` or `</answer>` with whitespace maybe around each of its parts, sometimes in another case."""
    if draw(st.integers(0, 9)) == 0:
        name = draw(st.sampled_from([name.upper(), name.capitalize(), name[:-1]]))
    parts = ["<", "/" if closing else "", name, ">"]
    return "".join(p + draw(SPACES) if draw(st.booleans()) else p for p in parts)


@st.composite
def mixed_case_tag(draw: st.DrawFn, modality: Modality) -> str:
    word = modality.value
    for ascii_, other in LOOKALIKES.items():
        if ascii_ in word and draw(st.integers(0, 4)) == 0:
            word = word.replace(ascii_, other, 1)
    word = "".join(c.lower() if draw(st.booleans()) else c for c in word)
    return "<" + draw(SPACES) + word + draw(SPACES) + ">"


LITTLE = st.sampled_from(["a", "Z", "Liver", "Brain", "left lobe", "pneumonia", ".", "..", ". ", " .", "__", ":", "?",
                          "_", "<", ">", "/", "x/y", "<5 mm", "ß", "\u00e9", "1", "YES"])


@st.composite
def ground_truths(draw: st.DrawFn) -> str:
    tag = "".join(c.lower() if draw(st.booleans()) else c for c in draw(st.sampled_from(list(Modality))).value)
    answer = draw(SPACES) + "".join(draw(st.lists(LITTLE, min_size=1, max_size=4))) + draw(SPACES)
    if draw(st.booleans()):
        answer = draw(st.sampled_from(["", ".", ". ", " ."])) + answer + draw(st.sampled_from(["", ".", " .", ". "]))
    return f"<{tag}>{answer}"


@st.composite
def responses(draw: st.DrawFn, ground_truth: str) -> str:
    """A model output: an optional modality prefix, a thinking block and an answer block, each maybe repeated,
    nested, unclosed, left out or garbled, with text and whitespace anywhere."""
    reference = ground_truth.split(">", 1)[1]

    def text() -> str:
        pieces = draw(st.lists(st.one_of(LITTLE, SPACES, st.just(reference), st.just(reference.strip(" .")),
                                         st.characters(exclude_categories=("Cs",))), max_size=4))
        return "".join(pieces)

    def tag(name: str, closing: bool = False) -> str:
        return draw(spaced_tag(name, closing))

    out: list[str] = []
    if draw(st.integers(0, 4)):  # mostly the ground truth's modality, in some case
        own = Modality(ground_truth[1:ground_truth.index(">")].upper())
        out.append(draw(mixed_case_tag(own if draw(st.integers(0, 3)) else draw(st.sampled_from(list(Modality))))))
    if draw(st.integers(0, 5)) == 0:
        out.append(text())
    for _ in range(draw(st.integers(0, 2))):  # thinking blocks, sometimes nested or unclosed
        block = tag("thinking") + text()
        if draw(st.integers(0, 5)) == 0:
            block += tag("thinking") + text() + tag("thinking", True)
        if draw(st.integers(0, 7)):
            block += tag("thinking", True)
        out.append(block + draw(SPACES))
    if draw(st.integers(0, 6)) == 0:
        out.append(text())
    for _ in range(draw(st.integers(0, 3))):  # answer blocks, sometimes unclosed
        # Often the reference itself, as given or trimmed, so that exact matches and near misses come up.
        core = draw(st.sampled_from([reference, reference.strip(), reference.strip(" ."), None]))
        inside = (draw(st.sampled_from(["", ".", ". ", " .", "..."])) + (text() if core is None else core)
                  + draw(st.sampled_from(["", ".", " ."])))
        block = tag("answer") + inside
        if draw(st.integers(0, 6)) == 0:  # an answer block nested in this one
            block += tag("answer") + (text() if core is None else core) + tag("answer", True)
        if draw(st.integers(0, 6)):
            block += tag("answer", True)
        out.append(block + draw(SPACES))
    if draw(st.integers(0, 4)) == 0:
        out.append(text())
    return "".join(out)


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, str]:
    gt = draw(ground_truths())
    assume(rules.strict_trim_answer(gt.split(">", 1)[1]) != "")  # the service rejects empty references
    return draw(responses(gt)), gt


# -- the comparisons --------------------------------------------------------------------------------------
@runs(700)
@given(case=cases())
def test_settle_is_the_published_rules(case: tuple[str, str]) -> None:
    response, gt = case
    assert components(rules.settle(response, gt, PROFILES["medix-r1"])) == plain_published(response, gt)
    RAN["settle medix-r1"] += 1


@runs(150)
@given(case=cases(), profile=st.sampled_from(["medix-r1", "medix-r1-soft"]))
def test_prepare_is_the_published_rules(case: tuple[str, str], profile: str) -> None:
    response, gt = case
    prepared = prepare(0, RewardItem(response=response, ground_truth=gt), PROFILES[profile])
    assert components(prepared) == plain_published(response, gt)
    RAN["prepare medix-r1 / medix-r1-soft"] += 1


# Raw strings over a tag-heavy alphabet: every ordering of blocks, not only the ones `responses` builds. Most
# start with <thinking> and end with </answer>, where the published and the strict format differ.
TAGGY = st.tuples(
    st.sampled_from(["<thinking>", "<thinking>", " <thinking>", ""]),
    st.lists(st.sampled_from(["<thinking>", "</thinking>", "<answer>", "</answer>", "</thinking><answer>",
                              "</thinking>\n<answer>", "<", ">", "/", " ", "\n", "\u2003", "a", ".", "thinking",
                              "answer"]), max_size=12).map("".join),
    st.sampled_from(["</answer>", "</answer>", "</answer> ", ""]),
).map("".join)


@runs(1000)
@given(response=TAGGY, gt=ground_truths())
@example(response="<thinking></thinking><answer></answer>", gt="<X_RAY>ab")
@example(response="<thinking>a</thinking> <answer></answer>", gt="<X_RAY>ab")
@example(response="<thinking></thinking></answer>", gt="<X_RAY>ab")
@example(response="<thinking></answer>", gt="<X_RAY>ab")
@example(response="<thinking>a</thinking><answer>b</answer></thinking><answer>", gt="<X_RAY>ab")
def test_format_answer_and_modality_on_raw_tag_soup(response: str, gt: str) -> None:
    assume(rules.strict_trim_answer(gt.split(">", 1)[1]) != "")
    assert components(rules.settle(response, gt, PROFILES["medix-r1"])) == plain_published(response, gt)
    RAN["tag soup"] += 1


@runs(500)
@given(response=st.text(alphabet=st.sampled_from([" ", "\t", "\n", "\u00a0", "\u2003", "\x1c", "\x85", "<", ">",
                                                   "/", "a", "."]), max_size=40))
def test_normalise_is_the_published_substitution(response: str) -> None:
    assert rules.normalise(response) == re.sub(r"\s*([<>/])\s*", r"\1", response)
    RAN["normalise"] += 1


# -- the judge's side: the evaluation's reasoning cut and the reward's reading of a prose reply ----------------
def plain_strip_reasoning(prediction: str) -> str:
    """As worded: if `</think>` occurs, what follows its last occurrence; else the same with `</thinking>`;
    case-sensitive; then trimmed."""
    if "</think>" in prediction:
        prediction = prediction.split("</think>")[-1]
    elif "</thinking>" in prediction:
        prediction = prediction.split("</thinking>")[-1]
    return prediction.strip()


REASONING = st.lists(st.one_of(st.sampled_from(["</think>", "</thinking>", "<think>", "<thinking>", "</THINK>",
                                                "</Thinking>", "</think >", "</thin", "k>", " ", "\n", "Yes", "B"]),
                               st.characters(exclude_categories=("Cs",))), max_size=10).map("".join)


@runs(400)
@given(prediction=REASONING)
def test_reasoning_cut_is_the_published_one(prediction: str) -> None:
    assert strip_reasoning(prediction) == plain_strip_reasoning(prediction)
    RAN["reasoning cut"] += 1


REPLIES = st.lists(st.one_of(st.sampled_from(["YES", "Yes", "yes", "yeS", "NO", "No", "no", "not", "maybe", " ", "\n",
                                              ".", ",", "ye", "s", "\u017f", "The answer is "]),
                             st.characters(exclude_categories=("Cs",))), max_size=6).map("".join)


@runs(400)
@given(reply=REPLIES)
def test_prose_reply_is_read_as_published(reply: str) -> None:
    """The published reading (YES when the upper-cased reply contains YES, else NO); an empty reply is no
    verdict (a failure the caller sees, never a silent NO)."""
    expected = None if not reply.strip() else ("YES" if "YES" in reply.upper() else "NO")
    assert read_verdict(reply) == expected
    RAN["judge reply"] += 1


def test_zz_generated_case_count(capsys: pytest.CaptureFixture[str]) -> None:
    """Runs last in this file: how many generated cases the comparisons above ran."""
    if not RAN:
        pytest.skip("the property tests did not run in this session")
    with capsys.disabled():
        print(f"\n[test_published] generated cases run: {sum(RAN.values())} ({dict(RAN)})")
    assert sum(RAN.values()) >= 1000
