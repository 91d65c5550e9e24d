"""The prompt store: every prompt has a shipped default; a tenant's upload overrides it for
that tenant only and is kept as the raw 8 kHz G.711 the media process plays; bad uploads
change nothing; deleting goes back to the default."""

from __future__ import annotations

import itertools
import math
import os
import uuid
from array import array
from pathlib import Path

import pytest

from handlers.errors import DomainError
from handlers.ivr.prompts import DEFAULTS, MAX_SECONDS, PROMPTS, PromptStore
from protocols.rtp import g711
from protocols.rtp.g711 import Codec
from protocols.rtp.wav import pcm_wav, read_pcm


def tone_wav(rate: int, seconds: float, channels: int = 1, frequency: float = 440.0) -> bytes:
    frames = [round(8000 * math.sin(2 * math.pi * frequency * i / rate))
              for i in range(round(rate * seconds))]
    return pcm_wav(array("h", [v for v in frames for _ in range(channels)]).tobytes(), rate,
                   channels)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> PromptStore:
    s = PromptStore(tmp_path_factory.mktemp("prompts"))
    s.prepare()
    return s


def test_the_catalogue_names_what_each_prompt_says_and_ships_a_default_for_each() -> None:
    assert PROMPTS["callback_closed"].text == "지금은 상담 시간이 아닙니다."
    assert [PROMPTS[f"digit_{d}"].text for d in range(10)] == list("공일이삼사오육칠팔구")
    assert PROMPTS["hold_music"].loops and not PROMPTS["abuse_warning"].loops
    assert {p.stem for p in DEFAULTS.glob("*.wav")} == set(PROMPTS)
    assert sum(p.stat().st_size for p in DEFAULTS.glob("*.wav")) < 900_000
    for path in DEFAULTS.glob("*.wav"):
        pcm = read_pcm(path.read_bytes())
        assert (pcm.rate, pcm.source) == (8000, "PCM 16-bit mono 8000 Hz")


def test_defaults_are_prepared_as_raw_g711_with_their_durations(store: PromptStore) -> None:
    for name in PROMPTS:
        pcmu = store.path(None, name, Codec.PCMU)
        pcma = store.path(None, name, Codec.PCMA)
        assert pcmu.suffix == ".pcmu" and pcma.suffix == ".pcma"
        seconds = read_pcm((DEFAULTS / f"{name}.wav").read_bytes()).duration
        assert pcmu.stat().st_size == pcma.stat().st_size == round(seconds * 8000)
        assert store.duration(uuid.uuid4(), name) == pytest.approx(seconds)
    assert 5 <= store.duration(None, "hold_music") <= 15


def test_an_upload_overrides_the_default_for_its_tenant_only(store: PromptStore) -> None:
    tenant, other = uuid.uuid4(), uuid.uuid4()
    info, created = store.put(tenant, "callback_closed", tone_wav(44100, 1.5, channels=2))
    assert created and (info.source, info.duration) == ("tenant", 1.5)
    assert info.updated_at is not None
    path = store.path(tenant, "callback_closed", Codec.PCMU)
    assert path.parent.name == str(tenant) and path.stat().st_size == 12000
    assert store.path(other, "callback_closed", Codec.PCMU) == \
        store.path(None, "callback_closed", Codec.PCMU)
    assert store.info(other, "callback_closed").source == "default"
    # What plays is the tone at 8 kHz: 440 Hz, about 880 zero crossings a second.
    linear = g711.decode(Codec.PCMA, store.path(tenant, "callback_closed", Codec.PCMA)
                         .read_bytes()).tolist()
    crossings = sum(1 for a, b in itertools.pairwise(linear) if (a < 0) != (b < 0))
    assert abs(crossings - 1.5 * 880) <= 4
    again, created = store.put(tenant, "callback_closed", tone_wav(16000, 0.5))
    assert not created and again.duration == 0.5
    listed = {p.name: p for p in store.list(tenant)}
    assert list(listed) == list(PROMPTS)
    assert (listed["callback_closed"].source, listed["callback_busy"].source) == \
        ("tenant", "default")
    assert read_pcm(store.wav(tenant, "callback_closed")).duration == 0.5


def test_delete_reverts_to_the_default(store: PromptStore) -> None:
    tenant = uuid.uuid4()
    store.put(tenant, "digit_7", tone_wav(8000, 0.3))
    assert store.delete(tenant, "digit_7") is True
    assert store.delete(tenant, "digit_7") is False
    assert store.info(tenant, "digit_7").source == "default"
    assert store.path(tenant, "digit_7", Codec.PCMU) == store.path(None, "digit_7", Codec.PCMU)
    assert os.listdir(store.root / str(tenant)) == []


@pytest.mark.parametrize("wav,code,reason", [
    (b"ID3" + b"\0" * 100, "invalid_audio", "not a RIFF/WAVE file"),
    (pcm_wav(b"\0" * 1000)[:200], "invalid_audio", "truncated data chunk"),
    (tone_wav(8000, 0.05), "prompt_too_short", "0.050 s"),
    (tone_wav(8000, MAX_SECONDS + 0.5), "prompt_too_long", "120.5 s"),
    (b"RIFF" + b"\0" * (5 * 1024 * 1024), "body_too_large", "5242880 bytes"),
])
def test_a_bad_upload_is_refused_with_its_reason_and_changes_nothing(
        store: PromptStore, wav: bytes, code: str, reason: str) -> None:
    tenant = uuid.uuid4()
    store.put(tenant, "callback_busy", tone_wav(8000, 1.0))
    with pytest.raises(DomainError) as refused:
        store.put(tenant, "callback_busy", wav)
    assert refused.value.code == code and reason in refused.value.detail
    assert store.duration(tenant, "callback_busy") == 1.0
    assert sorted(os.listdir(store.root / str(tenant))) == [
        "callback_busy.pcma", "callback_busy.pcmu", "callback_busy.wav"]


def test_an_unknown_name_is_not_found(store: PromptStore) -> None:
    for call in (lambda: store.put(uuid.uuid4(), "../x", tone_wav(8000, 1)),
                 lambda: store.path(None, "welcome", Codec.PCMU)):
        with pytest.raises(DomainError) as refused:
            call()
        assert refused.value.code == "not_found"


def test_a_failed_write_leaves_the_old_prompt_and_no_temporary_file(
        store: PromptStore, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = uuid.uuid4()
    store.put(tenant, "callback_saved", tone_wav(8000, 1.0))
    real_fsync = os.fsync
    calls = iter(range(100))

    def failing_fsync(fd: int) -> None:
        if next(calls) == 1:  # the second file of the set
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        store.put(tenant, "callback_saved", tone_wav(8000, 2.0))
    monkeypatch.undo()
    assert store.duration(tenant, "callback_saved") == 1.0
    assert store.info(tenant, "callback_saved").duration == 1.0
    assert not [p for p in os.listdir(store.root / str(tenant)) if p.startswith(".")]


def test_path_prepares_the_defaults_on_first_use(tmp_path: Path) -> None:
    fresh = PromptStore(tmp_path)
    assert fresh.path(None, "digit_1", Codec.PCMA).exists()


def test_a_restart_converts_only_defaults_that_changed(tmp_path: Path) -> None:
    PromptStore(tmp_path).prepare()
    kept = tmp_path / "default" / "digit_5.pcmu"
    before = kept.stat().st_mtime_ns
    (tmp_path / "default" / "digit_6.pcma").unlink()
    again = PromptStore(tmp_path)
    again.prepare()
    assert kept.stat().st_mtime_ns == before
    assert again.path(None, "digit_6", Codec.PCMA).exists()
