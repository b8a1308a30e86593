import pytest

from service.reward import rules
from service.reward.profiles import PROFILES
from service.reward.rules import GroundTruth, Modality

W = PROFILES["medix-r1"].weights


# Rule 1 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("< thinking > a </ thinking >", "<thinking>a</thinking>"),
        ("<answer>\n  Pneumonia \n</answer>", "<answer>Pneumonia</answer>"),
        ("left / right", "left/right"),
        ("no tags here", "no tags here"),
    ],
)
def test_normalise_removes_whitespace_around_tag_characters(raw, expected):
    assert rules.normalise(raw) == expected


# Rule 2 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("response", "score"),
    [
        ("<thinking>why</thinking><answer>Liver</answer>", 1.0),
        ("<X_RAY><thinking>why</thinking>\n\n<answer>Liver</answer>", 1.0),
        ("<X_RAY> < thinking >why</thinking >  < answer > Liver </answer>", 1.0),
        ("<thinking>multi\nline</thinking><answer>a\nb</answer>", 1.0),
        ("<answer>Liver</answer>", 0.0),  # no <thinking> at all
        ("<thinking>why</thinking><answer>Liver</answer> extra", 0.0),  # text after </answer>
        ("<thinking>why</thinking>text<answer>Liver</answer>", 0.0),  # text between blocks
        ("<thinking>why</thinking>", 0.0),
        ("<thinking>why<answer>Liver</answer>", 0.0),
        ("<thinking>a</thinking><answer>b</answer><answer>c</answer>", 0.0),  # two answers
        ("<thinking>a</thinking><thinking>b</thinking><answer>c</answer>", 0.0),
        ("<answer>x</answer><thinking>a</thinking><answer>b</answer>", 1.0),  # judged from first <thinking>
        ("", 0.0),
    ],
)
def test_format(response, score):
    assert rules.format_score(rules.normalise(response)) == score


# Rule 3 -------------------------------------------------------------------------------------------
def test_ground_truth_string_with_tag():
    assert rules.parse_ground_truth("<X_RAY>Pneumonia") == GroundTruth("Pneumonia", Modality.X_RAY)
    assert rules.parse_ground_truth("<ct_scan> Liver.") == GroundTruth("Liver", Modality.CT_SCAN)


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
    ["<XRAY>Pneumonia", {"answer": "x", "modality": "PHOTO"}, {"modality": "X_RAY"}, 42, "<X_RAY>", "  . "],
)
def test_ground_truth_rejects_what_is_neither_form(bad):
    with pytest.raises(ValueError):
        rules.parse_ground_truth(bad)


# Rule 4 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("response", "answer"),
    [
        ("<thinking>x</thinking><answer> Pneumonia. </answer>", "Pneumonia"),
        ("<thinking>x</thinking><answer>...Liver...</answer>", "Liver"),
        ("<answer>first</answer><answer>second</answer>", "first"),
        ("just the answer.", "just the answer"),
        ("<thinking>x</thinking>", "<thinking>x</thinking>"),
        ("<answer></answer>", ""),
    ],
)
def test_extract_answer(response, answer):
    assert rules.extract_answer(rules.normalise(response)) == answer


# Rule 5 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("answer", "invalid"),
    [("", True), ("A", True), ("Answer: liver", True), ("liver?", True), ("__", True), ("a__b", True),
     ("No", False), ("Liver", False), ("T2-weighted MRI", False)],
)
def test_invalid_answers(answer, invalid):
    p = PROFILES["medix-r1"]
    assert rules.is_invalid_answer(answer, p.invalid_min_length, p.invalid_substrings) is invalid


def test_invalid_rule_set_is_configurable():
    assert not rules.is_invalid_answer("ratio 1:2", 2, ("__",))
    assert rules.is_invalid_answer("ratio 1:2", 2, (":",))


# Rule 9 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("response", "modality", "score"),
    [
        ("<X_RAY><thinking>a</thinking><answer>b</answer>", Modality.X_RAY, 1.0),
        ("  <x_ray>  <thinking>a</thinking><answer>b</answer>", Modality.X_RAY, 1.0),
        ("<CT_SCAN><thinking>a</thinking><answer>b</answer>", Modality.X_RAY, 0.0),
        ("X_RAY<thinking>a</thinking><answer>b</answer>", Modality.X_RAY, 0.0),
        ("<X_RAY> chest <thinking>a</thinking>", Modality.X_RAY, 0.0),
        ("<thinking>a</thinking><answer>b</answer>", Modality.X_RAY, 0.0),
        ("<X_RAY>", Modality.X_RAY, 1.0),  # no <thinking>: the whole text is the prefix
        ("<X_RAY><thinking>a</thinking>", None, None),
    ],
)
def test_modality(response, modality, score):
    assert rules.modality_score(rules.normalise(response), modality) == score


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
