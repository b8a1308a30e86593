"""The one cache-then-compute flow, shared by /reward's verdicts and embeddings and by /judge's evaluations.

One flow per kind of value: look the keys up in one cache round trip, compute what is missing, and store each
value worth keeping as soon as it is computed, so that a batch that fails part-way (one bad call, an outage, a
timeout) keeps its finished work and its retry computes only what is still missing. A failure does not cancel
the other computations of the batch; it is raised when they are over. Nothing is read or written under a model id
not yet learned from its server. Per-key computations are shared across a tenant's concurrent requests (a repeated
pair from several trainer workers with one key is judged once); a batch computation (embeddings) is handed every
missing key at once.

Results are shared across tenants through the cache, but a tenant is told "cached" only for what its own requests
stored: each entry carries a digest of the tenant that stored it, so that a reply never reveals that another lab
sent the same pair. An entry that does not decode (an older format, a corrupt value) is a miss, never an error.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from opentelemetry.trace import Span

from service.runtime import tracing
from service.runtime.cache import UNRESOLVED_MODEL, Cache
from service.runtime.concurrency import Coalescer, gather_all
from service.runtime.phases import PhaseTimer, phase_span

log = logging.getLogger("medix.cache")
V = TypeVar("V")
A = TypeVar("A")
Store = Callable[[Mapping[str, V]], Awaitable[None]]


@dataclass(slots=True)
class Resolved(Generic[V]):
    values: dict[str, V]
    hits: set[str] = field(default_factory=set)  # the keys served from entries this tenant's requests stored
    computed: int = 0


@dataclass(slots=True)
class Found(Generic[V]):
    """What the cache held of a request's keys."""
    values: dict[str, V] = field(default_factory=dict)
    own: set[str] = field(default_factory=set)  # those of them stored by this tenant's requests


async def look_up(cache: Cache, wanted: Sequence[tuple[Memo[Any], Mapping[str, Any], str]], tenant: str,
                  timer: PhaseTimer | None = None) -> list[Found[Any]]:
    """What the cache holds of each (memo, keys, model id) of `wanted`, read in one round trip and one
    `cache_lookup` phase (one span in the request's trace, with each kind's keys and hits)."""
    assert len({memo.kind for memo, _, _ in wanted}) == len(wanted), "one look-up per kind of value"
    # A placeholder model id is never part of a key that is read.
    keys = {memo.kind: list(todo) if model_id != UNRESOLVED_MODEL else [] for memo, todo, model_id in wanted}
    owner = _owner(tenant)
    with _phase(timer, "cache_lookup") as span:
        raw = await cache.lookup({kind: k for kind, k in keys.items() if k})
        out = [memo._hits(keys[memo.kind], raw.get(memo.kind, ()), owner) for memo, _, _ in wanted]
        if span is not None:  # what a traced request found cached: those cost it no backend call
            span.set_attributes({name: n for (memo, todo, _), found in zip(wanted, out, strict=True)
                                 for name, n in ((f"medix.{memo.kind}_keys", len(todo)),
                                                 (f"medix.{memo.kind}_hits", len(found.values)))})
    return out


