"""The port probe the embedded Redis, `conveyor up` and the monitor share."""

from __future__ import annotations

import socket

from conveyor.ports import bind_error, free_port


def test_a_port_something_listens_on_cannot_be_bound_and_a_free_one_can() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        error = bind_error("127.0.0.1", port)
        assert isinstance(error, OSError)
        assert error.strerror
    assert bind_error("127.0.0.1", port) is None  # free again once the listener is gone
    assert bind_error("127.0.0.1", free_port()) is None


def test_an_address_that_is_not_this_machines_is_an_error() -> None:
    assert isinstance(bind_error("192.0.2.1", free_port()), OSError)  # TEST-NET-1
