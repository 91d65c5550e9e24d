"""Whole calls between two stacks over a lossy simulated network, on a fake clock."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from protocols.sip.dialog import Dialog
from protocols.sip.message import Headers, IdGenerator, Request, parse_message
from protocols.sip.transaction import (
    AckReceived,
    Event,
    Peer,
    RequestReceived,
    ResponseReceived,
    TransactionLayer,
)
from protocols.sip.uri import URI

A = Peer("UDP", "192.0.2.1", 5060)
B = Peer("UDP", "192.0.2.2", 5060)


@dataclass
class Net:
    """Delivers datagrams between two layers after 5 ms, dropping a share of them."""

    loss: float
    rng: random.Random
    duplicate: float = 0.0
    jitter: float = 0.0
    now: float = 0.0
    queue: list[tuple[float, int, bytes, Peer, Peer]] = field(default_factory=list)
    seq: int = 0

    def pump(self, layer: TransactionLayer, src: Peer) -> None:
        for data, dest in layer.datagrams_to_send():
            copies = 2 if self.rng.random() < self.duplicate else 1
            for _ in range(copies):
                if self.rng.random() >= self.loss:
                    self.seq += 1
                    delay = 0.005 + self.rng.random() * self.jitter  # jitter reorders
                    heapq.heappush(self.queue, (self.now + delay, self.seq, data, src, dest))


def new_invite(ids: IdGenerator, n: int) -> Request:
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={ids.branch()};rport")
    h.add("Max-Forwards", "70")
    h.add("From", f"<sip:caller@192.0.2.1>;tag={ids.tag()}")
    h.add("To", f"<sip:{n}@192.0.2.2>")
    h.add("Call-ID", ids.call_id())
    h.add("CSeq", "1 INVITE")
    h.add("Contact", "<sip:caller@192.0.2.1:5060>")
    return Request("INVITE", URI("sip", user=str(n), host="192.0.2.2"), h, b"v=0\r\n")


def run_calls(
    calls: int, loss: float, seed: int, *, duplicate: float = 0.0, jitter: float = 0.0
) -> tuple[int, int]:
    """Return (calls whose BYE got its 200 at the caller, calls the callee saw ACKed)."""
    rng = random.Random(seed)
    ids = IdGenerator(rng.randbytes)
    net = Net(loss, rng, duplicate, jitter)
    uac, uas = TransactionLayer(), TransactionLayer()
    uac_dialogs: dict[str, Dialog] = {}
    uas_dialogs: dict[str, Dialog] = {}
    bye_due: list[tuple[float, str]] = []
    finished: set[str] = set()
    acked: set[str] = set()

    def on_uac(event: Event) -> None:
        if not isinstance(event, ResponseReceived):
            return
        response = event.response
        call_id = response.call_id
        if response.cseq.method == "INVITE" and 200 <= response.status < 300:
            dialog = uac_dialogs.get(call_id)
            if dialog is None:
                assert event.transaction is not None
                dialog = Dialog.from_uac_response(event.transaction.request, response)
                uac_dialogs[call_id] = dialog
                heapq.heappush(bye_due, (net.now + 1.0, call_id))
            # Every 2xx (retransmissions too) is answered by an ACK from the dialog.
            uac.send_stateless(dialog.create_ack(response.cseq.seq, branch=ids.branch()), B)
        elif response.cseq.method == "BYE" and response.status == 200:
            finished.add(call_id)

    def on_uas(event: Event) -> None:
        if isinstance(event, RequestReceived):
            request = event.request
            if request.method == "INVITE":
                dialog = Dialog.from_uas_request(
                    request, local_tag=ids.tag(), local_contact="<sip:callee@192.0.2.2>",
                    via_transport="UDP", via_sent_by="192.0.2.2:5060",
                )
                uas_dialogs[request.call_id] = dialog
                event.transaction.respond(dialog.create_response(request, 180), net.now)
                event.transaction.respond(dialog.create_response(request, 200), net.now)
            elif request.method == "BYE":
                dialog = uas_dialogs[request.call_id]
                assert dialog.receive_request(request) is None
                event.transaction.respond(dialog.create_response(request, 200), net.now)
        elif isinstance(event, AckReceived):
            acked.add(event.ack.call_id)

    for n in range(calls):
        uac.send_request(new_invite(ids, n), B, now=net.now)
    net.pump(uac, A)
    while True:
        candidates = [t for t in (uac.get_timer(), uas.get_timer()) if t is not None]
        if net.queue:
            candidates.append(net.queue[0][0])
        if bye_due:
            candidates.append(bye_due[0][0])
        if not candidates:
            break
        net.now = min(candidates)
        if net.now > 600:
            break
        while net.queue and net.queue[0][0] <= net.now:
            _, _, data, src, dest = heapq.heappop(net.queue)
            message = parse_message(data)
            (uas if dest == B else uac).receive(message, src, net.now)
        while bye_due and bye_due[0][0] <= net.now:
            _, call_id = heapq.heappop(bye_due)
            uac.send_request(uac_dialogs[call_id].create_request("BYE", branch=ids.branch()),
                             B, net.now)
        uac.handle_timer(net.now)
        uas.handle_timer(net.now)
        for layer, handler in ((uac, on_uac), (uas, on_uas)):
            while (event := layer.next_event()) is not None:
                handler(event)
        net.pump(uac, A)
        net.pump(uas, B)
    assert len(uac) == 0 and len(uas) == 0  # every transaction ended
    return len(finished), len(acked)


def test_calls_complete_without_loss() -> None:
    assert run_calls(20, 0.0, seed=1) == (20, 20)


def test_calls_survive_ten_percent_signalling_loss() -> None:
    finished, acked = run_calls(200, 0.10, seed=7)
    assert finished == 200
    assert acked == 200



def test_calls_survive_duplication_and_reordering() -> None:
    finished, acked = run_calls(200, 0.05, seed=11, duplicate=0.2, jitter=0.3)
    assert (finished, acked) == (200, 200)
