#!/usr/bin/env python3
"""Turns one run of thread_pool_bench into the tables of bench/README.md: the processor model,
medians per peer and workload, the ratios the targets (issue 10) are stated in, and which
targets hold.

One command runs the bench twice (quiet, then with IOCP_BENCH_NOISY=1) and prints everything:

    python3 bench/report.py --run build/release/bench/thread_pool_bench [--processes N]

With --processes N each of the two runs is N separate processes, one after another, and a
figure is the median of the N processes' medians (min-max: over every repetition of every
process). Some workloads settle per process in one of two states (bench/README.md, "W1 is
bimodal"), so one process's figure can be either.

Or from saved runs (--benchmark_format=json output):

    python3 bench/report.py quiet.json [--noisy noisy.json]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections import defaultdict

PEERS = ["iocp", "iocp_spin_0us", "plain_mutex_cv", "asio_thread_pool", "asio_io_context",
         "tbb_arena_enqueue", "floor_moodycamel_spin", "raw_port"]
# The peers the targets name; --run measures only these (the others need more time).
TARGET_PEERS = ["iocp", "plain_mutex_cv", "asio_thread_pool", "floor_moodycamel_spin"]
W1, W2B, W2S, W3, W4, W5 = ("W1_one_producer", "W2_round_trip_blocking",
                            "W2_round_trip_spinning", "W3_submit_futures", "W4_two_producers",
                            "W5_burst_start")


def processor_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def median_record(records):
    """The record in the middle of `records` by its figure (throughput, else p50 latency); of
    an even count, the lower middle one: a figure somebody measured, not an average."""
    def key(b):
        return b.get("items_per_second", b.get("p50_us", b.get("real_time", 0)))
    ordered = sorted(records, key=key)
    return ordered[(len(ordered) - 1) // 2]


class Run:
    def __init__(self, data):
        self.med = defaultdict(dict)  # workload -> peer -> median record
        self.spread = defaultdict(dict)  # workload -> peer -> (min, max) items/s of repetitions
        self.processes = data.get("processes", 1)
        medians = defaultdict(list)  # (workload, peer) -> each process's median record
        reps = defaultdict(list)
        for b in data["benchmarks"]:
            name = b["run_name"].split("/iterations")[0].split("/repeats")[0]
            if not name.startswith("BM_thread_pool_"):
                continue
            workload, peer = name.replace("BM_thread_pool_", "").split("/")[:2]
            if b.get("run_type") == "aggregate":
                if b.get("aggregate_name") == "median":
                    medians[(workload, peer)].append(b)
            elif "items_per_second" in b:
                reps[(workload, peer)].append(b["items_per_second"] / 1e6)
        for (w, p), records in medians.items():
            self.med[w][p] = median_record(records)
        for (w, p), v in reps.items():
            self.spread[w][p] = (min(v), max(v))
        self.cpus = data.get("context", {}).get("num_cpus")

    def rate(self, w, p):
        r = self.med[w].get(p)
        return r["items_per_second"] / 1e6 if r and "items_per_second" in r else None

    def counter(self, w, p, name):
        r = self.med[w].get(p)
        return r.get(name) if r else None


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt(v, spec=".2f"):
    return format(v, spec) if v is not None else "–"


def peer_table(run):
    print("| peer | W1 Mtasks/s (min–max) | W2 blocking p50 / p99 µs | W2 spinning p50 / p99 µs "
          "| W3 Mtasks/s | W4 Mtasks/s (min–max) | W5 burst p50 / p99 µs |")
    print("|---|---|---|---|---|---|---|")
    for p in PEERS:
        if not any(p in run.med[w] for w in run.med):
            continue
        cells = []
        for w in [W1]:
            s = run.spread[w].get(p)
            cells.append(fmt(run.rate(w, p)) + (f" ({s[0]:.1f}–{s[1]:.1f})" if s else ""))
        for w in [W2B, W2S]:
            a, b = run.counter(w, p, "p50_us"), run.counter(w, p, "p99_us")
            cells.append(f"{a:.2f} / {b:.1f}" if a is not None else "–")
        cells.append(fmt(run.rate(W3, p)))
        s = run.spread[W4].get(p)
        cells.append(fmt(run.rate(W4, p)) + (f" ({s[0]:.1f}–{s[1]:.1f})" if s else ""))
        a, b = run.counter(W5, p, "p50_us"), run.counter(W5, p, "p99_us")
        ser = run.counter(W5, p, "serialised")
        cells.append(f"{a:.1f} / {b:.1f}" + (f" ({ser:.0f} serialised)" if ser else "")
                     if a is not None else "–")
        print(f"| {p} | " + " | ".join(cells) + " |")


def targets(run, noisy):
    rows = []  # (label, value, holds)

    def row(label, value, holds):
        rows.append((label, value, None if value is None else holds(value)))

    for w, wn in [(W1, "W1"), (W4, "W4")]:
        row(f"{wn} ≥ 2× plain pool", ratio(run.rate(w, "iocp"), run.rate(w, "plain_mutex_cv")),
            lambda r: r >= 2)
        row(f"{wn} ≥ 6× asio::thread_pool",
            ratio(run.rate(w, "iocp"), run.rate(w, "asio_thread_pool")), lambda r: r >= 6)
        row(f"{wn} within 2× of the floor (iocp / floor ≥ 0.5)",
            ratio(run.rate(w, "iocp"), run.rate(w, "floor_moodycamel_spin")), lambda r: r >= 0.5)
    row("W3 ≥ 2× asio::thread_pool", ratio(run.rate(W3, "iocp"), run.rate(W3, "asio_thread_pool")),
        lambda r: r >= 2)
    row("W2 blocking p50 ≤ 0.5× asio's", ratio(run.counter(W2B, "iocp", "p50_us"),
                                              run.counter(W2B, "asio_thread_pool", "p50_us")),
        lambda r: r <= 0.5)
    row("W5 burst p50 ≤ asio's", ratio(run.counter(W5, "iocp", "p50_us"),
                                      run.counter(W5, "asio_thread_pool", "p50_us")),
        lambda r: r <= 1)
    row("W5 burst p99 ≤ plain pool's", ratio(run.counter(W5, "iocp", "p99_us"),
                                            run.counter(W5, "plain_mutex_cv", "p99_us")),
        lambda r: r <= 1)
    if noisy is not None:
        for w, wn in [(W1, "W1"), (W4, "W4")]:
            row(f"noisy {wn} ≥ 1.5× plain pool",
                ratio(noisy.rate(w, "iocp"), noisy.rate(w, "plain_mutex_cv")), lambda r: r >= 1.5)
        row("noisy W2 blocking p99 ≤ plain pool's",
            ratio(noisy.counter(W2B, "iocp", "p99_us"), noisy.counter(W2B, "plain_mutex_cv",
                                                                        "p99_us")),
            lambda r: r <= 1)
    print("| target | iocp ratio | holds |")
    print("|---|---|---|")
    for label, value, holds in rows:
        print(f"| {label} | {fmt(value)}× | "
              f"{'–' if holds is None else ('yes' if holds else 'NO')} |")
    held = sum(1 for r in rows if r[2])
    measured = sum(1 for r in rows if r[2] is not None)
    print(f"\n{held} of {measured} measured targets hold.")


def port_calls(run):
    for w in [W1, W4]:
        rec = run.med[w].get("iocp", {})
        if "port_calls_per_item" in rec:
            print(f"- {w}: iocp port calls per task {rec['port_calls_per_item']:.4f} "
                  f"(wake-ups {rec['wakeups_per_item']:.5f}, sleeps {rec['sleeps_per_item']:.5f})")


def run_processes(binary, noisy, peers, processes):
    """run_bench `processes` times; one JSON with every process's records."""
    merged = None
    for _ in range(processes):
        data = run_bench(binary, noisy, peers)
        if merged is None:
            merged = data
        else:
            merged["benchmarks"].extend(data["benchmarks"])
    merged["processes"] = processes
    return merged


