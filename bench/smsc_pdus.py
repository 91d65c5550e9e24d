"""How many PDUs per second the SMSC simulator handles, and the codec's own rates.

Runs the simulator's CLI in a child process (one core) and a lean pipelined ESME in this
process (the other core): pre-encoded submit_sm batches, a large window, header-only
parsing of answers, deliver_sm_resp for every receipt. Then the same simulator against our
own SmppClient (session + asyncio adapter, receipts on). Prints one JSON line per result.

    .venv/bin/python bench/smsc_pdus.py [--submits 100000] [--window 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocols.smpp.codec import PduDecoder, decode_pdu  # noqa: E402
from protocols.smpp.constants import CommandId, Tag  # noqa: E402
from protocols.smpp.pdu import (  # noqa: E402
    BindTransceiver,
    DeliverSm,
    DeliverSmResp,
    Pdu,
    SubmitSm,
    SubmitSmResp,
    Tlv,
)

_HEADER = struct.Struct(">IIII")


def machine() -> dict[str, object]:
    """What this ran on, so numbers from different machines are not compared blindly."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def sample_submit(receipt: bool) -> SubmitSm:
    return SubmitSm(
        source_addr="15881234",
        destination_addr="01012345678",
        data_coding=0x0E,
        registered_delivery=1 if receipt else 0,
        short_message="[telgate] 인증번호는 123456 입니다".encode("cp949"),
    )


