"""Fixtures shared by the integration tests of the HTTP API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from conveyor.client import QueueClient
from conveyor.config import Settings
from tests.support.api import api_client


@pytest.fixture(
    params=[
        pytest.param({}, id="fast-path+batching"),
        pytest.param({"api_fast_path": False, "api_batch_enqueue": False}, id="route+single"),
    ]
)
async def api(
    request: pytest.FixtureRequest, settings: Settings, redis_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The API app both ways an enqueue can go: the fast path with per-tick batching, and
    FastAPI's route with one round trip per job (a file may define its own ``api``)."""
    async with api_client(settings, redis_url, **request.param) as client:
        yield client


@pytest.fixture
def queue(make_client: Callable[..., QueueClient]) -> QueueClient:
    """A QueueClient on the test's own queue and prefix."""
    return make_client()
