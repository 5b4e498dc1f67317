"""The task registry: registration, payload validation, catalogue loading."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from conveyor.errors import PayloadValidationError, TaskCatalogueError, TaskError, UnknownTaskError
from conveyor.registry import EmptyPayload, JobContext, TaskRegistry, load_registry


class Email(BaseModel):
    to: str
    retries: int = 0


def make_registry() -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task("send_email", retries=2, timeout_s=3)
    async def send(payload: Email, ctx: JobContext) -> None:
        return None

    @registry.task()
    def resize(payload: dict[str, object], ctx: JobContext) -> None:
        return None

    return registry


def test_model_comes_from_the_annotation_and_sync_is_detected() -> None:
    registry = make_registry()
    task = registry.get("send_email")
    assert task.payload_model is Email
    assert task.is_async
    assert task.retries == 2
    resize = registry.get("resize")
    assert resize.payload_model is EmptyPayload
    assert not resize.is_async
    assert registry.names() == ["resize", "send_email"]


def test_payload_errors_carry_field_paths() -> None:
    registry = make_registry()
    with pytest.raises(PayloadValidationError) as info:
        registry.validate("send_email", {"retries": "many"})
    paths = {e.path for e in info.value.errors}
    assert paths == {"to", "retries"}
    assert "send_email" in str(info.value)


def test_unknown_task_lists_the_known_ones() -> None:
    with pytest.raises(UnknownTaskError, match="known tasks: resize, send_email"):
        make_registry().get("nope")


def test_duplicate_names_are_refused() -> None:
    registry = make_registry()
    with pytest.raises(TaskError, match="twice"):
        registry.merge(make_registry())


def test_load_registry_builtin_catalogue() -> None:
    registry = load_registry(["conveyor.tasks.builtin"])
    assert "simulate" in registry
    payload = registry.validate("simulate", {})
    assert payload.model_dump() == {"duration_ms": 2000, "fail_rate": 0.0}
    with pytest.raises(PayloadValidationError):
        registry.validate("simulate", {"fail_rate": 2})


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("conveyor.no_such_module", "cannot import"),
        ("conveyor.jobs", "no TaskRegistry"),
        ("conveyor.tasks.builtin:nothing", "no TaskRegistry named 'nothing'"),
    ],
)
def test_bad_catalogue_is_one_clear_error(spec: str, fragment: str) -> None:
    with pytest.raises(TaskCatalogueError, match=fragment):
        load_registry([spec])


def test_a_tasks_retry_policy_falls_back_field_by_field() -> None:
    from conveyor.policy import RetryPolicy

    default = RetryPolicy.from_retries(5, "exponential", 1000)
    registry = make_registry()
    assert registry.get("resize").retry_policy(default) is default
    assert registry.get("send_email").retry_policy(default) == RetryPolicy(3, "exponential", 1000)
    fixed = TaskRegistry()

    @fixed.task("poll", backoff_type="fixed")
    async def poll(payload: Email, ctx: JobContext) -> None:
        return None

    assert fixed.get("poll").retry_policy(default) == RetryPolicy(6, "fixed", 1000)
