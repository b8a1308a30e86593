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


@pytest.fixture
def no_backend_env(monkeypatch):
    names = ("MEDIX_JUDGE_BACKEND", "MEDIX_JUDGE_URL", "MEDIX_JUDGE_URLS", "MEDIX_EMBED_BACKEND", "MEDIX_EMBED_URL")
    for name in names:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_with_no_url_the_backends_are_in_process(no_backend_env):
    s = Settings()
    assert (s.judge_backend, s.embed_backend) == ("vllm", "sentence-transformers")


@pytest.mark.parametrize("name", ["MEDIX_JUDGE_URL", "MEDIX_JUDGE_URLS"])
def test_a_judge_url_alone_selects_the_server_backend(no_backend_env, name):
    no_backend_env.setenv(name, "http://judge:8000/v1")
    s = Settings()
    assert s.judge_backend == "openai" and s.embed_backend == "sentence-transformers"


def test_an_embed_url_alone_selects_the_server_backend(no_backend_env):
    no_backend_env.setenv("MEDIX_EMBED_URL", "http://embed:8000/v1/")
    s = Settings()
    assert s.embed_backend == "openai" and s.embed_url == "http://embed:8000/v1" and s.judge_backend == "vllm"


def test_a_backend_named_wins_over_the_url(no_backend_env):
    no_backend_env.setenv("MEDIX_JUDGE_URL", "http://judge:8000/v1")
    no_backend_env.setenv("MEDIX_JUDGE_BACKEND", "vllm")
    no_backend_env.setenv("MEDIX_EMBED_URL", "http://embed:8000/v1")
    no_backend_env.setenv("MEDIX_EMBED_BACKEND", "sentence-transformers")
    s = Settings()
    assert (s.judge_backend, s.embed_backend) == ("vllm", "sentence-transformers")
    assert Settings(judge_backend="vllm", judge_url="http://j/v1").judge_backend == "vllm"


def test_a_url_given_in_code_selects_the_server_backend_too(no_backend_env):
    s = Settings(judge_url="http://judge:8000/v1", embed_url="http://embed:8000/v1")
    assert (s.judge_backend, s.embed_backend) == ("openai", "openai")


def test_the_default_follows_the_url_with_a_deprecated_name_set(no_backend_env):
    no_backend_env.setenv("MEDIX_JUDGE_URL", "http://judge:8000/v1")
    no_backend_env.setenv("MEDIX_JUDGE_MAX_TOKENS", "6")
    with pytest.warns(DeprecationWarning):
        s = Settings()
    assert s.judge_backend == "openai" and s.verdict_max_tokens == 6
