"""When a supervisor restarts a child process that exited: ``conveyor up`` its services,
``conveyor worker --processes N`` its worker processes. One rule for both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from conveyor.backoff import capped_backoff

#: The first restart's delay, doubling with each crash in a row up to the cap.
RESTART_BASE_S = 0.5
RESTART_CAP_S = 30.0


class Restart(NamedTuple):
    """What to do after a child exited: the crashes in a row so far, the wait before it runs
    again."""

    crashes_in_a_row: int
    delay_s: float


@dataclass(frozen=True)
class RestartPolicy:
    """Restart a crashed child after ``base_s``, doubling with each crash in a row up to
    ``cap_s``; a child that ran ``stable_after_s`` or longer before it exited had started
    well, so its count starts again (a crash an hour later waits ``base_s``)."""

    stable_after_s: float
    base_s: float = RESTART_BASE_S
    cap_s: float = RESTART_CAP_S

    def after_exit(self, crashes_in_a_row: int, ran_s: float) -> Restart:
        """The restart after a child that ran ``ran_s`` exited, ``crashes_in_a_row`` being
        the count before this exit (0 for none)."""
        crashes = 1 if ran_s >= self.stable_after_s else crashes_in_a_row + 1
        return Restart(crashes, capped_backoff(crashes, self.base_s, self.cap_s))
