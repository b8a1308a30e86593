"""The unit tests' fakes implement the backend interfaces whole, so that the core never has to guess."""

from __future__ import annotations

import inspect

import pytest

from service.backends.base import Embedder, JudgeBackend
from tests.unit.fakes import FakeEmbedder, FakeJudge


def _members(protocol: type) -> set[str]:
    return {name for name in dir(protocol) if not name.startswith("_")} | set(protocol.__annotations__)


@pytest.mark.parametrize(("fake", "protocol"), [(FakeJudge, JudgeBackend), (FakeEmbedder, Embedder)])
def test_each_fake_has_every_member_of_its_interface(fake: type, protocol: type) -> None:
    missing = sorted(m for m in _members(protocol) if not hasattr(fake, m))
    assert missing == []
    for name in _members(protocol):
        wanted = getattr(protocol, name, None)
        if inspect.iscoroutinefunction(wanted):
            assert inspect.iscoroutinefunction(getattr(fake, name)), name
            keywords = {p.name for p in inspect.signature(wanted).parameters.values() if p.kind == p.KEYWORD_ONLY}
            assert keywords <= set(inspect.signature(getattr(fake, name)).parameters), name
