"""The `telgate` command: run the daemon, migrate, check configuration, administer tenants."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from config import Config, ConfigError, load_config, redacted
from daemon import __version__


def _load(args: argparse.Namespace) -> Config:
    path = args.config or os.environ.get("TELGATE_CONFIG")
    return load_config(Path(path) if path else None, os.environ)


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, ensure_ascii=False, default=str))
    else:
        print(text)


def cmd_version(args: argparse.Namespace) -> int:
    _emit(args, {"version": __version__}, f"telgate {__version__}")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(Path(args.file), os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(redacted(config), ensure_ascii=False, default=str))
    else:
        print(f"{args.file}: configuration is valid")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.app import run_daemon
    from daemon.db import DatabaseUnreachable
    from daemon.embedded_pg import EmbeddedPostgresError
    from daemon.logs import configure_logging
    from daemon.wiring import starters

    config = _load(args)
    configure_logging(config.log)
    on_ready = None
    if args.demo:
        from daemon.demo import PortInUse, announce_demo, check_ports, with_ports

        config = with_ports(config, api=args.api_port, sip=args.sip_port, smsc=args.smsc_port,
                            mmsc=args.mmsc_port, mm7_report=args.mm7_report_port)
        try:
            check_ports(config)
        except PortInUse as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        on_ready = announce_demo
    try:
        return asyncio.run(run_daemon(config, starters=starters(config, demo=args.demo),
                                      on_ready=on_ready))
    except EmbeddedPostgresError as exc:
        print(f"error: embedded database: {exc}", file=sys.stderr)
        return 1
    except DatabaseUnreachable as exc:
        print(f"error: database unreachable: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        print(f"error: cannot listen: {exc}", file=sys.stderr)
        return 1


def _quiet_logging(config: Config) -> None:
    """Admin commands: stdout is their answer; logs go to stderr, warnings and worse only."""
    import dataclasses

    from daemon.logs import configure_logging

    level = "warning" if config.log.level in ("debug", "info") else config.log.level
    configure_logging(dataclasses.replace(config.log, level=level))


async def _with_db(config: Config, work: Callable[[Any], Awaitable[int]]) -> int:
    from daemon.db import open_database

    _quiet_logging(config)
    async with open_database(config) as (pool, _dsn), pool.acquire() as conn:
        return await work(conn)


def cmd_migrate(args: argparse.Namespace) -> int:
    from daemon.db import migrate, open_database

    config = _load(args)
    _quiet_logging(config)

    async def go() -> int:
        async with open_database(config, migrate_schema=False) as (pool, _dsn), \
                pool.acquire() as conn:
            applied = await migrate(conn)
        _emit(args, {"applied": applied},
              f"applied migrations: {applied}" if applied else "schema is up to date")
        return 0

    return asyncio.run(go())


def cmd_tenant_create(args: argparse.Namespace) -> int:
    from handlers import tenants

    async def work(conn: Any) -> int:
        t = await tenants.create_tenant(conn, args.name, actor=_cli_actor())
        _emit(args, {"id": str(t.id), "name": t.name, "created_at": t.created_at.isoformat()},
              f"created tenant {t.name} ({t.id})")
        return 0

    return asyncio.run(_with_db(_load(args), work))


def cmd_tenant_list(args: argparse.Namespace) -> int:
    from handlers import tenants

    async def work(conn: Any) -> int:
        rows = await tenants.list_tenants(conn)
        items = [{"id": str(t.id), "name": t.name, "created_at": t.created_at.isoformat()}
                 for t in rows]
        text = "\n".join(f"{t.id}  {t.name}" for t in rows) or "(no tenants)"
        _emit(args, {"items": items}, text)
        return 0

    return asyncio.run(_with_db(_load(args), work))


def cmd_key_create(args: argparse.Namespace) -> int:
    from handlers import tenants
    from handlers.api.scopes import Scope

    async def work(conn: Any) -> int:
        tenant = await tenants.find_tenant(conn, args.tenant)
        secret, key = await tenants.create_key(
            conn, tenant.id, sp_id=args.sp, label=args.label, actor=_cli_actor(),
            scope=Scope(args.scope),
        )
        _emit(
            args,
            {"key": secret, "id": str(key.id), "prefix": key.prefix, "tenant_id": str(tenant.id),
             "sp_id": key.sp_id, "scope": key.scope.value},
            f"{secret}\n(shown once; stored hashed. id {key.id}, tenant {tenant.name})",
        )
        return 0

    return asyncio.run(_with_db(_load(args), work))


def cmd_key_list(args: argparse.Namespace) -> int:
    from handlers import tenants
    from handlers.api.keys import key_out

    async def work(conn: Any) -> int:
        tenant = await tenants.find_tenant(conn, args.tenant)
        keys = await tenants.list_keys(conn, tenant.id)
        text = "\n".join(
            f"{k.id}  {k.prefix}…  sp={k.sp_id or '-'}  scope={k.scope.value}  "
            f"{'revoked' if k.revoked_at else 'active'}"
            for k in keys
        ) or "(no keys)"
        _emit(args, {"items": [key_out(k).model_dump(mode="json") for k in keys]}, text)
        return 0

    return asyncio.run(_with_db(_load(args), work))


def cmd_key_revoke(args: argparse.Namespace) -> int:
    import uuid

    from handlers import tenants

    async def work(conn: Any) -> int:
        tenant = await tenants.find_tenant(conn, args.tenant)
        await tenants.revoke_key(conn, tenant.id, uuid.UUID(args.key_id), actor=_cli_actor())
        _emit(args, {"revoked": args.key_id}, f"revoked {args.key_id}")
        return 0

    return asyncio.run(_with_db(_load(args), work))


def _setting_value(raw: str) -> object:
    """A NAME=VALUE value: JSON when it parses as JSON (80, null, {...}), else the text."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _settings_patch(pairs: Sequence[str]) -> Any:
    """The settings patch of `name=value` arguments, validated like PATCH /v1/tenant/settings."""
    from pydantic import ValidationError

    from handlers.errors import DomainError
    from handlers.tenants import OperatorSettingsPatch

    values: dict[str, object] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise DomainError("invalid_setting", f"{pair!r}: write NAME=VALUE", field=pair)
        values[name.strip()] = _setting_value(raw)
    try:
        return OperatorSettingsPatch.model_validate(values)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DomainError("invalid_setting", f"{where}: {first['msg']}", field=where) from None


