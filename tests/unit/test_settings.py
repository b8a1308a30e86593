import pytest

from service.settings import DEPRECATED_ENV, GROUPS, Settings


def test_every_field_is_in_exactly_one_group():
    grouped = [name for _, names in GROUPS for name in names]
    assert sorted(grouped) == sorted(Settings.model_fields)
    assert len(grouped) == len(set(grouped))


@pytest.mark.parametrize(("old", "new"), sorted(DEPRECATED_ENV.items()))
def test_renamed_settings_keep_their_old_name_with_a_warning(monkeypatch, old, new):
    value = {"verdict_prompt_file": "/tmp/p.json", "eval_task_rubrics": '{"mimic": "report"}'}.get(new, "20")
    monkeypatch.setenv(old, value)
    with pytest.warns(DeprecationWarning, match=old):
        s = Settings()
    expected = {"eval_task_rubrics": {"mimic": "report"}, "verdict_prompt_file": "/tmp/p.json"}.get(new, 20)
    assert str(getattr(s, new)) == str(expected)


def test_the_new_name_wins_over_the_old_one(monkeypatch):
    monkeypatch.setenv("MEDIX_JUDGE_MAX_TOKENS", "7")
    monkeypatch.setenv("MEDIX_VERDICT_MAX_TOKENS", "3")
    with pytest.warns(DeprecationWarning):
        assert Settings().verdict_max_tokens == 3


def test_the_embedder_has_its_own_backoff(monkeypatch):
    monkeypatch.setenv("MEDIX_EMBED_BACKOFF_S", "1.5")
    s = Settings()
    assert s.embed_backoff_s == 1.5 and s.judge_backoff_s == 0.2
