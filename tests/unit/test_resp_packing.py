"""A script call packed with its keys' head packed once (``ScriptKeys``) is byte for byte what
hiredis packs for the whole command, and refuses what hiredis refuses."""

from __future__ import annotations

from typing import Any

import hiredis
import pytest

from conveyor.resp import ScriptKeys, pack_evalsha, packed

SHA = "5" * 40
KEYS = ["bull:q:wait", "bull:q:paused", "bull:q:meta", "bull:q:id"]


def whole(sha: str, keys: list[str], args: list[Any]) -> bytes:
    command: bytes = hiredis.pack_command(("EVALSHA", sha, len(keys), *keys, *args))
    return command


@pytest.mark.parametrize(
    "args",
    [
        [b"\x99\xa9bull:q:\xc0", "{}", b"\x83\xa5jobId\xa1x", 1796024886525],
        ["é", "", 0, -1, 1.5, b"\x00\r\n"],
        [],
        [str(i) for i in range(12)],  # a count of two digits
    ],
)
def test_a_call_with_packed_keys_is_the_same_bytes(args: list[Any]) -> None:
    keys = ScriptKeys(SHA, KEYS)
    assert pack_evalsha(SHA, keys, args) == whole(SHA, KEYS, args)
    assert pack_evalsha(SHA, keys, args) == whole(SHA, KEYS, args)  # the cached head again
    assert pack_evalsha(SHA, KEYS, args) == whole(SHA, KEYS, args)  # plain keys
    other = "6" * 40  # keys packed for another script: packed whole
    assert pack_evalsha(other, keys, args) == whole(other, KEYS, args)


@pytest.mark.parametrize(("arg", "error"), [(None, TypeError), ("\udc80", UnicodeEncodeError)])
def test_an_argument_hiredis_refuses_is_refused(arg: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        pack_evalsha(SHA, ScriptKeys(SHA, KEYS), ["ok", arg])


def test_packed_bytes_go_as_they_are() -> None:
    command = whole(SHA, KEYS, ["a"])
    assert packed(command) is command
    assert packed(("GET", "k")) == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
