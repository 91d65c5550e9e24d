"""Generate the default Korean prompts shipped in handlers/ivr/prompts/ko/ (run by hand, once).

    apt-get install espeak-ng          # Debian's; the `ko` voice
    python -m handlers.ivr.make_prompts [--out DIR]

Each spoken prompt of `handlers.ivr.prompts.PROMPTS` is synthesised by espeak-ng, converted to
8 kHz 16-bit mono with the same code that converts uploads, trimmed of espeak's silences
and peak-normalised; `hold_music`
is a short music-box melody made here (soft sine notes with a harmonic and a decaying
envelope, rendered circularly so that it loops without a click). The WAV files are committed:
neither build nor run time runs this script, and nothing is fetched at run time. Tenants are
expected to replace the synthetic voice with their own recordings (PUT /v1/prompts/{name}).
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import tempfile
from pathlib import Path

from handlers.ivr.prompts import DEFAULTS, PROMPTS, RATE
from protocols.rtp.resample import pcm16, resample
from protocols.rtp.wav import pcm_wav, read_pcm

PEAK = 0.7 * 32767  # speech peaks here: loud enough on a phone, headroom for G.711
SPEED = 165  # words per minute; espeak's default (175) is hurried in Korean
LEAD_SECONDS = 0.05  # silence kept before the words, so the first syllable is not clipped
TAIL_SECONDS = 0.1  # and after them, so prompts played in a row do not run together
SILENCE = 0.02  # below this fraction of the peak a sample counts as silence when trimming


def speak(text: str) -> list[float]:
    """The text as espeak-ng's `ko` voice says it, 8 kHz, peak-normalised."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "say.wav"
        subprocess.run(["espeak-ng", "-v", "ko", "-s", str(SPEED), "-w", str(out), text],
                       check=True)
        audio = read_pcm(out.read_bytes())
    samples = resample(audio.samples, audio.rate, RATE)
    peak = max(map(abs, samples)) or 1.0
    loud = [i for i, s in enumerate(samples) if abs(s) > SILENCE * peak]
    words = samples[loud[0]:loud[-1] + 1] if loud else samples
    return [0.0] * round(LEAD_SECONDS * RATE) + [s * PEAK / peak for s in words] + \
        [0.0] * round(TAIL_SECONDS * RATE)


# (chord root, notes of its arpeggio) in MIDI numbers: C, Am, F, G, one bar each.
_BARS = ((48, (60, 64, 67, 72, 76, 72, 67, 64)), (45, (57, 60, 64, 69, 72, 69, 64, 60)),
         (41, (53, 57, 60, 65, 69, 65, 60, 57)), (43, (55, 59, 62, 67, 71, 67, 62, 59)))
NOTE_SECONDS = 0.2


def melody() -> list[float]:
    """About 6.4 s of a gentle arpeggiated C-Am-F-G progression that loops seamlessly."""
    length = round(len(_BARS) * 8 * NOTE_SECONDS * RATE)
    out = [0.0] * length
    for bar, (root, notes) in enumerate(_BARS):
        start = bar * 8 * NOTE_SECONDS
        _note(out, root, start, 8 * NOTE_SECONDS, 0.22, decay=1.2)
        for i, midi in enumerate(notes):
            _note(out, midi, start + i * NOTE_SECONDS, 1.2, 0.16, decay=0.35)
    peak = max(map(abs, out)) or 1.0
    return [s * 0.5 * 32767 / peak for s in out]


def _note(out: list[float], midi: int, start: float, seconds: float, level: float,
          decay: float) -> None:
    """Add a soft plucked note; its tail past the end wraps to the start (the loop point)."""
    f = 440.0 * 2 ** ((midi - 69) / 12)
    first = round(start * RATE)
    for k in range(round(seconds * RATE)):
        t = k / RATE
        envelope = min(t / 0.01, 1.0) * math.exp(-t / decay)
        phase = 2 * math.pi * f * t
        value = math.sin(phase) + 0.25 * math.sin(2 * phase) + 0.08 * math.sin(3 * phase)
        out[(first + k) % len(out)] += level * envelope * value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULTS, help="where the WAVs go")
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed (apt-get install espeak-ng)")
    args.out.mkdir(parents=True, exist_ok=True)
    for prompt in PROMPTS.values():
        samples = melody() if prompt.name == "hold_music" else speak(prompt.text)
        (args.out / f"{prompt.name}.wav").write_bytes(pcm_wav(pcm16(samples), RATE))
        print(f"{prompt.name}: {len(samples) / RATE:.2f} s")


if __name__ == "__main__":
    main()
