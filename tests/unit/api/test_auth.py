
import pytest

from service.api.auth import KeyRing, load_key_file


def test_keyring_identifies_by_bearer_and_stores_no_key():
    ring = KeyRing({"lab-a": "secret-a", "lab-b": "secret-b"})
    assert ring.identify("Bearer secret-b") == "lab-b"
    assert ring.identify("bearer  secret-a ") == "lab-a"
    assert ring.identify("Bearer nope") is None and ring.identify(None) is None and ring.identify("secret-a") is None
    assert "secret-a" not in repr(ring.__dict__)


def test_key_file_forms(tmp_path):
    f = tmp_path / "keys"
    f.write_text("# labs\nlab-a: k1\nlab-b:k2\n")
    assert load_key_file(f) == {"lab-a": "k1", "lab-b": "k2"}
    f.write_text('{"x": "y"}')
    assert load_key_file(f) == {"x": "y"}
    f.write_text("no separator\n")
    with pytest.raises(ValueError):
        load_key_file(f)


def test_key_file_weights(tmp_path):
    from service.api.auth import load_key_weights

    f = tmp_path / "keys"
    f.write_text("lab-a: k1 weight=3\nlab-b: k2\n")
    assert load_key_file(f) == {"lab-a": "k1", "lab-b": "k2"}
    assert load_key_weights(f) == {"lab-a": 3.0, "lab-b": 1.0}
    f.write_text('{"lab-a": {"key": "k1", "weight": 2}, "lab-b": "k2"}')
    assert load_key_weights(f) == {"lab-a": 2.0, "lab-b": 1.0} and load_key_file(f)["lab-a"] == "k1"
    f.write_text("lab-a: k1 weight=0\n")
    with pytest.raises(ValueError, match="positive"):
        load_key_weights(f)


@pytest.mark.parametrize("content", ['{"lab-a": null}', '{"lab-a": ""}', '{"lab-a": "  "}', '{"lab-a": 5}',
                                     '{"lab-a": {"key": null, "weight": 2}}', '{"lab-a": {"weight": 2}}'])
def test_a_key_file_entry_without_a_key_stops_start_up(tmp_path, fake_app, content):
    """Before: `{"lab-a": null}` made `Bearer None` a valid key."""
    keys = tmp_path / "keys.json"
    keys.write_text(content)
    with pytest.raises(ValueError, match="lab-a"):
        fake_app(api_keys_file=keys)


def test_an_empty_api_key_stops_start_up(fake_app):
    with pytest.raises(ValueError, match="key1"):
        fake_app(api_keys='[""]')
