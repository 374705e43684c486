"""Connection setup benchmark (DESIGN §9): voicewire against an aiortc echo server, one run.

    flock /tmp/voicewire-bench.lock .venv/bin/python benchmarks/setup_bench.py       # ~1 min
    flock /tmp/voicewire-bench.lock .venv/bin/python benchmarks/setup_bench.py --calls 10
    ... --json setup.json     (every sample, the summary and the ratios)

Two servers run side by side on 127.0.0.1, both answering ``POST /v1/realtime/calls`` with an SDP
answer and hanging up on ``DELETE`` (DESIGN §6):

- ``voicewire serve`` (gateway + relay + transceiver + echo agent): ICE-lite, one host candidate
  (the relay), DTLS client;
- ``benchmarks/aiortc_echo_server.py``: aiohttp + aiortc answering and sending the received track
  straight back — the usual Python approach, and the baseline every ratio is computed against.

Two clients call each of them:

- **aiortc** (in this process): createOffer → setLocalDescription → POST → setRemoteDescription →
  connection state "connected" → the first echoed audio frame with energy (the client sends a
  1 kHz tone from a track and waits until a decoded frame peaks above ``ECHO_PEAK``). aiortc
  cannot post before ICE gathering ends (its setLocalDescription gathers first), so the times are
  from createOffer anyway and the gathering (setLocalDescription) is reported on its own.
- **Chromium** (headless, Playwright, fake microphone): a snippet in a page of the server's own
  origin runs getUserMedia → RTCPeerConnection → addTrack → createOffer → setLocalDescription →
  fetch POST at once (no wait for gathering) → setRemoteDescription → "connected", timed with
  performance.now() from createOffer. The DESIGN §9 target is on this number.

Every call is also timed as the server sees it: when it logs ``session connected`` (wall clock,
to the millisecond, against the client's createOffer). For aiortc that is its own connection
state; for voicewire it is the moment audio may go out: DTLS up on an address that passed an
ICE check. (voicewire does not wait for the nomination: browsers nominate a lite agent's pair
only on a later check, RFC 8445 regular nomination, some 50 ms after their own DTLS is up.)

Calls are sequential, each hung up (``DELETE``, after the server logged it connected) and its
peer connection closed before the next; the four (client, server) pairs take turns call by call,
in a rotating order, so a change in the machine's load hits all of them alike. Three rounds of
warm-up are not counted. Every wait has a timeout; a call that fails to connect, echo or hang up,
a server that dies or logs an error, ends the run with exit status 1 and no table.

The machine may be shared with another benchmark: run under ``flock /tmp/voicewire-bench.lock``
(the output says whether the lock was held) and read the reported foreign CPU — what processes
outside this benchmark used while it ran.

p99 is nearest-rank: with 50 calls that is the slowest call.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import calendar
import fractions
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp
import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame
from machine import LOCK_PATH, check_lock, percentile, tree_cpu
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import async_playwright
from processes import BenchError
from runner import run_bench, write_json
from serve_process import ServeProcess, serve_argv, stop_all

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))  # tests.browser.chromium: how Chromium is started
from tests.browser.chromium import CHROMIUM, chromium_args  # noqa: E402

CALLS_PATH = "/v1/realtime/calls"
WARMUP = 3
HTTP_TIMEOUT = 5.0
CONNECT_TIMEOUT = 10.0  # createOffer → "connected"
ECHO_TIMEOUT = 5.0  # "connected" → the first echoed frame with energy
SETTLE = 0.02  # seconds between calls, for the last one's closing packets
TONE_HZ = 1000
TONE_AMPLITUDE = 0.3  # of full scale
ECHO_PEAK = 1000  # |sample| that counts as energy (-30 dBFS); the tone peaks near 9800
TARGET_P50_MS = 25.0
TARGET_RATIO = 0.5

SERVERS = ("voicewire", "aiortc")
CLIENTS = ("aiortc", "chromium")
SCENARIOS = [(client, server) for client in CLIENTS for server in SERVERS]


def loopback_only() -> None:
    """aiortc clients gather one host candidate, on 127.0.0.1, like the aiortc server."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


