"""Every retry layer is counted end to end: the client marks its retries and the service counts them."""

from __future__ import annotations

import httpx
import pytest

from clients.client import MedixClient, MedixUnavailable
from tests.unit.fakes import FakeJudge


def _counted(url: str, route: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("medix_client_retries_total") and f'route="{route}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_services_metrics_count_the_clients_retries(fake_app, served):
    class Down(FakeJudge):
        async def health(self):
            return {}  # ready, so that it is served, but every verdict fails

    app = fake_app(judge=Down(fail=True), retry_after_s=1)
    with served(app) as url, MedixClient(url, retries=2, backoff=0) as client:
        item = {"response": "<X_RAY><thinking>t</thinking><answer>lung infection</answer>",
                "ground_truth": "<X_RAY>Pneumonia"}
        with pytest.raises(MedixUnavailable):
            client.reward([item])
        assert _counted(url, "/reward") == 2  # the first try is no retry; the two after it are
