"""Fleet benchmark (issue 5): relay workers on this machine, and call setup through the test bed.

    flock /tmp/voicewire-bench.lock .venv/bin/python benchmarks/fleet_bench.py          # 4-10 min
    flock /tmp/voicewire-bench.lock .venv/bin/python benchmarks/fleet_bench.py --quick  # ~1 min
    ... --only workers | --only setup     one part;  --json PATH   all results as JSON

Two parts, each a ratio against a baseline measured in the same run (DESIGN §9):

(a) **relay workers.** ``voicewire relay --workers 1`` against ``--workers 2`` with
    relay_bench.py's C load generator and method (imported, not copied): 200 flows of 160-byte
    datagrams, its loss-free search, and what gets through at fixed offered rates (100k, 200k
    and 300k pps: under, near and over one worker's capacity). This machine has 2 cores and the
    generator needs one of them, so both relays and the generator run unpinned
    (``taskset -c 0,1``), sharing the cores the same way; the trials alternate the two relays.
    For reference, one worker pinned alone on CPU 1 with the generator on CPU 0 (relay_bench's
    layout). Also reported: the relay's CPU (cores) and its CPU per delivered datagram.

(b) **call setup through the bed.** The whole cluster in network namespaces
    (``tests/cluster/testbed/fleet.py``; needs root), the client on the impaired path (40 ms RTT,
    ±5 ms jitter each way), with the HTTP signaling routed through the impairment hop too. ~30
    sequential aiortc calls, each timed from its offer POST to ``connected`` at the client, and
    hung up before the next; once with the bed's 1 % loss and once loss-free. The floor is one
    HTTP round trip, one ICE round trip and two DTLS round trips = 4 × the RTT, measured in the
    same run with the bed's probes (UDP) and TCP connects (HTTP).

The machine may be shared: part (a) repeats a trial disturbed by other processes (relay_bench's
rule). Exit status 1 with no table when the setup is broken.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import relay_bench as rb
from machine import LOCK_PATH, check_lock
from processes import BenchError, Children, children_of, command_of
from runner import run_bench, say, write_json

from voicewire.relay.command import DEFAULT_SOCKET_BUFFER
from voicewire.wire.routing_token import RoutingKeys

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests.cluster.testbed: the bed and the fleet

SHARED_CPUS = "0,1"
OFFERED = (100_000, 200_000, 300_000)  # pps: under, near and over one worker's capacity
OFFERED_QUICK = (200_000,)
BED_PREFIX = "vwb-"  # its own namespaces: a test session's vw-* bed may run beside it


# --- (a) relay workers ----------------------------------------------------------------------


def start_relay(
    children: Children, workers: int, cpus: str, secret_spec: str, name: str
) -> rb.Forwarder:
    """``voicewire relay --workers N`` under ``taskset -c cpus`` (workers inherit the mask),
    started as relay_bench starts its one worker; returns once every worker runs."""
    voicewire = Path(sys.executable).with_name("voicewire")
    port = rb._free_port()
    internal = _free_port_run(workers)
    log = rb.BUILD / f"relay-{port}.log"
    argv = ["taskset", "-c", cpus, str(voicewire), "relay", "--listen", f"{rb.HOST}:{port}"]
    argv += ["--internal", f"{rb.HOST}:{internal}", "--workers", str(workers)]
    argv += ["--allow-transceivers", "127.0.0.0/8", "--socket-buffer", str(DEFAULT_SOCKET_BUFFER)]
    argv += ["--log-level", "warning"]
    env = dict(os.environ, VOICEWIRE_ROUTING_SECRETS=secret_spec)
    with log.open("w") as out:
        process = children.start(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    relay = rb.Forwarder(name, port, True, process, log, [process.pid])
    wanted = {int(c) for c in cpus.split(",")}
    deadline = time.monotonic() + 15
    while True:
        relay.check_alive()
        pids = [process.pid, *children_of(process.pid)]
        started = len(pids) >= 1 + workers and command_of(process.pid) != "taskset"
        if started and all(os.sched_getaffinity(pid) == wanted for pid in pids):
            break
        if time.monotonic() > deadline:
            raise BenchError(f"{name}: {len(pids) - 1} of {workers} workers after 15 s")
        time.sleep(0.05)
    relay.pids = pids
    children.adopt(process, pids)
    return relay


def _free_port_run(count: int) -> int:
    """A port P with P..P+count-1 all free on 127.0.0.1 (worker i binds P+i)."""
    for _ in range(50):
        base = rb._free_port()
        try:
            held = []
            for offset in range(count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(sock)
                sock.bind((rb.HOST, base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise BenchError(f"no run of {count} free UDP ports")


def timed_trial(setup: rb.Setup, target: rb.Forwarder, rate: float, seconds: float, **kw) -> dict:
    """relay_bench's trial, plus the relay's CPU from it: in cores over the sending window
    (the trial's STUN setup and drain are a few ms), and per datagram delivered."""
    result = rb.trial(setup, target, rate, seconds, **kw)
    cpu = result["forwarder_cpu_s"]
    result["relay_cores"] = cpu / result["send_seconds"]
    result["relay_us_per_datagram"] = 1e6 * cpu / result["received"]
    return result


def workers_bench(args: argparse.Namespace, children: Children) -> dict:
    plan = rb.QUICK if args.quick else rb.FULL
    rounds = 1 if args.quick else 3
    offered = OFFERED_QUICK if args.quick else OFFERED
    rb.build()
    secret_spec = f"1:{secrets.token_hex(32)}"
    keys = RoutingKeys.parse(secret_spec)
    sink_port = rb._free_port()
    tokens = rb.BUILD / "fleet-tokens.txt"
    tokens.write_text("".join(keys.issue((rb.HOST, sink_port)) + "\n" for _ in range(args.flows)))
    # Setup.load_cpu goes to `taskset -c`: a CPU list works as well as one CPU.
    shared = rb.Setup(children, SHARED_CPUS, SHARED_CPUS, args.flows, sink_port, tokens)  # type: ignore[arg-type]
    pinned = rb.Setup(children, 0, 1, args.flows, sink_port, tokens)
    sink = rb.direct(sink_port)

    say("load generator alone, unpinned:")
    ceiling = rb.generator_ceiling(shared, sink, gso=True)["achieved_pps"]
    relays = {
        "w1": start_relay(children, 1, SHARED_CPUS, secret_spec, "relay --workers 1"),
        "w2": start_relay(children, 2, SHARED_CPUS, secret_spec, "relay --workers 2"),
        "w1_pinned": start_relay(children, 1, "1", secret_spec, "relay --workers 1, CPU 1"),
    }
    setups = {"w1": shared, "w2": shared, "w1_pinned": pinned}
    for key, relay in relays.items():  # flows work, workers are up, their code is warm
        rb.trial(setups[key], relay, 10_000, 0.5, setup_timeout=10.0)

    say(f"delivered at fixed offered rates (GSO bursts), {rounds} rounds, the relays alternating:")
    sweep: dict[str, dict[int, list[dict]]] = {key: {r: [] for r in offered} for key in relays}
    for _ in range(rounds):
        for rate in offered:
            for key, relay in relays.items():
                result = timed_trial(
                    setups[key],
                    relay,
                    rate,
                    plan.overload_seconds,
                    warmup=plan.overload_warmup,
                    gso=True,
                )
                sweep[key][rate].append(result)
                say(
                    f"  {relay.name:<26} {rb._brief(result)}  relay "
                    f"{result['relay_cores']:.2f} cores, "
                    f"{result['relay_us_per_datagram']:.2f} us/datagram"
                )

    say("loss-free search:")
    search = {}
    for key in ("w1", "w2"):
        search[key] = rb.loss_free_rate(setups[key], relays[key], plan, ceiling)
    for relay in relays.values():
        rb.stop_forwarder(children, relay)

    summary: dict = {key: {"offered": {}} for key in relays}
    for key, by_rate in sweep.items():
        for rate, results in by_rate.items():
            summary[key]["offered"][rate] = {
                "delivered_pps": statistics.median(rb._delivered(r) for r in results),
                "delivered_pps_all": [rb._delivered(r) for r in results],
                "relay_cores": statistics.median(r["relay_cores"] for r in results),
                "relay_us_per_datagram": statistics.median(
                    r["relay_us_per_datagram"] for r in results
                ),
                "disturbed": sum(r["disturbed"] for r in results),
            }
    for key in ("w1", "w2"):
        summary[key]["loss_free_pps"] = search[key]["loss_free_pps"]
        summary[key]["loss_free_confirmed"] = search[key]["confirmed"]
        summary[key]["generator_limited"] = search[key]["generator_limited"]
    summary["ratios"] = {
        "loss_free_w2_w1": summary["w2"]["loss_free_pps"] / summary["w1"]["loss_free_pps"],
        "delivered_w2_w1": {
            rate: summary["w2"]["offered"][rate]["delivered_pps"]
            / summary["w1"]["offered"][rate]["delivered_pps"]
            for rate in offered
        },
    }
    return {
        "generator_ceiling_pps": ceiling,
        "offered_pps": list(offered),
        "flows": args.flows,
        "rounds": rounds,
        "summary": summary,
        "sweep": sweep,
        "search": search,
    }


def workers_report(results: dict) -> str:
    s = results["summary"]
    offered = results["offered_pps"]
    lines = [
        f"(a) relay workers: {results['flows']} flows of 160-byte datagrams; generator alone "
        f"(unpinned, GSO) {results['generator_ceiling_pps']:,.0f} pps; delivered = medians of "
        f"{results['rounds']} rounds",
        "",
        f"{'relay':<40}{'loss-free pps':>15}"
        + "".join(f"{'@ ' + format(r // 1000, 'd') + 'k offered':>17}" for r in offered),
    ]
    labels = {
        "w1": "--workers 1, all on CPUs 0-1",
        "w2": "--workers 2, all on CPUs 0-1",
        "w1_pinned": "--workers 1 on CPU 1, generator on CPU 0",
    }
    for key, label in labels.items():
        row = s[key]
        loss_free = ""
        if "loss_free_pps" in row:
            loss_free = f"{'>= ' if row['generator_limited'] else ''}{row['loss_free_pps']:,.0f}"
            loss_free += "" if row["loss_free_confirmed"] else "?"
        cells = []
        for rate in offered:
            cell = row["offered"][rate]
            mark = "*" if cell["disturbed"] else ""
            cells.append(f"{cell['delivered_pps']:>,.0f}{mark} ({cell['relay_cores']:.2f})")
        lines.append(f"{label:<40}{loss_free:>15}" + "".join(f"{c:>17}" for c in cells))
    r = s["ratios"]
    lines.append(
        f"{'--workers 2 / --workers 1':<40}{r['loss_free_w2_w1']:>14.2f}x"
        + "".join(f"{r['delivered_w2_w1'][rate]:>16.2f}x" for rate in offered)
    )
    lines.append("(delivered pps (relay CPU in cores); * = a trial other processes disturbed)")
    lines.append(
        "relay CPU per delivered datagram (us): "
        + "; ".join(
            f"{labels[key]}: "
            + ", ".join(
                f"{s[key]['offered'][rate]['relay_us_per_datagram']:.2f}" for rate in offered
            )
            for key in labels
        )
    )
    return "\n".join(lines)


# --- (b) call setup through the bed ---------------------------------------------------------


def tcp_rtts(bed, count: int) -> list[float]:
    """TCP handshake times (ms) from vw-client to the gateway on the VIP: one RTT each."""
    from tests.cluster.testbed import topology

    def connect() -> list[float]:
        times = []
        for _ in range(count):
            started = time.monotonic()
            with socket.create_connection((topology.VIP, topology.GATEWAY_PORT), 5.0):
                times.append(1000 * (time.monotonic() - started))
            time.sleep(0.02)
        return times

    return bed.call("client", connect)


def setup_bench(args: argparse.Namespace) -> dict:
    from tests.cluster.testbed import netns
    from tests.cluster.testbed.bed import Bed
    from tests.cluster.testbed.fleet import (
        CallerProcess,
        Fleet,
        impair_signaling,
        measure_path,
    )
    from tests.cluster.testbed.impair import Impairment

    problems = netns.missing_prerequisites()
    if problems:
        raise BenchError("the test bed cannot run here: " + "; ".join(problems))
    losses = (0.01, 0.0)
    bed = Bed(prefix=BED_PREFIX)
    fleet = caller = None
    bed.up()
    try:
        impair_signaling(bed)
        paths = {}
        for loss in losses:  # before the relays start: the probes' echoes take port 3478
            bed.set_impairment(Impairment.symmetric(rtt_ms=40.0, jitter_ms=5.0, loss=loss))
            report = measure_path(bed, flows=10, per_flow=100)
            say(f"path, loss {loss:.0%}: {report.summary()}")
            paths[loss] = report
        fleet = Fleet(bed)
        fleet.up(recovery=True)  # as deployed: relays look unknown flows up in Redis
        caller = CallerProcess(bed)
        rows = []
        for loss in losses:
            bed.set_impairment(Impairment.symmetric(rtt_ms=40.0, jitter_ms=5.0, loss=loss))
            tcp = tcp_rtts(bed, 20)
            for _ in range(3):  # warm-up: imports, code paths, the keep-alive connection
                caller.start(1)
                caller.hangup()
            calls = []
            for _ in range(args.calls):
                [call] = caller.start(1)
                caller.hangup()
                calls.append(call)
            ok = [c for c in calls if c["setup_ms"] is not None]
            setup = sorted(c["setup_ms"] for c in ok)
            rtt = paths[loss].p50
            row = {
                "loss": loss,
                "udp_rtt_p50_ms": rtt,
                "udp_rtt": paths[loss].summary(),
                "tcp_rtt_p50_ms": statistics.median(tcp),
                "floor_ms": 4 * rtt,
                "calls": len(calls),
                "failed": len(calls) - len(ok),
                "setup_p50_ms": statistics.median(setup),
                "setup_p99_ms": _percentile(setup, 99),
                "setup_max_ms": setup[-1],
                "answer_p50_ms": statistics.median(c["answer_ms"] for c in ok),
                "ice_p50_ms": statistics.median(c["ice_ms"] for c in ok if c["ice_ms"]),
                "per_call": calls,
            }
            row["p50_over_floor"] = row["setup_p50_ms"] / row["floor_ms"]
            row["p99_over_floor"] = row["setup_p99_ms"] / row["floor_ms"]
            say(
                f"loss {loss:.0%}: setup p50 {row['setup_p50_ms']:.0f} ms, p99 "
                f"{row['setup_p99_ms']:.0f} ms, floor {row['floor_ms']:.0f} ms"
            )
            rows.append(row)
        return {"relay_flow_recovery": True, "rows": rows}
    finally:
        if caller is not None:
            caller.stop()
        if fleet is not None:
            fleet.down()
        bed.down()


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))]


