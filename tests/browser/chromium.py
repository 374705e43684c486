"""How the tests and benchmarks start Chromium: Debian's binary, headless, fake media devices."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = "/usr/bin/chromium"


def chromium_args(microphone_wav: Path | None) -> list[str]:
    """Flags for a headless Chromium that needs no person: fake camera and microphone (playing
    ``microphone_wav`` when given, else Chromium's own beep), no permission prompts, loopback
    peer connections, autoplay, and nothing phoning home."""
    fake_audio = (
        [] if microphone_wav is None else [f"--use-file-for-fake-audio-capture={microphone_wav}"]
    )
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        *fake_audio,
        "--allow-loopback-in-peer-connection",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--autoplay-policy=no-user-gesture-required",
    ]
