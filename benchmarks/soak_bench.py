"""Memory soak (DESIGN §9: "memory flat over a 10-minute soak of 100 sessions").

    flock /tmp/voicewire-bench.lock .venv/bin/python benchmarks/soak_bench.py            # 10 min
    flock /tmp/voicewire-bench.lock .venv/bin/python benchmarks/soak_bench.py --churn-per-minute 20
    ... --minutes 2 --sessions 20     # smoke run
    ... --json benchmarks/.build/soak.json   (every sample and the summary)

``voicewire serve --agent echo`` runs as a subprocess, started and pinned exactly as
capacity_bench.py does it (its ``start_server``: the serve process on ``--server-cpu``, its relay
worker moved to ``--load-cpu``). This script runs on the load CPU and drives the sessions with
load_client.py's ``LoadClient`` in its own event loop (imported, not a subprocess, so it can
hang up a chosen session): ``--sessions`` echo sessions, 50 Opus packets/s each way, held for
``--minutes``. With ``--churn-per-minute N`` the oldest session is hung up (DELETE, as a
gateway's client does) and a new one connected every 60/N s, so a leak on the session-end path
grows with the number of sessions ended.

Every ``--interval`` seconds (a load client measurement window, 10 s) it records:

- VmRSS of the serve process and of its relay worker, from /proc/<pid>/status, and their sum
  (the tree); the serve process's smaps_rollup (Pss, Anonymous), open fds and threads;
- the live sessions; the packets/s both ways, of the sessions live when the window began (with
  churn, one hung up during the window stops adding to it: ~1-2 % fewer packets); the loss and
  jitter of the window (capacity_bench's ``_step_result``: loss = max(in + back, deficit));
- the serve process's CPU, and the transceiver's ``voicewire_transceiver_sessions`` gauge from
  the server's /metrics.

``--spread`` then lets the serve process and its relay worker use every CPU (it does not help:
the transceiver is one thread). At the end every session is hung up; after a few seconds
/metrics must show the sessions gauge at 0 and opened == closed (the transceiver's session
tables are empty), and RSS is sampled once more.

Verdict: a least-squares line is fitted to the tree's RSS from minute 2 to the end (minute 1 is
warm-up: the allocator's arenas, codec states and the jitter buffers fill). The RSS is "flat"
when the fitted growth over that span is below ``FLAT_SHARE`` (2 %) of the RSS at minute 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
from capacity_bench import (
    Server,
    _step_result,
    machine_facts,
    preflight,
    start_server,
)
from load_client import LoadClient, _raise_fd_limit, speech_packets
from machine import LOCK_PATH, check_lock, cpu_busy
from processes import BenchError, Children, cpu_seconds
from runner import run_bench, say, write_json

FLAT_SHARE = 0.02  # fitted growth over minutes 2..end below 2 % of the warm RSS: flat
WARM_MINUTES = 1.0  # RSS "at 1 min" and the start of the fit (from minute 2)
FIT_FROM_MINUTES = 2.0
SETTLE_AT_END = 5.0  # seconds after the last hang-up before /metrics is read
MIB = 1024 * 1024


# --- /proc --------------------------------------------------------------------------------------


def proc_memory(pid: int) -> dict:
    """VmRSS/VmHWM (status) and Pss/Anonymous (smaps_rollup) in bytes; fds and threads."""
    out: dict = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
            elif key == "Threads":
                out["threads"] = int(value)
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, _, value = line.partition(":")
            if key in ("Pss", "Anonymous"):
                out[key] = int(value.split()[0]) * 1024
    with contextlib.suppress(OSError):
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


async def scrape(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """The transceiver's session series from the server's /metrics."""
    async with http.get(urljoin(url, "metrics")) as response:
        text = await response.text()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("voicewire_transceiver_sessions"):
            name, _, value = line.rpartition(" ")
            values[name] = values.get(name, 0.0) + float(value)
    return {
        "sessions": values.get("voicewire_transceiver_sessions", float("nan")),
        "opened": values.get("voicewire_transceiver_sessions_opened_total", float("nan")),
        "closed": sum(
            v
            for k, v in values.items()
            if k.startswith("voicewire_transceiver_sessions_closed_total")
        ),
    }


def fit(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least-squares slope and intercept of y over x."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    return slope, my - slope * mx


# --- the soak -----------------------------------------------------------------------------------


async def churn(client: LoadClient, sessions: int, per_minute: float, ended: list[int]) -> None:
    """Every 60/per_minute s: hang up the oldest session, then connect one in its place."""
    period = 60.0 / per_minute
    next_at = time.monotonic() + period
    while True:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        next_at += period
        if client.sessions:
            oldest = client.sessions[0]
            client._drop(oldest)
            await client._hang_up(oldest)
            ended[0] += 1
        await client.resize(sessions, timeout=30)


async def soak(args: argparse.Namespace, server: Server) -> dict:
    loop = asyncio.get_running_loop()
    client = LoadClient(server.url, loop, speech_packets())
    await client.start()
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    samples: list[dict] = []
    ended = [0]
    churner: asyncio.Task | None = None
    pids = server.pids  # serve process first, then its relay worker
    try:
        began = time.monotonic()
        resize = await client.resize(args.sessions, timeout=90)
        say(f"connected {resize['sessions']} sessions in {resize['seconds']} s")
        if resize["sessions"] < args.sessions:
            raise BenchError(f"only {resize['sessions']} of {args.sessions}: {resize['failures']}")
        began = time.monotonic()  # the soak's clock starts with every session live
        if args.churn_per_minute > 0:
            churner = asyncio.create_task(
                churn(client, args.sessions, args.churn_per_minute, ended)
            )
        end = began + 60 * args.minutes
        while time.monotonic() < end - 1.0:
            cpu0, wall0, busy0 = cpu_seconds([server.pid]), time.monotonic(), cpu_busy()
            window = await client.measure(min(args.interval, end - time.monotonic()), 8.0)
            wall = time.monotonic() - wall0
            cpu = (cpu_seconds([server.pid]) - cpu0) / wall
            busy1 = cpu_busy()
            server.check_alive()
            if churner is not None and churner.done():
                churner.result()  # raises what stopped it
            step = _step_result(args.sessions, window, cpu, 0.0, 0.0, 0.0, 0)
            memory = {pid: proc_memory(pid) for pid in pids}
            metrics = await scrape(http, server.url)
            rss = [memory[pid].get("VmRSS", 0) for pid in pids]
            sample = {
                "t": round(time.monotonic() - began, 1),
                "rss_tree": sum(rss),
                "rss": rss,
                "serve": memory[pids[0]],
                "sessions_client": window["sessions"],
                "sessions_server": metrics["sessions"],
                "opened": metrics["opened"],
                "closed": metrics["closed"],
                "ended_by_churn": ended[0],
                "pps_out": round(window["sent"] / window["seconds"]),
                "pps_back": round(window["received"] / window["seconds"]),
                "loss_pct": step["loss_pct"],
                "jitter_p99_ms": step["jitter_p99_ms"],
                "failed": len(client.failed),
                "server_cpu": round(cpu, 3),
                "machine_busy_cores": round(
                    sum(busy1[c] - busy0[c] for c in busy1 if not c.endswith("_steal")) / wall, 2
                ),
            }
            samples.append(sample)
            say(
                f"{sample['t']:6.0f} s  RSS {sample['rss_tree'] / MIB:7.1f} MiB "
                f"(serve {rss[0] / MIB:.1f}, anon {memory[pids[0]].get('Anonymous', 0) / MIB:.1f})"
                f"  sessions {sample['sessions_client']}/{sample['sessions_server']:.0f}"
                f"  pps {sample['pps_out']}/{sample['pps_back']}  loss {sample['loss_pct']:.3f} %"
                f"  CPU {100 * cpu:.0f} %  ended {ended[0]}"
            )
        if churner is not None:
            churner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await churner
            churner = None
        await client.resize(0)
        await asyncio.sleep(SETTLE_AT_END)
        server.check_alive()
        after = {
            "metrics": await scrape(http, server.url),
            "rss_tree": sum(proc_memory(pid).get("VmRSS", 0) for pid in pids),
            "serve": proc_memory(pids[0]),
        }
    finally:
        if churner is not None:
            churner.cancel()
        await client.stop()
        await http.close()
    return {"connect": resize, "samples": samples, "after_hangup": after, "failed": client.failed}


def summarise(results: dict, minutes: float) -> dict:
    samples = results["samples"]
    warm = min(samples, key=lambda s: abs(s["t"] - 60 * WARM_MINUTES))
    last = samples[-1]
    points = [
        (s["t"] / 60, s["rss_tree"] / MIB) for s in samples if s["t"] >= 60 * FIT_FROM_MINUTES
    ]
    line = fit(points)
    span = (points[-1][0] - points[0][0]) if points else 0.0
    slope = line[0] if line else None
    growth = slope * span if slope is not None else None
    warm_mib = warm["rss_tree"] / MIB
    anon = [(s["t"] / 60, s["serve"].get("Anonymous", 0) / MIB) for s in samples]
    anon_line = fit([p for p in anon if p[0] >= FIT_FROM_MINUTES])
    after = results["after_hangup"]
    return {
        "warm_t": warm["t"],
        "warm_rss_mib": round(warm_mib, 2),
        "end_t": last["t"],
        "end_rss_mib": round(last["rss_tree"] / MIB, 2),
        "max_rss_mib": round(max(s["rss_tree"] for s in samples) / MIB, 2),
        "slope_mib_per_min": None if slope is None else round(slope, 3),
        "fit_span_min": round(span, 2),
        "fitted_growth_mib": None if growth is None else round(growth, 2),
        "fitted_growth_pct_of_warm": None if growth is None else round(100 * growth / warm_mib, 2),
        "serve_anon_slope_mib_per_min": None if anon_line is None else round(anon_line[0], 3),
        "flat": None if growth is None else growth < FLAT_SHARE * warm_mib,
        "pps_out_mean": round(sum(s["pps_out"] for s in samples) / len(samples)),
        "pps_back_mean": round(sum(s["pps_back"] for s in samples) / len(samples)),
        "loss_pct_max": max(s["loss_pct"] for s in samples),
        "loss_pct_mean": round(sum(s["loss_pct"] for s in samples) / len(samples), 4),
        "server_cpu_mean": round(sum(s["server_cpu"] for s in samples) / len(samples), 3),
        "ended_by_churn": last["ended_by_churn"],
        "client_failures": len(results["failed"]),
        "fds_warm_end": (warm["serve"].get("fds"), last["serve"].get("fds")),
        "after_hangup_sessions_gauge": after["metrics"]["sessions"],
        "after_hangup_opened_closed": (after["metrics"]["opened"], after["metrics"]["closed"]),
        "after_hangup_rss_mib": round(after["rss_tree"] / MIB, 2),
        "after_hangup_fds": after["serve"].get("fds"),
        "minutes": minutes,
    }


def _verdict(flat: bool | None) -> str:
    return "none (too short)" if flat is None else ("flat" if flat else "NOT flat")


def report(results: dict) -> str:
    s = results["summary"]
    facts = results["machine"]
    lines = [
        f"soak_bench: {facts['cpu_model']}, {facts['nproc']} CPUs, kernel {facts['kernel']}, "
        f"Python {facts['python']}; serve on CPU {results['server_cpu']}, relay worker + load "
        f"on CPU {results['load_cpu']}; lock {LOCK_PATH} "
        f"{'held' if results['lock_held'] else 'NOT held'}",
        f"{results['sessions']} echo sessions for {results['minutes']} min, churn "
        f"{results['churn_per_minute']}/min ({s['ended_by_churn']} sessions ended and replaced)",
        "",
        f"{'t s':>6} {'RSS MiB':>8} {'serve':>7} {'anon':>7} {'relay':>6} {'fds':>5} "
        f"{'sess':>5} {'pps out':>8} {'pps back':>8} {'loss %':>7} {'p99 ms':>7} {'CPU %':>6}",
    ]
    samples = results["samples"]
    shown = [x for i, x in enumerate(samples) if i % 6 == 5 or i in (0, len(samples) - 1)]
    for x in shown:
        rss = x["rss"]
        lines.append(
            f"{x['t']:>6.0f} {x['rss_tree'] / MIB:>8.1f} {rss[0] / MIB:>7.1f} "
            f"{x['serve'].get('Anonymous', 0) / MIB:>7.1f} "
            f"{(rss[1] if len(rss) > 1 else 0) / MIB:>6.1f} {x['serve'].get('fds', 0):>5} "
            f"{x['sessions_server']:>5.0f} {x['pps_out']:>8} {x['pps_back']:>8} "
            f"{x['loss_pct']:>7.3f} {x['jitter_p99_ms'] or 0:>7.2f} {100 * x['server_cpu']:>6.0f} "
            f"{x['machine_busy_cores']:>5.2f}"
        )
    if s["slope_mib_per_min"] is None:
        lines += ["", f"run too short to fit from minute {FIT_FROM_MINUTES:g}"]
        s = s | {"slope_mib_per_min": 0.0, "fitted_growth_mib": 0.0}
        s |= {"fitted_growth_pct_of_warm": 0.0, "serve_anon_slope_mib_per_min": 0.0}
    lines += [
        "",
        f"RSS (serve + relay worker): {s['warm_rss_mib']:.1f} MiB at {s['warm_t']:.0f} s, "
        f"{s['end_rss_mib']:.1f} MiB at {s['end_t']:.0f} s, max {s['max_rss_mib']:.1f} MiB",
        f"least squares over minutes {FIT_FROM_MINUTES:g}..end: {s['slope_mib_per_min']:+.3f} "
        f"MiB/min → {s['fitted_growth_mib']:+.2f} MiB over {s['fit_span_min']:.1f} min = "
        f"{s['fitted_growth_pct_of_warm']:+.2f} % of the warm RSS (serve anonymous memory: "
        f"{s['serve_anon_slope_mib_per_min']:+.3f} MiB/min)",
        f"verdict: {_verdict(s['flat'])} (threshold: fitted growth < "
        f"{100 * FLAT_SHARE:g} % of the warm RSS)",
        f"load: {s['pps_out_mean']} pps out, {s['pps_back_mean']} pps back (means); loss mean "
        f"{s['loss_pct_mean']:.4f} %, worst window {s['loss_pct_max']:.3f} %; serve CPU "
        f"{100 * s['server_cpu_mean']:.0f} %; client-side session failures "
        f"{s['client_failures']}",
        f"after hanging up all: sessions gauge {s['after_hangup_sessions_gauge']:.0f}, opened "
        f"{s['after_hangup_opened_closed'][0]:.0f} / closed "
        f"{s['after_hangup_opened_closed'][1]:.0f}, RSS {s['after_hangup_rss_mib']:.1f} MiB, "
        f"fds {s['fds_warm_end'][0]} (1 min) → {s['fds_warm_end'][1]} (end) → "
        f"{s['after_hangup_fds']} (idle)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--churn-per-minute", type=float, default=0.0)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds per sample")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write all results here")
    parser.add_argument("--load-cpu", type=int, default=0, help="CPU of load client and relay")
    parser.add_argument("--server-cpu", type=int, default=1, help="CPU of the serve process")
    parser.add_argument(
        "--spread",
        action="store_true",
        help="after the pinned start, let the serve process and its relay worker use every CPU"
        " (100 sessions need more than the one core capacity_bench gives the server)",
    )
    args = parser.parse_args(argv)
    children = Children()
    _raise_fd_limit()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    def body() -> dict:
        preflight(args)
        os.sched_setaffinity(0, {args.load_cpu})  # the load stays off the server's CPU
        locked = check_lock()
        started = time.monotonic()
        server = start_server(children, "voicewire", args.server_cpu, args.load_cpu)
        if args.spread:
            cpus = ",".join(str(c) for c in range(os.cpu_count() or 1))
            for pid in server.pids:  # -a: every thread of the process
                subprocess.run(["taskset", "-apc", cpus, str(pid)], check=True, capture_output=True)
        affinity = {pid: sorted(os.sched_getaffinity(pid)) for pid in server.pids}
        say(f"voicewire serve at {server.url} (pids and CPUs {affinity})")
        results = asyncio.run(soak(args, server))
        server.check_alive()
        results |= {
            "machine": machine_facts(),
            "sessions": args.sessions,
            "minutes": args.minutes,
            "churn_per_minute": args.churn_per_minute,
            "server_cpu": "all" if args.spread else args.server_cpu,
            "load_cpu": args.load_cpu,
            "lock_held": locked,
            "server_log": str(server.log),
        }
        results["summary"] = summarise(results, args.minutes)
        results["seconds"] = round(time.monotonic() - started, 1)
        return results

    def show(results: dict) -> None:
        print(report(results))
        write_json(args.json, results)

    return run_bench("soak_bench", body, show, cleanup=children.stop_all)


if __name__ == "__main__":
    sys.exit(main())
