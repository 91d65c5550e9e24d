"""The B2BUA against real SIP peers: SIPp (Debian sip-tester) as carrier and as the phone
answering, baresip as a registered phone, and sipvicious svwar trying to enumerate
extensions. Each test is skipped, saying why, when its peer binary is absent."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sim.sip.phone import SimPhone
from tests.integration.test_calls import DID, PASSWORD, Gateway, gw, wait

__all__ = ["gw"]  # the fixture, shared with the integration tests

pytestmark = pytest.mark.interop
SCENARIOS = Path(__file__).parent / "scenarios"
SIPP = shutil.which("sipp")
BARESIP = shutil.which("baresip")
needs_sipp = pytest.mark.skipif(SIPP is None, reason="sipp not installed (apt-get install "
                                                     "sip-tester, or scripts/ensure-interop-tools.sh)")
needs_baresip = pytest.mark.skipif(BARESIP is None, reason="baresip not installed (apt-get "
                                                           "install baresip)")


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on `host`."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port: int = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((host, port))
                except OSError:
                    continue
            return port


@contextlib.asynccontextmanager
async def sipp_uas(transport: str, *extra: str) -> AsyncIterator[int]:
    """A SIPp UAS answering every call (180, 200, waits for BYE) on a loopback port."""
    assert SIPP is not None
    port = free_port()
    keep = os.environ.get("SIPP_TRACE_DIR")
    if keep:
        extra = (*extra, "-trace_err")
    proc = await asyncio.create_subprocess_exec(
        SIPP, "-sf", str(SCENARIOS / "uas.xml"), "-i", "127.0.0.1", "-p", str(port), "-t", transport,
        "-nostdin", "-max_socket", "1000", *extra, cwd=keep or None,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await asyncio.sleep(0.3)
    try:
        yield port
    finally:
        await terminate(proc)


async def terminate(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, five seconds to exit, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await proc.wait()
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def sipp_uac(gateway: tuple[str, int], transport: str, calls: int, rate: int,
                   *extra: str) -> tuple[int, int, int, str]:
    """Run a SIPp UAC from the carrier's address; (exit status, successful, failed, output)."""
    assert SIPP is not None
    keep = os.environ.get("SIPP_TRACE_DIR")  # keep SIPp's error traces for a post-mortem
    if keep:
        extra = (*extra, "-trace_err")
    with tempfile.TemporaryDirectory() as tmp:
        d = keep or tmp
        stats = Path(d) / "stats.csv"
        proc = await asyncio.create_subprocess_exec(
            SIPP, "-sn", "uac", f"{gateway[0]}:{gateway[1]}", "-s", DID, "-i", "127.0.0.2",
            "-p", str(free_port("127.0.0.2")), "-t", transport, "-m", str(calls), "-r", str(rate),
            "-l", "200", "-d", "100", "-nostdin", "-timeout", "150", "-timeout_error",
            "-max_socket", "1000", "-trace_screen", "-screen_file", str(stats), *extra,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=d)
        out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        if stats.exists():
            text += stats.read_text(errors="replace")
    ok = _counter(text, "Successful call")
    failed = _counter(text, "Failed call")
    assert proc.returncode is not None
    return proc.returncode, ok, failed, text


def _counter(text: str, name: str) -> int:
    found = re.findall(rf"{name}\s*\|\s*\d+\s*\|\s*(\d+)", text)
    return int(found[-1]) if found else -1


async def _through_trunk(gw: Gateway, transport: str, calls: int, rate: int,
                         *lost: str) -> tuple[int, int, int, str]:
    t = "u1" if transport == "UDP" else "t1"
    await gw.start()
    await gw.extension("1001")
    info = await (await gw.tenant.call("GET", "/v1/extensions/1001")).json()
    async with sipp_uas(t, *lost) as uas_port:
        registrar = SimPhone("1001", gateway=gw.address, domain=info["sip_domain"],
                             password=PASSWORD)
        await registrar.start()
        gw.uas.append(registrar)
        # Registered over UDP on SIPp's behalf; a TCP contact is then reached by connecting.
        suffix = ";transport=tcp" if transport == "TCP" else ""
        status = await registrar.register(contact=f"<sip:1001@127.0.0.1:{uas_port}{suffix}>")
        assert status == 200
        return await sipp_uac(gw.address, t, calls, rate, *lost)


