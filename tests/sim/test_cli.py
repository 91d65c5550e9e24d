"""The simulator's command line, as `telgate sim smsc` will run it."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from protocols.smpp.client import SmppClient
from protocols.smpp.constants import CommandStatus
from protocols.smpp.pdu import SubmitSm
from protocols.smpp.session import SessionConfig
from sim.smsc.__main__ import build_config, main
from sim.smsc.config import MessageIdFormat


def test_flags_map_onto_the_simulator_configuration() -> None:
    config = build_config(
        [
            "--port", "0", "--account", "portal:se:cret", "--account", "b:pw",
            "--latency-ms", "5", "--tps", "100", "--window", "20",
            "--receipt-delay-ms", "250", "--outcomes", "DELIVRD=0.9,UNDELIV=0.1",
            "--error-rate", "0.01", "--error-status", "ESME_RSUBMITFAIL",
            "--disconnect-after", "1000", "--message-id-format", "decimal",
            "--receipt-id-other-format",
        ]
    )  # fmt: skip
    assert config.accounts == {"portal": "se:cret", "b": "pw"}
    assert (config.latency_ms, config.tps, config.window) == (5.0, 100.0, 20)
    assert config.outcomes == {"DELIVRD": 0.9, "UNDELIV": 0.1}
    assert (config.error_rate, config.error_status) == (0.01, CommandStatus.ESME_RSUBMITFAIL)
    assert config.disconnect_after_submits == 1000
    assert config.message_id_format is MessageIdFormat.DECIMAL
    assert config.receipt_id_other_format


def test_bad_arguments_exit_with_status_2() -> None:
    assert main(["--outcomes", "DELIVERED=1"]) == 2
    assert main(["--account", "nocolon"]) == 2
    assert main(["--error-rate", "1.5"]) == 2


async def test_cli_serves_smpp_until_terminated() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim.smsc", "--port", "0", "--account", "portal:secret",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(10):
            assert proc.stdout is not None
            hello = json.loads(await proc.stdout.readline())
            assert hello["event"] == "smsc_listening"
            client = SmppClient(SessionConfig(system_id="portal", password="secret"))
            await client.connect("127.0.0.1", hello["port"])
            resp = await client.submit(SubmitSm(source_addr="1588", destination_addr="010"))
            assert resp.command_status == CommandStatus.ESME_ROK
            await client.close()
            proc.send_signal(signal.SIGTERM)
            bye = json.loads(await proc.stdout.readline())
            assert bye["event"] == "smsc_stopped" and bye["accepted"] == 1
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
