"""The recordings API on real PostgreSQL and real WAV files: search by period, customer and
agent with internal calls left out unless asked, metadata and audio (whole or one byte range,
byte for byte what is on disk) for the owning tenant only, every access in the audit trail,
deletion of file and row by an administrator, and the retention sweeper."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry

from config.schema import RecordingsConfig
from daemon.db import init_connection
from handlers import tenants
from handlers.api.scopes import Scope
from handlers.media import recordings
from handlers.media.interface import RecordingResult, RecordingStatus
from handlers.media.retention import RetentionSweeper
from handlers.outage import Backoff, DatabaseHealth, LoopMetrics, LoopTracker
from protocols.rtp.g711 import Codec
from protocols.rtp.wav import HEADER_BYTES, WavWriter, read_wav
from sim.media import tone_pattern
from tests.conftest import Api, Tenant
from tests.integration.test_messaging import until

T0 = datetime(2026, 3, 2, 0, 30, tzinfo=UTC)  # 09:30 in Seoul
DAY = {"since": "2026-03-02T00:00:00Z", "until": "2026-03-03T00:00:00Z"}


def write_call(path: Path, seconds: float) -> bytes:
    """A stereo A-law WAV as the recorder writes it: a tone pattern per side."""
    customer = tone_pattern(Codec.PCMA, seconds, frequencies=(440.0,))
    agent = tone_pattern(Codec.PCMA, seconds, frequencies=(350.0, 620.0))
    frames = bytearray(2 * len(customer))
    frames[0::2], frames[1::2] = customer, agent
    with path.open("wb") as f:
        writer = WavWriter(f, Codec.PCMA)
        writer.write(bytes(frames))
        writer.close()
    return path.read_bytes()


async def record(pool: asyncpg.Pool, tenant_id: uuid.UUID, directory: Path, *, minutes: float = 0,
                 customer: str = "01012345678", extension: str = "1001", internal: bool = False,
                 seconds: float = 1.0, finished: bool = True) -> recordings.Recording:
    """A recorded call indexed as the engine indexes it: start, the file, then finish."""
    started = T0 + timedelta(minutes=minutes)
    path = directory / f"{uuid.uuid4()}.wav"
    async with pool.acquire() as conn:
        row = await recordings.start(conn, tenant_id=tenant_id, call_id=uuid.uuid4(),
                                     sip_call_id=f"{uuid.uuid4().hex}@trunk", codec=Codec.PCMA,
                                     path=str(path), started_at=started, extension=extension,
                                     customer=customer, internal=internal)
        blob = write_call(path, seconds)
        if not finished:
            return row
        return await recordings.finish(conn, row.id, RecordingResult(
            RecordingStatus.OK, str(path), len(blob), hashlib.sha256(blob).hexdigest(), seconds),
            started + timedelta(seconds=seconds))


def exists(path: str) -> bool:
    return Path(path).exists()


def file_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


def file_size(path: str) -> int:
    return Path(path).stat().st_size


def replace_by_directory(path: str) -> None:
    Path(path).unlink()
    Path(path).mkdir()


async def key_with_scope(api: Api, t: Tenant, scope: Scope) -> Tenant:
    async with api.context.pool.acquire() as conn:
        key, made = await tenants.create_key(conn, t.id, sp_id=None, label=scope.value,
                                             actor="test", scope=scope)
    return Tenant(t.id, t.name, key, made.id, api)


async def listed(t: Tenant, **params: str) -> tuple[list[dict[str, Any]], str | None]:
    resp = await t.call("GET", "/v1/recordings", params=params)
    assert resp.status == 200, await resp.text()
    page = await resp.json()
    return page["items"], page["next_cursor"]


async def audit_rows(api: Api, t: Tenant, prefix: str = "recording.") -> list[asyncpg.Record]:
    return await api.context.pool.fetch(
        "SELECT action, subject, details, key_id FROM audit_log WHERE tenant_id = $1 "
        "AND action LIKE $2 ORDER BY id", t.id, prefix + "%")


async def test_search_by_period_customer_and_agent_pages_and_leaves_internal_calls_out(
        api: Api, tmp_path: Path) -> None:
    t = await api.new_tenant()
    pool = api.context.pool
    for m in range(5):
        await record(pool, t.id, tmp_path, minutes=m, customer=f"0101234567{m % 2}")
    internal = await record(pool, t.id, tmp_path, minutes=10, internal=True, customer="1002")
    agent2 = await record(pool, t.id, tmp_path, minutes=11, extension="1002")
    await record(pool, t.id, tmp_path, minutes=60 * 24 * 2)  # two days later: outside DAY

    items, _ = await listed(t, **DAY)
    assert len(items) == 6 and internal.id not in {uuid.UUID(i["id"]) for i in items}
    assert [i["started_at"] for i in items] == sorted((i["started_at"] for i in items),
                                                      reverse=True)
    assert {"path"} & set(items[0]) == set()  # where the file lives is ours
    with_internal, _ = await listed(t, internal="true", **DAY)
    assert len(with_internal) == 7
    by_customer, _ = await listed(t, customer="010-1234-5671", **DAY)
    assert len(by_customer) == 2 and {i["customer"] for i in by_customer} == {"01012345671"}
    by_agent, _ = await listed(t, extension="1002", **DAY)
    assert [i["id"] for i in by_agent] == [str(agent2.id)]
    korean_day, _ = await listed(t, since="2026-03-02", until="2026-03-02")
    assert len(korean_day) == 6

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "4", **DAY, **({"cursor": cursor} if cursor else {})}
        page, cursor = await listed(t, **params)
        seen += [i["id"] for i in page]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 6

    too_long = await t.call("GET", "/v1/recordings",
                            params={"since": "2025-01-01", "until": "2026-03-01"})
    assert (too_long.status, (await too_long.json())["code"]) == (422, "period_too_long")
    bad_number = await t.call("GET", "/v1/recordings", params={"customer": "12", **DAY})
    assert (bad_number.status, (await bad_number.json())["field"]) == (422, "customer")


async def test_another_tenants_recording_is_not_found_by_any_route(api: Api,
                                                                  tmp_path: Path) -> None:
    owner, other = await api.new_tenant(), await api.new_tenant()
    theirs = await record(api.context.pool, owner.id, tmp_path)
    for method, path in (("GET", f"/v1/recordings/{theirs.id}"),
                         ("GET", f"/v1/recordings/{theirs.id}/audio"),
                         ("DELETE", f"/v1/recordings/{theirs.id}")):
        resp = await other.call(method, path)
        assert (resp.status, (await resp.json())["code"]) == (404, "recording_not_found")
    assert (await listed(other, **DAY))[0] == []
    assert exists(theirs.path)
    assert (await owner.call("GET", f"/v1/recordings/{theirs.id}")).status == 200


async def test_audio_is_the_file_on_disk_whole_or_one_range_byte_for_byte(
        api: Api, tmp_path: Path) -> None:
    t = await api.new_tenant()
    reader = await key_with_scope(api, t, Scope.READ)
    rec = await record(api.context.pool, t.id, tmp_path, seconds=20.0)  # several chunks
    on_disk = file_bytes(rec.path)
    assert len(on_disk) > 300_000
    url = f"/v1/recordings/{rec.id}/audio"

    whole = await reader.call("GET", url)
    assert whole.status == 200 and whole.headers["Content-Type"] == "audio/wav"
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert whole.headers["ETag"] == f'"{rec.sha256}"'
    body = await whole.read()
    assert body == on_disk
    audio = read_wav(body)
    assert (audio.channels, audio.rate, len(audio.data)) == (2, 8000, 2 * 8000 * 20)

    size = len(on_disk)
    for asked, first, last in (("bytes=0-43", 0, 43),
                               (f"bytes={HEADER_BYTES}-{HEADER_BYTES + 159_999}",
                                HEADER_BYTES, HEADER_BYTES + 159_999),
                               ("bytes=300000-", 300_000, size - 1),
                               ("bytes=-1000", size - 1000, size - 1),
                               (f"bytes=100-{size + 5000}", 100, size - 1)):
        part = await reader.call("GET", url, headers={"Range": asked})
        assert part.status == 206, asked
        assert part.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
        assert await part.read() == on_disk[first:last + 1]

    head = await reader.call("HEAD", url, headers={"Range": "bytes=10-19"})
    assert (head.status, head.headers["Content-Length"], await head.read()) == (206, "10", b"")
    # Ranges we do not serve are ignored, as RFC 9110 allows: the whole file.
    for ignored in ("bytes=0-1,5-6", "items=0-1", "bytes=9-3"):
        resp = await reader.call("GET", url, headers={"Range": ignored})
        assert resp.status == 200 and await resp.read() == on_disk, ignored
    # If-Range: the range only while the client's copy is still this file.
    same = await reader.call("GET", url, headers={"Range": "bytes=0-9",
                                                  "If-Range": f'"{rec.sha256}"'})
    assert same.status == 206 and await same.read() == on_disk[:10]
    stale = await reader.call("GET", url, headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert stale.status == 200 and await stale.read() == on_disk


async def test_a_range_past_the_end_is_416_with_the_size(api: Api, tmp_path: Path) -> None:
    t = await api.new_tenant()
    rec = await record(api.context.pool, t.id, tmp_path)
    size = file_size(rec.path)
    for asked in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        resp = await t.call("GET", f"/v1/recordings/{rec.id}/audio", headers={"Range": asked})
        problem = await resp.json(content_type=None)
        assert (resp.status, problem["code"]) == (416, "range_not_satisfiable"), asked
        assert resp.headers["Content-Range"] == f"bytes */{size}"
    assert await audit_rows(api, t, "recording.download") == []  # nothing was handed out


async def test_failed_missing_and_ongoing_recordings_answer_their_codes(
        api: Api, tmp_path: Path) -> None:
    t = await api.new_tenant()
    pool = api.context.pool
    ongoing = await record(pool, t.id, tmp_path, minutes=1, finished=False)
    failed = await record(pool, t.id, tmp_path, minutes=2, finished=False)
    async with pool.acquire() as conn:
        await recordings.finish(conn, failed.id, RecordingResult(
            RecordingStatus.FAILED, failed.path, error="OSError: No space left on device"), T0)
    gone = await record(pool, t.id, tmp_path, minutes=3)
    await asyncio.to_thread(Path(gone.path).unlink)

    for rec, status, code in ((ongoing, 409, "recording_in_progress"),
                              (failed, 410, "recording_unavailable"),
                              (gone, 410, "recording_unavailable")):
        resp = await t.call("GET", f"/v1/recordings/{rec.id}/audio")
        assert (resp.status, (await resp.json())["code"]) == (status, code)
    meta = await (await t.call("GET", f"/v1/recordings/{failed.id}")).json()
    assert (meta["status"], meta["error"]) == ("failed", "OSError: No space left on device")
    refused = await t.call("DELETE", f"/v1/recordings/{ongoing.id}")
    assert (refused.status, (await refused.json())["code"]) == (409, "recording_in_progress")
    assert exists(ongoing.path)
    # A row whose file is gone can still be deleted.
    assert (await t.call("DELETE", f"/v1/recordings/{gone.id}")).status == 204


async def test_every_search_metadata_read_and_audio_access_is_audited(
        api: Api, tmp_path: Path) -> None:
    t = await api.new_tenant()
    reader = await key_with_scope(api, t, Scope.READ)
    rec = await record(api.context.pool, t.id, tmp_path)
    await listed(reader, customer="010-1234-5678", **DAY)
    assert (await reader.call("GET", f"/v1/recordings/{rec.id}")).status == 200
    assert (await reader.call("GET", f"/v1/recordings/{rec.id}/audio")).status == 200
    part = await reader.call("GET", f"/v1/recordings/{rec.id}/audio",
                             headers={"Range": "bytes=0-99"})
    assert part.status == 206

    rows = await audit_rows(api, t)
    assert [(r["action"], r["subject"]) for r in rows] == [
        ("recording.search", ""), ("recording.read", str(rec.id)),
        ("recording.download", str(rec.id)), ("recording.download", str(rec.id))]
    assert all(r["key_id"] == reader.key_id for r in rows)
    search, _, whole, ranged = (r["details"] for r in rows)
    assert search["customer"] == "010****5678" and search["found"] == 1
    assert (whole["range"], whole["bytes"]) == (None, file_size(rec.path))
    assert (ranged["range"], ranged["bytes"]) == ("0-99", 100)

    trail = await (await t.call("GET", "/v1/audit", params={"action": "recording."})).json()
    assert len(trail["items"]) == 4


async def test_delete_removes_file_and_row_and_needs_an_admin_key(api: Api,
                                                                  tmp_path: Path) -> None:
    t = await api.new_tenant()  # its key is admin
    rec = await record(api.context.pool, t.id, tmp_path)
    for scope in (Scope.READ, Scope.MANAGE):
        weaker = await key_with_scope(api, t, scope)
        resp = await weaker.call("DELETE", f"/v1/recordings/{rec.id}")
        problem = await resp.json()
        assert (resp.status, problem["code"], problem["required_scope"]) == (
            403, "missing_scope", "admin")
    assert exists(rec.path)

    assert (await t.call("DELETE", f"/v1/recordings/{rec.id}")).status == 204
    assert not exists(rec.path)
    assert await api.context.pool.fetchval("SELECT count(*) FROM recordings") == 0
    again = await t.call("GET", f"/v1/recordings/{rec.id}")
    assert (again.status, (await again.json())["code"]) == (404, "recording_not_found")
    [entry] = await audit_rows(api, t, "recording.delete")
    assert (entry["subject"], entry["key_id"]) == (str(rec.id), t.key_id)
    assert entry["details"]["call_id"] == str(rec.call_id)


async def test_a_storage_fault_refuses_audio_and_deletion_and_keeps_the_recording(
        api: Api, tmp_path: Path) -> None:
    t = await api.new_tenant()
    rec = await record(api.context.pool, t.id, tmp_path)
    # Something that is not a file where the recording should be: it cannot be served, and
    # unlinking it fails (even for root, unlike a permission).
    replace_by_directory(rec.path)
    for method in ("GET", "DELETE"):
        path = f"/v1/recordings/{rec.id}" + ("/audio" if method == "GET" else "")
        resp = await t.call(method, path)
        assert (resp.status, (await resp.json())["code"]) == (500, "recording_storage_error")
    assert exists(rec.path)
    assert (await t.call("GET", f"/v1/recordings/{rec.id}")).status == 200
    assert await audit_rows(api, t, "recording.d") == []  # neither download nor delete
    assert not api.context.db.is_down  # a storage fault is not a database outage


def tracker(registry: CollectorRegistry | None = None) -> LoopTracker:
    return LoopTracker("recording-retention", LoopMetrics(registry or CollectorRegistry()),
                       DatabaseHealth(), Backoff(base=0.01, cap=0.05))


async def test_the_sweeper_deletes_file_and_row_past_retention_and_keeps_the_rest(
        api: Api, tmp_path: Path) -> None:
    t = await api.new_tenant()
    pool = api.context.pool
    old = await record(pool, t.id, tmp_path, minutes=0)
    young = await record(pool, t.id, tmp_path, minutes=60 * 24 * 40)  # 40 days later
    ongoing = await record(pool, t.id, tmp_path, minutes=1, finished=False)
    assert old.expires_at == T0 + timedelta(days=365)
    # The operator keeps recordings 30 days: it applies to those already made.
    sweeper = RetentionSweeper(pool, tracker(), RecordingsConfig(retention_days=30),
                               clock=lambda: T0 + timedelta(days=50))
    assert await sweeper.sweep_once() == 1
    assert not exists(old.path) and exists(young.path)
    assert exists(ongoing.path)  # still being recorded: swept once it is finished
    kept = {r["id"]: r["expires_at"] for r in await pool.fetch(
        "SELECT id, expires_at FROM recordings")}
    assert set(kept) == {young.id, ongoing.id}
    assert kept[young.id] == young.started_at + timedelta(days=30)
    meta = await (await t.call("GET", f"/v1/recordings/{young.id}")).json()
    assert datetime.fromisoformat(meta["expires_at"]) == young.started_at + timedelta(days=30)


async def test_the_sweeper_rides_out_a_database_outage_and_stops_on_request(
        db_dsn: str, api: Api, tmp_path: Path) -> None:
    t = await api.new_tenant()
    expired = await record(api.context.pool, t.id, tmp_path)
    down = True

    async def connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
        if down:
            raise ConnectionRefusedError(111, "Connection refused")
        return await asyncpg.connect(*args, **kwargs)

    pool = await asyncpg.create_pool(db_dsn, min_size=0, max_size=2, connect=connect,
                                     init=init_connection)
    registry = CollectorRegistry()
    loop = tracker(registry)
    assert loop.health is not None

    def failed_rounds() -> float:
        found = registry.get_sample_value("telgate_loop_errors_total",
                                          {"loop": "recording-retention"})
        return found or 0.0

    sweeper = RetentionSweeper(pool, loop, RecordingsConfig(sweep_interval_seconds=0.05),
                               clock=lambda: T0 + timedelta(days=400))
    sweeper.start()
    try:
        async def failing() -> bool:
            return failed_rounds() >= 3

        await until(failing)
        assert loop.health.is_down and "ConnectionRefusedError" in loop.health.last_error
        assert exists(expired.path)
        down = False
        async def recovered() -> bool:
            assert loop.health is not None
            return not exists(expired.path) and not loop.health.is_down

        await until(recovered)
    finally:
        async with asyncio.timeout(2):  # stops between rounds, promptly
            await sweeper.stop()
        await pool.close()
    assert await api.context.pool.fetchval("SELECT count(*) FROM recordings") == 0
