import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.reward import rules
from service.reward.profiles import PROFILES
from service.reward.rules import GroundTruth, Modality

W = PROFILES["medix-r1"].weights
PUBLISHED, STRICT = PROFILES["medix-r1"], PROFILES["medix-r1-strict"]


def test_profiles_pick_their_rule_set():
    assert PROFILES["medix-r1"].rule_set == "published"
    assert PROFILES["medix-r1-soft"].rule_set == "published"
    assert PROFILES["medix-r1-strict"].rule_set == "strict"
    assert PROFILES["medix-r1-strict"].weights == W  # only the rules differ, not the weights


# Rule 1 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("< thinking > a </ thinking >", "<thinking>a</thinking>"),
        ("<answer>\n  Pneumonia \n</answer>", "<answer>Pneumonia</answer>"),
        ("left / right", "left/right"),
        ("no tags here", "no tags here"),
        ("a \t\u00a0 b  <", "a \t\u00a0 b<"),  # only the run that touches a tag character goes
        ("x \u2003/\u3000y", "x/y"),  # Unicode spaces count as whitespace
        ("", ""),
    ],
)
def test_normalise_removes_whitespace_around_tag_characters(raw, expected):
    assert rules.normalise(raw) == expected


# Rule 2 -------------------------------------------------------------------------------------------
FORMAT_CASES = [
    # (response, published, strict)
    ("<thinking>why</thinking><answer>Liver</answer>", 1.0, 1.0),
    ("<X_RAY><thinking>why</thinking>\n\n<answer>Liver</answer>", 1.0, 1.0),
    ("<X_RAY> < thinking >why</thinking >  < answer > Liver </answer>", 1.0, 1.0),
    ("<thinking>multi\nline</thinking><answer>a\nb</answer>", 1.0, 1.0),
    ("<answer>Liver</answer>", 0.0, 0.0),  # no <thinking> at all
    ("<thinking>why</thinking><answer>Liver</answer> extra", 0.0, 0.0),  # text after </answer>
    ("<thinking>why</thinking>text<answer>Liver</answer>", 0.0, 0.0),  # text between the blocks
    ("<thinking>why</thinking>", 0.0, 0.0),
    ("<thinking>why<answer>Liver</answer>", 0.0, 0.0),
    ("<thinking>a</thinking><answer>b</answer><answer>c</answer>", 1.0, 0.0),  # repeated answer blocks
    ("<thinking>a</thinking><thinking>b</thinking><answer>c</answer>", 1.0, 0.0),  # repeated thinking blocks
    ("<thinking>a<thinking>b</thinking>c</thinking><answer>d</answer>", 1.0, 0.0),  # nested thinking
    ("<thinking>a</thinking>x</thinking><answer>b</answer>", 1.0, 0.0),  # the second bridge is the one
    ("<answer>x</answer><thinking>a</thinking><answer>b</answer>", 1.0, 1.0),  # judged from the first <thinking>
    ("<thinking></thinking><answer></answer>", 1.0, 1.0),
    ("<thinking>a</thinking><answer></answer>x</answer>", 1.0, 0.0),
    ("<thinking>a</thinking><answer>b</answer>\u2003\t", 1.0, 1.0),  # trailing spaces go in normalising
    ("<thinking>a</thinking><answer>b</answer>x\u2003", 0.0, 0.0),
    ("", 0.0, 0.0),
]


@pytest.mark.parametrize(("response", "published", "strict"), FORMAT_CASES)
def test_format(response, published, strict):
    text = rules.normalise(response)
    assert rules.format_score(text) == published
    assert rules.strict_format_score(text) == strict


# Rule 3 -------------------------------------------------------------------------------------------
def test_ground_truth_string_with_tag_keeps_the_text_after_the_tag():
    assert rules.parse_ground_truth("<X_RAY>Pneumonia") == GroundTruth("Pneumonia", Modality.X_RAY)
    assert rules.parse_ground_truth("<ct_scan> Liver.") == GroundTruth(" Liver.", Modality.CT_SCAN)


def test_ground_truth_object_forms():
    assert rules.parse_ground_truth({"answer": "Liver", "modality": "MRI_SCAN"}) == GroundTruth(
        "Liver", Modality.MRI_SCAN
    )
    assert rules.parse_ground_truth({"answer": "Liver", "modality": None}) == GroundTruth("Liver", None)
    assert rules.parse_ground_truth({"answer": "Liver"}) == GroundTruth("Liver", None)


