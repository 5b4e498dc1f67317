"""Redis Cluster hash tags: every key of a queue (BullMQ's and Conveyor's own) hashes to one
slot when the queue's name or prefix holds a tag; a cluster URL without one is refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conveyor import ConfigurationError
from conveyor._bullmq.layout import KEY_TYPES
from conveyor.config import load_settings
from conveyor.hashtag import key_hash_tag, queue_hash_tag, slot_of
from conveyor.keys import CleanupKeys, FailureKeys, bulk_receipt, stats_minute, stats_totals

CLUSTER = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"


@pytest.mark.parametrize(
    ("prefix", "queue", "tag"),
    [
        ("bull", "{orders}", "orders"),
        ("{app}", "orders", "app"),
        ("{app}", "{orders}", "app"),  # the first tag wins
        ("bull", "orders", None),
        ("bull", "{}orders", None),  # an empty tag hashes the whole key
        ("bull", "orders{", None),  # left open: it would close in the job id
        ("bull", "a}{b", None),
    ],
)
def test_the_queue_tag(prefix: str, queue: str, tag: str | None) -> None:
    assert queue_hash_tag(prefix, queue) == tag


def test_key_hash_tag_is_redis_rule() -> None:
    assert key_hash_tag("{user1000}.following") == "user1000"
    assert key_hash_tag("foo{}{bar}") is None
    assert key_hash_tag("foo{{bar}}zap") == "{bar"
    assert slot_of("{user1000}.following") == slot_of("{user1000}.followers")


@pytest.mark.parametrize(("prefix", "queue"), [("bull", "{orders}"), ("{app}", "emails")])
def test_every_key_of_a_tagged_queue_shares_its_slot(prefix: str, queue: str) -> None:
    records = FailureKeys(prefix, queue)
    cleanup = CleanupKeys.for_queue(prefix, queue)
    job = "c0ffee"
    keys = [
        *(f"{prefix}:{queue}:{kind}" for kind in KEY_TYPES),
        f"{prefix}:{queue}:{job}",
        f"{prefix}:{queue}:{job}:lock",
        f"{prefix}:{queue}:de:dedup-id",
        records.record(job),
        records.index,
        records.legacy_record(job),  # no shared failedJobs:* keys for a tagged queue
        records.legacy_record("42"),
        records.legacy_index,
        *vars(cleanup).values(),
        stats_minute(prefix, queue, 28_000_000),
        stats_totals(prefix, queue),
        bulk_receipt(prefix, queue, "token"),
    ]
    assert {slot_of(key) for key in keys} == {slot_of(f"{prefix}:{queue}:wait")}


def test_the_seed_queue_keeps_its_exact_failure_keys() -> None:
    seed = FailureKeys("bull", "taskQueue")
    assert seed.record("42") == "failedJobs:42"
    assert seed.index == "failedJobs-index"
    assert FailureKeys("bull", "other").legacy_record("abc") == "failedJobs:abc"


def test_a_cluster_url_needs_a_hash_tag_on_every_queue() -> None:
    assert load_settings(redis_url=CLUSTER, queue="{orders}").queue == "{orders}"
    assert load_settings(redis_url=CLUSTER, prefix="{app}", queues="a,b").queue == "a"
    with pytest.raises(ConfigurationError, match="'emails' under prefix 'bull' has no hash tag"):
        load_settings(redis_url=CLUSTER, queues="{orders},emails")
    with pytest.raises(ConfigurationError, match="database 0 only"):
        load_settings(redis_url=CLUSTER + "/2", queue="{orders}")


def test_a_command_refuses_to_start_in_one_line() -> None:
    env = {"CONVEYOR_REDIS_URL": CLUSTER, "CONVEYOR_QUEUE": "orders", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("conveyor: error: invalid settings: the queue 'orders'")
    assert "Traceback" not in done.stderr
