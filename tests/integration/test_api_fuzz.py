"""Property-based fuzzing of the API from its own OpenAPI document (schemathesis).

Over a thousand generated requests, valid and invalid, go through the real app against real
Redis. No answer may be a 5xx; every answer must match the document (status, media type,
schema, headers); and afterwards the queue holds exactly the jobs of the accepted requests.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.jobs import COUNTED_STATES
from conveyor.redis import connect
from conveyor.services.api import create_app
from tests.support.api import registry

#: Generated requests in all (the issue asks for at least 1,000).
EXAMPLES = 1100
MIN_REQUESTS = 1000
SEED_JOB = "seed-job"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


async def queued_ids(url: str, settings: Settings) -> set[str]:
    redis = connect(url)
    try:
        queue = QueueClient(redis, queue=settings.queue, prefix=settings.prefix, pipelined=False)
        return set(await queue.bull.get_range(list(COUNTED_STATES), 0, -1))
    finally:
        await redis.aclose()


@pytest.mark.timeout(600)
def test_fuzzing_from_the_openapi_document(settings: Settings, redis_url: str) -> None:
    app = create_app(
        # schemathesis calls the app as http://testserver (see services/guard.py)
        settings.model_copy(update={"api_bulk_max_jobs": 50, "http_allowed_hosts": ["testserver"]}),
        redis_url,
        registry=registry,
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    accepted: set[str] = set()
    removed: set[str] = set()
    statuses: Counter[tuple[str, int]] = Counter()
    # BullMQ's debounce: a job added with deduplication {replace: true} takes the place of an
    # earlier delayed one with the same deduplication id, which is removed. Ids by that id.
    replacing: dict[str, set[str]] = {}
    # What was sent and answered for each accepted enqueue: the failure message quotes those
    # of a job that is not in the queue.
    answers: list[tuple[Any, dict[str, str], str]] = []

    def debounced(body: Any, job_id: str) -> None:
        options = body.get("options") if isinstance(body, dict) else None
        dedup = options.get("deduplication") if isinstance(options, dict) else None
        if isinstance(dedup, dict) and "id" in dedup:
            replacing.setdefault(str(dedup["id"]), set()).add(job_id)

    try:
        seed = schema["/enqueue"]["POST"].Case(
            body={"name": "echo", "data": {"value": 1}, "options": {"jobId": SEED_JOB}},
            media_type="application/json",
        )
        assert seed.call().status_code == 201
        accepted.add(SEED_JOB)

        everything = schema.as_strategy(GenerationMode.POSITIVE)
        invalid = schema.as_strategy(GenerationMode.NEGATIVE)
        enqueues = schema.include(path_regex=r"^/enqueue").as_strategy(GenerationMode.POSITIVE)
        on_queue = schema.include(path_regex=r"^/queues/").as_strategy(
            path_parameters={"name": settings.queue}
        )
        on_seed = schema.include(path_regex=r"^/jobs/", method=["GET", "POST"]).as_strategy(
            path_parameters={"job_id": SEED_JOB}
        )
        strategy = st.one_of(everything, invalid, enqueues, on_queue, on_seed)

        @hypothesis_settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def fuzz(case: Any) -> None:
            response = case.call()
            statuses[(case.operation.label, response.status_code)] += 1
            assert response.status_code < 500, (case.operation.label, response.text)
            case.validate_response(response, checks=CHECKS)
            label = case.operation.label
            if label.startswith("POST /enqueue") and response.status_code in (200, 201):
                answers.append((case.body, dict(case.headers or {}), response.text))
            if label == "POST /enqueue" and response.status_code in (200, 201):
                accepted.add(response.json()["id"])
                debounced(case.body, response.json()["id"])
            elif label == "POST /enqueue/bulk" and response.status_code == 201:
                jobs = response.json()["jobs"]
                accepted.update(job["id"] for job in jobs)
                for spec, job in zip(case.body["jobs"], jobs, strict=True):
                    debounced(spec, job["id"])
            elif label == "DELETE /jobs/{job_id}" and response.status_code == 204:
                removed.add(case.path_parameters["job_id"])

        fuzz()
    finally:
        shutdown_lifespans()

    calls = sum(statuses.values())
    assert calls >= MIN_REQUESTS, statuses
    enqueued = sum(
        n
        for (label, status), n in statuses.items()
        if label.startswith("POST /enqueue") and status in (200, 201)
    )
    assert enqueued > 50, statuses  # the fuzzer did get jobs through, not only rejections
    queued = asyncio.run(queued_ids(redis_url, settings))
    assert queued <= accepted - removed, queued - (accepted - removed)
    # Every accepted job is still there, but one that a later duplicate replaced (debounce).
    gone = accepted - removed - queued
    replaced = {
        job_id for ids in replacing.values() if len(ids) > 1 and ids & queued for job_id in ids
    }
    assert gone <= replaced, [answer for answer in answers if any(j in answer[2] for j in gone)]