@needs_sipp
@pytest.mark.parametrize("transport", ["UDP", "TCP"])
async def test_sipp_calls_through_the_trunk_to_a_sipp_phone_all_complete(
        gw: Gateway, transport: str) -> None:
    status, ok, failed, text = await _through_trunk(gw, transport, 500, 100)
    assert (ok, failed) == (500, 0), text[-3000:]
    assert status == 0
    assert gw.server is not None
    await gw.server.cdrs.flush()
    async with gw.api.context.pool.acquire() as conn:
        classes = await conn.fetch("SELECT class, count(*) FROM call_records GROUP BY class")
    assert {r["class"]: r["count"] for r in classes} == {"incoming": 500}


@needs_sipp
async def test_sipp_calls_complete_at_ten_percent_packet_loss(gw: Gateway) -> None:
    status, ok, failed, text = await _through_trunk(gw, "UDP", 500, 100, "-lost", "10")
    assert ok >= 500 * 0.999, text[-3000:]
    del status, failed


BARESIP_CONFIG = """\
sip_listen\t\t127.0.0.1:{port}
audio_player\t\taubridge,nil
audio_source\t\taubridge,nil
audio_alert\t\taubridge,nil
module_path\t\t/usr/lib/baresip/modules
module\t\t\tstdio.so
module\t\t\tg711.so
module\t\t\tausine.so
module\t\t\taubridge.so
module_app\t\tmenu.so
module_app\t\taccount.so
"""


@contextlib.asynccontextmanager
async def registered_baresip(gw: Gateway, home: Path, config: str,
                             account_params: str = "",
                             procs: list[asyncio.subprocess.Process] | None = None,
                             ) -> AsyncIterator[bytearray]:
    """baresip as extension 1001 (created here) with `config`, registered with digest and
    answering at once; yields its output so far (for failure messages). `procs` receives the
    process, for a test that types commands on its standard input."""
    info = await gw.extension("1001")
    (home / "config").write_text(config)
    (home / "accounts").write_text(
        f"<sip:1001@{info['sip_domain']}>;auth_pass={PASSWORD};"
        f"outbound=\"sip:127.0.0.1:{gw.address[1]}\";answermode=auto;regint=300{account_params}\n")
    assert BARESIP is not None and gw.server is not None
    proc = await asyncio.create_subprocess_exec(
        BARESIP, "-f", str(home), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    if procs is not None:
        procs.append(proc)
    output = bytearray()

    async def collect() -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            output.extend(chunk)

    reader = asyncio.create_task(collect())
    try:
        registrar = gw.server.b2bua.registrar
        for _ in range(200):  # baresip registers within a second or so
            if len(registrar):
                break
            await asyncio.sleep(0.05)
        assert len(registrar) == 1, output.decode(errors="replace")[-4000:]
        yield output
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        await reader


@needs_baresip
async def test_baresip_registers_with_digest_and_answers_a_trunk_call(gw: Gateway) -> None:
    await gw.start(digest_algorithms=["MD5"])
    with tempfile.TemporaryDirectory() as d:
        async with registered_baresip(gw, Path(d), BARESIP_CONFIG.format(port=free_port())) as out:
            carrier = await gw.carrier()
            call = carrier.dial(DID, "01012345678")
            try:
                await wait(call.answered, timeout=10)
            except TimeoutError:
                raise AssertionError(out.decode(errors="replace")[-6000:]) from None
            await carrier.hangup(call)
            [record] = await gw.records()
            assert record["class"] == "incoming" and record["extension"] == "1001"


async def test_svwar_finds_no_extension(gw: Gateway) -> None:
    svwar = Path(sys.executable).parent / "sipvicious_svwar"
    if not svwar.exists():
        pytest.skip("sipvicious not installed in the virtualenv (pip install sipvicious)")
    await gw.start()
    for ext in ("100", "101", "1000", "1001", "1002"):
        await gw.extension(ext)
    # --force: scan even though the unknown extension it probes first is challenged too.
    runs = [(m, f) for m in ("REGISTER", "INVITE", "OPTIONS") for f in ((), ("--force",))]
    for method, force in runs:
        proc = await asyncio.create_subprocess_exec(
            str(svwar), "-e", "100-110,1000-1010", "-m", method, *force, "-p",
            str(gw.address[1]), "127.0.0.1", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "HOME": tempfile.gettempdir()})
        async with asyncio.timeout(60):
            out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        found = [line for line in text.splitlines() if re.match(r"^\|\s*\d+\s*\|", line)]
        assert found == [], f"svwar -m {method} {force} found extensions:\n{text}"
        assert "found nothing" in text, text

