"""MM7 rates: the codec on an MMS-sized SubmitReq, and SubmitReq/s from our client to the
MMSC simulator (its CLI in a child process, so each side has a core). One JSON line each.

    .venv/bin/python bench/mm7.py [--image-bytes 100000] [--submits 2000] [--concurrency 32] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocols.mm7 import codec  # noqa: E402
from protocols.mm7.client import Mm7Client  # noqa: E402
from protocols.mm7.messages import Address, Decoded, Part, SubmitReq, SubmitRsp  # noqa: E402
from protocols.mm7.smil import presentation  # noqa: E402
from protocols.mm7.versions import SchemaVersion  # noqa: E402

SCHEMA = SchemaVersion.REL_5_MM7_1_2


def submit(image_bytes: int, tid: str = "bench-1") -> SubmitReq:
    jpeg = Part("image/jpeg", b"\xff\xd8" + b"\x5a" * (image_bytes - 4) + b"\xff\xd9", "image1",
                None, "image1.jpg")
    text = Part("text/plain", ("안녕하세요 고객님, 주문하신 상품 사진입니다. " * 4).encode("euc-kr"),
                "text1", "ks_c_5601-1987", "text1.txt")
    content = (presentation((jpeg, text)), jpeg, text)
    return SubmitReq(tid, "VASP", "VAS", (Address("01012345678"),), Address("0212345678"),
                     service_code="SVC", subject="안내", delivery_report=True, content=content)


def bench_codec(image_bytes: int, runs: int) -> dict[str, object]:
    m = submit(image_bytes)
    enc = codec.encode(m, SCHEMA)
    assert isinstance(codec.decode(enc.content_type, enc.body), Decoded)
    n = 300
    encode = [n / timeit.timeit(lambda: codec.encode(m, SCHEMA), number=n) for _ in range(runs)]
    decode = [n / timeit.timeit(lambda: codec.decode(enc.content_type, enc.body), number=n)
              for _ in range(runs)]
    return {"bench": "mm7_codec", "image_bytes": image_bytes, "body_bytes": len(enc.body),
            "encode_per_s": [round(x) for x in encode], "decode_per_s": [round(x) for x in decode],
            "encode_median": round(statistics.median(encode)),
            "decode_median": round(statistics.median(decode))}


async def one_run(url: str, image_bytes: int, submits: int, concurrency: int
                  ) -> tuple[float, list[float]]:
    client = Mm7Client(url, schema=SCHEMA, timeout=30, connections=concurrency)
    latencies: list[float] = []
    queue = list(range(submits))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            t0 = time.perf_counter()
            answer = (await client.send(submit(image_bytes, f"b{i}"))).message
            latencies.append(time.perf_counter() - t0)
            assert isinstance(answer, SubmitRsp) and answer.status.code == 1000

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await client.close()
    return submits / elapsed, latencies


async def bench_http(image_bytes: int, submits: int, concurrency: int, runs: int
                     ) -> dict[str, object]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim.mmsc", "--port", "0", "--max-image-bytes", str(10**7),
        "--max-message-bytes", str(10**7), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        url = json.loads(await proc.stdout.readline())["url"]
        await one_run(url, image_bytes, 50, concurrency)  # warm-up
        rates, p50, p99 = [], [], []
        for _ in range(runs):
            rate, lat = await one_run(url, image_bytes, submits, concurrency)
            lat.sort()
            rates.append(rate)
            p50.append(lat[len(lat) // 2] * 1000)
            p99.append(lat[int(len(lat) * 0.99)] * 1000)
    finally:
        proc.terminate()
        await proc.wait()
    return {"bench": "mm7_client_to_mmsc_sim", "image_bytes": image_bytes, "submits": submits,
            "concurrency": concurrency, "submits_per_s": [round(r) for r in rates],
            "median_per_s": round(statistics.median(rates)),
            "p50_ms": [round(x, 1) for x in p50], "p99_ms": [round(x, 1) for x in p99]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--image-bytes", type=int, default=100_000)
    p.add_argument("--submits", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    print(json.dumps(bench_codec(a.image_bytes, a.runs)), flush=True)
    print(json.dumps(asyncio.run(bench_http(a.image_bytes, a.submits, a.concurrency, a.runs))),
          flush=True)


if __name__ == "__main__":
    main()
