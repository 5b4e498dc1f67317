"""How long to wait after failures in a row: Redis calls that failed, processes that crashed.

One rule, doubling from a base up to a cap, for every place that retries something outside a
job (a job's own retry delay is the retry policy's, in ``conveyor.jobs``). Not redis-py's
``ExponentialBackoff``: its ``compute(failures)`` starts at twice the base and raises
OverflowError after about a thousand failures in a row, which a worker reaches in a Redis
outage of half an hour at a 2 s cap.
"""

from __future__ import annotations

#: Beyond this many doublings every practical base is past its cap; the exponent stops here so
#: that a long outage (thousands of failures in a row) cannot overflow a float.
_MAX_DOUBLINGS = 64


def capped_backoff(failures: int, base: float, cap: float) -> float:
    """The wait after the ``failures``-th failure in a row: ``base * 2 ** (failures - 1)``, at
    most ``cap``; ``base`` (or ``cap`` if smaller) for a first failure or none. Same unit as
    ``base`` and ``cap``."""
    doublings = min(max(failures - 1, 0), _MAX_DOUBLINGS)
    return float(min(base * 2**doublings, cap))
