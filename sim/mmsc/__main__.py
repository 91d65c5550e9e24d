"""Command line: ``python -m sim.mmsc --port 8090 --account telgate:demo --report-url ...``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys

import structlog

from sim.mmsc.config import MmscConfig, parse_outcomes
from sim.mmsc.server import MmscSimulator


def _account(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user:
        raise argparse.ArgumentTypeError("expected USER:PASSWORD")
    return user, password


def _outcomes(value: str) -> dict[str, float]:
    try:
        return parse_outcomes(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The CLI's options."""
    p = argparse.ArgumentParser(prog="python -m sim.mmsc", description="MM7 MMSC simulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--path", default="/mm7")
    p.add_argument("--account", type=_account, action="append", default=[],
                   metavar="USER:PASS", help="HTTP basic accounts; none: no authentication")
    p.add_argument("--vasp-id", action="append", default=[], help="accepted VASPIDs (any if none)")
    p.add_argument("--max-message-bytes", type=int, default=1_048_576)
    p.add_argument("--max-image-bytes", type=int, default=300 * 1024)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--report-url", default=None, help="where DeliveryReportReq are pushed")
    p.add_argument("--report-account", type=_account, default=None, metavar="USER:PASS")
    p.add_argument("--report-delay-ms", type=float, default=500.0)
    p.add_argument("--outcomes", type=_outcomes, default={"Retrieved": 1.0},
                   help="report mix, e.g. Retrieved=0.9,Rejected=0.05,Expired=0.03,NONE=0.02")
    p.add_argument("--http500-rate", type=float, default=0.0)
    p.add_argument("--timeout-rate", type=float, default=0.0)
    p.add_argument("--timeout-ms", type=float, default=60_000.0)
    p.add_argument("--soap-fault-rate", type=float, default=0.0)
    p.add_argument("--throttle-tps", type=float, default=None, help="answer 4006 past this rate")
    p.add_argument("--seed", type=int, default=None)
    return p


def config_from_args(args: argparse.Namespace) -> MmscConfig:
    """The simulator settings the options describe."""
    report_user, report_password = args.report_account or ("", "")
    return MmscConfig(
        host=args.host, port=args.port, path=args.path, accounts=dict(args.account),
        vasp_ids=frozenset(args.vasp_id), max_message_bytes=args.max_message_bytes,
        max_image_bytes=args.max_image_bytes, latency_ms=args.latency_ms,
        report_url=args.report_url, report_username=report_user,
        report_password=report_password, report_delay_ms=args.report_delay_ms,
        outcomes=args.outcomes, http500_rate=args.http500_rate, timeout_rate=args.timeout_rate,
        timeout_ms=args.timeout_ms, soap_fault_rate=args.soap_fault_rate,
        throttle_tps=args.throttle_tps, seed=args.seed)


async def _run(config: MmscConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with MmscSimulator(config) as mmsc:
        print(json.dumps({"event": "mmsc_listening", "url": mmsc.url, "port": mmsc.port}),
              flush=True)
        await stop.wait()
        print(json.dumps({"event": "mmsc_stopped", **mmsc.stats}), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run until SIGINT/SIGTERM; print the endpoint, then the counters."""
    try:
        config = config_from_args(build_parser().parse_args(argv))
    except SystemExit as exc:  # argparse exits on --help and on bad arguments
        return exc.code if isinstance(exc.code, int) else 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Logs to stderr: stdout carries the machine-readable lines above.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
