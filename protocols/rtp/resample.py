"""Sample-rate conversion of mono audio by a rational factor: a polyphase windowed-sinc FIR
(Kaiser window) that is both the interpolator and the anti-aliasing low-pass.

Pure Python but not per-tap Python: each output sample is one `sum(map(mul, ...))` over a
precomputed phase of the filter, so 10 s of 48 kHz audio becomes 8 kHz in about a second.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Sequence
from functools import lru_cache
from operator import mul

ZERO_CROSSINGS = 12  # sinc lobes kept on each side: the filter's length, hence its sharpness
KAISER_BETA = 7.0  # about 70 dB of stopband attenuation
PASSBAND = 0.92  # the cutoff (-6 dB) as a fraction of the lower Nyquist frequency


def _bessel_i0(x: float) -> float:
    """The modified Bessel function I0 (the Kaiser window's shape), by its power series."""
    term = total = 1.0
    k = 0
    while term > 1e-12 * total:
        k += 1
        term *= (x / (2 * k)) ** 2
        total += term
    return total


@lru_cache(maxsize=16)
def _phases(rate: int, target: int) -> tuple[int, int, int, tuple[tuple[float, ...], ...]]:
    """(up, down, half-length, filter phases): output n sits at input time n*down/up, and
    phase (n*down) % up holds the taps for input samples i-half+1 .. i+half around it."""
    g = math.gcd(rate, target)
    up, down = target // g, rate // g
    fc = PASSBAND * 0.5 * min(rate, target) / rate  # cycles per input sample
    reach = ZERO_CROSSINGS / (2 * fc)  # input samples on each side of the centre
    half = math.ceil(reach) + 1
    norm = _bessel_i0(KAISER_BETA)
    phases = []
    for p in range(up):
        frac = p / up
        taps = []
        for m in range(-half + 1, half + 1):
            x = m - frac  # distance of input sample i+m from the output's time
            if abs(x) >= reach:
                taps.append(0.0)
                continue
            window = _bessel_i0(KAISER_BETA * math.sqrt(1 - (x / reach) ** 2)) / norm
            sinc = 1.0 if x == 0 else math.sin(math.pi * 2 * fc * x) / (math.pi * 2 * fc * x)
            taps.append(sinc * window)
        total = sum(taps)  # unity gain at DC in every phase: no ripple between phases
        phases.append(tuple(t / total for t in taps))
    return up, down, half, tuple(phases)


def resample(samples: Sequence[float], rate: int, target: int = 8000) -> list[float]:
    """`samples` at `rate` Hz as `target` Hz, low-passed below the lower Nyquist frequency;
    the output lasts as long as the input (rounded down to a whole sample)."""
    if rate <= 0 or target <= 0:
        raise ValueError("sample rates must be positive")
    if rate == target:
        return [float(s) for s in samples]
    up, down, half, phases = _phases(rate, target)
    padded = [0.0] * half
    padded.extend(samples)
    padded.extend([0.0] * (half + 1))
    count = len(samples) * up // down
    out = [0.0] * count
    for n in range(count):
        i, p = divmod(n * down, up)
        # Input sample i+m is padded[i+m+half]; the taps run over m = -half+1 .. half.
        out[n] = sum(map(mul, phases[p], padded[i + 1:i + 2 * half + 1]))
    return out


def pcm16(samples: Sequence[float]) -> bytes:
    """Samples on the 16-bit scale as little-endian signed 16-bit PCM, rounded and clipped."""
    pcm = array("h", [-32768 if s <= -32768 else 32767 if s >= 32767 else round(s)
                      for s in samples])
    if sys.byteorder == "big":
        pcm.byteswap()
    return pcm.tobytes()

