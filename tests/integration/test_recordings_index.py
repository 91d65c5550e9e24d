"""The recordings index on real PostgreSQL: a recorded call's row carries the file's size and
digest, search narrows by period, customer and agent and leaves internal calls out unless
asked, a crash leaves rows that recovery completes from the playable file, and retention
deletes file and row together."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from handlers import tenants
from handlers.errors import DomainError
from handlers.media import recordings
from handlers.media.interface import RecordingResult, RecordingStatus
from handlers.media.recordings import RecordingPolicy
from protocols.rtp.g711 import Codec
from protocols.rtp.wav import WavWriter

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def write_wav(path: Path, seconds: float, *, close: bool = True) -> None:
    f = path.open("wb")
    writer = WavWriter(f, Codec.PCMA)
    writer.write(b"\xd5\xd5" * int(seconds * 8000))
    if close:
        writer.close()
    else:
        writer.sync()
        f.close()


async def add(conn: asyncpg.Connection, tenant_id: uuid.UUID, path: Path, *, minutes: int,
              customer: str = "01012345678", extension: str = "1001",
              internal: bool = False) -> recordings.Recording:
    return await recordings.start(conn, tenant_id=tenant_id, call_id=uuid.uuid4(), sip_call_id="x@y",
                                  codec=Codec.PCMA, path=str(path),
                                  started_at=T0 + timedelta(minutes=minutes),
                                  extension=extension, customer=customer, internal=internal)


async def test_finished_recording_row_carries_size_digest_and_duration(pool: asyncpg.Pool,
                                                                         tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    write_wav(path, 2.0)
    async with pool.acquire() as conn:
        tenant = await tenants.create_tenant(conn, "rec-a", actor="test")
        row = await add(conn, tenant.id, path, minutes=0)
        assert row.status == "recording" and row.expires_at == T0 + timedelta(days=365)
        blob = path.read_bytes()
        done = await recordings.finish(conn, row.id, RecordingResult(
            RecordingStatus.OK, str(path), len(blob), hashlib.sha256(blob).hexdigest(), 2.0), T0)
        assert (done.status, done.bytes, done.duration_seconds) == ("ok", len(blob), 2.0)
        failed = await add(conn, tenant.id, tmp_path / "b.wav", minutes=1)
        failed = await recordings.finish(conn, failed.id, RecordingResult(
            RecordingStatus.FAILED, error="OSError: No space left on device"), T0)
        assert failed.status == "failed" and failed.bytes is None and "space" in (failed.error or "")


async def test_search_by_period_customer_agent_and_internal_with_pages(pool: asyncpg.Pool,
                                                                       tmp_path: Path) -> None:
    async with pool.acquire() as conn:
        tenant = await tenants.create_tenant(conn, "rec-b", actor="test")
        other = await tenants.create_tenant(conn, "rec-c", actor="test")
        for m in range(5):
            await add(conn, tenant.id, tmp_path / f"{m}.wav", minutes=m, customer=f"0101234567{m % 2}")
        await add(conn, tenant.id, tmp_path / "int.wav", minutes=10, internal=True, customer="2002")
        await add(conn, tenant.id, tmp_path / "agent2.wav", minutes=11, extension="1002")
        await add(conn, other.id, tmp_path / "other.wav", minutes=1)
        day = dict(since=T0, until=T0 + timedelta(days=1))
        everything = await recordings.search(conn, tenant.id, **day)
        assert len(everything) == 6  # internal left out, other tenant invisible
        assert [r.started_at for r in everything] == sorted((r.started_at for r in everything), reverse=True)
        assert len(await recordings.search(conn, tenant.id, include_internal=True, **day)) == 7
        assert len(await recordings.search(conn, tenant.id, customer="01012345671", **day)) == 2
        agent2 = await recordings.search(conn, tenant.id, extension="1002", **day)
        assert [r.extension for r in agent2] == ["1002"]
        first = await recordings.search(conn, tenant.id, limit=4, **day)
        rest = await recordings.search(conn, tenant.id, limit=4, after=(first[-1].started_at, first[-1].id),
                                       **day)
        assert len(rest) == 2 and not {r.id for r in first} & {r.id for r in rest}
        with pytest.raises(DomainError) as too_long:
            await recordings.search(conn, tenant.id, since=T0, until=T0 + timedelta(days=400))
        assert too_long.value.code == "invalid_period"


async def test_rows_left_recording_by_a_crash_are_completed_from_the_file(pool: asyncpg.Pool,
                                                                        tmp_path: Path) -> None:
    path = tmp_path / "crash.wav"
    write_wav(path, 3.0, close=False)
    async with pool.acquire() as conn:
        tenant = await tenants.create_tenant(conn, "rec-d", actor="test")
        row = await add(conn, tenant.id, path, minutes=0)
        missing = await add(conn, tenant.id, tmp_path / "never-written.wav", minutes=1)
        assert await recordings.recover_interrupted(conn, now=T0 + timedelta(hours=1)) == 2
        got = await recordings.get(conn, tenant.id, row.id)
        assert got.status == "interrupted" and got.duration_seconds == 3.0
        assert got.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        lost = await recordings.get(conn, tenant.id, missing.id)
        assert lost.status == "interrupted" and lost.bytes is None and "unreadable" in (lost.error or "")


async def test_retention_deletes_file_and_row_together(pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with pool.acquire() as conn:
        tenant = await tenants.create_tenant(conn, "rec-e", actor="test")
        old, stuck, young = tmp_path / "old.wav", tmp_path / "stuck.wav", tmp_path / "young.wav"
        for p in (old, stuck, young):
            write_wav(p, 0.1)
        ages = ((0, old), (1, stuck), (60 * 24 * 300, young))
        rows = [await add(conn, tenant.id, p, minutes=m) for m, p in ages]
        for r in rows:
            result = RecordingResult(RecordingStatus.OK, r.path, 1, "0" * 64, 0.1)
            await recordings.finish(conn, r.id, result, T0)

        def delete(path: Path) -> None:
            if path == stuck:
                raise PermissionError(13, "Permission denied")
            path.unlink()

        assert await recordings.sweep(conn, now=T0 + timedelta(days=366), delete_file=delete) == 1
        assert not old.exists() and stuck.exists() and young.exists()
        kept = await recordings.search(conn, tenant.id, since=T0, until=T0 + timedelta(days=366))
        left = {r.path for r in kept}
        assert left == {str(stuck), str(young)}


def test_policy_from_tenant_settings() -> None:
    assert RecordingPolicy.from_settings({}) is RecordingPolicy.NONE
    excluding = RecordingPolicy.from_settings({"recording_policy": "exclude_internal"})
    assert excluding.records(internal=False) and not excluding.records(internal=True)
    assert not RecordingPolicy.NONE.records(internal=False)
    with pytest.raises(DomainError) as bad:
        RecordingPolicy.from_settings({"recording_policy": "sometimes"})
    assert bad.value.field == "recording_policy"
