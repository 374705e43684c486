"""Real-browser tests: headless Chromium talks to ``voicewire serve`` as a person would.

The fixtures, each torn down even when a test fails:

- ``speech_wav``: a ~6 s spoken WAV (espeak-ng, then sox to 48 kHz mono 16-bit) that Chromium's
  fake microphone loops, so the echo agent has speech to send back; ``microphone_wav`` picks
  the file (a test module overrides it to play something else).
- ``voicewire_url`` / ``parrot_url``: ``python -m voicewire serve --agent echo|parrot`` on
  loopback ports picked by the OS, once per session; yields the demo page URL from its
  ``"serving"`` log line, SIGTERM at the end. ``demo_url`` picks one (echo unless overridden).
- ``demo``: a fresh Chromium profile with the fake microphone, one page on the demo, and every
  console error or uncaught exception it reports.

The page has a Content-Security-Policy without ``'unsafe-eval'``, and Playwright's
``wait_for_function`` evaluates strings inside the page, which that policy refuses: wait with
``expect(locator)`` or ``Demo.wait_for`` (polls ``page.evaluate``, which CSP does not govern).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright import async_api as playwright_api  # noqa: E402

from tests import speech
from tests.browser.chromium import CHROMIUM, chromium_args

SERVE_START_TIMEOUT = 15.0
SPEECH = (
    "Hello, this is voicewire. One, two, three, four, five. "
    "The echo agent plays back everything you say."
)


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Speech made offline, looped to 6 s so that the fake microphone is never silent for long:
    a short pause between loops, repeated well past 6 s and cut to exactly 6 s."""
    return speech.speech_wav(
        SPEECH,
        tmp_path_factory.mktemp("speech"),
        effects=("pad", "0", "0.2", "repeat", "10", "trim", "0", "6"),
    )


class ServeProcess:
    """``python -m voicewire serve`` on loopback, its JSON log drained by a thread.

    The thread keeps the stderr pipe from filling up (a full pipe would block the server's
    logging) and keeps the recent lines for error messages.
    """

    def __init__(self, log_path: Path, agent: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEWIRE_")}
        self.log_path = log_path
        self.recent: collections.deque[str] = collections.deque(maxlen=40)
        self._serving = threading.Event()
        self.url: str | None = None
        self.process = subprocess.Popen(
            [sys.executable, "-m", "voicewire", "serve", "--agent", agent]
            + ["--http", "127.0.0.1:0", "--udp", "127.0.0.1:0"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # a human-readable copy of the "serving" line
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read_log, name="serve-log", daemon=True)
        self._reader.start()

    def _read_log(self) -> None:
        with self.log_path.open("w") as log:
            for line in self.process.stderr:
                log.write(line)
                log.flush()
                self.recent.append(line.rstrip("\n"))
                if self.url is None:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue  # a traceback or a stray print: kept in the log only
                    if isinstance(record, dict) and record.get("msg") == "serving":
                        self.url = record["url"]
                        self._serving.set()
        self._serving.set()  # stderr closed: the process is gone

    def wait_serving(self, timeout: float) -> str:
        if not self._serving.wait(timeout):
            raise TimeoutError(f"no 'serving' log line within {timeout} s\n{self.tail()}")
        if self.url is None:
            code = self.process.wait(5)
            raise RuntimeError(f"voicewire serve exited with {code} before serving\n{self.tail()}")
        return self.url

    def tail(self) -> str:
        return "\n".join(self.recent) + f"\n(full log: {self.log_path})"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise AssertionError(
                f"voicewire serve ignored SIGTERM for 10 s\n{self.tail()}"
            ) from None
        finally:
            self._reader.join(5)
            self.process.stderr.close()
        return code


def _serving(tmp_path_factory: pytest.TempPathFactory, agent: str) -> Iterator[str]:
    server = ServeProcess(tmp_path_factory.mktemp("serve") / "serve.log", agent)
    try:
        yield server.wait_serving(SERVE_START_TIMEOUT)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def voicewire_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``voicewire serve --agent echo``: the demo page URL."""
    yield from _serving(tmp_path_factory, "echo")


@pytest.fixture(scope="session")
def parrot_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``voicewire serve --agent parrot``: the demo page URL."""
    yield from _serving(tmp_path_factory, "parrot")


@pytest.fixture
def microphone_wav(speech_wav: Path) -> Path:
    """What Chromium's fake microphone plays; a test module may override it."""
    return speech_wav


@pytest.fixture
def demo_url(voicewire_url: str) -> str:
    """The server the ``demo`` page talks to; a test module may override it."""
    return voicewire_url


@dataclass
class Demo:
    """One page on the demo, and every problem the browser reported while it ran."""

    page: playwright_api.Page
    url: str
    problems: list[str] = field(default_factory=list)

    async def open(self) -> None:
        await self.page.goto(self.url)

    async def wait_for(self, expression: str, timeout: float = 5.0, arg: object = None) -> object:
        """Poll a JS function until it returns something truthy; return that."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.page.evaluate(expression, arg)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"still falsy after {timeout} s ({value!r}): {expression}")
            await self.page.wait_for_timeout(50)


@pytest.fixture
async def browser(
    microphone_wav: Path, tmp_path: Path
) -> AsyncIterator[playwright_api.BrowserContext]:
    """Headless Chromium with a fresh profile and ``microphone_wav`` as its microphone."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"browser tests need Chromium at {CHROMIUM}: run `make test`")
    async with playwright_api.async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=CHROMIUM,
            headless=True,
            args=chromium_args(microphone_wav),
            viewport={"width": 1000, "height": 900},
        )
        try:
            yield context
        finally:
            await context.close()


@pytest.fixture
async def demo(browser: playwright_api.BrowserContext, demo_url: str) -> Demo:
    page = browser.pages[0] if browser.pages else await browser.new_page()
    demo = Demo(page, demo_url)

    def on_console(message: playwright_api.ConsoleMessage) -> None:
        if message.type in ("error", "assert"):
            demo.problems.append(f"console.{message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: demo.problems.append(f"uncaught: {error}"))
    return demo