def setup_report(results: dict) -> str:
    lines = [
        "(b) call setup through the bed: offer POST → connected at the aiortc client, HTTP and "
        "media both on the impaired path (40 ms RTT, ±5 ms jitter each way); sequential calls",
        "",
        f"{'loss':<6}{'UDP RTT p50':>12}{'TCP RTT p50':>12}{'floor 4xRTT':>12}{'calls':>7}"
        f"{'POST→201':>10}{'→ICE done':>10}{'setup p50':>11}{'p99':>8}{'p50/floor':>11}"
        f"{'p99/floor':>11}",
    ]
    for row in results["rows"]:
        failed = f" ({row['failed']} failed)" if row["failed"] else ""
        lines.append(
            f"{row['loss']:<6.0%}{row['udp_rtt_p50_ms']:>12.1f}{row['tcp_rtt_p50_ms']:>12.1f}"
            f"{row['floor_ms']:>12.1f}{row['calls']:>7}{row['answer_p50_ms']:>10.0f}"
            f"{row['ice_p50_ms']:>10.0f}{row['setup_p50_ms']:>11.0f}{row['setup_p99_ms']:>8.0f}"
            f"{row['p50_over_floor']:>10.2f}x{row['p99_over_floor']:>10.2f}x{failed}"
        )
    lines.append(
        "(all ms; POST→201 and →ICE done are p50s from the POST; with 30 calls the p99 is the "
        "slowest call)"
    )
    return "\n".join(lines)


