"""Reading a JSON request body: media type, size limit, then one parse-and-validate pass.

The body is parsed and checked against its model by pydantic-core in one step
(``model_validate_json``); anything wrong becomes a problem before the request touches Redis.
The functions take plain values so the routes and the ASGI fast path share them.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import Receive

from conveyor.services.api.problems import (
    BODY_TOO_LARGE,
    INVALID_REQUEST,
    MALFORMED_JSON,
    UNSUPPORTED_MEDIA_TYPE,
    FieldProblem,
    ProblemError,
    from_validation_error,
)

M = TypeVar("M", bound=BaseModel)


def check_media_type(content_type: str | None) -> None:
    """415 unless the body is declared as JSON (``application/json`` or ``*/*+json``)."""
    if content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        if media == "application/json" or (
            media.startswith("application/") and media.endswith("+json")
        ):
            return
    raise ProblemError(
        UNSUPPORTED_MEDIA_TYPE,
        "send the body as JSON with the header Content-Type: application/json",
    )


def too_large(limit: int) -> ProblemError:
    return ProblemError(BODY_TOO_LARGE, f"the request body is larger than {limit} bytes")


def check_declared_length(content_length: str | None, limit: int) -> None:
    """413 at once when Content-Length announces more than ``limit`` bytes."""
    if content_length is None:
        return
    try:
        size = int(content_length)
    except ValueError:
        raise ProblemError(MALFORMED_JSON, "Content-Length is not a number") from None
    if size > limit:
        raise too_large(limit)


async def receive_body(receive: Receive, limit: int) -> bytes:
    """The body from ASGI messages, refusing (413) more than ``limit`` bytes as it comes."""
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ProblemError(MALFORMED_JSON, "the client went away before sending the body")
        chunk = message.get("body", b"")
        if chunk:
            total += len(chunk)
            if total > limit:
                raise too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


#: Every string of a JSON text without backslashes, in order, and whether a ':' follows (a key).
_STRINGS = re.compile(rb'"([^"]*)"(\s*:)?')


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _entries(value: Any) -> int:
    """How many key-value entries all the objects in ``value`` hold together."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            total += len(item)
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
    return total


def duplicate_key(raw: bytes) -> str | None:
    """A key that appears twice in one object of the JSON text ``raw``, if any.

    JSON parsers keep the last of two equal keys (``{"name": "nope", "name": "simulate"}`` is
    a ``simulate`` job to pydantic and to Node), so such a body means different things to
    different readers: it is refused. A parser keeps one entry per distinct key of an
    object, so the parsed objects hold fewer entries than the text writes exactly when one
    repeats a key. Every entry of the text has a colon: if the parsed entries match the
    colons, none was dropped. Else (colons inside strings), without a backslash (no escaped
    quotes or \\u escapes), one regex finds the key tokens: if no key text repeats
    anywhere, or the parsed entries match the key tokens, no object holds a duplicate. Only
    the rest pays for the exact pass that names the key.
    """
    try:
        entries: int | None = _entries(orjson.loads(raw))
    except (orjson.JSONDecodeError, RecursionError):
        entries = None  # beyond orjson (integers over 64 bits): the other passes decide
    if entries is not None and entries == raw.count(b":"):
        return None  # every colon of the text is an entry the parsed objects kept
    if b"\\" not in raw:
        keys = [key for key, colon in _STRINGS.findall(raw) if colon]
        if len(keys) == len(set(keys)) or entries == len(keys):
            return None
    try:
        json.loads(raw, object_pairs_hook=_unique_pairs)
    except _DuplicateKey as exc:
        return exc.key
    except (ValueError, RecursionError):
        return None  # not JSON (pydantic has said so already) or too deep to matter
    return None


def parse(model: type[M], raw: bytes) -> M:
    """``raw`` as ``model``: 400 if it is not JSON, 422 with field paths if it does not fit
    or if an object repeats a key."""
    if not raw.strip():
        raise ProblemError(MALFORMED_JSON, "the request body is empty; send a JSON object")
    try:
        value = model.model_validate_json(raw)
    except ValidationError as exc:
        raise from_validation_error(exc) from exc
    key = duplicate_key(raw)
    if key is not None:
        message = f"the key {key[:100]!r} appears twice in one object; send each key once"
        problem = FieldProblem(path="", message=message, type="json_duplicate_key")
        raise ProblemError(INVALID_REQUEST, message, [problem])
    return value


async def read_json(request: Request, model: type[M], limit: int) -> M:
    """A route's JSON body as ``model`` (415, 413, 400 or 422 when it is not right)."""
    check_media_type(request.headers.get("content-type"))
    check_declared_length(request.headers.get("content-length"), limit)
    return parse(model, await receive_body(request.receive, limit))
