"""An asyncio SMSC speaking SMPP 3.4 through our codec, with knobs for carrier misbehaviour."""

from __future__ import annotations

import asyncio
import functools
import json
import random
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import IO
from zoneinfo import ZoneInfo

from protocols.smpp.codec import DecodeError, PduDecoder
from protocols.smpp.constants import (
    RESPONSE_BIT,
    STATE_BY_RECEIPT_STAT,
    CommandStatus,
    DataCoding,
    EsmClass,
    MessageState,
    Tag,
)
from protocols.smpp.pdu import (
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CancelSm,
    CancelSmResp,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    QuerySm,
    QuerySmResp,
    SubmitSm,
    SubmitSmResp,
    Tlv,
    Unbind,
    UnbindResp,
)
from protocols.smpp.receipt import format_receipt, receipt_date
from protocols.smpp.text import UnsupportedDataCoding, decode_text, encode_text
from protocols.smpp.throttle import TokenBucket
from protocols.values import quick_init
from sim.smsc.config import MessageIdFormat, SmscConfig

_S = CommandStatus
_BIND_RESP: dict[type[Pdu], type[BindTransmitterResp | BindReceiverResp | BindTransceiverResp]] = {
    BindTransmitter: BindTransmitterResp,
    BindReceiver: BindReceiverResp,
    BindTransceiver: BindTransceiverResp,
}
_SC_VERSION = (Tlv.u8(Tag.SC_INTERFACE_VERSION, 0x34),)
# network_error_code TLV: type 3 (GSM) and an error code, as carriers put on failures.
_NETWORK_ERROR = {
    "UNDELIV": b"\x03\x00\x01",
    "REJECTD": b"\x03\x00\x0b",
    "EXPIRED": b"\x03\x00\x00",
}


_KST = ZoneInfo("Asia/Seoul")


@functools.cache
def _receipt_tlvs(outcome: str) -> tuple[Tlv, ...]:
    """A receipt's TLVs after its receipted_message_id: the message state, and the network
    error code on failures (the same for every receipt of an outcome)."""
    tlvs: tuple[Tlv, ...] = (Tlv.u8(Tag.MESSAGE_STATE, STATE_BY_RECEIPT_STAT[outcome]),)
    if outcome in _NETWORK_ERROR:
        tlvs += (Tlv(Tag.NETWORK_ERROR_CODE, _NETWORK_ERROR[outcome]),)
    return tlvs


@quick_init
@dataclass(frozen=True, slots=True)
class AcceptedSubmit:
    """A submit_sm the simulator accepted, as tests want to see it."""

    message_id: str
    system_id: str
    source_addr: str
    destination_addr: str
    data_coding: int
    esm_class: int
    registered_delivery: int
    text: str | None  # None when data_coding is binary/unknown
    tlvs: dict[int, bytes]
    pdu: SubmitSm