def run_bench(binary, noisy, peers):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    env = dict(os.environ)
    env["IOCP_BENCH_NOISY"] = "1" if noisy else "0"
    cmd = [binary, f"--benchmark_out={out}", "--benchmark_out_format=json"]
    if peers:
        cmd.append("--benchmark_filter=/(" + "|".join(peers) + ")/")
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(out) as f:
        data = json.load(f)
    os.unlink(out)
    return data


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("quiet", nargs="?", help="JSON of a run without a noisy neighbour")
    ap.add_argument("--noisy", help="JSON of a run with IOCP_BENCH_NOISY=1")
    ap.add_argument("--run", metavar="BINARY", help="run thread_pool_bench (quiet and noisy)")
    ap.add_argument("--all-peers", action="store_true", help="with --run: every peer")
    ap.add_argument("--processes", type=int, default=1, metavar="N",
                    help="with --run: N processes per run, figures are the median process's")
    ap.add_argument("--save", metavar="PREFIX", help="with --run: keep PREFIX-quiet.json etc.")
    args = ap.parse_args()
    if args.run:
        peers = None if args.all_peers else TARGET_PEERS
        if args.processes < 1:
            ap.error("--processes must be at least 1")
        quiet_data = run_processes(args.run, False, peers, args.processes)
        noisy_data = run_processes(args.run, True, peers, args.processes)
        if args.save:
            for kind, d in [("quiet", quiet_data), ("noisy", noisy_data)]:
                with open(f"{args.save}-{kind}.json", "w") as f:
                    json.dump(d, f)
    elif args.quiet:
        quiet_data = json.load(open(args.quiet))
        noisy_data = json.load(open(args.noisy)) if args.noisy else None
    else:
        ap.error("give a JSON run or --run BINARY")
    quiet = Run(quiet_data)
    noisy = Run(noisy_data) if noisy_data else None
    ctx = quiet_data.get("context", {})
    if quiet.processes > 1:
        how = (f"each figure the median of {quiet.processes} processes' medians, min–max "
               "over every repetition of every process in brackets")
    else:
        how = "medians of the repetitions, min–max in brackets"
    print(f"Processor: {processor_model()}, {ctx.get('num_cpus', '?')} CPUs "
          f"({ctx.get('date', '')}); {how}.\n")
    print("Quiet machine:\n")
    peer_table(quiet)
    if noisy is not None:
        print("\nNoisy neighbour (IOCP_BENCH_NOISY=1: one CPU-bound thread per core):\n")
        peer_table(noisy)
    print("\nTargets (issue 10), ratios from this run:\n")
    targets(quiet, noisy)
    print()
    port_calls(quiet)


if __name__ == "__main__":
    sys.exit(main())
