"""The in-flight bound of the inference app: past it, 503 at once; health checks pass."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest

from packrat.server.http_admission import AdmissionLimit, is_inference
from packrat.server.http_config import HttpConfig
from packrat.server.http_inference import create_inference_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from server_fakes import FakeModel, FakeRepository  # noqa: E402


def test_only_inference_paths_count() -> None:
    assert is_inference("/predictions/m") and is_inference("/predictions/m/2")
    assert is_inference("/v2/models/m/infer") and is_inference("/v2/models/m/versions/1/infer")
    assert not is_inference("/ping") and not is_inference("/v2/models/m/ready")
    assert not is_inference("/metrics") and not is_inference("/v2/health/ready")


def test_requests_past_the_limit_get_503_at_once_and_others_pass() -> None:
    model = FakeModel("double", delay_s=0.5)
    app = create_inference_app(FakeRepository(model), HttpConfig(max_in_flight=2))

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            url = "/predictions/double"
            running = [
                asyncio.create_task(client.post(url, json=[1.0, 2.0, 3.0])) for _ in range(2)
            ]
            while model.in_flight < 2:
                await asyncio.sleep(0.01)
            refused = await client.post(url, json=[1.0, 2.0, 3.0])
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "1"
            assert "limit of 2 requests in progress" in refused.json()["error"]
            assert (await client.get("/ping")).status_code == 200  # never refused
            assert (await client.get("/v2/models/double/ready")).status_code == 200
            assert [r.status_code for r in await asyncio.gather(*running)] == [200, 200]
            again = await client.post(url, json=[1.0, 2.0, 3.0])
            assert again.status_code == 200 and again.json() == [2.0, 4.0, 6.0]

    asyncio.run(main())


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        AdmissionLimit(create_inference_app(FakeRepository()), 0)
    with pytest.raises(ValueError, match="max_in_flight"):
        HttpConfig(max_in_flight=0)