class _Connection(asyncio.Protocol):
    """One ESME connection: answers requests, sends receipts and MO messages."""

    def __init__(self, smsc: SmscSimulator) -> None:
        self.smsc = smsc
        self.decoder = PduDecoder()
        self.transport: asyncio.Transport | None = None
        self.system_id: str | None = None
        self.can_receive = False
        self.can_transmit = False
        self.unanswered = 0  # submits whose (delayed) response is not written yet
        self._seq = 0
        self._waiting: dict[int, asyncio.Future[int]] = {}
        # Receipts written but not yet answered: redelivered after a rebind, as SMSCs do.
        self._unacked: dict[int, DeliverSm] = {}

    # --- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.smsc._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.smsc._connections.discard(self)
        if self._unacked and self.system_id is not None and not self.smsc._stopping:
            self.smsc.stats["receipts_requeued"] += len(self._unacked)
            self.smsc._held_receipts.setdefault(self.system_id, []).extend(
                self._unacked.values())
            self._unacked.clear()
            self.smsc._loop.call_soon(self.smsc._flush_held_receipts, self.system_id)
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError("ESME connection lost"))
        self._waiting.clear()

    def data_received(self, data: bytes) -> None:
        out: list[bytes] = []
        delayed: list[bytes] = []
        receipts: list[tuple[AcceptedSubmit, str, str]] = []
        for item in self.decoder.feed(data):
            if self.transport is None or self.transport.is_closing():
                return
            if isinstance(item, SubmitSm):
                if not self._on_submit(item, out, delayed, receipts):
                    break  # disconnect injected
            elif isinstance(item, DecodeError):
                if not item.was_response:
                    nack = GenericNack(
                        sequence_number=item.sequence_number or 0,
                        command_status=item.command_status,
                    )
                    out.append(nack.encode())
                if item.fatal:
                    self._write(out)
                    self.close()
                    return
            elif item.command_id & RESPONSE_BIT:
                self._on_response(item)
            else:
                self._on_request(item, out)
        self._write(out)
        if delayed:
            self.unanswered += len(delayed)
            self.smsc._later(self.smsc._latency, self._send_delayed, delayed)
        if receipts:
            # One timer for the whole chunk: all receipts share the same delay.
            self.smsc._later(self.smsc._receipt_delay, self.smsc._send_receipts, receipts)

    # --- requests ----------------------------------------------------------------------

    def _on_submit(
        self,
        pdu: SubmitSm,
        out: list[bytes],
        delayed: list[bytes],
        receipts: list[tuple[AcceptedSubmit, str, str]],
    ) -> bool:
        smsc = self.smsc
        seq = pdu.sequence_number
        smsc.stats["submit_sm"] += 1
        if not self.can_transmit:
            out.append(_status(SubmitSmResp, seq, _S.ESME_RINVBNDSTS))
            return True
        window = smsc.config.window
        if window is not None and self.unanswered + len(delayed) >= window:
            smsc.stats["queue_full"] += 1
            out.append(_status(SubmitSmResp, seq, _S.ESME_RMSGQFUL))
            return True
        bucket = smsc._bucket(self.system_id or "")
        if bucket is not None and not bucket.try_acquire():
            smsc.stats["throttled"] += 1
            out.append(_status(SubmitSmResp, seq, _S.ESME_RTHROTTLED))
            return True
        if smsc.config.error_rate and smsc._rng.random() < smsc.config.error_rate:
            smsc.stats["errors_injected"] += 1
            out.append(_status(SubmitSmResp, seq, smsc.config.error_status))
            return True
        limit = smsc._disconnect_after
        if limit is not None and smsc.stats["accepted"] >= limit:
            # One-shot: leave this and any later submit of the chunk unanswered (in doubt).
            smsc._disconnect_after = None
            smsc.stats["disconnects_injected"] += 1
            self._write(out)
            out.clear()
            self.close()
            return False
        message_id, receipt_id = smsc._next_message_id()
        smsc.stats["accepted"] += 1
        record = smsc._record(pdu, message_id, self.system_id or "")
        resp = SubmitSmResp(sequence_number=seq, message_id=message_id).encode()
        (delayed if smsc._latency > 0 else out).append(resp)
        if pdu.registered_delivery & 0x03:
            outcome = smsc._pick_outcome()
            wanted = pdu.registered_delivery & 0x03
            # registered_delivery 2 asks for failure receipts only.
            if outcome != "NONE" and (wanted == 1 or outcome != "DELIVRD"):
                receipts.append((record, receipt_id, outcome))
        return True

    def _on_request(self, pdu: Pdu, out: list[bytes]) -> None:
        seq = pdu.sequence_number
        smsc = self.smsc
        if isinstance(pdu, EnquireLink):
            out.append(EnquireLinkResp(sequence_number=seq).encode())
        elif isinstance(pdu, BindTransmitter | BindReceiver | BindTransceiver):
            resp_cls = _BIND_RESP[type(pdu)]
            if self.system_id is not None:
                out.append(_status(resp_cls, seq, _S.ESME_RALYBND))
                return
            accounts = smsc.config.accounts
            if accounts and accounts.get(pdu.system_id) != pdu.password:
                smsc.stats["bind_refused"] += 1
                out.append(_status(resp_cls, seq, _S.ESME_RINVPASWD))
                return
            self.system_id = pdu.system_id
            self.can_transmit = not isinstance(pdu, BindReceiver)
            self.can_receive = not isinstance(pdu, BindTransmitter)
            resp = resp_cls(sequence_number=seq, system_id=smsc.config.system_id, tlvs=_SC_VERSION)
            out.append(resp.encode())
            if self.can_receive:
                # Receipts held while no receiver was bound go out after the bind_resp.
                smsc._loop.call_soon(smsc._flush_held_receipts, pdu.system_id)
        elif isinstance(pdu, Unbind):
            out.append(UnbindResp(sequence_number=seq).encode())
            self._write(out)
            out.clear()
            self.close()
        elif self.system_id is None:
            out.append(GenericNack(sequence_number=seq, command_status=_S.ESME_RINVBNDSTS).encode())
        elif isinstance(pdu, QuerySm):
            state = smsc._states.get(pdu.message_id)
            if state is None:
                out.append(_status(QuerySmResp, seq, _S.ESME_RQUERYFAIL))
            else:
                query_resp = QuerySmResp(sequence_number=seq, message_id=pdu.message_id, message_state=state)
                out.append(query_resp.encode())
        elif isinstance(pdu, CancelSm):
            known = smsc._states.get(pdu.message_id) == MessageState.ENROUTE
            if known:
                smsc._states[pdu.message_id] = MessageState.DELETED
            status = _S.ESME_ROK if known else _S.ESME_RCANCELFAIL
            out.append(CancelSmResp(sequence_number=seq, command_status=status).encode())
        elif isinstance(pdu, DataSm) and self.can_transmit:
            message_id, _ = smsc._next_message_id()
            out.append(DataSmResp(sequence_number=seq, message_id=message_id).encode())
        else:
            out.append(GenericNack(sequence_number=seq, command_status=_S.ESME_RINVCMDID).encode())

    def _on_response(self, pdu: Pdu) -> None:
        if isinstance(pdu, DeliverSmResp | GenericNack):
            self.smsc.stats["deliver_sm_resp"] += 1
            self._unacked.pop(pdu.sequence_number, None)
            fut = self._waiting.pop(pdu.sequence_number, None)
            if fut is not None and not fut.done():
                fut.set_result(pdu.command_status)

    # --- sending -----------------------------------------------------------------------

    def send_deliver_sm(self, pdu: DeliverSm, want_response: bool) -> asyncio.Future[int] | None:
        """Write a deliver_sm; with ``want_response`` a future gets the ESME's status."""
        self._seq = self._seq + 1 if self._seq < 0x7FFFFFFF else 1
        fut: asyncio.Future[int] | None = None
        if want_response:
            fut = self.smsc._loop.create_future()
            self._waiting[self._seq] = fut
        if self.transport is not None:
            self.transport.write(pdu.encode(self._seq))
        return fut

    def send_many(self, pdus: list[DeliverSm]) -> None:
        """Write deliver_sm PDUs in one go without tracking their responses."""
        chunks = []
        for pdu in pdus:
            self._seq = self._seq + 1 if self._seq < 0x7FFFFFFF else 1
            self._unacked[self._seq] = pdu
            chunks.append(pdu.encode(self._seq))
        self._write(chunks)

    def _send_delayed(self, delayed: list[bytes]) -> None:
        self.unanswered -= len(delayed)
        self._write(delayed)

    def _write(self, chunks: list[bytes]) -> None:
        if chunks and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(chunks))

    def close(self) -> None:
        """Close after flushing what was written."""
        if self.transport is not None:
            self.transport.close()