def test_ground_truth_plain_string_has_no_modality():
    assert rules.parse_ground_truth("Liver") == GroundTruth("Liver", None)
    assert rules.parse_ground_truth("<5 mm") == GroundTruth("<5 mm", None)


@pytest.mark.parametrize(
    "bad",
    ["<XRAY>Pneumonia", {"answer": "x", "modality": "PHOTO"}, {"modality": "X_RAY"}, 42, "<X_RAY>", "  . ",
     "<X_RAY>. .", "<X_RAY> \n"],
)
def test_ground_truth_rejects_what_is_neither_form(bad):
    with pytest.raises(ValueError):
        rules.parse_ground_truth(bad)


@pytest.mark.parametrize(
    ("ground_truth", "published", "strict"),
    [("<X_RAY> Liver .", "Liver ", "Liver"), ("<X_RAY>. a", " a", "a"), ("<X_RAY>...Liver...", "Liver", "Liver"),
     ({"answer": " Brain . ", "modality": None}, "Brain ", "Brain")],
)
def test_reference_is_trimmed_like_the_answer(ground_truth, published, strict):
    assert rules.settle("x", ground_truth, PUBLISHED).reference == published
    assert rules.settle("x", ground_truth, STRICT).reference == strict


# Rule 4 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("response", "published", "strict"),
    [
        ("<thinking>x</thinking><answer> Pneumonia. </answer>", "Pneumonia", "Pneumonia"),
        ("<thinking>x</thinking><answer>...Liver...</answer>", "Liver", "Liver"),
        ("<answer>Brain .</answer>", "Brain ", "Brain"),
        ("<answer>. a</answer>", " a", "a"),
        ("<answer>first</answer><answer>second</answer>", "first", "first"),
        ("<answer>a<answer>b</answer>", "a<answer>b", "a<answer>b"),
        ("<answer>open <answer>still open", "<answer>open<answer>still open", "<answer>open<answer>still open"),
        ("just the answer.", "just the answer", "just the answer"),
        ("<thinking>x</thinking>", "<thinking>x</thinking>", "<thinking>x</thinking>"),
        ("<answer></answer>", "", ""),
    ],
)
def test_extract_answer(response, published, strict):
    text = rules.normalise(response)
    assert rules.extract_answer(text) == published
    assert rules.extract_answer(text, rules.strict_trim_answer) == strict


# Rule 5 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("answer", "invalid"),
    [("", True), ("A", True), ("Answer: liver", True), ("liver?", True), ("__", True), ("a__b", True),
     ("No", False), ("Liver", False), ("T2-weighted MRI", False), ("a ", False)],
)
def test_invalid_answers(answer, invalid):
    p = PROFILES["medix-r1"]
    assert rules.is_invalid_answer(answer, p.invalid_min_length, p.invalid_substrings) is invalid


def test_invalid_rule_set_is_configurable():
    assert not rules.is_invalid_answer("ratio 1:2", 2, ("__",))
    assert rules.is_invalid_answer("ratio 1:2", 2, (":",))


# Rules 5 and 6 through settle -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("response", "ground_truth", "published", "strict"),
    [
        ("<thinking>t</thinking><answer>Pneumonia</answer>", "<X_RAY>Pneumonia", "exact", "exact"),
        ("<thinking>t</thinking><answer>Brain .</answer>", "<X_RAY>Brain", "backends", "exact"),
        ("<thinking>t</thinking><answer>Brain .</answer>", "<X_RAY>Brain .", "exact", "exact"),
        ("<thinking>t</thinking><answer>a .</answer>", "<X_RAY>b", "backends", "invalid"),  # `a ` has 2 chars
        ("<thinking>t</thinking><answer>A</answer>", "<X_RAY>A", "invalid", "invalid"),  # invalid comes first
        ("<thinking>t</thinking><answer>pneumonia</answer>", "<X_RAY>Pneumonia", "backends", "backends"),
    ],
)
def test_settle_decisions(response, ground_truth, published, strict):
    assert rules.settle(response, ground_truth, PUBLISHED).decided_by == published
    assert rules.settle(response, ground_truth, STRICT).decided_by == strict


