"""Capacity benchmark (DESIGN §9): concurrent echo sessions on one transceiver core.

    flock /tmp/voicewire-bench.lock .venv/bin/python benchmarks/capacity_bench.py          # ~6 min
    flock /tmp/voicewire-bench.lock .venv/bin/python benchmarks/capacity_bench.py --quick  # 1.5 min
    ... --json capacity.json
    ... --profile 80 --profile-seconds 20     # hold 80 sessions on voicewire; py-spy and perf

What one run measures, on 127.0.0.1, with the server pinned to CPU 1 and everything else to CPU 0
(taskset), so that CPU 1 carries nothing but the server under test:

- ``voicewire serve`` (gateway, transceiver and echo agent in one process, pinned to CPU 1; its
  relay worker process moved to CPU 0 once it has started): the number of concurrent echo
  sessions, each 50 packets/s each way with Opus decode and encode on the server, is ramped up
  (25, 50, 75, …, then bisected between the last step that passed and the first that failed).
- the aiortc echo server (``benchmarks/aiortc_echo_server.py``: aiohttp + aiortc sending the
  received track back, i.e. decode + encode), pinned to CPU 1 the same way, ramped in small steps.
- the codec-only bound: ``OpusDecoder.decode`` + ``OpusEncoder.encode`` with the transceiver's
  settings (``AudioStream`` builds both with their defaults) on the same 20 ms packets the load
  client sends, in a tight loop pinned to CPU 1: the sessions one core could carry if it did
  nothing else (0.02 s / per-frame codec time). Measured before and after the servers; the faster
  of the two is the bound (the codec cost does not change, only the noise does).

The load is ``benchmarks/load_client.py`` (one asyncio process on CPU 0, no decoding). Each step
holds its sessions for ``hold`` seconds after they all connected and a short settling time, and
records:

- loss: on the way in, from the server's RTCP reports on our stream (an echo server conceals a
  lost packet and still echoes a frame, so the echo alone cannot show it); on the way back, from
  gaps in the echo's sequence numbers; and the echo deficit (packets sent minus echoes received:
  frames the server dropped). loss = max(in + back, deficit), as a share of packets sent.
- jitter: the p99 of |inter-arrival − 20 ms| over consecutive echoed packets, timed on arrival
  in the client: the server's send-interval jitter as loopback shows it;
- CPU: the server process's utime + stime from /proc (all its threads) per second of wall time,
  and per session.

A step passes with loss < 0.1 %, p99 jitter < 5 ms and CPU < 98 % of the core (saturated: /proc
counts 10 ms ticks, so a process with no headroom left can read 99.9 %); the capacity is
the largest passing step below the smallest failing one. A window during which processes other
than this benchmark's used either CPU is repeated once the machine is quiet, and a failing
window is measured once more (the step passes if that one does: a shared machine makes false
failures far likelier than false passes); a step disturbed on every attempt is flagged (*), and
one whose load CPU was nearly saturated (!) ends the ramp. The run fails loudly (exit 1, no
table) if the first step's sessions do not all connect or a server dies.

Run it under ``flock /tmp/voicewire-bench.lock``: another benchmark may share this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import select
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from machine import LOCK_PATH, check_lock, cpu_busy
from processes import BenchError, Children, children_of, cmdline, cpu_seconds
from runner import run_bench, say, write_json

HERE = Path(__file__).resolve().parent
BUILD = HERE / ".build"
PYTHON = sys.executable
FRAME = 0.020

LOSS_LIMIT = 0.001  # < 0.1 %
JITTER_LIMIT_MS = 5.0  # p99 < 5 ms
CPU_LIMIT = 0.98  # < 100 % of the core: /proc counts 10 ms ticks, so a saturated process can
# read 99.9 % over a window; above 98 % it has no headroom left and counts as saturated
FOREIGN_LIMIT = 0.1  # cores of the server CPU used by other processes that void a window
LOAD_FOREIGN_LIMIT = 0.2  # the same on the load CPU (the load client and relay are ours)
LOAD_SIDE_LIMIT = 0.9  # load CPU busier than this: the load side may be the bottleneck
ATTEMPTS = 4
TARGETS = {"sessions": 100, "vs_aiortc": 10.0, "vs_codec": 0.8}


@dataclass(frozen=True)
class Plan:
    hold: float  # seconds measured per step
    settle: float  # seconds after connecting before measuring
    voicewire_steps: tuple[int, ...]  # first steps; then +step until a failure
    voicewire_increment: int
    voicewire_max: int
    aiortc_steps: tuple[int, ...]
    aiortc_increment: int
    aiortc_max: int
    refine: int  # bisection trials between the last pass and the first failure
    codec_seconds: float
    codec_runs: int  # codec measurements (before and after the servers)


# The settling time outlasts the transient of connecting a step's new sessions: their DTLS
# handshakes stall the loop, every session's jitter buffer raises its delay to cover the stall,
# then lowers it by one frame per second (up to 100 ms: 5 s), each time releasing a frame early.
FULL = Plan(10.0, 8.0, (25, 50, 75, 100), 25, 600, (2, 4, 8, 12, 16), 4, 80, 2, 6.0, 2)
QUICK = Plan(3.0, 5.0, (40, 80), 40, 600, (4, 12), 8, 80, 0, 2.0, 1)


# --- processes ----------------------------------------------------------------------------------


def _udp_drops(pids: Sequence[int]) -> int:
    """Datagrams the kernel dropped at the UDP sockets these processes hold (queue full)."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    drops = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes:
            drops += int(fields[-1])
    return drops


