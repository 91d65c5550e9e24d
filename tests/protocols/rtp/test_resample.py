"""Rate conversion to the telephone rate: the length and pitch of a tone survive, its level
too, and what the 8 kHz rate cannot hold is filtered out instead of folding back as a false
tone."""

from __future__ import annotations

import itertools
import math

import pytest

from protocols.rtp.resample import pcm16, resample


def sine(frequency: float, rate: int, seconds: float, amplitude: float = 10000.0) -> list[float]:
    return [amplitude * math.sin(2 * math.pi * frequency * i / rate)
            for i in range(round(rate * seconds))]


def zero_crossings(samples: list[float]) -> int:
    return sum(1 for a, b in itertools.pairwise(samples) if (a < 0) != (b < 0))


def rms(samples: list[float]) -> float:
    return math.sqrt(sum(s * s for s in samples) / len(samples))


@pytest.mark.parametrize("rate", [11025, 16000, 22050, 32000, 44100, 48000])
def test_a_tone_keeps_its_length_pitch_and_level_at_8_khz(rate: int) -> None:
    out = resample(sine(1000, rate, 1.0), rate)
    assert len(out) == 8000
    assert zero_crossings(out) in range(1998, 2002)  # 1000 Hz: 2000 crossings a second
    steady = out[400:-400]  # away from the filter's run-in at the edges
    assert rms(steady) == pytest.approx(10000 / math.sqrt(2), rel=0.01)


def test_the_length_is_rounded_down_to_whole_output_samples() -> None:
    assert len(resample([0.0] * 441, 44100)) == 80
    assert len(resample([0.0] * 440, 44100)) == 79
    assert resample([], 16000) == []


@pytest.mark.parametrize("rate,frequency", [(16000, 5000), (44100, 6000), (48000, 4600)])
def test_a_tone_above_4_khz_is_filtered_not_aliased(rate: int, frequency: int) -> None:
    out = resample(sine(frequency, rate, 0.5), rate)[400:-400]
    assert 20 * math.log10(rms(out) / (10000 / math.sqrt(2))) < -60


def test_telephone_band_is_flat() -> None:
    for frequency in (300, 1000, 3000):
        out = resample(sine(frequency, 48000, 0.5), 48000)[400:-400]
        assert 20 * math.log10(rms(out) / (10000 / math.sqrt(2))) == pytest.approx(0, abs=0.1)


def test_8_khz_passes_through_unchanged() -> None:
    assert resample([1, -2, 3], 8000) == [1.0, -2.0, 3.0]


def test_pcm16_rounds_and_clips_to_16_bits() -> None:
    assert pcm16([0.4, 0.6, -1.6, 40000.0, -40000.0]) == \
        b"\x00\x00\x01\x00\xfe\xff\xff\x7f\x00\x80"
