"""`telgate run --demo` (what `make run` starts): the simulators of the outside parties, a demo
tenant with a registered sender number, and its API key printed with curl lines to try.

The key is kept in `<state_dir>/demo-key` (0600) and reused across restarts while it is valid.
Every port is overridable (`--api-port`, `--sip-port`, `--smsc-port`, `--mmsc-port`,
`--mm7-report-port`, or `make run API_PORT=… SIP_PORT=… SMSC_PORT=… MMSC_PORT=…
MM7_REPORT_PORT=…`); a port in use is reported in one line before anything starts.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import structlog

from config.schema import Config, Mm7CarrierConfig
from daemon.app import Runtime, Stopper
from handlers import tenants
from handlers.errors import DomainError
from handlers.registry import senders
from sim.mmsc import MmscConfig, MmscSimulator
from sim.sip.demo import start_demo
from sim.smsc import SmscConfig, SmscSimulator

log = structlog.get_logger("telgate.demo")

DEMO_TENANT = "demo"
DEMO_SENDER = "0212345678"
# What the demo's phones received (the SMSC simulator's JSON-lines log); `make sms` shows it.
SMS_RECEIVED_LOG = "sms-received.jsonl"
KEY_FILE = "demo-key"


class PortInUse(Exception):
    """A port the demo needs is taken; the message is the one line to show."""


def with_ports(config: Config, *, api: int | None = None, sip: int | None = None,
               smsc: int | None = None, mmsc: int | None = None,
               mm7_report: int | None = None) -> Config:
    """The demo configuration with the given ports (None keeps the configured one)."""
    if api is not None:
        config = dataclasses.replace(config, api=dataclasses.replace(config.api, port=api))
    if sip is not None:
        config = dataclasses.replace(config, sip=dataclasses.replace(config.sip, port=sip))
    if smsc is not None:
        carriers = [dataclasses.replace(c, port=smsc) if c.host in _LOOPBACK else c
                    for c in config.smpp.carriers]
        config = dataclasses.replace(config, smpp=dataclasses.replace(config.smpp,
                                                                      carriers=carriers))
    if mmsc is not None:
        mm7_carriers = [_with_url_port(c, mmsc) if urlsplit(c.url).hostname in _LOOPBACK else c
                        for c in config.mm7.carriers]
        config = dataclasses.replace(config, mm7=dataclasses.replace(config.mm7,
                                                                     carriers=mm7_carriers))
    if mm7_report is not None:
        config = dataclasses.replace(config, mm7=dataclasses.replace(config.mm7,
                                                                     report_port=mm7_report))
    return config


_LOOPBACK = ("127.0.0.1", "localhost")


def _mmsc_carriers(config: Config) -> list[Mm7CarrierConfig]:
    """The MM7 carriers the demo's MMSC simulator plays (their URL is on loopback)."""
    return [c for c in config.mm7.carriers if urlsplit(c.url).hostname in _LOOPBACK]


def _with_url_port(carrier: Mm7CarrierConfig, port: int) -> Mm7CarrierConfig:
    url = urlsplit(carrier.url)
    return dataclasses.replace(
        carrier, url=urlunsplit(url._replace(netloc=f"{url.hostname}:{port}")))


def check_ports(config: Config) -> None:
    """Raise PortInUse naming the first port the demo would fail to listen on, and the fix."""
    wanted: list[tuple[str, str, int, int, str]] = [
        ("control API", config.api.host, config.api.port, socket.SOCK_STREAM, "API_PORT")]
    if config.sip.enabled and config.sip.port:
        wanted += [("SIP (UDP)", config.sip.host, config.sip.port, socket.SOCK_DGRAM, "SIP_PORT"),
                   ("SIP (TCP)", config.sip.host, config.sip.port, socket.SOCK_STREAM, "SIP_PORT")]
    sims = [c for c in config.smpp.carriers if c.host in _LOOPBACK]
    if sims:
        wanted.append(("SMSC simulator", sims[0].host, sims[0].port, socket.SOCK_STREAM,
                       "SMSC_PORT"))
    mmscs = _mmsc_carriers(config)
    if mmscs:
        url = urlsplit(mmscs[0].url)
        wanted.append(("MMSC simulator", url.hostname or "127.0.0.1", url.port or 80,
                       socket.SOCK_STREAM, "MMSC_PORT"))
    mm7 = config.mm7
    if mm7.carriers and mm7.report_port:
        wanted.append(("MM7 delivery-report listener", mm7.report_host, mm7.report_port,
                       socket.SOCK_STREAM, "MM7_REPORT_PORT"))
    for what, host, port, kind, knob in wanted:
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                flag = "--" + knob.lower().replace("_", "-")
                raise PortInUse(
                    f"port {port} ({what}) on {host} is in use (another `make run`?); pick "
                    f"another: make run {knob}={port + 1}  (telgate run --demo {flag} {port + 1})"
                ) from None


