"""``GET/PUT /queues/{name}/limits``: the queue-wide rate limit and concurrency, in BullMQ's
format (Node's setGlobalRateLimit / setGlobalConcurrency), so every worker obeys them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request

from conveyor._bullmq import FlowState
from conveyor.client import QueueClient
from conveyor.limits import MAX_CONCURRENCY, MAX_DURATION_MS, MAX_RATE_MAX, QueueLimits, RateLimit
from conveyor.services.api.body import read_json
from conveyor.services.api.problems import QUEUE_NOT_FOUND, ProblemError
from conveyor.services.api.state import Api, ApiState

router = APIRouter()

QueueName = Annotated[str, Path(description="The queue's name (the one this API serves).")]


class RateBody(BaseModel):
    """At most ``max`` jobs start in each window of ``duration_ms``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max: int = Field(ge=1, le=MAX_RATE_MAX, description="Jobs started per window.")
    duration_ms: int = Field(ge=1, le=MAX_DURATION_MS, description="The window (ms).")


class LimitsBody(BaseModel):
    """Both limits; null removes one. Both keys are required (PUT replaces the limits)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    rate: RateBody | None = Field(description="Queue-wide rate limit; null: none.")
    concurrency: int | None = Field(
        ge=1, le=MAX_CONCURRENCY, description="Jobs active at once across all workers; null: none."
    )


class QueueLimitsView(BaseModel):
    """A queue's limits and whether they hold it back now."""

    queue: str
    rate: RateBody | None
    concurrency: int | None
    active: int = Field(description="Jobs active now.")
    limited_ms: int = Field(
        description="ms until the rate limit (or a handler's RateLimited hold) lets workers "
        "take jobs again; 0: not rate limited."
    )
    held: bool = Field(description="The queue is under a manual hold (RateLimited).")
    maxed: bool = Field(description="The concurrency is reached: workers take nothing more.")


def body_schemas() -> dict[str, Any]:
    """The request body's schema (and the models it names) for the OpenAPI components."""
    schema = LimitsBody.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {**defs, "LimitsBody": schema}


def _client(state: ApiState, name: str) -> QueueClient:
    """The client of a queue this API serves (CONVEYOR_QUEUES), else 404."""
    served = state.served(name)
    if served is None:
        raise ProblemError(
            QUEUE_NOT_FOUND,
            f"this API serves the queues {', '.join(state.queue_names)}, not {name!r}",
        )
    return state.client_for(served)


def view_of(queue: str, flow: FlowState) -> QueueLimitsView:
    rate = flow.limits.rate
    return QueueLimitsView(
        queue=queue,
        rate=None if rate is None else RateBody(max=rate.max, duration_ms=rate.duration_ms),
        concurrency=flow.limits.concurrency,
        active=flow.active,
        limited_ms=flow.limited_ms,
        held=flow.held,
        maxed=flow.maxed,
    )


_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Not found"}}


@router.get(
    "/queues/{name}/limits",
    summary="The queue-wide rate limit and concurrency",
    responses=_NOT_FOUND,
)
async def get_limits(state: Api, name: QueueName) -> QueueLimitsView:
    client = _client(state, name)
    return view_of(name, await state.bounded(client.flow_state()))


@router.put(
    "/queues/{name}/limits",
    summary="Set or remove the queue-wide rate limit and concurrency",
    responses={
        **_NOT_FOUND,
        400: {"description": "Malformed JSON"},
        413: {"description": "Body over the size limit"},
        415: {"description": "Body is not JSON"},
        422: {"description": "A limit out of bounds, a missing or unknown field"},
    },
    openapi_extra={"x-conveyor-body": "LimitsBody"},
)
async def put_limits(request: Request, state: Api, name: QueueName) -> QueueLimitsView:
    """Written in BullMQ's format in one MULTI, so Node workers obey them too. A bad body
    writes nothing."""
    client = _client(state, name)
    body = await read_json(request, LimitsBody, state.settings.api_max_body_bytes)
    rate = None if body.rate is None else RateLimit(body.rate.max, body.rate.duration_ms)
    limits = QueueLimits(rate=rate, concurrency=body.concurrency)
    await state.bounded(client.set_limits(limits))
    return view_of(name, await state.bounded(client.flow_state()))
