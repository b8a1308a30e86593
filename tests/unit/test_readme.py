from pathlib import Path

from service.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_documented_in_the_readme():
    missing = [f"MEDIX_{n.upper()}" for n in Settings.model_fields if f"`MEDIX_{n.upper()}`" not in README]
    assert not missing, missing


def test_readme_starts_with_the_two_commands():
    assert README.index("make run") < README.index("make test") < README.index("curl")


def test_readme_settings_table_is_the_generated_one():
    from service.cli import settings_table

    assert settings_table() in README
