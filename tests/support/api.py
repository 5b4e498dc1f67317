"""Helpers for the API tests: a task catalogue with nested payloads, and an in-process client.

``api_client`` runs the real app (its lifespan opens a real Redis client) behind httpx's
ASGI transport; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from conveyor.config import Settings
from conveyor.registry import JobContext, TaskRegistry
from conveyor.services.api import create_app
from conveyor.tasks.builtin import registry as builtin

registry = TaskRegistry().merge(builtin)


class Recipient(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    name: str | None = None


class EmailPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=200)
    recipients: list[Recipient] = Field(min_length=1, max_length=50)


class EchoPayload(BaseModel):
    value: Any = None
    sleep_ms: int = Field(default=0, ge=0, le=10_000)


@registry.task("send_email")
async def send_email(payload: EmailPayload, ctx: JobContext) -> int:
    return len(payload.recipients)


@registry.task("echo")
async def echo(payload: EchoPayload, ctx: JobContext) -> Any:
    """Reports progress and a log line, sleeps ``sleep_ms``, answers ``value``."""
    await ctx.progress(50)
    await ctx.log(f"echo attempt {ctx.attempt}")
    if payload.sleep_ms:
        await asyncio.sleep(payload.sleep_ms / 1000)
    return payload.value


@registry.task("explode", retries=0)
async def explode(payload: EchoPayload, ctx: JobContext) -> None:
    raise RuntimeError(f"boom: {payload.value}")


#: What a script (not a browser form) sends: see services/guard.py.
SCRIPT = {"X-Conveyor-Action": "1"}


@contextlib.asynccontextmanager
async def api_client(
    settings: Settings,
    redis_url: str,
    *,
    tasks: TaskRegistry | None = registry,
    headers: dict[str, str] | None = SCRIPT,
    **overrides: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """The real app, started (lifespan) against ``redis_url``, behind an httpx client.

    The client sends ``X-Conveyor-Action`` as a script would (body-less POSTs and DELETEs
    need it or a JSON content type); pass ``headers={}`` to act as a bare browser form.
    """
    app = create_app(settings.model_copy(update=overrides), redis_url, registry=tasks)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", headers=headers
        ) as client:
            yield client
