"""B2BUA signalling throughput: answered calls per second through telgate, measured with SIPp,
and the Sippy B2BUA (`b2bua_simple`, one UDP worker) in the same scenario, side by side.

    .venv/bin/python -m bench.b2bua [--seconds 10] [--rates 200,300,400,500,600]

Scenario: a SIPp UAC on 127.0.0.2 (the carrier) calls the DID over UDP; the B2BUA calls the
extension, a SIPp UAS that answers at once (180, 200), the caller ACKs and hangs up (BYE)
immediately. For each B2BUA the rates are tried in order, each for `--seconds`, until a step
has a failed call or falls short of its target; the figure is the best clean step's achieved
rate (successful calls / elapsed). telgate runs with its real PostgreSQL (embedded, in a
temporary directory): digest-registered extension, call records written. Prints JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from config import load_config
from config.sip import DidConfig, SipConfig, TrunkConfig
from daemon.db import open_database
from daemon.logs import configure_logging
from handlers import tenants
from handlers.api.context import AppContext
from handlers.api.framework import RouteTable
from handlers.calls import extensions as ext_db
from handlers.calls.service import serve_calls
from handlers.metrics import Metrics
from sim.sip.phone import SimPhone

DID = "0212345678"
UAS_SCENARIO = Path(__file__).parent.parent / "tests" / "interop" / "scenarios" / "uas.xml"
SIPPY_ONE_WORKER = (
    "import sys\n"
    "from sippy import Udp_server\n"
    "Udp_server.Udp_server_opts.nworkers = 1\n"
    "from sippy.b2bua_simple import main_func\n"
    "sys.argv = ['b2bua_simple'] + sys.argv[1:]\n"
    "main_func()\n"
)


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


async def start(*argv: str, cwd: str | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


async def stop(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(5):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def uac_step(sipp: str, target: tuple[str, int], rate: int, seconds: float,
                   ) -> dict[str, object]:
    """One SIPp UAC run at `rate` calls/s for about `seconds`."""
    calls = int(rate * seconds)
    cpu = time.process_time()
    with tempfile.TemporaryDirectory() as d:
        screen = Path(d) / "screen.txt"
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sipp, "-sn", "uac", f"{target[0]}:{target[1]}", "-s", DID, "-i", "127.0.0.2",
            "-p", str(free_port("127.0.0.2")), "-t", "u1", "-m", str(calls), "-r", str(rate),
            "-l", str(max(rate * 4, 100)), "-d", "0", "-nostdin", "-timeout", str(seconds * 4),
            "-timeout_error", "-buff_size", "4194304", "-trace_screen", "-screen_file", str(screen),
            cwd=d,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await proc.wait()
        elapsed = time.perf_counter() - started
        text = screen.read_text(errors="replace") if screen.exists() else ""
    ok = _counter(text, "Successful call")
    failed = _counter(text, "Failed call")
    # CPU of this process: the telgate B2BUA when it is the one measured (else ~0).
    return {"target_cps": rate, "calls": calls, "successful": ok, "failed": failed,
            "seconds": round(elapsed, 2), "achieved_cps": round(ok / elapsed, 1),
            "this_process_cpu_s": round(time.process_time() - cpu, 2)}


def _counter(text: str, name: str) -> int:
    found = re.findall(rf"{name}\s*\|\s*\d+\s*\|\s*(\d+)", text)
    return int(found[-1]) if found else -1


async def ramp(name: str, sipp: str, target: tuple[str, int], rates: list[int],
               seconds: float) -> dict[str, object]:
    """Try each rate until one fails; the best clean step is the figure."""
    best: dict[str, object] | None = None
    steps = []
    for rate in rates:
        step = await uac_step(sipp, target, rate, seconds)
        steps.append(step)
        print(json.dumps({"bench": "b2bua_step", "b2bua": name, **step}), flush=True)
        clean = step["failed"] == 0 and step["successful"] == step["calls"]
        if not clean:
            break
        if best is None or float(str(step["achieved_cps"])) > float(str(best["achieved_cps"])):
            best = step
        if float(str(step["achieved_cps"])) < 0.9 * rate:
            break
        await asyncio.sleep(1.0)  # let SIPp's UAS time-wait calls drain
    return {"bench": "b2bua_cps", "b2bua": name,
            "calls_per_s": best["achieved_cps"] if best else 0.0,
            "at_target": best["target_cps"] if best else None, "steps": len(steps),
            "machine": machine()}


async def run_telgate(sipp: str, rates: list[int], seconds: float,
                      session_expires: int | None = None) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="telgate-bench-") as d:
        os.chmod(d, 0o755)
        config = load_config(None, {"TELGATE_STATE_DIR": str(Path(d) / "state")})
        async with open_database(config, attach=False) as (pool, _dsn):
            async with pool.acquire() as conn:
                tenant = await tenants.create_tenant(conn, "bench", actor="bench")
                domain = await ext_db.ensure_domain(conn, tenant.id, "sip.telgate.local")
                await ext_db.create(conn, tenant.id, extension="1001", password="bench-pass",
                                    realm="telgate", name="", caller_id=None, rid=None,
                                    use_rid=False)
            sip = SipConfig(port=0, trunks=[TrunkConfig(name="carrier", addresses=["127.0.0.2"])],
                            dids=[DidConfig(number=DID, tenant="bench", extensions=["1001"])])
            if session_expires is not None:  # 0: no RFC 4028 offer on the B legs
                sip = dataclasses.replace(sip, session_expires_seconds=session_expires)
            ctx = AppContext(config=config, pool=pool, metrics=Metrics(), routes=RouteTable(),
                             version="bench")
            server = await serve_calls(sip, pool, ctx)
            uas_port = free_port()
            uas = await start(sipp, "-sf", str(UAS_SCENARIO), "-i", "127.0.0.1", "-p",
                              str(uas_port), "-t", "u1", "-nostdin", "-buff_size", "4194304", cwd=d)
            phone = SimPhone("1001", gateway=("127.0.0.1", server.port), domain=domain,
                             password="bench-pass")
            await phone.start()
            try:
                status = await phone.register(3600, contact=f"<sip:1001@127.0.0.1:{uas_port}>")
                assert status == 200, f"registration failed: {status}"
                result = await ramp("telgate", sipp, ("127.0.0.1", server.port), rates, seconds)
                await server.cdrs.flush()
                result["calls_still_up"] = len(server.b2bua.calls)
                async with pool.acquire() as conn:
                    result["call_records"] = await conn.fetchval(
                        "SELECT count(*) FROM call_records")
                    result["records_by_hangup"] = dict(await conn.fetch(
                        "SELECT hangup_by, count(*) FROM call_records GROUP BY 1"))
            finally:
                await phone.close()
                await stop(uas)
                await server.stop()
    return result


async def run_sippy(sipp: str, rates: list[int], seconds: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="sippy-bench-") as d:
        uas_port, b2b_port = free_port(), free_port()
        uas = await start(sipp, "-sf", str(UAS_SCENARIO), "-i", "127.0.0.1", "-p",
                          str(uas_port), "-t", "u1", "-nostdin", "-buff_size", "4194304", cwd=d)
        b2b = await start(sys.executable, "-c", SIPPY_ONE_WORKER, "-f", "-l", "127.0.0.1", "-p",
                          str(b2b_port), "-n", f"127.0.0.1:{uas_port}", "-L",
                          str(Path(d) / "sippy.log"), cwd=d)
        await asyncio.sleep(1.5)
        try:
            return await ramp("sippy_b2bua_simple", sipp, ("127.0.0.1", b2b_port), rates,
                              seconds)
        finally:
            await stop(b2b)
            await stop(uas)


async def main_async(args: argparse.Namespace) -> None:
    sipp = shutil.which("sipp")
    if sipp is None:
        print(json.dumps({"bench": "b2bua_cps", "error": "sipp not installed (sip-tester)"}))
        return
    rates = [int(r) for r in args.rates.split(",")]
    empty: dict[str, object] = {"calls_per_s": 0.0}
    ours = (await run_telgate(sipp, rates, args.seconds, args.session_expires)
            if args.only != "sippy" else empty)
    print(json.dumps(ours), flush=True)
    theirs = await run_sippy(sipp, rates, args.seconds) if args.only != "telgate" else empty
    print(json.dumps(theirs), flush=True)
    a, b = float(str(ours["calls_per_s"])), float(str(theirs["calls_per_s"]))
    print(json.dumps({"bench": "b2bua_ratio", "telgate_cps": a, "sippy_cps": b,
                      "ratio": round(a / b, 2) if b else None, "machine": machine()}),
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rates", default="200,300,400,500,600,800")
    ap.add_argument("--profile", help="write a cProfile of the telgate run to this file")
    ap.add_argument("--only", choices=("telgate", "sippy"), help="measure one B2BUA only")
    ap.add_argument("--session-expires", type=int,
                    help="telgate's sip.session_expires_seconds (default: the configured 1800; "
                         "0 measures without RFC 4028 session timers)")
    args = ap.parse_args()
    configure_logging(load_config(None, {"TELGATE_LOG__LEVEL": "warning"}).log, force_json=True)
    if args.profile:
        import cProfile

        sipp = shutil.which("sipp")
        assert sipp is not None
        rates = [int(r) for r in args.rates.split(",")]
        cProfile.runctx("asyncio.run(run_telgate(sipp, rates, args.seconds))", globals(),
                        {"sipp": sipp, "rates": rates, "args": args}, args.profile)
        return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