# --- servers and the load client ----------------------------------------------------------------


@dataclass
class Server:
    kind: str  # "voicewire" or "aiortc"
    process: subprocess.Popen
    url: str
    log: Path
    pids: list[int] = field(default_factory=list)  # the measured process (CPU 1) first

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(
                f"{self.kind} server exited with status {self.process.returncode}:\n"
                + self.log.read_text()[-3000:]
            )


def start_server(children: Children, kind: str, server_cpu: int, load_cpu: int) -> Server:
    BUILD.mkdir(exist_ok=True)
    log = BUILD / f"capacity-{kind}.log"
    if kind == "voicewire":
        argv = [PYTHON, "-m", "voicewire", "serve", "--agent", "echo", "--http", "127.0.0.1:0"]
        argv += ["--udp", "127.0.0.1:0", "--max-sessions", "5000", "--log-level", "info"]
    else:
        argv = [PYTHON, str(HERE / "aiortc_echo_server.py"), "--http", "127.0.0.1:0"]
    with log.open("w") as out:
        process = children.start(
            ["taskset", "-c", str(server_cpu), *argv],
            stdout=subprocess.DEVNULL,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
    server = Server(kind, process, "", log, [process.pid])
    deadline = time.monotonic() + 30
    while not server.url:
        server.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(
                f"{kind} server did not say it was serving:\n{log.read_text()[-2000:]}"
            )
        for line in log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("msg") == "serving":
                    server.url = entry["url"]
        time.sleep(0.05)
    if kind == "voicewire":
        # The relay worker is a child process: it forwards for the load, so it goes to CPU 0.
        while True:
            workers = [
                p for p in children_of(process.pid) if "voicewire.relay.worker" in cmdline(p)
            ]
            if workers:
                break
            server.check_alive()
            if time.monotonic() > deadline:
                raise BenchError("the relay worker process of voicewire serve did not appear")
            time.sleep(0.05)
        for worker in workers:
            subprocess.run(
                ["taskset", "-pc", str(load_cpu), str(worker)], check=True, capture_output=True
            )
        server.pids += workers
        children.adopt(process, workers)
    masks = {pid: sorted(os.sched_getaffinity(pid)) for pid in server.pids}
    if masks[process.pid] != [server_cpu]:
        raise BenchError(f"{kind} server is not pinned to CPU {server_cpu}: {masks}")
    return server


class LoadClient:
    """benchmarks/load_client.py in control mode, pinned to the load CPU."""

    def __init__(self, children: Children, url: str, cpu: int, name: str) -> None:
        self.log = BUILD / f"capacity-client-{name}.log"
        self._children = children
        with self.log.open("w") as err:
            self.process = children.start(
                ["taskset", "-c", str(cpu), PYTHON, str(HERE / "load_client.py")]
                + ["--url", url, "--control"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self._buffer = b""
        ready = self._read(60)
        if not ready.get("ready"):
            raise BenchError(f"load client did not start: {ready}")

    def request(self, command: dict, timeout: float) -> dict:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(command).encode() + b"\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise BenchError(f"load client died:\n{self.log.read_text()[-3000:]}") from None
        return self._read(timeout)

    def _read(self, timeout: float) -> dict:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"load client did not answer in {timeout:.0f} s")
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise BenchError(f"load client exited:\n{self.log.read_text()[-3000:]}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        with contextlib.suppress(BenchError, OSError, ValueError):
            self.request({"cmd": "quit"}, 1.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(20)
        self._children.stop(self.process)


# --- one step -----------------------------------------------------------------------------------


def measure_step(
    server: Server, client: LoadClient, sessions: int, plan: Plan, args: argparse.Namespace
) -> dict:
    """Bring the load to ``sessions``, let it settle, and measure a window.

    A window during which other processes used either CPU is repeated once the machine is quiet
    again; a failing window is measured once more, and the step passes if that one does (a
    shared machine makes false failures far likelier than false passes). At most ``ATTEMPTS``
    windows; if every one was disturbed the last is kept and flagged.
    """
    resize = client.request({"cmd": "resize", "total": sessions, "timeout": 60}, 120)
    server.check_alive()
    if resize["sessions"] < sessions:
        return {
            "sessions": sessions,
            "connected": resize["sessions"],
            "passed": False,
            "why": f"only {resize['sessions']} of {sessions} connected: {resize['failures'][:2]}",
            "resize": resize,
        }
    time.sleep(plan.settle)
    windows: list[dict] = []
    confirmed = False
    for attempt in range(1, ATTEMPTS + 1):
        result = _window(server, client, sessions, plan, args)
        result["attempt"] = attempt
        windows.append(result)
        if result["disturbed"]:
            say(f"    disturbed by other processes ({_brief(result)}); waiting, then again")
            _wait_until_quiet(server, client)
            continue
        if result["passed"] or confirmed:
            break
        confirmed = True
        say(f"    failed ({_brief(result)}); measuring again to confirm")
    clean = [w for w in windows if not w["disturbed"]]
    passing = [w for w in clean if w["passed"]]
    result = passing[-1] if passing else (clean[-1] if clean else windows[-1])
    # Passed, but only on the window that was to confirm a failure: the step is marginal.
    result["marginal"] = result["passed"] and any(not w["passed"] for w in clean if w is not result)
    result["resize"] = resize
    result["windows"] = [
        {k: w[k] for k in ("passed", "why", "disturbed", "loss_pct", "jitter_p99_ms", "cpu")}
        for w in windows
    ]
    return result


def _our_load_pids(server: Server, client: LoadClient) -> list[int]:
    """Processes of this benchmark on the load CPU, and the kernel's softirq threads."""
    pids = [os.getpid(), client.process.pid, *server.pids[1:]]
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().startswith("ksoftirqd/"):
                pids.append(int(comm.parent.name))
    return pids


def _window(
    server: Server, client: LoadClient, sessions: int, plan: Plan, args: argparse.Namespace
) -> dict:
    load_cpu, server_cpu = f"cpu{args.load_cpu}", f"cpu{args.server_cpu}"
    ours = _our_load_pids(server, client)
    busy0, cpu0, drops0 = cpu_busy(), cpu_seconds([server.pid]), _udp_drops(server.pids)
    ours0 = cpu_seconds(ours)
    wall0 = time.monotonic()
    # RTCP reports sent during the settling time may open the window's inbound-loss interval.
    lookback = max(0.0, plan.settle - 1.0)
    window = client.request(
        {"cmd": "measure", "seconds": plan.hold, "lookback": lookback}, plan.hold + 30
    )
    wall = time.monotonic() - wall0
    busy1, cpu1, drops1 = cpu_busy(), cpu_seconds([server.pid]), _udp_drops(server.pids)
    ours1 = cpu_seconds(ours)
    server.check_alive()
    cpu = (cpu1 - cpu0) / wall
    foreign = max(0.0, (busy1[server_cpu] - busy0[server_cpu]) / wall - cpu)
    load_busy = (busy1[load_cpu] - busy0[load_cpu]) / wall
    load_foreign = max(0.0, load_busy - (ours1 - ours0) / wall)
    steal = (busy1[server_cpu + "_steal"] - busy0[server_cpu + "_steal"]) / wall
    result = _step_result(sessions, window, cpu, foreign, load_busy, steal, drops1 - drops0)
    result["load_foreign_cpu"] = round(load_foreign, 3)
    result["disturbed"] = foreign > FOREIGN_LIMIT or load_foreign > LOAD_FOREIGN_LIMIT
    result["load_saturated"] = load_busy > LOAD_SIDE_LIMIT
    return result


def _wait_until_quiet(server: Server, client: LoadClient, limit: float = 60.0) -> None:
    """Until the CPUs used by processes other than ours stay below 0.1 of a core for 2 s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        ours = [server.pid, *_our_load_pids(server, client)]
        busy0, ours0, wall0 = cpu_busy(), cpu_seconds(ours), time.monotonic()
        time.sleep(2.0)
        busy1, ours1 = cpu_busy(), cpu_seconds(ours)
        cpus = [c for c in busy1 if not c.endswith("_steal")]
        others = sum(busy1[c] - busy0[c] for c in cpus) - (ours1 - ours0)
        if others / (time.monotonic() - wall0) < 0.1:
            return
    say("    the machine stayed busy; measuring anyway")


def _step_result(
    sessions: int, w: dict, cpu: float, foreign: float, load_side: float, steal: float, drops: int
) -> dict:
    sent = w["sent"] or 1
    in_loss = w["rtcp_lost"] / w["rtcp_expected"] if w["rtcp_expected"] else 0.0
    back_expected = w["received"] + w["gap_lost"]
    back_loss = w["gap_lost"] / back_expected if back_expected else 1.0
    deficit = max(0.0, w["echo_deficit"]) / sent
    loss = max(in_loss + back_loss, deficit)
    jitter = w["jitter_p99_ms"] if w["jitter_p99_ms"] is not None else float("inf")
    live = w["sessions"]
    reasons = []
    if live < sessions:
        reasons.append(f"{sessions - live} sessions failed")
    if w["failed_during"]:
        reasons.append(f"{w['failed_during']} sessions failed while measured: {w['failures'][:2]}")
    if loss >= LOSS_LIMIT:
        reasons.append(f"loss {100 * loss:.2f} %")
    if jitter >= JITTER_LIMIT_MS:
        reasons.append(f"jitter p99 {jitter:.1f} ms")
    if cpu >= CPU_LIMIT:
        reasons.append(f"CPU {100 * cpu:.0f} %")
    return {
        "sessions": sessions,
        "connected": live,
        "passed": not reasons,
        "why": "; ".join(reasons),
        "loss_pct": round(100 * loss, 4),
        "in_loss_pct": round(100 * in_loss, 4),
        "back_loss_pct": round(100 * back_loss, 4),
        "deficit_pct": round(100 * deficit, 4),
        "rtcp_coverage": round(w["rtcp_expected"] / sent, 3),
        "jitter_p50_ms": w["jitter_p50_ms"],
        "jitter_p99_ms": w["jitter_p99_ms"],
        "jitter_p999_ms": w["jitter_p999_ms"],
        "jitter_max_ms": w["jitter_max_ms"],
        "interval_late_p99_ms": w["late_p99_ms"],  # signed: inter-arrival - 20 ms
        "interval_early_p1_ms": w["early_p1_ms"],
        "intervals_under_10ms": w["short_share"],  # share of inter-arrivals < 10 ms (early frames)
        "intervals_over_30ms": w["long_share"],
        "cpu": round(cpu, 4),
        "cpu_ms_per_session": round(1000 * cpu / max(1, live), 3),
        "kernel_drops": drops,
        "foreign_cpu": round(foreign, 3),
        "steal": round(steal, 3),
        "load_cpu_busy": round(load_side, 3),
        "client": {
            k: w[k]
            for k in (
                "sent",
                "received",
                "gap_lost",
                "rtcp_expected",
                "rtcp_lost",
                "echo_deficit",
                "srtp_errors",
            )
        }
        | {
            "send_late_p99_ms": w["client_send_late_p99_ms"],
            "cpu": w["client_cpu"],
            "seconds": w["seconds"],
        },
    }


def _brief(r: dict) -> str:
    if "loss_pct" not in r:
        return r["why"]
    return (
        f"loss {r['loss_pct']:.3f} % (in {r['in_loss_pct']:.3f}, back {r['back_loss_pct']:.3f}, "
        f"deficit {r['deficit_pct']:.3f}), jitter p99 {r['jitter_p99_ms']:.2f} ms, "
        f"CPU {100 * r['cpu']:.1f} % ({r['cpu_ms_per_session']:.2f} ms/s per session), "
        f"load CPU {100 * r['load_cpu_busy']:.0f} %, foreign {r['foreign_cpu']:.2f}"
    )


def ramp(
    children: Children, kind: str, plan: Plan, args: argparse.Namespace
) -> tuple[list[dict], dict]:
    """Steps up until one fails, then bisect; the steps, and facts about the server."""
    if kind == "voicewire":
        first, increment, ceiling = (
            plan.voicewire_steps,
            plan.voicewire_increment,
            plan.voicewire_max,
        )
        resolution = 5
    else:
        first, increment, ceiling = plan.aiortc_steps, plan.aiortc_increment, plan.aiortc_max
        resolution = 1
    server = start_server(children, kind, args.server_cpu, args.load_cpu)
    client = LoadClient(children, server.url, args.load_cpu, kind)
    facts = {"pids": server.pids, "url": server.url}
    steps: list[dict] = []
    try:
        queue = list(first)
        while queue:
            sessions = queue.pop(0)
            say(f"  {kind}: {sessions} sessions ...")
            result = measure_step(server, client, sessions, plan, args)
            steps.append(result)
            say(f"    {'pass' if result['passed'] else 'FAIL'}: {_brief(result)}")
            if len(steps) == 1 and result["connected"] < sessions:
                raise BenchError(
                    f"{kind}: only {result['connected']} of {sessions} sessions connected: "
                    f"{result['why']}"
                )
            if not result["passed"]:
                break
            if result.get("load_saturated"):
                say("    the load CPU is saturated: the ramp stops here (the client is the limit)")
                break
            if not queue and sessions + increment <= ceiling:
                queue.append(sessions + increment)
        for _ in range(plan.refine):
            passed = [s["sessions"] for s in steps if s["passed"]]
            failed = [s["sessions"] for s in steps if not s["passed"]]
            if not passed or not failed:
                break
            low = max(p for p in passed if p < min(failed)) if min(failed) > min(passed) else None
            high = min(failed)
            if low is None or high - low <= resolution:
                break
            middle = (low + high) // 2
            client.request({"cmd": "resize", "total": middle}, 60)
            time.sleep(2 * plan.settle)  # let the server recover from the overload
            say(f"  {kind}: {middle} sessions (bisecting {low}..{high}) ...")
            result = measure_step(server, client, middle, plan, args)
            steps.append(result)
            say(f"    {'pass' if result['passed'] else 'FAIL'}: {_brief(result)}")
    finally:
        client.close()
        server.check_alive()
        facts["errors_logged"] = _errors_logged(server.log)
        children.stop(server.process)
    return sorted(steps, key=lambda s: s["sessions"]), facts


def _errors_logged(log: Path) -> list[str]:
    errors = []
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            if json.loads(line).get("level") in ("error", "critical"):
                errors.append(line[:300])
    return errors[:5]


def capacity(steps: list[dict]) -> dict | None:
    """The largest passing step below the smallest failing one."""
    failed = [s["sessions"] for s in steps if not s["passed"]]
    limit = min(failed) if failed else float("inf")
    passing = [s for s in steps if s["passed"] and s["sessions"] < limit]
    return max(passing, key=lambda s: s["sessions"]) if passing else None


# --- the codec-only bound -----------------------------------------------------------------------


def codec_worker(seconds: float) -> dict:
    """Runs pinned to the server CPU: per-frame decode and encode time, the transceiver's way."""
    sys.path.insert(0, str(HERE))
    from load_client import speech_packets

    from voicewire.rtc.opus import OpusDecoder, OpusEncoder

    packets = speech_packets()
    decoder, encoder = OpusDecoder(), OpusEncoder()  # as AudioStream builds them

    def one_pass() -> tuple[float, float, float]:
        """Per-frame seconds: decode alone, encode alone, and decode + encode interleaved."""
        started = time.perf_counter()
        pcm = [decoder.decode(p) for p in packets]
        decode = time.perf_counter() - started
        started = time.perf_counter()
        for frame in pcm:
            encoder.encode(frame)
        encode = time.perf_counter() - started
        started = time.perf_counter()
        for packet in packets:
            encoder.encode(decoder.decode(packet))
        both = time.perf_counter() - started
        n = len(packets)
        return decode / n, encode / n, both / n

    one_pass()  # warm up
    runs = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(runs) < 5:
        runs.append(one_pass())
    # Many sessions: one codec state pair each, round robin, as a transceiver holds them.
    states = [(OpusDecoder(), OpusEncoder()) for _ in range(150)]
    many = []
    for _ in range(3):
        started = time.perf_counter()
        for packet in packets:
            for state_decoder, state_encoder in states:
                state_encoder.encode(state_decoder.decode(packet))
        many.append((time.perf_counter() - started) / (len(packets) * len(states)))
    best = min(runs, key=lambda r: r[2])
    return {
        "frames_per_run": len(packets),
        "runs": len(runs),
        "decode_us": round(1e6 * min(r[0] for r in runs), 2),
        "encode_us": round(1e6 * min(r[1] for r in runs), 2),
        "frame_us": round(1e6 * best[2], 2),
        "frame_us_median": round(1e6 * statistics.median(r[2] for r in runs), 2),
        "frame_us_150_states": round(1e6 * min(many), 2),
        "sessions_per_core": round(FRAME / best[2], 1),
        "sessions_per_core_150_states": round(FRAME / min(many), 1),
        "cpu": sorted(os.sched_getaffinity(0)),
    }


def codec_bound(children: Children, cpu: int, seconds: float) -> dict:
    argv = ["taskset", "-c", str(cpu), PYTHON, str(Path(__file__).resolve())]
    argv += ["--codec-worker", str(seconds)]
    process = children.start(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=seconds * 6 + 60)
    except subprocess.TimeoutExpired:
        children.stop(process)
        raise BenchError("the codec measurement did not finish") from None
    children.stop(process)
    if process.returncode != 0:
        raise BenchError(f"the codec measurement failed:\n{err.decode()[-2000:]}")
    return json.loads(out)


# --- profiling ----------------------------------------------------------------------------------


def profile(children: Children, args: argparse.Namespace) -> dict:
    """Hold ``--profile`` sessions on voicewire and sample the transceiver (py-spy, perf).

    py-spy samples in its default blocking mode (it stops the process for each sample, 100 times
    a second): its ``--nonblocking`` mode reads the stacks of a running interpreter and returns
    torn ones (callers that never call the leaf), which skews the attribution towards long C
    calls. perf, when installed, splits the same load by shared object (libopus, the interpreter,
    the kernel, libsrtp, uvloop, ...), which py-spy cannot see below a Python line.
    """
    py_spy = shutil.which("py-spy") or str(Path(PYTHON).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise BenchError("py-spy is not installed: .venv/bin/pip install py-spy")
    plan = QUICK if args.quick else FULL
    seconds = int(args.profile_seconds)
    server = start_server(children, "voicewire", args.server_cpu, args.load_cpu)
    client = LoadClient(children, server.url, args.load_cpu, "profile")
    raw, svg, perf_data = (BUILD / f"capacity-profile.{ext}" for ext in ("txt", "svg", "perf"))
    pin = ["taskset", "-c", str(args.load_cpu)]
    result: dict = {"sessions": args.profile}
    try:
        say(f"voicewire: {args.profile} sessions, an unprofiled window first ...")
        result["unprofiled"] = measure_step(server, client, args.profile, plan, args)
        say(f"    {_brief(result['unprofiled'])}")
        say(f"py-spy record, {seconds} s ...")
        spy = [*pin, py_spy, "record", "--pid", str(server.pid), "--rate", "100"]
        _run_tool(children, [*spy, "--duration", str(seconds), "--format", "raw", "-o", str(raw)])
        _run_tool(children, [*spy, "--duration", str(min(seconds, 10)), "-o", str(svg)])
        result.update(raw=str(raw), svg=str(svg), **summarise_profile(raw))
        if shutil.which("perf"):
            say(f"perf record, {min(seconds, 10)} s ...")
            _run_tool(
                children,
                [*pin, "perf", "record", "-F", "499", "-p", str(server.pid), "-o", str(perf_data)]
                + ["--", "sleep", str(min(seconds, 10))],
            )
            result["perf_by_object"] = perf_by_object(perf_data)
    finally:
        client.close()
        children.stop(server.process)
    return result


def _run_tool(children: Children, argv: list[str]) -> None:
    process = children.start(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{argv[3]} did not finish") from None
    finally:
        children.stop(process)
    if process.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed:\n{err.decode()[-2000:]}")


def perf_by_object(data: Path) -> list[tuple[str, float]]:
    done = subprocess.run(
        ["perf", "report", "-i", str(data), "--no-children", "--sort", "dso", "--stdio"],
        capture_output=True,
        text=True,
    )
    shares = []
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].endswith("%"):
            shares.append((parts[1], float(parts[0][:-1])))
    return shares


# Where a sample of the transceiver's main thread goes, by its innermost Python frame. A C call
# (libopus, libsrtp, a socket syscall) is charged to the Python line that made it.
_CATEGORIES = (
    ("codec: Opus encode", ("opus.py:OpusEncoder.encode",)),
    ("codec: Opus decode", ("opus.py:OpusDecoder.",)),
    ("SRTP (pylibsrtp + wrapper)", ("pylibsrtp/", "rtc/srtp.py:")),
    (
        "socket send: transport.sendto (syscall), charged to its caller",
        ("endpoint.py:TransceiverEndpoint._pump", "endpoint.py:TransceiverEndpoint._send"),
    ),
    ("event loop (uvloop: recv, epoll, callbacks, task steps)", ("asyncio/runners.py:",)),
    (
        "agent hand-off (Call, asyncio.Queue, echo task)",
        ("agents/", "asyncio/queues.py:", "asyncio/mixins.py:", "asyncio/locks.py:"),
    ),
    ("timers (timer heap, get_timer)", ("timer_heap.py:", "get_timer", "next_deadline")),
    ("jitter buffer", ("jitter_buffer.py:",)),
    ("RTP / RTCP", ("rtc/rtp.py:", "rtc/rtcp.py:")),
    ("audio stream (pacing, queue)", ("audio_stream.py:",)),
    ("session composition (ICE, DTLS polls, events)", ("session.py:", "ice_lite.py:", "dtls.py:")),
    ("transceiver IO layer (demux, headers)", ("transceiver/", "wire/")),
    ("event objects (dataclass __init__)", ("<string>:",)),
)


def summarise_profile(raw: Path) -> dict:
    """Categories, self time and inclusive time of the main thread, from py-spy's raw output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    total = main = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        if "voicewire/serve.py" not in stack:  # another thread (the relay supervisor's)
            continue
        main += count
        frames = [_frame_name(f) for f in stack.split(";")]
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
        categories[_category(frames[-1])] += count

    def shares(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(name, round(100 * c / main, 2)) for name, c in counter.most_common(n)]

    return {
        "samples": total,
        "main_thread_samples": main,
        "categories": shares(categories, 20),
        "self_top": shares(own, 30),
        "inclusive_top": shares(inclusive, 60),
    }


def _category(leaf: str) -> str:
    for name, markers in _CATEGORIES:
        if any(marker in leaf for marker in markers):
            return name
    return "other: " + leaf


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "Class.function (path/to/file.py:123)"
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{name}"


# --- report -------------------------------------------------------------------------------------


def report(results: dict) -> str:
    lines = []
    facts = results["machine"]
    lines.append(
        f"capacity_bench: {facts['cpu_model']}, {facts['nproc']} CPUs, Python {facts['python']}; "
        f"server on CPU {results['server_cpu']}, load client + relay worker on CPU "
        f"{results['load_cpu']}; lock {LOCK_PATH} {'held' if results['lock_held'] else 'NOT held'}"
    )
    lines.append("")
    header = (
        f"{'server':<10} {'sessions':>8} {'loss %':>7} {'in %':>6} {'back %':>6} {'p99 ms':>7} "
        f"{'p99.9':>6} {'CPU %':>6} {'ms/s/sess':>9} {'load CPU':>8}  verdict"
    )
    lines.append(header)
    lines.append("-" * len(header))
    for kind in ("voicewire", "aiortc"):
        for s in results[kind]["steps"]:
            if "loss_pct" not in s:
                lines.append(f"{kind:<10} {s['sessions']:>8}  {s['why']}")
                continue
            flag = "".join(
                mark
                for key, mark in (("disturbed", "*"), ("load_saturated", "!"), ("marginal", " †"))
                if s.get(key)
            )
            lines.append(
                f"{kind:<10} {s['sessions']:>8} {s['loss_pct']:>7.3f} {s['in_loss_pct']:>6.3f} "
                f"{s['back_loss_pct']:>6.3f} {s['jitter_p99_ms']:>7.2f} "
                f"{s['jitter_p999_ms']:>6.1f} "
                f"{100 * s['cpu']:>6.1f} {s['cpu_ms_per_session']:>9.2f} "
                f"{100 * s['load_cpu_busy']:>7.0f}%  "
                f"{'pass' if s['passed'] else 'FAIL: ' + s['why']}{flag}"
            )
    codec = results["codec"]
    lines.append("")
    lines.append(
        f"codec only (CPU {results['server_cpu']}, transceiver settings): decode "
        f"{codec['decode_us']:.1f} µs + encode {codec['encode_us']:.1f} µs; decode+encode loop "
        f"{codec['frame_us']:.1f} µs/frame → bound {codec['sessions_per_core']:.0f} sessions/core "
        f"({codec['frame_us_150_states']:.1f} µs/frame with 150 codec states round robin → "
        f"{codec['sessions_per_core_150_states']:.0f})"
    )
    s = results["summary"]
    lines.append("")
    for kind in ("voicewire", "aiortc"):
        cap = s[kind]
        if cap["sessions"] is None:
            lines.append(f"{kind}: no step passed")
            continue
        lines.append(
            f"{kind}: capacity {cap['sessions']} sessions on one core "
            f"(CPU {100 * cap['cpu']:.0f} %, {cap['cpu_ms_per_session']:.2f} ms CPU/s per session "
            f"→ {cap['sessions_per_core_by_cpu']:.0f} sessions/core by CPU)"
        )
    if s["codec_share"] is not None:
        lines.append(
            f"voicewire at {s['voicewire']['sessions']} sessions: codec work is "
            f"{100 * s['codec_share']:.0f} % of its CPU; non-codec work = "
            f"{s['non_codec_over_codec']:.2f}× the codec work (DESIGN: < 0.25×)"
        )
    lines.append(
        f"ratios: voicewire/aiortc = {_fmt(s['vs_aiortc'])} (target ≥ {TARGETS['vs_aiortc']:.0f}×, "
        f"{_verdict(s['vs_aiortc'], TARGETS['vs_aiortc'])}); voicewire/codec bound = "
        f"{_fmt(s['vs_codec'])} (target ≥ {TARGETS['vs_codec']}×, "
        f"{_verdict(s['vs_codec'], TARGETS['vs_codec'])}); sessions ≥ {TARGETS['sessions']}: "
        f"{_verdict(s['voicewire']['sessions'], TARGETS['sessions'])}"
    )
    marginal = [
        f"{k} {st['sessions']}: {w['why']}"
        for k in ("voicewire", "aiortc")
        for st in results[k]["steps"]
        if st.get("marginal")
        for w in st["windows"]
        if not w["passed"] and not w["disturbed"]
    ]
    if marginal:
        lines.append("† passed on the second window only; the first failed: " + "; ".join(marginal))
    if any(st.get("load_saturated") for k in ("voicewire", "aiortc") for st in results[k]["steps"]):
        lines.append(
            f"! the load CPU was over {100 * LOAD_SIDE_LIMIT:.0f} % busy: the load client or the "
            "relay may have been the limit"
        )
    if any(st.get("disturbed") for k in ("voicewire", "aiortc") for st in results[k]["steps"]):
        lines.append(
            "* other processes used the server CPU, or the load CPU was saturated, on "
            "every attempt of this step: treat it as noisy"
        )
    return "\n".join(lines)


def profile_report(results: dict) -> str:
    plain = results["unprofiled"]
    lines = [
        f"voicewire at {results['sessions']} sessions (unprofiled window): {_brief(plain)}",
        "",
        f"py-spy, transceiver main thread ({results['main_thread_samples']} samples), by the "
        "innermost Python frame (C calls count for the line that makes them):",
    ]
    lines += [f"  {share:6.2f} %  {name}" for name, share in results["categories"]]
    lines += ["", "self time, top 20:"]
    lines += [f"  {share:6.2f} %  {name}" for name, share in results["self_top"][:20]]
    if results.get("perf_by_object"):
        lines += ["", "perf, whole process, by shared object:"]
        lines += [f"  {share:6.2f} %  {name}" for name, share in results["perf_by_object"][:12]]
    lines += ["", f"flame graph: {results['svg']}; raw stacks: {results['raw']}"]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}×"


def _verdict(value: float | None, target: float) -> str:
    return "n/a" if value is None else ("met" if value >= target else "NOT met")


def summarise(results: dict) -> dict:
    summary: dict = {}
    for kind in ("voicewire", "aiortc"):
        cap = capacity(results[kind]["steps"])
        summary[kind] = {
            "sessions": cap["sessions"] if cap else None,
            "cpu": cap["cpu"] if cap else None,
            "cpu_ms_per_session": cap["cpu_ms_per_session"] if cap else None,
            "sessions_per_core_by_cpu": (
                round(cap["sessions"] / cap["cpu"], 1) if cap and cap["cpu"] else None
            ),
        }
    vw, ai = summary["voicewire"]["sessions"], summary["aiortc"]["sessions"]
    codec = results["codec"]
    summary["vs_aiortc"] = round(vw / ai, 2) if vw and ai else None
    summary["vs_codec"] = round(vw / codec["sessions_per_core"], 3) if vw else None
    per_session = summary["voicewire"]["cpu_ms_per_session"]
    if per_session:
        codec_ms = codec["frame_us"] / 1000 * (1 / FRAME)  # ms of codec CPU per second
        summary["codec_share"] = round(codec_ms / per_session, 3)
        summary["non_codec_over_codec"] = round((per_session - codec_ms) / codec_ms, 3)
    else:
        summary["codec_share"] = summary["non_codec_over_codec"] = None
    return summary


# --- main ---------------------------------------------------------------------------------------


def machine_facts() -> dict:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def preflight(args: argparse.Namespace) -> None:
    if shutil.which("taskset") is None:
        raise BenchError("taskset is not installed; the benchmark needs it")
    cpus = os.sched_getaffinity(0)
    if args.load_cpu == args.server_cpu or not {args.load_cpu, args.server_cpu} <= cpus:
        raise BenchError(
            f"need two distinct usable CPUs for load ({args.load_cpu}) and server "
            f"({args.server_cpu}); this process may use {sorted(cpus)}"
        )


def run(args: argparse.Namespace, children: Children) -> dict:
    plan = QUICK if args.quick else FULL
    preflight(args)
    os.sched_setaffinity(0, {args.load_cpu})  # this orchestrator stays off the server's CPU
    locked = check_lock()
    started = time.monotonic()
    results: dict = {
        "machine": machine_facts(),
        "quick": args.quick,
        "plan": plan.__dict__,
        "server_cpu": args.server_cpu,
        "load_cpu": args.load_cpu,
        "lock_held": locked,
    }
    say("codec-only bound ...")
    codecs = [codec_bound(children, args.server_cpu, plan.codec_seconds)]
    say(f"    {codecs[0]['frame_us']:.1f} µs/frame → {codecs[0]['sessions_per_core']:.0f}/core")
    for kind in ("voicewire", "aiortc"):
        say(f"{kind} echo server, ramping ...")
        steps, facts = ramp(children, kind, plan, args)
        results[kind] = {"steps": steps, **facts}
    if plan.codec_runs > 1:
        say("codec-only bound again ...")
        codecs.append(codec_bound(children, args.server_cpu, plan.codec_seconds))
        say(f"    {codecs[1]['frame_us']:.1f} µs/frame → {codecs[1]['sessions_per_core']:.0f}/core")
    results["codec"] = min(codecs, key=lambda c: c["frame_us"])
    results["codec_runs"] = codecs
    results["summary"] = summarise(results)
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (about 1.5 minutes)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write all results here")
    parser.add_argument("--load-cpu", type=int, default=0, help="CPU of load client and relay")
    parser.add_argument("--server-cpu", type=int, default=1, help="CPU of the server under test")
    parser.add_argument(
        "--profile", type=int, metavar="N", help="instead: profile voicewire at N sessions"
    )
    parser.add_argument("--profile-seconds", type=float, default=20.0)
    parser.add_argument("--codec-worker", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.codec_worker is not None:
        print(json.dumps(codec_worker(args.codec_worker)))
        return 0
    children = Children()

    def body() -> dict:
        if args.profile:
            preflight(args)
            os.sched_setaffinity(0, {args.load_cpu})
            return profile(children, args)
        return run(args, children)

    def show(results: dict) -> None:
        print(profile_report(results) if args.profile else report(results))
        write_json(args.json, results)

    return run_bench("capacity_bench", body, show, cleanup=children.stop_all)


if __name__ == "__main__":
    sys.exit(main())
