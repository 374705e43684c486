"""Speech fixtures made offline: espeak-ng says a sentence, sox makes it 48 kHz mono PCM16.

Turn detection, parrot and barge-in tests need real speech (a tone is not a voice to a VAD);
making it at test time keeps binary fixtures out of the repository.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

RATE = 48_000


def require(*programs: str) -> None:
    missing = [program for program in programs if shutil.which(program) is None]
    if missing:
        pytest.fail(f"these tests need {', '.join(missing)}: run `make test`, which installs them")


def speech_wav(
    text: str, folder: Path, name: str = "speech", effects: tuple[str, ...] = ()
) -> Path:
    """``text`` spoken, as a 48 kHz mono 16-bit WAV normalised to -3 dBFS, in ``folder``;
    ``effects`` are further sox effects (padding, looping)."""
    require("espeak-ng", "sox")
    spoken = folder / f"{name}-espeak.wav"
    fixture = folder / f"{name}-48k-mono.wav"
    subprocess.run(["espeak-ng", "-w", str(spoken), text], check=True, capture_output=True)
    subprocess.run(
        [
            "sox",
            str(spoken),
            "-r",
            "48000",
            "-c",
            "1",
            "-b",
            "16",
            str(fixture),
            "norm",
            "-3",
            *effects,
        ],
        check=True,
        capture_output=True,
    )
    return fixture


@functools.cache
def speech_pcm(text: str) -> np.ndarray:
    """``text`` spoken, as int16 samples at 48 kHz (made once per test run)."""
    with tempfile.TemporaryDirectory() as folder:
        wav = speech_wav(text, Path(folder))
        raw = Path(folder) / "speech.raw"
        subprocess.run(["sox", str(wav), "-t", "raw", str(raw)], check=True, capture_output=True)
        return np.frombuffer(raw.read_bytes(), dtype="<i2").copy()
