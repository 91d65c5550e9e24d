"""IVR prompts through the control API: a tenant uploads its own recording in whatever WAV it
has, hears it back at 8 kHz, the call engine finds it as raw G.711, other tenants keep the
default, and deleting reverts; bad files are refused naming the reason."""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from daemon.app import Runtime
from daemon.wiring import start_prompts
from handlers import tenants
from handlers.api.scopes import Scope
from handlers.ivr.prompts import PROMPTS, PromptStore
from protocols.rtp.g711 import Codec
from protocols.rtp.wav import pcm_wav, read_pcm
from tests.conftest import Api, make_config

WAV = {"Content-Type": "audio/wav"}


def stereo_wav(rate: int, seconds: float) -> bytes:
    frames = (round(6000 * math.sin(2 * math.pi * 500 * i / rate))
              for i in range(round(rate * seconds)))
    return pcm_wav(array("h", [v for f in frames for v in (f, f // 2)]).tobytes(), rate, 2)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One prepared defaults directory for the module (converting them is the slow part)."""
    root = tmp_path_factory.mktemp("prompts")
    PromptStore(root).prepare()
    return root


@pytest.fixture
def store(api: Api, prepared: Path) -> Iterator[PromptStore]:
    s = PromptStore(prepared)
    s.prepare()
    api.context.prompts = s
    yield s
    api.context.prompts = None


async def test_an_upload_is_the_tenants_prompt_and_plays_as_8_khz_g711(
        api: Api, store: PromptStore) -> None:
    t, other = await api.new_tenant(), await api.new_tenant()
    resp = await t.call("PUT", "/v1/prompts/callback_closed", data=stereo_wav(16000, 2.5),
                        headers=WAV)
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert (body["source"], body["duration_seconds"]) == ("tenant", 2.5)
    assert body["description"] == "지금은 상담 시간이 아닙니다."
    assert store.path(t.id, "callback_closed", Codec.PCMU).stat().st_size == 8000 * 2.5
    assert store.path(t.id, "callback_closed", Codec.PCMA).stat().st_size == 8000 * 2.5

    listed = (await (await t.call("GET", "/v1/prompts")).json())
    assert [p["name"] for p in listed["items"]] == list(PROMPTS)
    assert listed["next_cursor"] is None
    mine = {p["name"]: p for p in listed["items"]}
    assert mine["callback_closed"]["source"] == "tenant"
    assert mine["callback_busy"]["source"] == "default"
    assert mine["hold_music"]["loops"] is True

    audio = await t.call("GET", "/v1/prompts/callback_closed/audio")
    assert (audio.status, audio.content_type) == (200, "audio/wav")
    heard = read_pcm(await audio.read())
    assert (heard.rate, heard.duration) == (8000, 2.5)

    replaced = await t.call("PUT", "/v1/prompts/callback_closed",
                            data=stereo_wav(44100, 1.0), headers={"Content-Type": "audio/x-wav"})
    assert replaced.status == 200 and (await replaced.json())["duration_seconds"] == 1.0

    # Tenant isolation: the other tenant hears, and the engine plays for it, the default.
    theirs = await (await other.call("GET", "/v1/prompts/callback_closed")).json()
    assert (theirs["source"], theirs["updated_at"]) == ("default", None)
    assert store.path(other.id, "callback_closed", Codec.PCMU) == \
        store.path(None, "callback_closed", Codec.PCMU)
    default_audio = read_pcm(await (await other.call(
        "GET", "/v1/prompts/callback_closed/audio")).read())
    assert default_audio.duration == pytest.approx(theirs["duration_seconds"], abs=0.001)

    found = await (await t.call("GET", "/v1/audit", params={"action": "prompt.upload"})).json()
    assert [(e["subject"], e["details"]["created"]) for e in found["items"]] == [
        ("callback_closed", False), ("callback_closed", True)]


async def test_delete_reverts_to_the_default(api: Api, store: PromptStore) -> None:
    t = await api.new_tenant()
    await t.call("PUT", "/v1/prompts/digit_3", data=stereo_wav(8000, 0.5), headers=WAV)
    assert (await t.call("DELETE", "/v1/prompts/digit_3")).status == 204
    shown = await (await t.call("GET", "/v1/prompts/digit_3")).json()
    assert shown["source"] == "default"
    assert store.path(t.id, "digit_3", Codec.PCMA) == store.path(None, "digit_3", Codec.PCMA)
    assert (await t.call("DELETE", "/v1/prompts/digit_3")).status == 204  # already default


def _mp3_in_riff() -> bytes:
    fmt = struct.pack("<HHIIHH", 0x0055, 2, 44100, 16000, 1, 0)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + \
        struct.pack("<I", 4) + b"\xff\xfb\x90\x00"
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("data,status,code,reason", [
    (b"ID3\x04\x00 not a wav", 422, "invalid_audio", "not a RIFF/WAVE file"),
    (_mp3_in_riff(), 422, "invalid_audio", "unsupported format 0x0055 (MP3)"),
    (stereo_wav(16000, 1.0)[:20000], 422, "invalid_audio", "truncated data chunk"),
    (stereo_wav(8000, 0.05), 422, "prompt_too_short", "0.050 s"),
    (stereo_wav(8000, 121), 422, "prompt_too_long", "121.0 s"),
    (b"RIFF" + b"\0" * (5 * 1024 * 1024), 413, "body_too_large", "5242880 bytes"),
])
async def test_a_bad_file_is_refused_naming_the_reason_and_changes_nothing(
        api: Api, store: PromptStore, data: bytes, status: int, code: str,
        reason: str) -> None:
    t = await api.new_tenant()
    resp = await t.call("PUT", "/v1/prompts/abuse_warning", data=data, headers=WAV)
    problem = await resp.json(content_type=None)
    assert (resp.status, problem["code"]) == (status, code)
    assert reason in problem["detail"]
    assert (await (await t.call("GET", "/v1/prompts/abuse_warning")).json())["source"] == \
        "default"


async def test_unknown_names_media_types_and_scopes_are_refused(
        api: Api, store: PromptStore) -> None:
    t = await api.new_tenant()
    for method in ("GET", "PUT", "DELETE"):
        resp = await t.call(method, "/v1/prompts/welcome", data=b"", headers=WAV)
        assert resp.status == 404
    resp = await t.call("PUT", "/v1/prompts/digit_1", json={"audio": "x"})
    assert (resp.status, (await resp.json())["code"]) == (415, "unsupported_media_type")
    async with api.context.pool.acquire() as conn:
        reader, _ = await tenants.create_key(conn, t.id, sp_id=None, label="ro", actor="test",
                                             scope=Scope.READ)
    auth = {"Authorization": f"Bearer {reader}"}
    assert (await api.client.get("/v1/prompts/digit_1", headers=auth)).status == 200
    resp = await api.client.put("/v1/prompts/digit_1", data=stereo_wav(8000, 0.5),
                                headers={**auth, **WAV})
    assert (resp.status, (await resp.json())["code"]) == (403, "missing_scope")
    resp = await api.client.delete("/v1/prompts/digit_1", headers=auth)
    assert resp.status == 403


async def test_without_a_prompt_store_the_routes_answer_503(api: Api) -> None:
    t = await api.new_tenant()
    resp = await t.call("GET", "/v1/prompts")
    assert (resp.status, (await resp.json())["code"]) == (503, "prompts_unavailable")
    assert "Retry-After" in resp.headers


async def test_the_document_describes_the_wav_body_and_the_names(api: Api) -> None:
    doc = await (await api.client.get("/v1/openapi.json")).json()
    put = doc["paths"]["/v1/prompts/{name}"]["put"]
    assert "audio/wav" in put["requestBody"]["content"]
    assert put["parameters"][0]["schema"]["enum"] == list(PROMPTS)
    assert {"invalid_audio", "body_too_large"} <= {
        c for r in put["responses"].values() for c in r.get("x-error-codes", [])}


async def test_the_daemon_keeps_prompts_under_its_state_dir(
        api: Api, pool: asyncpg.Pool, db_dsn: str, tmp_path: Path) -> None:
    await start_prompts(Runtime(make_config(tmp_path, db_dsn), pool, db_dsn, api.context))
    try:
        t = await api.new_tenant()
        resp = await t.call("PUT", "/v1/prompts/hold_music", data=stereo_wav(48000, 3.0),
                            headers=WAV)
        assert resp.status == 201
        assert (tmp_path / "prompts" / str(t.id) / "hold_music.pcmu").stat().st_size == 24000
        assert (tmp_path / "prompts" / "default" / "hold_music.pcma").exists()
    finally:
        api.context.prompts = None
