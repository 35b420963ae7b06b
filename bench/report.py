#!/usr/bin/env python3
"""Turns one run of thread_pool_bench (--benchmark_format=json) into the tables of
bench/README.md: medians per peer and workload, and the ratios the targets are stated in.

    build/release/bench/thread_pool_bench --benchmark_format=json \
        --benchmark_out=bench.json --benchmark_out_format=json
    python3 bench/report.py bench.json
"""
import json
import sys
from collections import defaultdict


def main(path):
    data = json.load(open(path))
    med = defaultdict(dict)  # (workload) -> peer -> record
    for b in data["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        name = b["run_name"].split("/iterations")[0]
        workload, peer = name.replace("BM_thread_pool_", "").split("/")
        med[workload][peer] = b

    peers = ["iocp", "iocp_spin_0us", "plain_mutex_cv", "asio_thread_pool", "asio_io_context",
             "tbb_arena_enqueue", "floor_moodycamel_spin", "raw_port"]

    def rate(w, p):
        r = med[w].get(p)
        return r["items_per_second"] / 1e6 if r and "items_per_second" in r else None

    def lat(w, p, q):
        r = med[w].get(p)
        return r.get(q) if r else None

    print("| peer | W1 Mtasks/s | W2 blocking p50 / p99 µs | W2 spinning p50 / p99 µs "
          "| W3 Mtasks/s | W4 Mtasks/s |")
    print("|---|---|---|---|---|---|")
    for p in peers:
        cells = []
        for w in ["W1_one_producer"]:
            v = rate(w, p)
            cells.append(f"{v:.2f}" if v else "–")
        for w in ["W2_round_trip_blocking", "W2_round_trip_spinning"]:
            a, b = lat(w, p, "p50_us"), lat(w, p, "p99_us")
            cells.append(f"{a:.2f} / {b:.1f}" if a is not None else "–")
        for w in ["W3_submit_futures", "W4_two_producers"]:
            v = rate(w, p)
            cells.append(f"{v:.2f}" if v else "–")
        print(f"| {p} | " + " | ".join(cells) + " |")

    print()
    print("| target (issue 3) | measured | met |")
    print("|---|---|---|")

    def ratio_row(label, value, ok):
        print(f"| {label} | {value:.2f}x | {'yes' if ok else 'no'} |")

    w1, w4 = "W1_one_producer", "W4_two_producers"
    r = rate(w1, "iocp") / rate(w1, "asio_thread_pool")
    ratio_row("W1 ≥ 4x asio::thread_pool", r, r >= 4)
    r = rate(w1, "iocp") / rate(w1, "plain_mutex_cv")
    ratio_row("W1 ≥ 2x plain pool", r, r >= 2)
    r = rate(w4, "iocp") / rate(w4, "asio_thread_pool")
    ratio_row("W4 ≥ 4x asio::thread_pool", r, r >= 4)
    r = rate(w4, "iocp") / rate(w4, "plain_mutex_cv")
    ratio_row("W4 ≥ 2x plain pool", r, r >= 2)
    r = lat("W2_round_trip_blocking", "iocp", "p50_us") / lat(
        "W2_round_trip_blocking", "asio_thread_pool", "p50_us")
    ratio_row("W2 p50 (blocking waiter) ≤ 0.5x asio's", r, r <= 0.5)
    r = lat("W2_round_trip_spinning", "iocp", "p50_us") / lat(
        "W2_round_trip_spinning", "asio_thread_pool", "p50_us")
    ratio_row("W2 p50 (spinning waiter) ≤ 0.5x asio's", r, r <= 0.5)
    r = rate("W3_submit_futures", "iocp") / rate("W3_submit_futures", "asio_thread_pool")
    ratio_row("W3 ≥ 2x asio::thread_pool", r, r >= 2)
    for w in [w1, w4]:
        rec = med[w].get("iocp", {})
        if "port_calls_per_item" in rec:
            print(f"\n{w}: iocp port calls per task {rec['port_calls_per_item']:.4f} "
                  f"(wake-ups {rec['wakeups_per_item']:.5f}, sleeps {rec['sleeps_per_item']:.5f})")


if __name__ == "__main__":
    main(sys.argv[1])
