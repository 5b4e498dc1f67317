"""The OpenAPI document: every model and every error is described."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from conveyor.config import Settings
from conveyor.services.api.problems import ALL_TYPES
from tests.support.api import api_client, registry


@pytest.fixture
async def doc(settings: Settings, redis_url: str) -> AsyncIterator[dict[str, Any]]:
    async with api_client(settings, redis_url) as api:
        response = await api.get("/openapi.json")
        assert response.status_code == 200
        yield response.json()


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in doc["paths"].items()
        for method, operation in item.items()
    ]


def test_every_endpoint_is_documented(doc: dict[str, Any]) -> None:
    assert {(m, p) for m, p, _ in operations(doc)} == {
        ("POST", "/enqueue"),
        ("POST", "/enqueue/bulk"),
        ("GET", "/jobs/{job_id}"),
        ("GET", "/jobs/{job_id}/logs"),
        ("POST", "/jobs/{job_id}/retry"),
        ("DELETE", "/jobs/{job_id}"),
        ("POST", "/jobs/{job_id}/cancel"),
        ("GET", "/queues/{name}"),
        ("GET", "/queues/{name}/jobs"),
        ("POST", "/queues/{name}/pause"),
        ("POST", "/queues/{name}/resume"),
        ("GET", "/queues/{name}/limits"),
        ("PUT", "/queues/{name}/limits"),
        ("GET", "/tasks"),
        ("GET", "/schedules"),
        ("GET", "/schedules/{schedule_id}"),
        ("PUT", "/schedules/{schedule_id}"),
        ("DELETE", "/schedules/{schedule_id}"),
        ("POST", "/schedules/{schedule_id}/run"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
    }


def test_every_error_is_a_documented_problem(doc: dict[str, Any]) -> None:
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for method, path, operation in operations(doc):
        responses = operation["responses"]
        assert {"500", "503"} <= set(responses), (method, path)
        for code, response in responses.items():
            if int(code) >= 400:
                assert response["content"] == {
                    "application/problem+json": {"schema": problem_ref}
                }, (method, path, code)
            else:
                assert "application/json" in response.get("content", {}) or code == "204"
    enqueue = doc["paths"]["/enqueue"]["post"]["responses"]
    assert {"200", "201", "400", "413", "415", "422", "500", "503"} <= set(enqueue)
    assert "Location" in enqueue["201"]["headers"]
    assert {"404", "409"} <= set(doc["paths"]["/jobs/{job_id}"]["delete"]["responses"])
    problem = doc["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail"} <= set(problem["required"])
    assert set(doc["x-problem-types"]) == {t.uri for t in ALL_TYPES}


def test_each_task_has_its_own_documented_payload(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    body = doc["paths"]["/enqueue"]["post"]["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TaskJob"}
    task_job = schemas["TaskJob"]
    assert task_job["discriminator"]["propertyName"] == "name"
    assert set(task_job["discriminator"]["mapping"]) == set(registry.names())
    email_ref = task_job["discriminator"]["mapping"]["send_email"].rsplit("/", 1)[1]
    email = schemas[email_ref]
    assert email["properties"]["name"]["const"] == "send_email"
    assert email["additionalProperties"] is False
    assert "data" in email["required"]  # its payload has required fields
    payload = email["properties"]["data"]["$ref"].rsplit("/", 1)[1]
    assert schemas[payload]["required"] == ["subject", "recipients"]
    simulate = schemas[task_job["discriminator"]["mapping"]["simulate"].rsplit("/", 1)[1]]
    assert simulate["required"] == ["name"]  # every simulate field has a default
    options = schemas["JobOptions"]["properties"]
    assert {"delay", "priority", "attempts", "backoff", "jobId", "removeOnComplete"} <= set(options)
    bulk = schemas["BulkTaskJobs"]["properties"]["jobs"]
    assert bulk["maxItems"] == 1000
    assert bulk["items"] == {"$ref": "#/components/schemas/TaskJob"}


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref


def test_constraints_use_json_schema_words(doc: dict[str, Any]) -> None:
    """pydantic writes its own ``ge``/``le`` where it cannot translate a constraint."""

    def keys(node: Any) -> set[str]:
        if isinstance(node, dict):
            return set(node) | {k for v in node.values() for k in keys(v)}
        if isinstance(node, list):
            return {k for v in node for k in keys(v)}
        return set()

    assert not {"ge", "le", "gt", "lt"} & keys(doc["components"]["schemas"])


def test_optional_headers_are_not_nullable(doc: dict[str, Any]) -> None:
    parameter = doc["paths"]["/enqueue"]["post"]["parameters"][0]
    assert parameter["name"] == "Idempotency-Key"
    assert parameter["required"] is False
    assert parameter["schema"]["type"] == "string"
    assert parameter["schema"]["maxLength"] == 255


async def test_docs_page_is_served(settings: Settings, redis_url: str) -> None:
    async with api_client(settings, redis_url) as api:
        page = await api.get("/docs")
        assert page.status_code == 200
        assert "/openapi.json" in page.text


def test_document_validates_as_openapi(doc: dict[str, Any]) -> None:
    import schemathesis

    schema = schemathesis.openapi.from_dict(doc)
    assert len(list(schema.get_all_operations())) == len(operations(doc))