# Rule 9 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("response", "modality", "published", "strict"),
    [
        ("<X_RAY><thinking>a</thinking><answer>b</answer>", Modality.X_RAY, 1.0, 1.0),
        ("  <x_ray>  <thinking>a</thinking><answer>b</answer>", Modality.X_RAY, 1.0, 1.0),
        ("<CT_SCAN><thinking>a</thinking><answer>b</answer>", Modality.X_RAY, 0.0, 0.0),
        ("X_RAY<thinking>a</thinking><answer>b</answer>", Modality.X_RAY, 0.0, 0.0),
        ("<X_RAY> chest <thinking>a</thinking>", Modality.X_RAY, 0.0, 0.0),
        ("<thinking>a</thinking><answer>b</answer>", Modality.X_RAY, 0.0, 0.0),
        ("<X_RAY>", Modality.X_RAY, 0.0, 1.0),  # no <thinking>: published 0, strict takes the whole text
        ("<\u017fpect><thinking>a</thinking>", Modality.SPECT, 1.0, 0.0),  # long s upper-cases to S
        ("<m\u0131croscopy><thinking>a</thinking>", Modality.MICROSCOPY, 1.0, 0.0),  # dotless i upper-cases to I
        ("<X_RAY><thinking>a</thinking>", None, None, None),
    ],
)
def test_modality(response, modality, published, strict):
    text = rules.normalise(response)
    assert rules.modality_score(text, modality) == published
    assert rules.strict_modality_score(text, modality) == strict


# Rule 10 ------------------------------------------------------------------------------------------
def _overall(f, llm, emb, mod):
    return rules.compose(format_=f, accuracy_llm=llm, accuracy_embed=emb, modality=mod, weights=W,
                         content_weight=0.9, format_weight=0.1)


def test_overall_formula_with_modality():
    assert _overall(1, 1, 1, 1) == pytest.approx(1.0)
    assert _overall(1, 1, 0, 0) == pytest.approx(0.9 * 0.575 + 0.1)
    assert _overall(0, 0, 1, 1) == pytest.approx(0.9 * (0.375 + 0.05))
    assert _overall(0, 0, 0, 0) == 0.0


def test_null_modality_weight_is_shared_in_proportion():
    assert _overall(0, 1, 0, None) == pytest.approx(0.9 * 0.575 / 0.95)
    assert _overall(0, 0, 1, None) == pytest.approx(0.9 * 0.375 / 0.95)
    assert _overall(1, 1, 1, None) == pytest.approx(1.0)


# The strict rule set is the service's earlier behaviour: compare it with that code, kept here verbatim --------
_OLD_AROUND = re.compile(r"\s+(?=[<>/])|(?<=[<>/])\s+")
_OLD_FORMAT = re.compile(
    r"<thinking>(?:(?!</?thinking>).)*</thinking>\s*<answer>(?:(?!</?answer>).)*</answer>", re.DOTALL)
_OLD_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def _old_settle(response: str, ground_truth: str) -> tuple[str, str, float, float | None, str]:
    text = _OLD_AROUND.sub("", response)
    m = _OLD_ANSWER.search(text)
    answer = (m.group(1) if m else text).strip().strip(".").strip()
    gt = rules.parse_ground_truth(ground_truth)
    reference = gt.answer.strip().strip(".").strip()
    start = text.find("<thinking>")
    fmt = 0.0 if start < 0 else float(_OLD_FORMAT.fullmatch(text, start) is not None)
    prefix = text.split("<thinking>", 1)[0].strip()
    mod = None if gt.modality is None else float(prefix.lower() == f"<{gt.modality.value}>".lower())
    if len(answer) < 2 or any(s in answer for s in ("__", ":", "?")):
        decided = "invalid"
    else:
        decided = "exact" if answer == reference else "backends"
    return answer, reference, fmt, mod, decided


_PIECES = st.sampled_from(["<thinking>", "</thinking>", "<answer>", "</answer>", "< answer >", "</ thinking>",
                           "<X_RAY>", "<x_ray>", "<\u017fpect>", " ", "\n", "\t", "\u00a0", ".", "..", ":", "?",
                           "__", "a", "Liver", "Brain", "<", ">", "/"])


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(_PIECES, max_size=14), gt=st.sampled_from(["<X_RAY>Liver", "<SPECT> Brain .", "Liver"]))
def test_strict_rule_set_is_the_earlier_behaviour(parts, gt):
    response = "".join(parts)
    s = rules.settle(response, gt, STRICT)
    assert (s.answer, s.reference, s.format, s.modality, s.decided_by) == _old_settle(response, gt)


