"""A response's head and a body that follows it leave in one write; nothing else changes.

A real uvicorn protocol (Conveyor's GuardedProtocol) is fed raw HTTP and writes into a
transport that records each write call, the unit a system call and a TCP segment follow.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse
from uvicorn.server import ServerState

from conveyor.services.serving import ConnectionLimits, GuardedProtocol, ServingConfig


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    def can_write_eof(self) -> bool:
        return False


async def _chunks() -> Any:
    yield b"one,"
    await asyncio.sleep(0)
    yield b"two"


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    response: Response
    if scope["path"] == "/stream":
        response = StreamingResponse(_chunks(), media_type="text/plain")
    elif scope["path"] == "/empty":
        response = Response(status_code=204)
    else:
        response = JSONResponse({"id": "42"}, status_code=201)
    await response(scope, receive, send)


async def exchange(request: bytes) -> RecordingTransport:
    config = ServingConfig(
        app, limits=ConnectionLimits(), proxy_headers=False, lifespan="off", access_log=False
    )
    protocol = GuardedProtocol(config, ServerState(), {})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(request)
    for _ in range(100):
        if protocol.cycle is not None and protocol.cycle.response_complete:
            break
        await asyncio.sleep(0.001)
    protocol.connection_lost(None)
    return transport


async def test_a_json_answer_is_one_write() -> None:
    body = b'{"name":"simulate"}'
    request = (
        b"POST /enqueue HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    transport = await exchange(request)
    assert len(transport.writes) == 1
    head, _, sent = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201 ")
    assert b"content-length: 11" in head.lower()
    assert sent == b'{"id":"42"}'


async def test_head_requests_streams_and_empty_answers_are_written_as_before() -> None:
    head = await exchange(b"HEAD /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert len(head.writes) == 1
    assert head.writes[0].startswith(b"HTTP/1.1 201 ")
    assert head.writes[0].endswith(b"\r\n\r\n")  # the head alone: a HEAD answer has no body

    empty = await exchange(b"GET /empty HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert empty.writes[0].startswith(b"HTTP/1.1 204 ")
    assert empty.writes[0].endswith(b"\r\n\r\n")  # no body follows: not held back
    assert b"".join(empty.writes[1:]) == b""

    stream = await exchange(b"GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert stream.writes[0].startswith(b"HTTP/1.1 200 ")
    assert stream.writes[0].endswith(b"\r\n\r\n")  # chunked: the head is not held back
    assert b"".join(stream.writes[1:]) == b"4\r\none,\r\n3\r\ntwo\r\n0\r\n\r\n"


async def test_a_finished_request_is_freed_without_the_garbage_collector() -> None:
    """The transport wrapper refers to its request's cycle weakly: the cycle holds the
    wrapper, and a strong reference back made every request's cycle and scope cyclic garbage
    (under load, more collector passes and memory held until they ran)."""
    config = ServingConfig(
        app, limits=ConnectionLimits(), proxy_headers=False, lifespan="off", access_log=False
    )
    protocol = GuardedProtocol(config, ServerState(), {})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    gc.disable()
    try:
        protocol.data_received(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        for _ in range(100):
            if protocol.cycle is not None and protocol.cycle.response_complete:
                break
            await asyncio.sleep(0.001)
        assert len(transport.writes) == 1
        cycle = weakref.ref(protocol.cycle)
        await asyncio.sleep(0.01)  # the request's task finishes
        protocol.data_received(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")  # the next one
        await asyncio.sleep(0.01)
        assert cycle() is None
    finally:
        gc.enable()
        protocol.connection_lost(None)
