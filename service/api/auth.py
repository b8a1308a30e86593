"""API keys: stored hashed, compared in constant time; the key file with each key's judge share."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def load_key_file(path: Path) -> dict[str, str]:
    """`name: key` lines (# comments allowed; an optional ` weight=W` after the key) or a JSON object
    name -> key (or name -> {"key": ..., "weight": W})."""
    return {name: key for name, (key, _) in _read_key_file(path).items()}


def load_key_weights(path: Path) -> dict[str, float]:
    """The judge share of each key named in the file (1 unless a weight is given)."""
    return {name: weight for name, (_, weight) in _read_key_file(path).items()}


def _read_key_file(path: Path) -> dict[str, tuple[str, float]]:
    text = path.read_text()
    entries: dict[str, tuple[str, float]] = {}
    if text.lstrip().startswith("{"):
        for name, value in json.loads(text).items():
            key, weight = (value.get("key"), value.get("weight", 1.0)) if isinstance(value, dict) else (value, 1.0)
            if not isinstance(key, str):  # str(None) would make "None" a valid key
                raise ValueError(f"{path}: the key of {name!r} must be a string, not {_json_type(key)}")
            entries[str(name)] = (key, float(weight))
    else:
        for n, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, rest = line.partition(":")
            key, _, option = rest.strip().partition(" weight=")
            if not sep or not key.strip():
                raise ValueError(f"{path}:{n}: expected 'name: key' or 'name: key weight=W'")
            try:
                weight = float(option) if option else 1.0
            except ValueError:
                raise ValueError(f"{path}:{n}: weight must be a number, not {option!r}") from None
            entries[name.strip()] = (key.strip(), weight)
    for name, (key, weight) in entries.items():
        if not key.strip():
            raise ValueError(f"{path}: the key of {name!r} is empty")
        if not weight > 0:
            raise ValueError(f"{path}: the weight of {name!r} must be positive")
    return entries


def _json_type(value: object) -> str:
    names = {type(None): "null", bool: "true/false", int: "a number", float: "a number", list: "a list"}
    return names.get(type(value), type(value).__name__)


class KeyRing:
    """Knows key digests only. `identify` compares against every digest so timing says nothing."""

    def __init__(self, named_keys: dict[str, str]) -> None:
        for name, key in named_keys.items():
            if not isinstance(key, str) or not key.strip():  # an empty key would let `Bearer ` in
                raise ValueError(f"API key {name!r} is empty or not a string; every key needs a value")
        self._digests = [(name, _digest(key)) for name, key in named_keys.items()]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def identify(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        offered = _digest(authorization[7:].strip())
        found = None
        for name, digest in self._digests:
            if hmac.compare_digest(offered, digest) and found is None:
                found = name
        return found
