"""DTLS role benchmark (DESIGN §4: "measure both roles and keep the faster"), with Chromium.

    flock /tmp/voicewire-bench.lock .venv/bin/python benchmarks/dtls_role_bench.py        # ~4 min
    ... --calls 24   # a smoke run, ~1 min
    ... --json PATH   every call's timings

The cluster runs in the test bed's network namespaces (``tests/cluster/testbed``; needs root),
with its own prefix so a test session's bed may run beside it: two relays behind the VIP, two
transceivers with the echo agent, a gateway, Redis. Headless Chromium runs inside the client
host, behind the impairment hop (40 ms RTT, ±5 ms jitter, ``--loss`` each way, 1 % by default;
the HTTP signaling goes through it too), and places sequential calls from the gateway's own
page: a WebAudio tone as its microphone, the offer POSTed to ``/v1/realtime/calls``, hung up
with DELETE before the next. Each call is timed from the POST to

- ``connected``: Chromium's ``connectionState`` (its DTLS is done), and
- ``first audio``: the first RTP packet of the echo in Chromium's ``getStats`` (polled every
  5 ms), i.e. our side's DTLS done too, the tone up and the echo back.

The transceivers run with ``--dtls-setup active`` and then ``passive``, the rounds alternating
so that a slow spell of the machine hits both; the table gives each role's percentiles and the
share of calls that took a retransmission (over 1 s), and the ratio passive/active.
Exit status 1 with no table when the setup is broken.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import check_lock, percentile
from runner import run_bench, say, write_json

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests.cluster.testbed (the bed), tests.browser (Chromium)

BED_PREFIX = "vwd-"
ROLES = ("active", "passive")
ROUNDS = 4  # per role, alternating
SLOW_MS = 1000.0  # a call slower than this waited for a retransmission timer

CALL = """async ([count]) => {
  const ctx = window.benchCtx || (window.benchCtx = new AudioContext());
  await ctx.resume();
  if (!window.benchTrack) {
    const tone = ctx.createOscillator();
    const sink = ctx.createMediaStreamDestination();
    tone.connect(sink);
    tone.start();
    window.benchTrack = sink.stream.getAudioTracks()[0];
  }
  const results = [];
  for (let i = 0; i < count; i++) {
    const pc = new RTCPeerConnection();
    pc.addTransceiver(window.benchTrack, {direction: "sendrecv"});
    const connected = new Promise((resolve) => {
      pc.onconnectionstatechange = () => {
        if (["connected", "failed"].includes(pc.connectionState)) resolve(performance.now());
      };
    });
    await pc.setLocalDescription(await pc.createOffer());
    const posted = performance.now();
    const reply = await fetch("/v1/realtime/calls", {
      method: "POST", body: pc.localDescription.sdp, headers: {"Content-Type": "application/sdp"},
    });
    const answer = await reply.text();
    const row = {status: reply.status, answer_ms: performance.now() - posted};
    if (reply.status === 201) {
      const location = reply.headers.get("Location");
      await pc.setRemoteDescription({type: "answer", sdp: answer});
      const timeout = new Promise((resolve) => setTimeout(() => resolve(null), 10000));
      const at = await Promise.race([connected, timeout]);
      row.state = pc.connectionState;
      row.connected_ms = at === null ? null : at - posted;
      row.audio_ms = null;
      while (performance.now() - posted < 10000) {
        const stats = await pc.getStats();
        for (const s of stats.values()) {
          if (s.type === "inbound-rtp" && s.kind === "audio" && s.packetsReceived > 0) {
            row.audio_ms = performance.now() - posted;
          }
        }
        if (row.audio_ms !== null) break;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      await fetch(location, {method: "DELETE"});
    }
    pc.close();
    results.push(row);
  }
  return results;
}"""


# --- inside the client host: Chromium --------------------------------------------------------


async def drive(url: str, count: int) -> list[dict]:
    from playwright import async_api as playwright_api

    from tests.browser.chromium import CHROMIUM, chromium_args

    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=chromium_args(None)
        )
        try:
            page = await browser.new_page()
            await page.goto(url)
            await page.evaluate(CALL, [1])  # warm-up: the page, the tone, the first connection
            return await page.evaluate(CALL, [count])
        finally:
            await browser.close()


def driver_main(url: str, count: int) -> int:
    print(json.dumps(asyncio.run(drive(url, count))), flush=True)
    return 0


# --- the run, as root --------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    from tests.cluster.testbed import netns, topology
    from tests.cluster.testbed.bed import Bed
    from tests.cluster.testbed.fleet import GATEWAY_URL, Fleet, impair_signaling, measure_path
    from tests.cluster.testbed.impair import Impairment

    problems = netns.missing_prerequisites()
    if problems:
        raise RuntimeError("the test bed cannot run here: " + "; ".join(problems))
    bed = Bed(prefix=BED_PREFIX, impairment=Impairment.symmetric(40.0, 5.0, args.loss))
    fleet = None
    bed.up()
    try:
        impair_signaling(bed)
        path = measure_path(bed, flows=10, per_flow=100)
        say(f"path: {path.summary()}")
        fleet = Fleet(bed)
        fleet.up(recovery=False)
        calls: dict[str, list[dict]] = {role: [] for role in ROLES}
        for round_ in range(ROUNDS):
            for role in ROLES:
                for host in topology.TRANSCEIVERS:
                    fleet.stop(fleet.transceivers.pop(host))
                    fleet.start_transceiver(host, "--dtls-setup", role)
                fleet.wait_registered(len(topology.TRANSCEIVERS))
                argv = [sys.executable, str(Path(__file__).resolve()), "--driver", GATEWAY_URL]
                argv += ["--calls", str(args.calls // ROUNDS)]
                done = subprocess.run(
                    netns.exec_argv(bed.ns("client"), argv),
                    capture_output=True,
                    text=True,
                    timeout=600,
                    cwd=REPO,
                )
                if done.returncode != 0:
                    raise RuntimeError(f"the Chromium driver failed:\n{done.stderr[-3000:]}")
                rows = json.loads(done.stdout.strip().splitlines()[-1])
                calls[role] += rows
                audio = [r["audio_ms"] for r in rows if r.get("audio_ms") is not None]
                say(
                    f"round {round_ + 1}/{ROUNDS} {role}: {len(rows)} calls, first audio p50 "
                    f"{statistics.median(audio):.0f} ms"
                )
        return {"path": path.summary(), "rtt_p50_ms": path.p50, "calls": calls}
    finally:
        if fleet is not None:
            fleet.down()
        bed.down()


def summary(rows: list[dict]) -> dict:
    ok = [r for r in rows if r.get("audio_ms") is not None and r.get("connected_ms") is not None]
    connected = sorted(r["connected_ms"] for r in ok)
    audio = sorted(r["audio_ms"] for r in ok)
    return {
        "calls": len(rows),
        "failed": len(rows) - len(ok),
        "connected_p50": statistics.median(connected),
        "connected_p90": percentile(connected, 0.90),
        "connected_p99": percentile(connected, 0.99),
        "audio_p50": statistics.median(audio),
        "audio_p90": percentile(audio, 0.90),
        "audio_p99": percentile(audio, 0.99),
        "audio_mean": statistics.fmean(audio),
        "slow_share": sum(a > SLOW_MS for a in audio) / len(audio),
    }


def report(results: dict) -> str:
    rows = {role: summary(results["calls"][role]) for role in ROLES}
    lines = [
        "DTLS role: sequential Chromium calls through the bed "
        f"({results['path']}); ms from the offer POST",
        "",
        f"{'role':<9}{'calls':>6}{'failed':>7}{'connected p50':>14}{'p90':>7}{'p99':>7}"
        f"{'first audio p50':>16}{'p90':>7}{'p99':>7}{'mean':>7}{'>1 s':>7}",
    ]
    for role, row in rows.items():
        lines.append(
            f"{role:<9}{row['calls']:>6}{row['failed']:>7}{row['connected_p50']:>14.0f}"
            f"{row['connected_p90']:>7.0f}{row['connected_p99']:>7.0f}{row['audio_p50']:>16.0f}"
            f"{row['audio_p90']:>7.0f}{row['audio_p99']:>7.0f}{row['audio_mean']:>7.0f}"
            f"{row['slow_share']:>7.1%}"
        )
    active, passive = rows["active"], rows["passive"]
    lines.append(
        f"passive/active: first audio p50 {passive['audio_p50'] / active['audio_p50']:.2f}x, "
        f"p90 {passive['audio_p90'] / active['audio_p90']:.2f}x, "
        f"mean {passive['audio_mean'] / active['audio_mean']:.2f}x"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per role (default 200)")
    parser.add_argument("--loss", type=float, default=0.01, help="each way (default 0.01)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write all results here")
    parser.add_argument("--driver", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.driver:
        return driver_main(args.driver, args.calls)
    if args.calls < ROUNDS:
        parser.error(f"--calls must be at least {ROUNDS}")
    check_lock()
    started = time.monotonic()

    def show(results: dict) -> None:
        print(report(results))
        say(f"took {time.monotonic() - started:.0f} s")
        write_json(args.json, results)

    # The bed (namespaces, its processes) is cleaned up by run() itself, on an interrupt too.
    broken = (RuntimeError, OSError, subprocess.SubprocessError)  # what the bed raises
    return run_bench("dtls_role_bench", lambda: run(args), show, failures=broken)


if __name__ == "__main__":
    sys.exit(main())
