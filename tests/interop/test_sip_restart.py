"""Registrations survive a daemon restart: a baresip phone stays reachable without
registering again, because bindings live in PostgreSQL and are loaded at start."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path

from tests.integration.test_calls import DID, PASSWORD, Gateway, gw, wait
from tests.interop.test_sip_interop import BARESIP, BARESIP_CONFIG, free_port, needs_baresip

__all__ = ["gw"]


@needs_baresip
async def test_a_baresip_phone_stays_reachable_across_a_gateway_restart(gw: Gateway) -> None:
    port = free_port()
    await gw.start(port=port, digest_algorithms=["MD5"])
    info = await gw.extension("1001")
    with tempfile.TemporaryDirectory() as d:
        home = Path(d)
        (home / "config").write_text(BARESIP_CONFIG.format(port=free_port()))
        # regint=3600: baresip will not register again during the test.
        (home / "accounts").write_text(
            f"<sip:1001@{info['sip_domain']}>;auth_pass={PASSWORD};"
            f"outbound=\"sip:127.0.0.1:{port}\";answermode=auto;regint=3600\n")
        assert BARESIP is not None
        proc = await asyncio.create_subprocess_exec(
            BARESIP, "-f", str(home), "-s", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output = bytearray()

        async def collect() -> None:
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(65536):
                output.extend(chunk)

        reader = asyncio.create_task(collect())
        try:
            assert gw.server is not None
            for _ in range(100):
                if len(gw.server.b2bua.registrar):
                    break
                await asyncio.sleep(0.1)
            assert len(gw.server.b2bua.registrar) == 1, output.decode(errors="replace")[-4000:]

            await gw.server.stop()
            gw.server = None
            server = await gw.start(port=port, digest_algorithms=["MD5"])
            assert len(server.b2bua.registrar) == 1  # loaded, not re-registered
            shown = await (await gw.tenant.call("GET", "/v1/extensions/1001")).json()
            [contact] = shown["contacts"]
            assert "baresip" in contact["user_agent"].lower()
            assert contact["transport"] == "UDP"

            carrier = await gw.carrier()
            call = carrier.dial(DID, "01012345678")
            try:
                await wait(call.answered, timeout=10)
            except TimeoutError:
                raise AssertionError(output.decode(errors="replace")[-6000:]) from None
            await carrier.hangup(call)
            [record] = await gw.records()
            assert record["class"] == "incoming" and record["extension"] == "1001"
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            await reader