# Linear time ---------------------------------------------------------------------------------------
# Degenerate model outputs of length about n. A quadratic rule takes 64 times longer at 8 times the
# length; a linear one about 8 times. The bound allows 8x plus a constant for timer and cache noise, and
# each time is the best of five, so a loaded machine slows both sizes alike.
DEGENERATE: dict[str, Callable[[int], str]] = {
    "space run": lambda n: " " * n,
    "space run before <": lambda n: " " * (n - 1) + "<",
    "word then space run": lambda n: "x" + " " * (n - 1),
    "mixed whitespace run": lambda n: " \t\n\u00a0\u2003" * (n // 5) + "x",
    "word space": lambda n: "a " * (n // 2),
    "< run": lambda n: "<" * n,
    "< space": lambda n: "< " * (n // 2),
    "/ space": lambda n: " /" * (n // 2),
    "unclosed <answer>": lambda n: "<answer>" * (n // 8),
    "unclosed <answer> with text": lambda n: "<answer> x " * (n // 11),
    "repeated </thinking>": lambda n: "<thinking>" + "</thinking>" * (n // 11),
    "repeated </thinking> and space": lambda n: "<thinking>" + "</thinking>\u2003" * (n // 12) + "</answer>",
    "</thinking> then space run": lambda n: "<thinking></thinking>" + " " * n + "x</answer>",
    "repeated <thinking>": lambda n: "<thinking>" * (n // 10),
    "many blocks": lambda n: "<thinking>a</thinking>" + "<answer>b</answer>" * (n // 18),
    "open blocks then close": lambda n: "<thinking>" * (n // 20) + "<answer>" * (n // 16) + "</answer>",
}
RULES: dict[str, Callable[[str], object]] = {
    "normalise": rules.normalise,
    "format (published)": rules.format_score,
    "format (strict)": rules.strict_format_score,
    "answer (published)": rules.extract_answer,
    "answer (strict)": lambda s: rules.extract_answer(s, rules.strict_trim_answer),
    "modality (published)": lambda s: rules.modality_score(s, Modality.X_RAY),
    "modality (strict)": lambda s: rules.strict_modality_score(s, Modality.X_RAY),
    "settle (medix-r1)": lambda s: rules.settle(s, "<X_RAY>Liver", PUBLISHED),
    "settle (medix-r1-strict)": lambda s: rules.settle(s, "<X_RAY>Liver", STRICT),
}


def _best_time(fn: Callable[[str], object], text: str, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.mark.parametrize("rule", list(RULES))
def test_every_rule_is_linear_on_degenerate_inputs(rule):
    fn = RULES[rule]
    slow = {}
    for name, make in DEGENERATE.items():
        small, large = make(2_500), make(20_000)
        t_small, t_large = _best_time(fn, small), _best_time(fn, large)
        if t_large > 8 * t_small + 0.005 or t_large > 0.05:
            slow[name] = (round(t_small * 1e3, 2), round(t_large * 1e3, 2))
    assert slow == {}, f"{rule}: (ms at 2.5k, ms at 20k) {slow}"


# docs/reward-rules.md ------------------------------------------------------------------------------
def _doc_rows() -> list[list[str]]:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "reward-rules.md").read_text()
    section = doc.split("## Edge cases", 1)[1].split("\n## ", 1)[0]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in section.splitlines()
            if re.match(r"\| \d+ \|", line)]


def _code(cell: str) -> str:
    assert cell.startswith("`") and cell.endswith("`"), cell
    return cell[1:-1].replace("\\n", "\n").replace("\\t", "\t")


def _cell(s: rules.Settled) -> str:
    modality = "null" if s.modality is None else f"{s.modality:g}"
    return f"{s.format:g} · {modality} · `{json.dumps(s.answer, ensure_ascii=False)}` · {s.decided_by}"


def test_the_documented_edge_cases_are_what_the_code_gives():
    rows = _doc_rows()
    assert len(rows) >= 15
    for _, name, response, gt, published, strict in rows:
        ground_truth = _code(gt)
        parsed = json.loads(ground_truth) if ground_truth.startswith("{") else ground_truth
        assert _cell(rules.settle(_code(response), parsed, PUBLISHED)) == published, name
        assert _cell(rules.settle(_code(response), parsed, STRICT)) == strict, name
