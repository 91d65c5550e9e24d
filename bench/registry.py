"""Registry benchmarks: in-process sender checks per second, and bulk import of a 100,000-row file.

    .venv/bin/python -m bench.registry [--rows 100000] [--checks 2000000]

Prints one JSON line per figure. The import runs against the embedded PostgreSQL in a
temporary state directory: parse (xlsx) → judge every row → COPY into the registry.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import random
import tempfile
import time
import uuid
from pathlib import Path

import openpyxl

from config import load_config
from daemon.db import open_database
from handlers import spreadsheets, tenants
from handlers.registry import senders
from handlers.registry.index import NumberIndex


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}"


def bench_checks(n: int) -> dict[str, object]:
    idx = NumberIndex()
    rng = random.Random(7)
    tenant_ids = [uuid.uuid4() for _ in range(1000)]
    for t in tenant_ids:
        idx.senders[t] = {f"010{rng.randrange(10**8):08d}" for _ in range(30)}
    probes = []
    for _ in range(10_000):
        t = rng.choice(tenant_ids)
        number = rng.choice(sorted(idx.senders[t])) if rng.random() < 0.5 else "01000000000"
        probes.append((t, number))
    may_send = idx.may_send
    rounds = n // len(probes)
    start = time.perf_counter()
    hits = 0
    for _ in range(rounds):
        for t, number in probes:
            hits += may_send(t, number)
    took = time.perf_counter() - start
    checks = rounds * len(probes)
    return {"bench": "registry_checks", "checks": checks, "seconds": round(took, 3),
            "checks_per_s": round(checks / took), "hits": hits, "machine": machine()}


def make_file(rows: int) -> bytes:
    rng = random.Random(11)
    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("Sheet1")
    ws.append(["발신번호"])
    prefixes = ["010", "02", "031", "051", "070"]
    for _ in range(rows):
        p = rng.choice(prefixes)
        rest = 8 if p in ("010", "070") else (8 if p == "02" else 7)
        body = f"{rng.randrange(2 * 10 ** (rest - 1), 10**rest)}"
        ws.append([f"{p}-{body[:-4]}-{body[-4:]}"])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


async def bench_import(rows: int) -> dict[str, object]:
    data = make_file(rows)
    with tempfile.TemporaryDirectory(prefix="telgate-bench-") as d:
        os.chmod(d, 0o755)
        config = load_config(None, {"TELGATE_STATE_DIR": str(Path(d))})
        async with open_database(config, attach=False) as (pool, _dsn):
            async with pool.acquire() as conn:
                t = await tenants.create_tenant(conn, "bench", actor="bench")
                await senders.set_quota(conn, t.id, rows * 2, actor="bench")
            start = time.perf_counter()
            sheet = spreadsheets.read_rows(data, sheet=0, limits=spreadsheets.Limits(
                max_rows=rows + 10, max_bytes=len(data) + 1))
            cells = senders.column_a(sheet.rows)
            parsed = time.perf_counter()
            async with pool.acquire() as conn:
                report, registered = await senders.import_numbers(
                    conn, t.id, cells, dry_run=False, skip_invalid=True, actor="bench")
            done = time.perf_counter()
    return {"bench": "registry_import", "rows": len(cells), "registered": registered,
            "not_ok": len(report) - registered, "file_bytes": len(data),
            "parse_s": round(parsed - start, 3), "judge_and_commit_s": round(done - parsed, 3),
            "total_s": round(done - start, 3), "rows_per_s": round(len(cells) / (done - start)),
            "machine": machine()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--checks", type=int, default=2_000_000)
    args = ap.parse_args()
    print(json.dumps(bench_checks(args.checks)), flush=True)
    print(json.dumps(asyncio.run(bench_import(args.rows))), flush=True)


if __name__ == "__main__":
    main()
