"""rtpengine NG framing: what we send decodes to what we meant, replies with a cookie parse,
and broken bencode is refused instead of misread."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.rtp.ng import BencodeError, bdecode, bencode, ng_reply, ng_request

values: st.SearchStrategy[Any] = st.recursive(
    st.binary(max_size=20) | st.integers(),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text("abcdefg-", min_size=1, max_size=6), inner, max_size=4),
    max_leaves=12,
)


@given(values)
def test_bencode_round_trips(value: Any) -> None:
    assert bdecode(bencode(value)) == value


@given(st.binary(max_size=40))
def test_arbitrary_bytes_decode_or_raise_bencode_error(data: bytes) -> None:
    try:
        bdecode(data)
    except BencodeError:
        pass
    except RecursionError:  # pragma: no cover - depth is bounded
        pytest.fail("unbounded recursion")


def test_offer_is_framed_with_cookie_and_sorted_keys() -> None:
    wire = ng_request("5_1", {"sdp": "v=0", "command": "offer", "call-id": "c1", "replace": ["origin"]})
    assert wire == b"5_1 d7:call-id2:c17:command5:offer7:replacel6:origine3:sdp3:v=0e"
    assert ng_reply(b"5_1 d6:result4:pong7:warningi3ee") == ("5_1", {"result": b"pong", "warning": 3})


@pytest.mark.parametrize("bad", [b"i12", b"5:abc", b"d3:keye", b"x", b"l", b"i-e", b"i1e2"])
def test_broken_bencode_is_refused(bad: bytes) -> None:
    with pytest.raises(BencodeError):
        bdecode(bad)
