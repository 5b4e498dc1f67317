"""Failure times in ISO 8601: the same text as datetime's, from exact milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from conveyor.clock import IsoStamps


def _datetime_text(ms: int) -> str:
    at = datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.mark.parametrize(
    "ms",
    [0, 999, 1_000, 1_796_025_113_693, 1_796_025_113_999, 1_796_025_114_000, 951_782_400_000],
)
def test_a_stamp_is_datetimes_iso_text(ms: int) -> None:
    assert IsoStamps().at(ms) == _datetime_text(ms)


def test_stamps_across_seconds_in_any_order_keep_their_own_second() -> None:
    stamps = IsoStamps()
    times = [1_796_025_113_001, 1_796_025_113_998, 1_796_025_114_000, 1_796_025_113_500, 59_999]
    assert [stamps.at(ms) for ms in times] == [_datetime_text(ms) for ms in times]
    assert stamps.at(1_796_025_113_693) == "2026-11-30T07:51:53.693Z"
