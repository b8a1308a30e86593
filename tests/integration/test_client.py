"""The Python client against the real service: batch splitting, typed results, errors the server said."""

from __future__ import annotations

import asyncio

import pytest

from clients.client import AsyncMedixClient, MedixClient, MedixError
from clients.datasets import grpo_batch

pytestmark = pytest.mark.integration


def test_client_splits_a_big_batch_and_keeps_order(service, slake):
    items = grpo_batch(slake, questions=10, samples=4, seed=30)
    with MedixClient(service.url, max_items=16) as c:
        results = c.reward(items)
    assert [r.id for r in results] == [i["id"] for i in items]
    assert all(0.0 <= r.overall <= 1.0 for r in results)

    async def go():
        async with AsyncMedixClient(service.url, max_items=7) as c:
            return await c.reward(items)

    assert [r.overall for r in asyncio.run(go())] == [r.overall for r in results]


def test_client_reports_what_the_server_said(service):
    with MedixClient(service.url) as c, pytest.raises(MedixError) as e:
        c.reward([{"response": "x", "ground_truth": "<NOPE>x"}])
    assert e.value.status == 422 and e.value.param == "items[0].ground_truth"
