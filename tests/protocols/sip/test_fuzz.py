"""Whatever a peer sends, the parser and framer raise only MalformedMessage."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.sip.errors import MalformedMessage
from protocols.sip.message import Request, StreamFramer, make_response, parse_message
from protocols.sip.transaction import Peer, RequestReceived, TransactionLayer
from tests.protocols.sip.messages import INVITE, RESPONSE_180
from tests.protocols.sip.test_torture import WSINV

SEEDS = [INVITE, RESPONSE_180, WSINV]
TOKENS = [b"\r\n", b"\n", b" ", b";", b",", b"<", b">", b'"', b"\\", b":", b"@", b"%", b"=",
          b"\x00", b"\xff", b"SIP/2.0", b"tag=", b"branch=", b"Content-Length: 99", b"\r\n "]


def _exercise(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except MalformedMessage as exc:
        if exc.request is not None:
            make_response(exc.request, exc.status, exc.reason, to_tag="t").encode()
        return
    # A message that parsed must be fully usable by the layers above.
    msg.encode()
    _ = (msg.call_id, msg.cseq, msg.top_via, msg.from_tag, msg.to_tag)
    if isinstance(msg, Request):
        make_response(msg, 200, to_tag="t").encode()


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_malformed_message(data: bytes) -> None:
    _exercise(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "token"]))
        if action == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif action == "delete":
            del data[pos : pos + draw(st.integers(1, 20))]
        elif action == "replace" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        else:
            data[pos:pos] = draw(st.sampled_from(TOKENS))
    return bytes(data)


@settings(max_examples=1500, deadline=None)
@given(mutated())
def test_mutated_valid_messages_raise_only_malformed_message(data: bytes) -> None:
    _exercise(data)


@settings(max_examples=300, deadline=None)
@given(mutated(), st.lists(st.integers(1, 400), max_size=4))
def test_stream_framer_never_raises(data: bytes, cuts: list[int]) -> None:
    framer = StreamFramer()
    stream = data + INVITE
    pos = 0
    for cut in [*cuts, len(stream)]:
        for item in framer.feed(stream[pos : pos + cut]):
            assert isinstance(item, (MalformedMessage, Request)) or item.encode()
        pos += cut


def test_pathological_hosts_and_whitespace_do_not_backtrack() -> None:
    # Each of these took seconds to minutes with a nested-quantifier host regex; the test
    # guards the grammar's shape (it would hang, not fail, if that came back).
    long_label = b"pc33.atlanta" + b"a" * 20000 + b"&asdhds"
    for data in (
        INVITE.replace(b"pc33.atlanta.example.com;", long_label + b";"),
        INVITE.replace(b"Max-Forwards: 70", b"Subject: x" + b" " * 30000 + b"\r\n y"),
        INVITE.replace(b"Max-Forwards: 70", b"Subject: " + b"\t " * 15000 + b"\r\n\t"),
    ):
        _exercise(data)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(mutated(), st.floats(0, 40)), max_size=8))
def test_transaction_layer_accepts_any_parseable_message_sequence(
    items: list[tuple[bytes, float]],
) -> None:
    layer = TransactionLayer()
    peer = Peer("UDP", "192.0.2.9", 5060)
    now = 0.0
    for data, step in items:
        try:
            message = parse_message(data)
        except MalformedMessage:
            continue
        now += step
        layer.handle_timer(now)
        layer.receive(message, peer, now)
        while (event := layer.next_event()) is not None:
            if isinstance(event, RequestReceived):
                event.transaction.reply(486, to_tag="t", now=now)
        layer.datagrams_to_send()
    layer.handle_timer(now + 1000)
    assert len(layer) == 0
