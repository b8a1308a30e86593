from pathlib import Path

from service.settings import Settings, env_names

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CONFIG = (ROOT / "docs" / "configuration.md").read_text()


def test_every_setting_is_documented():
    missing = [env for n in Settings.model_fields for env in env_names(n) if f"`{env}`" not in CONFIG]
    assert not missing, missing


def test_readme_starts_with_the_two_commands():
    assert README.index("make run") < README.index("make test") < README.index("curl")


def test_configuration_tables_are_the_generated_ones():
    from service.cli import settings_table

    assert settings_table() in CONFIG


def test_every_linked_document_exists():
    import re

    for target in re.findall(r"\]\(((?:docs|clients|deploy)/[^)#]+)", README):
        assert (ROOT / target).exists(), target