def cmd_tenant_set(args: argparse.Namespace) -> int:
    from handlers import tenants
    from handlers.registry import optouts, senders

    patch = _settings_patch(args.settings)

    async def work(conn: Any) -> int:
        tenant = await tenants.find_tenant(conn, args.tenant)
        if args.sender_quota is not None:
            await senders.set_quota(conn, tenant.id, args.sender_quota, actor=_cli_actor())
        if args.optout_scope is not None:
            await optouts.set_scope(conn, tenant.id, args.optout_scope, actor=_cli_actor())
        if patch.model_fields_set:
            settings = await tenants.update_settings(conn, tenant.id, patch, actor=_cli_actor())
        else:
            settings = await tenants.get_settings(conn, tenant.id)
        q = await senders.quota(conn, tenant.id)
        scope = await optouts.get_scope(conn, tenant.id)
        shown = settings.model_dump(mode="json")
        _emit(args, {"id": str(tenant.id), "sender_quota": q.limit, "used": q.used,
                     "optout_scope": scope.value, "settings": shown},
              f"{tenant.name}: sender quota {q.used}/{q.limit}, opt-out scope {scope.value}\n"
              + "\n".join(f"  {k} = {json.dumps(v, ensure_ascii=False)}"
                          for k, v in shown.items()))
        return 0

    return asyncio.run(_with_db(_load(args), work))


