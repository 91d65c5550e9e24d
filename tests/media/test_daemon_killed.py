"""A daemon killed with -9 mid-call: its media process notices, finishes the recording (a
complete, playable WAV), frees every port and exits instead of lingering as an orphan."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from protocols.rtp.g711 import Codec
from protocols.rtp.wav import read_wav
from sim.media import RtpPeer, tone_pattern
from tests.media.conftest import port_slice

pytestmark = pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")

DAEMON = """
import asyncio, json, sys
from pathlib import Path
from handlers.media.client import MediaProcess, MediaSettings
from handlers.media.interface import RecordingRequest, Side
from protocols.rtp.g711 import Codec

async def main(root, low, high, caller_port):
    media = MediaProcess(MediaSettings(control_path=Path(root) / "media.sock", recordings=Path(root) / "rec",
                                       port_low=low, port_high=high))
    await media.start()
    record = RecordingRequest(path=str(Path(root) / "call.wav"))
    s = await media.create("killed-call", Codec.PCMA, record=record)
    sdp = (f"v=0\\r\\no=- 1 1 IN IP4 127.0.0.1\\r\\ns=-\\r\\nc=IN IP4 127.0.0.1\\r\\nt=0 0\\r\\n"
           f"m=audio {caller_port} RTP/AVP 8\\r\\n").encode()
    await s.offer(Side.A, sdp)
    await s.answered()
    print(json.dumps({"media_pid": media.pid, "port": s.ports[Side.A]}), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


async def sox_duration(path: Path) -> float:
    proc = await asyncio.create_subprocess_exec("sox", "--i", "-D", str(path), stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    return float(out)


async def test_kill_9_of_the_daemon_leaves_a_complete_recording_and_no_media_process(tmp_path: Path) -> None:
    caller = await RtpPeer.open()
    low, high = port_slice(40)
    daemon = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DAEMON, str(tmp_path), str(low), str(high), str(caller.address[1]),
        stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parents[2])
    assert daemon.stdout is not None
    try:
        while not (line := await daemon.stdout.readline()).startswith(b'{"media_pid"'):
            assert line, "the daemon stand-in died"
        info = json.loads(line)
        said = tone_pattern(Codec.PCMA, 1.5)
        await caller.play(("127.0.0.1", info["port"]), Codec.PCMA, said)
    finally:
        daemon.send_signal(signal.SIGKILL)
        await daemon.wait()
    async with asyncio.timeout(10):
        while alive(info["media_pid"]):  # noqa: ASYNC110 - not our child: nothing to await
            await asyncio.sleep(0.1)
    wav = tmp_path / "call.wav"
    assert await sox_duration(wav) >= 1.5  # everything up to the end, not just the last header rewrite
    left = read_wav(wav.read_bytes()).data[0::2]
    assert said in left
    for port in range(low + (low & 1), high, 2):  # every port of the range is free again
        for p in (port, port + 1):
            probe = await asyncio.get_running_loop().create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=("127.0.0.1", p))
            probe[0].close()