def start_simulator(receipts: bool) -> tuple[subprocess.Popen[bytes], int]:
    args = [sys.executable, "-m", "sim.smsc", "--port", "0", "--account", "bench:bench"]
    if not receipts:
        args += ["--outcomes", "NONE=1"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    hello = json.loads(proc.stdout.readline())
    return proc, int(hello["port"])


def run_once(port: int, submits: int, window: int, batch: int, receipts: bool) -> dict[str, float]:
    """One pipelined run; returns counts and the elapsed time."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(BindTransceiver(sequence_number=1, system_id="bench", password="bench").encode())
    bind_resp = decode_pdu(sock.recv(4096))
    assert not isinstance(bind_resp, Exception) and bind_resp.command_status == 0, bind_resp

    pdu = sample_submit(receipts)
    # The simulator does not care about ESME sequence numbers repeating, so one batch is
    # encoded once and re-sent: the client spends its core on I/O, not encoding.
    chunk = b"".join(pdu.encode(seq) for seq in range(2, batch + 2))
    sent = answered = receipts_in = 0
    buf = b""
    acks: list[bytes] = []
    expected_receipts = submits if receipts else 0
    start = time.perf_counter()
    while answered < submits or receipts_in < expected_receipts:
        while sent < submits and sent - answered + batch <= window:
            sock.sendall(chunk)
            sent += batch
        data = sock.recv(1 << 20)
        if not data:
            raise RuntimeError("simulator closed the connection")
        buf = buf + data if buf else data
        pos, n = 0, len(buf)
        while n - pos >= 16:
            length, cid, _status, seq = _HEADER.unpack_from(buf, pos)
            if n - pos < length:
                break
            if cid == CommandId.SUBMIT_SM_RESP:
                answered += 1
            elif cid == CommandId.DELIVER_SM:
                receipts_in += 1
                acks.append(_HEADER.pack(17, CommandId.DELIVER_SM_RESP, 0, seq) + b"\0")
            pos += length
        buf = buf[pos:]
        if acks:
            sock.sendall(b"".join(acks))
            acks.clear()
    elapsed = time.perf_counter() - start
    sock.close()
    # Every submit is one PDU in and one out; every receipt a deliver_sm out and a resp in.
    pdus = 2 * answered + 2 * receipts_in
    return {"seconds": elapsed, "submits": answered, "receipts": receipts_in, "pdus": pdus}


def bench_simulator(args: argparse.Namespace, receipts: bool) -> dict[str, object]:
    proc, port = start_simulator(receipts)
    try:
        runs = [run_once(port, args.submits, args.window, args.batch, receipts) for _ in range(args.runs)]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    rates = [r["pdus"] / r["seconds"] for r in runs]
    submit_rates = [r["submits"] / r["seconds"] for r in runs]
    return {
        "bench": "smsc_pdus",
        "receipts": receipts,
        "submits": args.submits,
        "window": args.window,
        "runs": args.runs,
        "pdus_per_s": round(statistics.median(rates)),
        "submit_sm_per_s": round(statistics.median(submit_rates)),
        "pdus_per_s_all_runs": [round(r) for r in rates],
        "machine": machine(),
    }


def bench_codec(number: int) -> dict[str, object]:
    submit = sample_submit(True)
    resp = SubmitSmResp(sequence_number=7, message_id="1a2b3c4d")
    receipt = DeliverSm(
        source_addr="01012345678",
        destination_addr="15881234",
        esm_class=4,
        short_message=b"id:1a2b3c4d sub:001 dlvrd:001 submit date:2611231200 "
        b"done date:2611231201 stat:DELIVRD err:000 text:",
        tlvs=(Tlv.cstr(Tag.RECEIPTED_MESSAGE_ID, "1a2b3c4d"), Tlv.u8(Tag.MESSAGE_STATE, 2)),
    )
    rates: dict[str, int] = {}
    samples: tuple[tuple[str, Pdu], ...] = (
        ("submit_sm", submit),
        ("submit_sm_resp", resp),
        ("deliver_sm", receipt),
    )
    for name, pdu in samples:
        wire = pdu.encode(7)
        encode_s = timeit.timeit(functools.partial(pdu.encode, 7), number=number)
        decode_s = timeit.timeit(functools.partial(decode_pdu, wire), number=number)
        rates[f"{name}_encode_per_s"] = round(number / encode_s)
        rates[f"{name}_decode_per_s"] = round(number / decode_s)
    stream = submit.encode(7) * 1000
    decoder = PduDecoder()
    seconds = timeit.timeit(lambda: decoder.feed(stream), number=max(1, number // 1000))
    rates["submit_sm_stream_decode_per_s"] = round(max(1, number // 1000) * 1000 / seconds)
    rates["deliver_sm_resp_encode_per_s"] = round(
        number / timeit.timeit(lambda: DeliverSmResp(sequence_number=9).encode(), number=number)
    )
    return {"bench": "smpp_codec", **rates, "machine": machine()}


async def _client_run(port: int, submits: int, window: int) -> float:
    from protocols.smpp.client import SmppClient
    from protocols.smpp.session import SessionConfig

    client = SmppClient(
        SessionConfig(system_id="bench", password="bench", window=window),
        on_event=lambda e: None,
    )
    await client.connect("127.0.0.1", port)
    pdu = sample_submit(True)
    start = time.perf_counter()
    answers = await asyncio.gather(*(client.submit(pdu) for _ in range(submits)))
    elapsed = time.perf_counter() - start
    await client.close()
    assert all(a.command_status == 0 for a in answers)
    return elapsed


def bench_client(args: argparse.Namespace) -> dict[str, object]:
    """Our asyncio SmppClient (session + adapter) submitting with receipts coming back."""
    proc, port = start_simulator(receipts=True)
    try:
        rates = [
            args.client_submits / asyncio.run(_client_run(port, args.client_submits, args.window))
            for _ in range(args.runs)
        ]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return {
        "bench": "smpp_client",
        "submits": args.client_submits,
        "window": args.window,
        "submit_sm_per_s": round(statistics.median(rates)),
        "all_runs": [round(r) for r in rates],
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--submits", type=int, default=100_000)
    p.add_argument("--window", type=int, default=2000)
    p.add_argument("--batch", type=int, default=200, help="submit_sm per write")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--codec-number", type=int, default=100_000)
    p.add_argument("--skip-codec", action="store_true")
    p.add_argument("--skip-receipts", action="store_true")
    p.add_argument("--client-submits", type=int, default=30_000)
    p.add_argument("--skip-client", action="store_true")
    args = p.parse_args(argv)
    if not args.skip_codec:
        print(json.dumps(bench_codec(args.codec_number)), flush=True)
    print(json.dumps(bench_simulator(args, receipts=False)), flush=True)
    if not args.skip_receipts:
        print(json.dumps(bench_simulator(args, receipts=True)), flush=True)
    if not args.skip_client:
        print(json.dumps(bench_client(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