# Servers.


class ServerProcess(ServeProcess):
    """A server (serve_process.py), with its "session connected" records indexed by call id."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.connected: dict[str, dict] = {}  # call id → its "session connected" record
        super().__init__(name, argv, log_path, on_record=self._index)

    def _index(self, record: dict) -> None:
        if record.get("msg") == "session connected" and "call_id" in record:
            self.connected[record["call_id"]] = record

    async def wait_connected(self, call_id: str, t0_epoch: float) -> dict:
        """Wait for the server to log the call connected; its view of the call, in ms."""
        deadline = time.monotonic() + ECHO_TIMEOUT
        while (record := self.connected.get(call_id)) is None:
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not log {call_id} connected in time")
            await asyncio.sleep(0.005)
        return {
            "server_setup_ms": float(record["setup_ms"]),
            # The log's clock is the wall clock, to the millisecond (truncated: +0.5 ms).
            "server_connected_ms": 1000 * (_log_epoch(record["ts"]) + 0.0005 - t0_epoch),
        }


def _log_epoch(ts: str) -> float:
    """'2026-01-02T03:04:05.678Z' → Unix time."""
    return calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + int(ts[20:23]) / 1000


def start_servers(log_dir: Path) -> dict[str, ServerProcess]:
    servers: dict[str, ServerProcess] = {}
    try:
        # The echo agent, named: `voicewire serve` defaults to parrot, which only answers turns.
        voicewire = serve_argv("--agent", "echo")
        servers["voicewire"] = ServerProcess("voicewire", voicewire, log_dir / "voicewire.log")
        servers["aiortc"] = ServerProcess(
            "aiortc",
            [sys.executable, str(HERE / "aiortc_echo_server.py"), "--http", "127.0.0.1:0"],
            log_dir / "aiortc.log",
        )
        for server in servers.values():
            server.wait_serving()
    except BaseException:
        stop_all(servers.values())
        raise
    return servers


# The aiortc client.


class ToneTrack(MediaStreamTrack):
    """A 1 kHz tone, 20 ms frames of 48 kHz mono PCM16, paced in real time like a microphone."""

    kind = "audio"
    RATE = 48_000
    SAMPLES = 960  # 20 ms; 1 kHz fits exactly 20 periods, so every frame is the same

    def __init__(self) -> None:
        super().__init__()
        peak = TONE_AMPLITUDE * 32767
        pcm = array.array(
            "h",
            (
                round(peak * math.sin(2 * math.pi * TONE_HZ * i / self.RATE))
                for i in range(self.SAMPLES)
            ),
        )
        self._pcm = pcm.tobytes()
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += self.SAMPLES
            await asyncio.sleep(self._start + self._pts / self.RATE - time.monotonic())
        frame = AudioFrame(format="s16", layout="mono", samples=self.SAMPLES)
        frame.planes[0].update(self._pcm)
        frame.pts = self._pts
        frame.sample_rate = self.RATE
        frame.time_base = fractions.Fraction(1, self.RATE)
        return frame


def frame_peak(frame: AudioFrame) -> int:
    if frame.format.name != "s16":
        raise BenchError(f"decoded audio in {frame.format.name}, expected s16")
    samples = array.array("h")
    samples.frombytes(bytes(frame.planes[0]))
    return max(max(samples, default=0), -min(samples, default=0))


async def aiortc_call(http: aiohttp.ClientSession, server: ServerProcess) -> dict:
    """One call; times in ms from createOffer. Raises BenchError when any step fails."""
    assert server.url is not None
    loop = asyncio.get_running_loop()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    connected: asyncio.Future[float] = loop.create_future()
    echoed: asyncio.Future[float] = loop.create_future()
    listeners: list[asyncio.Task] = []
    location: str | None = None
    result: dict = {}

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if connected.done():
            return
        if pc.connectionState == "connected":
            connected.set_result(time.perf_counter())
        elif pc.connectionState in ("failed", "closed"):
            connected.set_exception(BenchError(f"connection {pc.connectionState}"))

    async def listen(track: MediaStreamTrack) -> None:
        try:
            while not echoed.done():
                frame = await track.recv()
                if frame_peak(frame) >= ECHO_PEAK:
                    echoed.set_result(time.perf_counter())
        except MediaStreamError:
            pass
        except BenchError as exc:
            if not echoed.done():
                echoed.set_exception(exc)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            listeners.append(asyncio.ensure_future(listen(track)))

    pc.addTrack(ToneTrack())
    try:
        t0_epoch, t0 = time.time(), time.perf_counter()
        offer = await pc.createOffer()
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await pc.setLocalDescription(offer)
            t_gathered = time.perf_counter()
            async with http.post(
                urljoin(server.url, CALLS_PATH),
                data=pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp"},
            ) as response:
                body = await response.text()
                if response.status != 201:
                    raise BenchError(f"POST answered {response.status}: {body[:300]}")
                location = urljoin(str(response.url), response.headers["Location"])
            t_answer = time.perf_counter()
            await pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
            t_connected = await connected
        async with asyncio.timeout(ECHO_TIMEOUT):
            t_echo = await echoed
        call_id = urlsplit(location).path.rsplit("/", 1)[-1]
        result = {
            "call_id": call_id,
            "gather_ms": 1000 * (t_gathered - t0),
            "answer_ms": 1000 * (t_answer - t0),
            "connected_ms": 1000 * (t_connected - t0),
            "echo_ms": 1000 * (t_echo - t0),
            **await server.wait_connected(call_id, t0_epoch),
        }
    except TimeoutError:  # before OSError, whose subclass it is
        stage = "first echoed audio" if connected.done() else "connected"
        raise BenchError(f"no {stage} in time (state {pc.connectionState})") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise BenchError(f"signaling failed: {exc!r}") from None
    finally:
        try:
            if location is not None:
                async with http.delete(location) as response:
                    if response.status != 200:
                        raise BenchError(f"DELETE answered {response.status}")
        finally:
            for task in listeners:
                task.cancel()
            async with asyncio.timeout(HTTP_TIMEOUT):
                await pc.close()
            await asyncio.gather(*listeners, return_exceptions=True)
    return result


# The Chromium client.

# The call, in two halves so that it stays up until the server has logged it connected: the
# browser's "connected" (its ICE pair writable, DTLS up) can come a little before the server has
# taken in the browser's last DTLS flight.
CHROMIUM_CONNECT = """async ({callsPath, connectMs}) => {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not connected within ${connectMs} ms`)), connectMs);
  });
  const mic = await navigator.mediaDevices.getUserMedia({audio: true});
  const pc = new RTCPeerConnection();
  const call = window.benchCall = {pc, mic, location: null};
  try {
    for (const track of mic.getAudioTracks()) pc.addTrack(track, mic);
    const connected = new Promise((resolve, reject) => {
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === "connected") resolve(performance.now());
        else if (pc.connectionState === "failed") reject(new Error("connection failed"));
      };
    });
    connected.catch(() => {});
    const t0 = performance.now();
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const tLocal = performance.now();
    const posted = pc.localDescription.sdp;  // at once: no waiting for ICE gathering
    const response = await Promise.race([fetch(callsPath, {
      method: "POST", headers: {"Content-Type": "application/sdp"}, body: posted,
    }), deadline]);
    const answer = await response.text();
    if (response.status !== 201) throw new Error(`POST answered ${response.status}: ${answer}`);
    call.location = new URL(response.headers.get("Location"), response.url).href;
    const tAnswer = performance.now();
    await pc.setRemoteDescription({type: "answer", sdp: answer});
    const tConnected = await Promise.race([connected, deadline]);
    return {
      location: call.location,
      t0_epoch: (performance.timeOrigin + t0) / 1000,
      local_ms: tLocal - t0,
      answer_ms: tAnswer - t0,
      connected_ms: tConnected - t0,
      candidates_in_offer: (posted.match(/^a=candidate/gm) || []).length,
    };
  } finally {
    clearTimeout(timer);
  }
}"""

# Hang up first (DELETE), then close: closing first would end the call from the client's side.
CHROMIUM_HANG_UP = """async () => {
  const call = window.benchCall;
  window.benchCall = null;
  if (!call) return 0;
  try {
    return call.location ? (await fetch(call.location, {method: "DELETE"})).status : 200;
  } finally {
    call.pc.close();
    for (const track of call.mic.getTracks()) track.stop();
  }
}"""


async def chromium_call(page, server: ServerProcess) -> dict:
    try:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT + HTTP_TIMEOUT):
                result = await page.evaluate(
                    CHROMIUM_CONNECT,
                    {"callsPath": CALLS_PATH, "connectMs": CONNECT_TIMEOUT * 1000},
                )
            if result["candidates_in_offer"]:
                raise BenchError("Chromium waited for candidates before posting: timing is wrong")
            call_id = urlsplit(result.pop("location")).path.rsplit("/", 1)[-1]
            result.update(
                call_id=call_id, **await server.wait_connected(call_id, result["t0_epoch"])
            )
        finally:
            async with asyncio.timeout(HTTP_TIMEOUT):
                status = await page.evaluate(CHROMIUM_HANG_UP)
    except TimeoutError:
        raise BenchError("the browser stopped answering") from None
    except PlaywrightError as exc:  # the snippet threw: say what the page said
        raise BenchError(str(exc).splitlines()[0]) from None
    if status != 200:
        raise BenchError(f"DELETE answered {status}")
    return result


# The run.


@dataclass
class Samples:
    calls: list[dict] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [call[key] for call in self.calls if key in call]


async def measure(servers: dict[str, ServerProcess], calls: int) -> dict[tuple[str, str], Samples]:
    if not os.access(CHROMIUM, os.X_OK):
        raise BenchError(f"no Chromium at {CHROMIUM}")
    samples = {scenario: Samples() for scenario in SCENARIOS}
    urls = {name: server.url or "" for name, server in servers.items()}
    pages_for: dict[str, str] = {  # same origin as the server, so that fetch needs no CORS
        "voicewire": urljoin(urls["voicewire"], "/healthz"),
        "aiortc": urljoin(urls["aiortc"], "/"),
    }
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=chromium_args(None)
        )
        try:
            context = await browser.new_context()
            pages = {}
            for server, page_url in pages_for.items():
                page = await context.new_page()
                response = await page.goto(page_url, timeout=HTTP_TIMEOUT * 1000)
                if response is None or response.status != 200:
                    raise BenchError(f"cannot open {page_url}")
                pages[server] = page
            timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                for number in range(WARMUP + calls):
                    shift = number % len(SCENARIOS)
                    for client, server in SCENARIOS[shift:] + SCENARIOS[:shift]:
                        try:
                            if client == "aiortc":
                                result = await aiortc_call(http, servers[server])
                            else:
                                await pages[server].bring_to_front()
                                result = await chromium_call(pages[server], servers[server])
                        except BenchError as exc:
                            raise BenchError(f"{client} → {server}, call {number}: {exc}") from None
                        if number >= WARMUP:
                            samples[(client, server)].calls.append(result)
                        await asyncio.sleep(SETTLE)
                    if number == WARMUP - 1:
                        print("warm-up done", file=sys.stderr, flush=True)
                    elif number >= WARMUP and (number - WARMUP + 1) % 10 == 0:
                        done = number - WARMUP + 1
                        print(f"{done}/{calls} rounds", file=sys.stderr, flush=True)
        finally:
            await browser.close()
    return samples


def check_logs(servers: dict[str, ServerProcess]) -> None:
    """A server that logged an error (or anything but JSON) makes the whole run suspect."""
    for name, server in servers.items():
        if errors := server.errors():
            shown = "\n".join(json.dumps(r) for r in errors[:5])
            raise BenchError(f"{name} logged errors during the run:\n{shown}")


def summarize(values: list[float]) -> dict | None:
    if not values:
        return None
    return {
        "p50": round(statistics.median(values), 2),
        "p99": round(percentile(values, 0.99), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        "n": len(values),
    }


# CPU used by other processes while we ran (the machine may be shared).


def _machine_busy() -> tuple[float, float]:
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / tick, sum(fields[:8]) / tick


class CpuWatch:
    def __init__(self) -> None:
        self.busy0, self.total0 = _machine_busy()
        self.ours0 = tree_cpu(os.getpid())
        self.wall0 = time.monotonic()

    def foreign_share(self) -> float:
        """Cores' worth of CPU others used (0 = nobody else ran; 1 = one core all the time)."""
        busy, _ = _machine_busy()
        ours = tree_cpu(os.getpid())
        used = sum(v - self.ours0.get(pid, 0.0) for pid, v in ours.items())
        wall = time.monotonic() - self.wall0
        return max(0.0, (busy - self.busy0) - used) / wall


# Report.

LABELS = {
    ("aiortc", "voicewire"): "aiortc client → voicewire",
    ("aiortc", "aiortc"): "aiortc client → aiortc server",
    ("chromium", "voicewire"): "Chromium → voicewire",
    ("chromium", "aiortc"): "Chromium → aiortc server",
}


METRICS = {  # key: (heading, which clients have it)
    "connected_ms": ("connected (client)", CLIENTS),
    "server_connected_ms": ("connected (server)", CLIENTS),
    "echo_ms": ("first echoed audio", ("aiortc",)),
}


def report(samples: dict[tuple[str, str], Samples], calls: int) -> dict:
    summary: dict = {}
    for (client, server), found in samples.items():
        keys = [*METRICS, "answer_ms", "server_setup_ms"]
        keys.append("gather_ms" if client == "aiortc" else "local_ms")
        summary[f"{client}->{server}"] = {k: summarize(found.values(k)) for k in keys}

    def cells(stats: dict | None, keys: tuple[str, ...] = ("p50", "p99", "min")) -> str:
        return "".join(f"{stats[k]:8.1f}" if stats else f"{'–':>8}" for k in keys)

    print()
    print(f"Connection setup on loopback: ms from createOffer, {calls} sequential calls per row")
    print(
        f"{'':30}" + "".join(f"{heading:^24}  " for heading, _ in METRICS.values()) + "answer   SLD"
    )
    print(f"{'':30}" + f"{'p50     p99     min':>24}  " * len(METRICS) + "   p50   p50")
    for (client, server), label in LABELS.items():
        s = summary[f"{client}->{server}"]
        line = f"{label:30}" + "".join(f"{cells(s[key])}  " for key in METRICS)
        line += f"{cells(s['answer_ms'], ('p50',))[2:]}"
        line += f"{cells(s.get('gather_ms') or s.get('local_ms'), ('p50',))[2:]}"
        print(line)
    print(
        '  connected (client): the client\'s connectionState "connected" (its ICE pair works,'
        " DTLS is up)\n"
        '  connected (server): the server logs "session connected" (voicewire: DTLS is up on an'
        " address that\n"
        "    passed an ICE check; audio goes out from then on), on the log's clock, ±1 ms\n"
        "  first echoed audio: the first decoded frame with energy back at the aiortc client"
        " (after the\n"
        "    client's own jitter buffer)\n"
        "  answer: createOffer → the SDP answer in hand; SLD: setLocalDescription (aiortc: ICE"
        " gathering,\n"
        "    which it must finish before the POST; Chromium posts at once)"
    )

    ratios = {}
    for client in CLIENTS:
        for key, (_, clients) in METRICS.items():
            if client in clients:
                ours = summary[f"{client}->voicewire"][key]["p50"]
                ratios[f"{client}:{key}"] = round(
                    ours / summary[f"{client}->aiortc"][key]["p50"], 3
                )
    print()
    print("voicewire / aiortc server, at the median:")
    for client in CLIENTS:
        name = "aiortc client" if client == "aiortc" else "Chromium"
        print(
            f"  {name:15}"
            + "   ".join(
                f"{METRICS[key][0]} {ratios[f'{client}:{key}']:.2f}x"
                for key in METRICS
                if f"{client}:{key}" in ratios
            )
        )
    p50 = summary["chromium->voicewire"]["connected_ms"]["p50"]
    ratio = ratios["chromium:connected_ms"]
    targets = {
        "chromium_p50_ms": {"value": p50, "target": TARGET_P50_MS, "met": p50 <= TARGET_P50_MS},
        "chromium_ratio": {"value": ratio, "target": TARGET_RATIO, "met": ratio <= TARGET_RATIO},
    }
    print()
    print("DESIGN §9 targets, Chromium createOffer → connected (client):")
    print(
        f"  p50 {p50:.1f} ms (target ≤ {TARGET_P50_MS:.0f} ms): "
        f"{'met' if targets['chromium_p50_ms']['met'] else 'MISSED'}"
    )
    print(
        f"  {ratio:.2f}x the aiortc server (target ≤ {TARGET_RATIO}x): "
        f"{'met' if targets['chromium_ratio']['met'] else 'MISSED'}"
    )
    return {"summary": summary, "ratios_p50": ratios, "targets": targets}


Measured = tuple[dict[tuple[str, str], Samples], float, float]  # samples, foreign cores, seconds


def run(args: argparse.Namespace, servers: dict[str, ServerProcess]) -> Measured:
    """Start the servers (into ``servers``: main stops them) and measure."""
    servers.update(start_servers(args.log_dir))
    cpu = CpuWatch()
    started = time.monotonic()
    samples = asyncio.run(measure(servers, args.calls))
    foreign = cpu.foreign_share()
    elapsed = time.monotonic() - started
    for server in servers.values():
        server.check_alive()
    time.sleep(0.2)  # the last log lines
    check_logs(servers)
    return samples, foreign, elapsed


def show(args: argparse.Namespace, locked: bool, measured: Measured) -> None:
    """Print the report, write --json."""
    samples, foreign, elapsed = measured
    result = report(samples, args.calls)
    print()
    print(
        f"{elapsed:.0f} s; lock {LOCK_PATH} {'held' if locked else 'NOT held'}; "
        f"other processes used {foreign:.2f} cores meanwhile "
        f"({os.cpu_count()} cores; server logs in {args.log_dir})"
    )
    if foreign > 0.25:
        print("  the machine was busy with something else: expect noisier numbers")
    if args.json:
        result.update(
            calls=args.calls,
            warmup=WARMUP,
            lock_held=locked,
            foreign_cores=round(foreign, 3),
            elapsed_s=round(elapsed, 1),
            machine={"cpus": os.cpu_count(), "python": platform.python_version()},
            samples={f"{c}->{s}": found.calls for (c, s), found in samples.items()},
        )
        write_json(args.json, result)
        print(f"samples in {args.json}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50, help="counted calls per scenario")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every sample here")
    parser.add_argument(
        "--log-dir", type=Path, default=HERE / ".build" / "setup_bench", help="server logs"
    )
    args = parser.parse_args()
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    logging.basicConfig(level=logging.WARNING)
    loopback_only()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    locked = check_lock()
    servers: dict[str, ServerProcess] = {}
    # SIGTERM ends the run like Ctrl-C, so that the servers and Chromium are cleaned up.
    return run_bench(
        "setup_bench",
        lambda: run(args, servers),
        lambda measured: show(args, locked, measured),
        cleanup=lambda: stop_all(servers.values()),
    )


if __name__ == "__main__":
    sys.exit(main())