def cmd_registry_import(args: argparse.Namespace) -> int:
    from handlers import spreadsheets, tenants
    from handlers.registry import senders

    data = Path(args.file).read_bytes()
    progress = _progress_bar("checking rows")
    try:
        sheet = spreadsheets.read_rows(data, sheet=0, limits=spreadsheets.Limits(
            max_bytes=max(len(data), 1), max_rows=2_000_000))
    except spreadsheets.SpreadsheetError as exc:
        print(f"error: {exc.code}: {exc.detail}", file=sys.stderr)
        return 1
    cells = senders.column_a(sheet.rows)

    async def work(conn: Any) -> int:
        tenant = await tenants.find_tenant(conn, args.tenant)
        try:
            report, registered = await senders.import_numbers(
                conn, tenant.id, cells, dry_run=args.dry_run, skip_invalid=args.skip_invalid,
                actor=_cli_actor(), progress=progress)
        except senders.ImportRefused as exc:
            report, registered = exc.report, 0
            refused = True
        else:
            refused = False
        print(file=sys.stderr)
        bad = [r for r in report if r.status is not senders.RowStatus.OK]
        for r in bad[:50]:
            print(f"row {r.row}: {r.input!r}: {r.status.value} ({r.reason})", file=sys.stderr)
        if len(bad) > 50:
            print(f"... and {len(bad) - 50} more rows not ok", file=sys.stderr)
        summary = {"rows": len(report), "ok": len(report) - len(bad), "not_ok": len(bad),
                   "registered": registered, "dry_run": args.dry_run}
        verdict = ("nothing registered: fix or drop the rows above, or use --skip-invalid"
                   if refused else f"registered {registered}")
        _emit(args, summary, f"{len(report)} rows, {len(bad)} not ok; "
              + ("dry run, nothing registered" if args.dry_run else verdict))
        return 1 if refused else 0

    return asyncio.run(_with_db(_load(args), work))


def cmd_registry_export(args: argparse.Namespace) -> int:
    import csv
    import io

    from handlers import tenants

    buf = io.StringIO()

    async def work(conn: Any) -> int:
        tenant = await tenants.find_tenant(conn, args.tenant)
        rows = await conn.fetch(
            "SELECT number, registered_at, registered_by FROM sender_numbers "
            "WHERE tenant_id = $1 ORDER BY registered_at, number", tenant.id)
        writer = csv.writer(buf)
        writer.writerow(["number", "registered_at", "registered_by"])
        for r in rows:
            writer.writerow([r["number"], r["registered_at"].isoformat(), r["registered_by"]])
        return 0

    status = asyncio.run(_with_db(_load(args), work))
    if args.output:
        Path(args.output).write_text(buf.getvalue(), encoding="utf-8")
    else:
        sys.stdout.write(buf.getvalue())
    return status


