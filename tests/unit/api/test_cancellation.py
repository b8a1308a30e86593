import asyncio

import pytest

from service.api.cancellation import cancel_on_disconnect
from service.runtime.exceptions import ClientDisconnected


async def test_cancel_on_disconnect():
    disconnect = asyncio.Event()

    async def receive():
        await disconnect.wait()
        return {"type": "http.disconnect"}

    cancelled = []

    async def work():
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(1)
            raise

    task = asyncio.create_task(cancel_on_disconnect(receive, work()))
    await asyncio.sleep(0.02)
    disconnect.set()
    with pytest.raises(ClientDisconnected):
        await task
    assert cancelled == [1]

    async def quick():
        return 7

    assert await cancel_on_disconnect(receive, quick()) == 7
