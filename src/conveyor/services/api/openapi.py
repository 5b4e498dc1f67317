"""The OpenAPI document: every model, every error, and each task's own payload schema.

FastAPI describes the routes; this module adds what it cannot know: the request bodies (read
by ``body.py``, documented here as one schema per task, told apart by ``name``), the
problem+json schema of every error status, and the bearer scheme when API keys are on.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.json_schema import models_json_schema

from conveyor.registry import TaskRegistry
from conveyor.services.api.flow import body_schemas as flow_body_schemas
from conveyor.services.api.models import BulkEnqueueRequest, EnqueueRequest, JobOptions
from conveyor.services.api.problems import ALL_TYPES, PROBLEM_MEDIA_TYPE, Problem
from conveyor.services.guard import ACTION_HEADER, UNSAFE_METHODS

REF = "#/components/schemas/{model}"
#: Statuses every operation may answer.
COMMON_ERRORS = {
    500: "Unexpected server error",
    421: "The Host header names a host this server does not answer to "
    "(CONVEYOR_HTTP_ALLOWED_HOSTS)",
    503: "Redis unreachable or too slow, or too many enqueues waiting (see Retry-After)",
    507: "Redis is full (maxmemory reached under noeviction) and refuses writes",
}
AUTH_ERROR = {401: "Missing or invalid API key"}
CROSS_SITE_ERROR = (
    "Refused as a possible cross-site request: sent from another site, or without "
    "Content-Type: application/json, X-Conveyor-Action or an API key"
)
#: Documented on the state-changing operations that take no body (see services/guard.py).
ACTION_PARAMETER = {
    "name": ACTION_HEADER,
    "in": "header",
    "required": False,
    "description": "Any non-empty value: marks the request as made by a script, not a "
    "cross-site form (needed unless Content-Type is application/json or an API key is sent).",
    "schema": {"type": "string", "minLength": 1},
}


def _task_envelope(task: str, payload: type[BaseModel], taken: set[str]) -> type[BaseModel]:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", task).strip("_") or "task"
    while slug in taken:  # "a-b" and "a_b" must not share a schema name
        slug += "_"
    taken.add(slug)
    try:
        payload.model_validate({})
        data: Any = (payload | None, Field(default=None, description="The payload (default {})."))
    except ValidationError:
        data = (payload, Field(description="The payload (required: it has required fields)."))
    fields: dict[str, Any] = {
        "name": (Literal[task], Field(description="The task to run.")),
        "data": data,
        "options": (JobOptions | None, None),
        "queue": (
            str | None,
            Field(default=None, description=EnqueueRequest.model_fields["queue"].description),
        ),
    }
    model: type[BaseModel] = create_model(
        f"Enqueue_{slug}",
        __config__=ConfigDict(extra="forbid", title=f"Enqueue {task}"),
        __doc__=f"A job of the task {task!r}.",
        **fields,
    )
    return model


def _body_schemas(registry: TaskRegistry, bulk_max: int, queues: list[str]) -> dict[str, Any]:
    taken: set[str] = set()
    envelopes = {
        name: _task_envelope(name, registry.get(name).payload_model, taken)
        for name in registry.names()
    }
    models: list[type[BaseModel]] = [*envelopes.values(), EnqueueRequest, Problem]
    refs, top = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    if envelopes:
        mapping = {name: refs[(model, "validation")]["$ref"] for name, model in envelopes.items()}
        schemas["TaskJob"] = {
            "title": "TaskJob",
            "description": "One job: the task's name picks the payload schema.",
            "oneOf": [{"$ref": ref} for ref in mapping.values()],
            "discriminator": {"propertyName": "name", "mapping": mapping},
        }
    else:
        schemas["TaskJob"] = {"$ref": REF.format(model="EnqueueRequest")}
    schemas["BulkTaskJobs"] = {
        "title": "BulkTaskJobs",
        "type": "object",
        "additionalProperties": False,
        "required": ["jobs"],
        "properties": {
            "jobs": {
                "type": "array",
                "minItems": 1,
                "maxItems": bulk_max,
                "items": {"$ref": REF.format(model="TaskJob")},
            },
            "queue": {
                "type": "string",
                "description": BulkEnqueueRequest.model_fields["queue"].description,
            },
        },
    }
    _list_queues(schemas, queues)
    return schemas


def _list_queues(schemas: dict[str, Any], queues: list[str]) -> None:
    """Every ``queue`` property of the bodies names the queues this API serves."""
    for schema in schemas.values():
        prop = schema.get("properties", {}).get("queue")
        if prop is None:
            continue
        variants = prop.get("anyOf", [prop])
        for variant in variants:
            if queues and variant.get("type") == "string":
                variant["enum"] = list(queues)


def _drop_null(parameter: dict[str, Any]) -> None:
    """An optional parameter is absent, never null: document it as its non-null type."""
    schema = parameter.get("schema", {})
    variants = [v for v in schema.get("anyOf", []) if v.get("type") != "null"]
    if len(variants) == 1 and len(schema["anyOf"]) == 2:
        del schema["anyOf"]
        schema.update(variants[0])


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": REF.format(model="Problem")}}},
    }


def build_openapi(
    app: FastAPI,
    registry: TaskRegistry,
    *,
    bulk_max: int,
    auth: bool,
    queues: list[str] | None = None,
) -> Any:
    """The full document for ``app``; ``queues``: the ones it serves (the bodies' enum)."""
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(_body_schemas(registry, bulk_max, queues or []))
    schemas.update(flow_body_schemas())
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    extra = {**COMMON_ERRORS, **(AUTH_ERROR if auth else {})}
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            body = operation.pop("x-conveyor-body", None)
            unsafe = method.upper() in UNSAFE_METHODS
            if unsafe and not body:
                operation.setdefault("parameters", []).append(ACTION_PARAMETER)
            if body:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": REF.format(model=body)}}},
                }
            for parameter in operation.get("parameters", []):
                _drop_null(parameter)
            responses = operation.setdefault("responses", {})
            for code, response in list(responses.items()):
                if int(code) >= 400:
                    responses[code] = _problem_response(response.get("description", ""))
            if (
                any(
                    p.get("in") in ("path", "query", "header")
                    for p in operation.get("parameters", [])
                )
                and "422" not in responses
            ):
                responses["422"] = _problem_response("Invalid parameter")
            public = path in ("/healthz", "/readyz")
            for code, description in extra.items():
                if public and code in (401, 421):
                    continue
                responses.setdefault(str(code), _problem_response(description))
            if unsafe:
                responses.setdefault("403", _problem_response(CROSS_SITE_ERROR))
            if auth and not public:
                operation["security"] = [{"bearer": []}]
    if auth:
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "CONVEYOR_API_KEYS"}
        }
    doc["x-problem-types"] = {t.uri: {"status": t.status, "title": t.title} for t in ALL_TYPES}
    return doc
