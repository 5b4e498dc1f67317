"""Conveyor's own Lua scripts ship as package files and say what they are."""

from __future__ import annotations

from importlib import resources

import pytest

from conveyor import lua
from conveyor._bullmq.cancel import CANCEL_FIELD
from conveyor.services.api.idempotency import FINGERPRINT_FIELD

SCRIPTS = sorted(
    p.name.removesuffix(".lua") for p in resources.files(lua).iterdir() if p.name.endswith(".lua")
)


def test_every_script_is_a_package_file() -> None:
    assert SCRIPTS == [
        "cancel",
        "cancel_done",
        "cleanup_finish",
        "failure_drop",
        "failure_record",
        "failure_sweep",
        "heartbeat",
        "idempotency_probe",
        "limit_held",
        "limit_hold",
        "paused_layout",
        "release_worker",
        "repeatable_millis",
        "task_slot",
    ]


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_starts_with_what_it_does(name: str) -> None:
    assert lua.source(name).startswith("-- ")


def test_the_probe_reads_the_fingerprint_field_the_api_writes() -> None:
    assert f'"{FINGERPRINT_FIELD}"' in lua.source("idempotency_probe")


def test_the_cancel_script_reads_the_field_the_worker_reads() -> None:
    assert f'"{CANCEL_FIELD}"' in lua.source("cancel")
