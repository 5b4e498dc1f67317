"""Path parameters both HTTP services read the same way (the API and the monitor)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote


def encoded_slash_segment(scope: Mapping[str, Any]) -> str | None:
    """The first path segment the client sent with an encoded ``/`` (``%2F``), decoded.

    The router matches the decoded path, so ``/jobs/x%2Flogs`` would reach job ``x``'s logs;
    no job id contains ``/`` (they are refused at enqueue), so such a request names no job.
    """
    raw = scope.get("raw_path")
    if not isinstance(raw, bytes) or b"%2" not in raw:
        return None
    for segment in raw.split(b"?", 1)[0].split(b"/"):
        if b"%2f" in segment.lower():
            return unquote(segment.decode("latin-1"))
    return None