def _progress_bar(label: str) -> Callable[[int, int], None]:
    """A one-line progress bar on stderr (a terminal) or a line per 10% (a log)."""
    last = [-1]

    def show(done: int, total: int) -> None:
        pct = 100 * done // max(total, 1)
        if sys.stderr.isatty():
            bar = "#" * (pct // 4)
            print(f"\r{label} [{bar:<25}] {pct:3d}% {done}/{total}", end="", file=sys.stderr,
                  flush=True)
        elif pct // 10 != last[0] // 10:
            print(f"{label}: {pct}% ({done}/{total})", file=sys.stderr, flush=True)
        last[0] = pct

    return show


def _cli_actor() -> str:
    try:
        return f"cli:{os.getlogin()}"
    except OSError:
        return f"cli:uid{os.getuid()}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    p = argparse.ArgumentParser(prog="telgate", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", help="TOML file (default: $TELGATE_CONFIG, else none)")
        sp.add_argument("--json", action="store_true", help="print JSON for scripts")
        return sp

    s = with_config(sub.add_parser("run", help="run the daemon"))
    s.add_argument("--demo", action="store_true",
                   help="ensure a demo tenant, print its key, start the simulators")
    for flag, what in (("--api-port", "control API"), ("--sip-port", "SIP"),
                       ("--smsc-port", "SMSC simulator"), ("--mmsc-port", "MMSC simulator"),
                       ("--mm7-report-port", "MM7 delivery-report listener")):
        s.add_argument(flag, type=int, metavar="PORT", help=f"with --demo: the {what} port")
    s.set_defaults(func=cmd_run)
    with_config(sub.add_parser("migrate", help="apply database migrations")).set_defaults(
        func=cmd_migrate)
    s = sub.add_parser("check-config", help="validate a configuration file")
    s.add_argument("file")
    s.add_argument("--json", action="store_true", help="print the effective config (redacted)")
    s.set_defaults(func=cmd_check_config)
    s = sub.add_parser("version", help="print the version")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_version)

    admin = sub.add_parser("admin", help="tenants and API keys").add_subparsers(
        dest="admin", required=True, metavar="WHAT")
    tenant = admin.add_parser("tenant", help="tenants").add_subparsers(
        dest="verb", required=True, metavar="VERB")
    s = with_config(tenant.add_parser("create", help="create a tenant"))
    s.add_argument("name")
    s.set_defaults(func=cmd_tenant_create)
    with_config(tenant.add_parser("list", help="list tenants")).set_defaults(func=cmd_tenant_list)
    s = with_config(tenant.add_parser("set", help="operator settings of a tenant"))
    s.add_argument("--tenant", required=True, help="tenant id or name")
    s.add_argument("--sender-quota", type=int, help="how many sender numbers it may register")
    s.add_argument("--optout-scope", choices=["all", "ad"], help="what an opt-out withholds")
    s.add_argument("settings", nargs="*", metavar="NAME=VALUE",
                   help="tenant settings by their API names (GET /v1/tenant/settings), e.g. "
                        "sms_max_bytes=80 optout_number=080-123-4567 default_rid=null")
    s.set_defaults(func=cmd_tenant_set)
    key = admin.add_parser("key", help="API keys").add_subparsers(
        dest="verb", required=True, metavar="VERB")
    s = with_config(key.add_parser("create", help="create an API key (printed once)"))
    s.add_argument("--tenant", required=True, help="tenant id or name")
    s.add_argument("--sp", help="narrow the key to this SP ID (created under the tenant)")
    s.add_argument("--label", default="", help="a note for humans")
    s.add_argument("--scope", choices=["read", "send", "manage", "admin"], default="admin",
                   help="what the key may do: read < send < manage < admin (default admin)")
    s.set_defaults(func=cmd_key_create)
    s = with_config(key.add_parser("list", help="list a tenant's keys"))
    s.add_argument("--tenant", required=True, help="tenant id or name")
    s.set_defaults(func=cmd_key_list)
    s = with_config(key.add_parser("revoke", help="revoke a key"))
    s.add_argument("--tenant", required=True, help="tenant id or name")
    s.add_argument("key_id")
    s.set_defaults(func=cmd_key_revoke)
    registry = sub.add_parser("registry", help="sender-number registry").add_subparsers(
        dest="verb", required=True, metavar="VERB")
    s = with_config(registry.add_parser(
        "import", help="bulk-register numbers from column A of an xls/xlsx/csv file"))
    s.add_argument("file")
    s.add_argument("--tenant", required=True, help="tenant id or name")
    s.add_argument("--dry-run", action="store_true", help="check every row, register nothing")
    s.add_argument("--skip-invalid", action="store_true",
                   help="register the ok rows even if others are not ok")
    s.set_defaults(func=cmd_registry_import)
    s = with_config(registry.add_parser("export", help="registered numbers as CSV"))
    s.add_argument("--tenant", required=True, help="tenant id or name")
    s.add_argument("--output", "-o", help="file to write (default: stdout)")
    s.set_defaults(func=cmd_registry_export)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `telgate` console script."""
    args = build_parser().parse_args(argv)
    from handlers.errors import DomainError

    try:
        status: int = args.func(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    except DomainError as exc:
        where = f" ({exc.field})" if exc.field else ""
        print(f"error: {exc.code}{where}: {exc.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