async def start_simulators(runtime: Runtime) -> Stopper | None:
    """Start the SMSC and MMSC simulators where the demo configuration's carriers point."""
    stoppers: list[Stopper] = []
    carriers = [c for c in runtime.config.smpp.carriers if c.host in ("127.0.0.1", "localhost")]
    if carriers:
        first = carriers[0]
        smsc = SmscSimulator(SmscConfig(
            host=first.host, port=first.port,
            accounts={c.system_id: c.password for c in carriers},
            receipt_delay_ms=500, record_submits=False,
            received_log=runtime.config.state_dir / SMS_RECEIVED_LOG))
        await smsc.start()
        stoppers.append(smsc.stop)
        log.info("demo_smsc_started", port=smsc.port,
                 received_log=str(runtime.config.state_dir / SMS_RECEIVED_LOG))
    mm7 = runtime.config.mm7
    local = _mmsc_carriers(runtime.config)
    if local:
        first_mms = local[0]
        url = urlsplit(first_mms.url)
        mmsc = MmscSimulator(MmscConfig(
            host=url.hostname or "127.0.0.1", port=url.port or 80, path=url.path or "/",
            accounts={c.username: c.password for c in local if c.username},
            report_url=f"http://{mm7.report_host}:{mm7.report_port}{mm7.report_path}",
            report_username=first_mms.report_username,
            report_password=first_mms.report_password, report_delay_ms=500,
            record_messages=False))
        await mmsc.start()
        stoppers.append(mmsc.stop)
        log.info("demo_mmsc_started", url=mmsc.url)
    if not stoppers:
        return None

    async def stop() -> None:
        for s in reversed(stoppers):
            await s()

    return stop


async def demo_tenant(runtime: Runtime) -> tenants.Tenant:
    """The demo tenant, made on first use with its calls recorded (a real tenant opts in:
    callers must be told)."""
    async with runtime.pool.acquire() as conn:
        try:
            return await tenants.find_tenant(conn, DEMO_TENANT)
        except DomainError:
            tenant = await tenants.create_tenant(conn, DEMO_TENANT, actor="demo")
            await tenants.update_settings(
                conn, tenant.id, tenants.SettingsPatch.model_validate({
                    "recording_policy": "all",
                    # Nobody to take a call (extension 1001 on DND, or not answering): the
                    # caller hears the callback IVR and leaves a number (docs/ivr.md).
                    "callback_on": ["no_agent", "no_answer"]}),
                actor="demo")
    for listener in runtime.context.settings_changed:
        listener(tenant.id)
    return tenant


async def start_demo_phone(runtime: Runtime) -> Stopper | None:
    """Extension 1001 of the demo tenant: a simulated phone that answers at once."""
    if not runtime.config.sip.enabled:
        return None
    await demo_tenant(runtime)
    return await start_demo(runtime.config.sip, runtime.pool, tenant=DEMO_TENANT,
                            extension="1001")


async def announce_demo(runtime: Runtime) -> None:
    """Ensure the demo tenant, its sender number and key; print the key and curl lines to try."""
    key_file = runtime.config.state_dir / KEY_FILE
    tenant = await demo_tenant(runtime)
    async with runtime.pool.acquire() as conn:
        try:
            await senders.register(conn, tenant.id, DEMO_SENDER, actor="demo")
        except DomainError as exc:
            if exc.code != "already_registered":
                raise
        secret = _saved_key(key_file)
        who = await tenants.authenticate(conn, secret) if secret else None
        if who is None or who.tenant_id != tenant.id:
            secret, _key = await tenants.create_key(
                conn, tenant.id, sp_id="demo-sp", label="make run", actor="demo")
            _save_key(key_file, secret)
    runtime.context.index.senders.setdefault(tenant.id, set()).add(DEMO_SENDER)
    api = f"http://{runtime.config.api.host}:{runtime.config.api.port}"
    sip = f"{runtime.config.sip.host}:{runtime.config.sip.port}"
    sims = [c for c in runtime.config.smpp.carriers if c.host in _LOOPBACK]
    smsc = f"{sims[0].host}:{sims[0].port}" if sims else "none"
    mm7 = runtime.config.mm7
    mmscs = _mmsc_carriers(runtime.config)
    mmsc = mmscs[0].url if mmscs else "none"
    reports = f"{mm7.report_host}:{mm7.report_port}" if mm7.carriers else "none"
    banner = f"""
================================================================================
 telgate demo is up.  API: {api}   (Ctrl-C stops it)

   export TELGATE_KEY={secret}
   curl -s {api}/readyz
   curl -s -H "Authorization: Bearer $TELGATE_KEY" -H 'Content-Type: application/json' \\
        -d '{{"from":"02-1234-5678","to":["010-1234-5678"],"text":"안녕하세요 {{오늘날짜}}"}}' \\
        {api}/v1/messages
   curl -s -H "Authorization: Bearer $TELGATE_KEY" {api}/v1/messages/<id>
 MMS (the MMSC simulator, MM7): add "images": ["<base64 of a JPEG under 300 KB>"], e.g.
   base64 -w0 photo.jpg > photo.b64; jq -n --rawfile img photo.b64 \\
      '{{from:"0212345678",to:["01012345678"],text:"사진입니다",images:[$img]}}' |
   curl -s -H "Authorization: Bearer $TELGATE_KEY" -H 'Content-Type: application/json' \\
        --data-binary @- {api}/v1/messages

 SMSC simulator on {smsc}; MMSC simulator at {mmsc}
 (its delivery reports to {reports}); the key is kept in {key_file} across restarts.
 SIP on {sip} (UDP/TCP): the trunk accepts 127.0.0.1, DID 0212345678 rings
 extension 1001 (a simulated phone that answers), e.g.
   sipp -sn uac -s 0212345678 {sip} -m 1
   curl -s -H "Authorization: Bearer $TELGATE_KEY" {api}/v1/cdrs
 The demo tenant records its calls (the phone answers with a tone; `sipp -sn uac_pcap`
 sends audio too, run from a folder with a link pcap -> /usr/share/sip-tester):
   curl -s -H "Authorization: Bearer $TELGATE_KEY" {api}/v1/recordings
   curl -s -H "Authorization: Bearer $TELGATE_KEY" -o call.wav {api}/v1/recordings/<id>/audio
================================================================================
"""
    print(banner, file=sys.stdout, flush=True)


def _saved_key(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _save_key(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