class Memo(Generic[V]):
    def __init__(self, kind: str, encode: Callable[[V], bytes], decode: Callable[[bytes], V], *,
                 keep: Callable[[V], bool] = lambda _: True, phase: str | None = None) -> None:
        """`kind` names the values in the cache's metrics, `keep` says which computed values are cached (a
        refusal of one input is not), `phase` names the computation in the request's phase timings."""
        self.kind, self._encode, self._decode, self._keep = kind, encode, decode, keep
        self._phase = phase or kind
        self._running = Coalescer()

    def __len__(self) -> int:
        """Per-key computations in flight now."""
        return len(self._running)

    async def resolve(self, cache: Cache, todo: Mapping[str, A], fn: Callable[[A], Awaitable[V]], *,
                      model_id: str, tenant: str = "", timer: PhaseTimer | None = None,
                      found: Found[V] | None = None) -> Resolved[V]:
        """Every key of `todo`, from the cache or by `fn(arg)` for each missing key (shared with the tenant's
        concurrent requests computing the same key), each stored as soon as it is computed. `found`: what
        `look_up` already read of these keys (none: they are looked up here)."""
        return await self._flow(cache, todo, model_id, tenant, timer, found,
                                lambda missing, store: self._compute(missing, fn, tenant, store))

    async def resolve_batch(self, cache: Cache, todo: Mapping[str, A],
                            fn: Callable[[dict[str, A]], Awaitable[Mapping[str, V]]], *, model_id: str,
                            tenant: str = "", timer: PhaseTimer | None = None,
                            found: Found[V] | None = None) -> Resolved[V]:
        """Every key of `todo`, from the cache or by one `fn({key: arg})` of all the missing keys."""

        async def compute(missing: dict[str, A], store: Store[V]) -> Mapping[str, V]:
            values = await fn(missing)
            await store(values)
            return values

        return await self._flow(cache, todo, model_id, tenant, timer, found, compute)

    async def _flow(self, cache: Cache, todo: Mapping[str, A], model_id: str, tenant: str,
                    timer: PhaseTimer | None, found: Found[V] | None,
                    compute: Callable[[dict[str, A], Store[V]], Awaitable[Mapping[str, V]]]) -> Resolved[V]:
        if found is None:
            (found,) = await look_up(cache, [(self, todo, model_id)], tenant, timer)
        cached = model_id != UNRESOLVED_MODEL  # a placeholder id is never part of a key that is read or written
        owner = _owner(tenant)
        missing = {k: a for k, a in todo.items() if k not in found.values}

        async def store(values: Mapping[str, V]) -> None:
            if cached:
                # Timed, not traced: a span per verdict written would cost a traced cold batch a span per call.
                with _phase(timer, "cache_write", traced=False):
                    await cache.store_many({k: owner + self._encode(v) for k, v in values.items() if self._keep(v)})

        with _phase(timer, self._phase, traced=bool(missing)):  # nothing to compute: no span
            fresh = dict(await compute(missing, store)) if missing else {}
        return Resolved({**found.values, **fresh}, found.own, len(fresh))

    def _hits(self, keys: Iterable[str], raw: Iterable[bytes | None], owner: bytes) -> Found[V]:
        """The decodable cache hits among `keys`, and those of them stored by `owner`."""
        found: Found[V] = Found()
        for key, value in zip(keys, raw, strict=True):
            if value is None or not value.startswith(_ENVELOPE) or len(value) < OWNER_BYTES:
                continue
            try:
                found.values[key] = self._decode(value[OWNER_BYTES:])
            except (ValueError, KeyError, TypeError) as exc:  # corrupt or out of range: recompute it
                log.warning("a cached %s entry did not decode and is recomputed: %r", self.kind, exc)
                continue
            if value[:OWNER_BYTES] == owner:
                found.own.add(key)
        return found

    async def _compute(self, todo: Mapping[str, Any], fn: Callable[[Any], Awaitable[V]], tenant: str,
                       store: Store[V]) -> dict[str, V]:
        """Not shared across tenants: a computation waits for a judge slot in its own tenant's fair share, so a
        tenant joining another's would wait behind that tenant's whole queue (measured: a 64-item batch that
        shared 13 of its 25 pairs with another tenant's 2,048 items in flight took 22x its time alone). Finished
        results are shared through the cache."""

        async def computed_and_stored(key: str, arg: Any) -> V:
            value = await fn(arg)
            await store({key: value})
            return value

        running = [f"{tenant}\x00{k}" for k in todo]
        if tracing.traced():  # a key in flight for another of the tenant's requests is joined: that one calls
            joined = sum(key in self._running for key in running)
            tracing.annotate(**{"medix.calls": len(running) - joined, "medix.coalesced": joined})
        found = await gather_all(*(self._running.run(key, lambda k=k, a=a: computed_and_stored(k, a))
                                   for key, (k, a) in zip(running, todo.items(), strict=True)))
        return dict(zip(todo, found, strict=True))


# Each entry: a format mark, a digest of the tenant that stored it, then the value.
_ENVELOPE = b"\x00mx1"
OWNER_BYTES = len(_ENVELOPE) + 8


def _owner(tenant: str) -> bytes:
    return _ENVELOPE + hashlib.sha256(tenant.encode()).digest()[:8]


@contextmanager
def _phase(timer: PhaseTimer | None, name: str, traced: bool = True) -> Iterator[Span | None]:
    """The phase timed (with a timer), and a span of the request's trace either way."""
    if timer is not None:
        with timer.phase(name, traced) as span:
            yield span
    else:
        with phase_span(name, traced) as span:
            yield span