# --- the run --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--only", choices=("workers", "setup"), help="run one part")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write all results here")
    parser.add_argument("--flows", type=int, default=200, help="relay flows in part (a)")
    parser.add_argument("--calls", type=int, default=None, help="calls per row in part (b)")
    args = parser.parse_args(argv)
    if args.calls is None:
        args.calls = 10 if args.quick else 30
    locked = check_lock()
    children = Children(grace=8.0)  # relay_bench's
    started, busy = time.monotonic(), 0.0

    def body() -> dict:
        nonlocal busy  # the report shows it unrounded
        busy = rb.busy_share()
        say(f"machine: {os.cpu_count()} CPUs, busy before start {busy:.0%}")
        results: dict = {
            "command": " ".join([sys.executable, *sys.argv]),
            "machine": {**rb.machine_facts(), "python": platform.python_version()},
            "busy_before_start": round(busy, 3),
            "lock_held": locked,
        }
        if args.only in (None, "workers"):
            results["workers"] = workers_bench(args, children)
        if args.only in (None, "setup"):
            results["setup"] = setup_bench(args)
        return results

    def show(results: dict) -> None:
        results["elapsed_s"] = round(time.monotonic() - started, 1)
        m = results["machine"]
        print(
            f"voicewire fleet benchmark: {m['nproc']} CPUs ({m['cpu_model']}), "
            f"kernel {m['kernel']}, Python {m['python']}; busy before start {busy:.0%}; "
            f"lock {LOCK_PATH} {'held' if locked else 'NOT held'}"
        )
        if "workers" in results:
            print("\n" + workers_report(results["workers"]))
        if "setup" in results:
            print("\n" + setup_report(results["setup"]))
        print(f"\nrun took {results['elapsed_s']:.0f} s")
        write_json(args.json, results, default=str)

    return run_bench("fleet_bench", body, show, cleanup=children.stop_all)


if __name__ == "__main__":
    sys.exit(main())