def _status(cls: type[Pdu], seq: int, status: int) -> bytes:
    return cls(sequence_number=seq, command_status=status).encode()


class SmscSimulator:
    """``async with SmscSimulator(config) as smsc:`` serves SMPP on ``smsc.port``.

    ``smsc.submits`` records every accepted submit_sm; ``send_mo()`` injects an MO message;
    ``disconnect_all()`` drops every ESME connection.
    """

    def __init__(self, config: SmscConfig | None = None) -> None:
        self.config = config or SmscConfig()
        self.port = 0
        self.submits: list[AcceptedSubmit] = []
        self._received_log: IO[str] | None = None
        self.stats: Counter[str] = Counter()
        self._rng = random.Random(self.config.seed)
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._buckets: dict[str, TokenBucket] = {}
        self._handles: set[asyncio.TimerHandle] = set()
        self._held_receipts: dict[str, list[DeliverSm]] = {}
        self._stopping = False
        self._states: dict[str, int] = {}
        self._latency = self.config.latency_ms / 1000.0
        self._receipt_delay = self.config.receipt_delay_ms / 1000.0
        self._disconnect_after = self.config.disconnect_after_submits
        self._id_counter = (self.config.first_message_id if self.config.first_message_id is not None
                            else self._rng.randrange(0x10000000, 0x7FFFFFFF))
        self._outcomes = list(self.config.outcomes)
        self._weights = [self.config.outcomes[o] for o in self._outcomes]
        self._submit_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._loop: asyncio.AbstractEventLoop  # set by start(): the loop that serves

    async def __aenter__(self) -> SmscSimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen on config.host:config.port (port 0 picks a free one, see ``port``)."""
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            lambda: _Connection(self), self.config.host, self.config.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.config.received_log is not None:
            self.config.received_log.parent.mkdir(parents=True, exist_ok=True)
            self._received_log = self.config.received_log.open("a", encoding="utf-8")

    async def stop(self) -> None:
        """Stop listening, drop connections and cancel pending receipts."""
        self._stopping = True
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._received_log is not None:
            self._received_log.close()
            self._received_log = None

    # --- test controls -----------------------------------------------------------------

    def disconnect_all(self) -> None:
        """Drop every ESME connection now (an SMSC crash or network cut)."""
        for conn in list(self._connections):
            if conn.transport is not None:
                conn.transport.abort()

    def disconnect_after(self, submits: int) -> None:
        """Drop the connection that brings the accepted count past ``submits`` (one-shot)."""
        self._disconnect_after = submits

    def redeliver_receipts(self, records: list[AcceptedSubmit], outcome: str = "DELIVRD") -> None:
        """Send these submits' receipts again, as an SMSC does when it lost the acks."""
        self._send_receipts([(r, r.message_id, outcome) for r in records])

    @property
    def bound_system_ids(self) -> list[str]:
        """system_ids of the currently bound connections."""
        return [c.system_id for c in self._connections if c.system_id is not None]

    async def send_mo(
        self,
        source: str,
        destination: str,
        text: str,
        *,
        data_coding: int = DataCoding.KSC5601,
        system_id: str | None = None,
    ) -> int:
        """Deliver a mobile-originated message to a bound receiver; returns the ESME's status."""
        conn = self._receiver_for(system_id)
        if conn is None:
            raise LookupError("no receiver or transceiver bound")
        pdu = DeliverSm(
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr=source,
            destination_addr=destination,
            data_coding=data_coding,
            short_message=encode_text(text, data_coding),
        )
        fut = conn.send_deliver_sm(pdu, want_response=True)
        assert fut is not None
        return await fut

    async def wait_for_submits(self, count: int) -> None:
        """Return once at least ``count`` submits were accepted (wrap in asyncio.timeout)."""
        if len(self.submits) >= count:
            return
        fut: asyncio.Future[None] = self._loop.create_future()
        self._submit_waiters.append((count, fut))
        await fut

    # --- internals ---------------------------------------------------------------------

    def _later(self, delay: float, callback: Callable[..., None], *args: object) -> None:
        def run() -> None:
            self._handles.discard(handle)
            callback(*args)

        handle = self._loop.call_later(delay, run)
        self._handles.add(handle)

    def _bucket(self, system_id: str) -> TokenBucket | None:
        tps = self.config.tps
        if tps is None:
            return None
        bucket = self._buckets.get(system_id)
        if bucket is None:
            burst = self.config.tps_burst or max(1.0, tps)
            bucket = self._buckets[system_id] = TokenBucket(tps, burst, self._loop.time)
        return bucket

    def _next_message_id(self) -> tuple[str, str]:
        self._id_counter += 1
        n = self._id_counter
        hex_id, dec_id = f"{n:08x}", str(n)
        if self.config.message_id_format is MessageIdFormat.HEX:
            return hex_id, dec_id if self.config.receipt_id_other_format else hex_id
        return dec_id, hex_id if self.config.receipt_id_other_format else dec_id

    def _pick_outcome(self) -> str:
        if len(self._outcomes) == 1:
            return self._outcomes[0]
        return self._rng.choices(self._outcomes, self._weights)[0]

    def _record(self, pdu: SubmitSm, message_id: str, system_id: str) -> AcceptedSubmit:
        if self._received_log is not None:
            self._log_received(pdu, message_id, system_id)
        if not self.config.record_submits:
            # Long runs (bench, demo) keep no per-message state, so memory stays flat.
            return AcceptedSubmit(
                message_id,
                system_id,
                pdu.source_addr,
                pdu.destination_addr,
                pdu.data_coding,
                pdu.esm_class,
                pdu.registered_delivery,
                None,
                {},
                pdu,
            )
        payload = pdu.message_payload or pdu.short_message
        if pdu.esm_class & EsmClass.UDHI and payload:
            payload = payload[payload[0] + 1 :]  # skip the user data header
        try:
            text: str | None = decode_text(payload, pdu.data_coding)
        except UnsupportedDataCoding:
            text = None
        record = AcceptedSubmit(
            message_id=message_id,
            system_id=system_id,
            source_addr=pdu.source_addr,
            destination_addr=pdu.destination_addr,
            data_coding=pdu.data_coding,
            esm_class=pdu.esm_class,
            registered_delivery=pdu.registered_delivery,
            text=text,
            tlvs={t.tag: t.value for t in pdu.tlvs},
            pdu=pdu,
        )
        self._states[message_id] = MessageState.ENROUTE
        self.submits.append(record)
        if self._submit_waiters:
            n = len(self.submits)
            for count, fut in self._submit_waiters:
                if n >= count and not fut.done():
                    fut.set_result(None)
            self._submit_waiters = [w for w in self._submit_waiters if not w[1].done()]
        return record

    def _log_received(self, pdu: SubmitSm, message_id: str, system_id: str) -> None:
        payload = pdu.message_payload or pdu.short_message
        if pdu.esm_class & EsmClass.UDHI and payload:
            payload = payload[payload[0] + 1 :]
        try:
            text: str | None = decode_text(payload, pdu.data_coding)
        except UnsupportedDataCoding:
            text = None
        line = {"at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "message_id": message_id, "system_id": system_id, "from": pdu.source_addr,
                "to": pdu.destination_addr, "data_coding": pdu.data_coding, "text": text}
        assert self._received_log is not None
        self._received_log.write(json.dumps(line, ensure_ascii=False) + "\n")
        self._received_log.flush()

    def _send_receipts(self, receipts: list[tuple[AcceptedSubmit, str, str]]) -> None:
        # Korean SMSCs write receipt dates in local time (KST) without a zone, like this.
        now = receipt_date(datetime.now(UTC).astimezone(_KST).replace(tzinfo=None))
        by_system: dict[str, list[DeliverSm]] = {}
        states = self._states
        for record, receipt_id, outcome in receipts:
            state = STATE_BY_RECEIPT_STAT[outcome]
            if states:  # only submits recorded (tests) have a state to follow
                if states.get(record.message_id) == MessageState.DELETED:
                    continue  # canceled before its receipt was due
                if record.message_id in states:
                    states[record.message_id] = state
            text = format_receipt(
                receipt_id,
                outcome,
                submit_date=now,
                done_date=now,
                err="000" if outcome == "DELIVRD" else "001",
            )
            pdu = DeliverSm(
                source_addr=record.destination_addr,
                destination_addr=record.source_addr,
                esm_class=EsmClass.SMSC_DELIVERY_RECEIPT,
                short_message=text.encode("ascii"),
                tlvs=(Tlv.cstr(Tag.RECEIPTED_MESSAGE_ID, receipt_id), *_receipt_tlvs(outcome)),
            )
            by_system.setdefault(record.system_id, []).append(pdu)
        for system_id, pdus in by_system.items():
            self._held_receipts.setdefault(system_id, []).extend(pdus)
            self._flush_held_receipts(system_id)

    def _flush_held_receipts(self, system_id: str) -> None:
        pdus = self._held_receipts.get(system_id)
        if not pdus:
            return
        conn = self._receiver_for(system_id)
        if conn is None:
            return  # held until a receiver binds, as a real SMSC stores them
        del self._held_receipts[system_id]
        conn.send_many(pdus)
        self.stats["receipts_sent"] += len(pdus)

    def _receiver_for(self, system_id: str | None) -> _Connection | None:
        for conn in self._connections:
            if (
                conn.can_receive
                and conn.transport is not None
                and not conn.transport.is_closing()
                and (system_id is None or conn.system_id == system_id)
            ):
                return conn
        return None
