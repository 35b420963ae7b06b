#!/usr/bin/env bash
# Kernel waits and wakes per work item under sustained load (W1, W4, and W3 with futures), per
# peer: counts the futex system calls of one benchmark process with `perf stat` and divides by
# the tasks it ran (taken from the benchmark's JSON output). For iocp it also prints the pool's
# own count of completion-port calls per item (PostQueuedCompletionStatus +
# GetQueuedCompletionStatusEx on Win32), from the benchmark's counters.
#
#   bash bench/measure_syscalls.sh [path/to/thread_pool_bench]
#
# Needs perf with the syscalls tracepoints (Debian: linux-perf, as root). The counts include the
# process's start-up and the benchmark's own latch (one wake per 1,000,000+ tasks).
set -euo pipefail
bench=${1:-build/release/bench/thread_pool_bench}
json=$(mktemp)
trap 'rm -f "$json"' EXIT
printf '%-48s %11s %11s %15s %15s\n' benchmark tasks futex_calls futex_per_task port_calls_per_task
for workload in W1_one_producer W4_two_producers W3_submit_futures; do
    for peer in iocp plain_mutex_cv asio_thread_pool asio_io_context tbb_arena_enqueue \
        floor_moodycamel_spin; do
        name="BM_thread_pool_${workload}/${peer}"
        calls=$(perf stat -x, -e syscalls:sys_enter_futex "$bench" --benchmark_filter="^${name}/" \
            --benchmark_format=json --benchmark_out="$json" 2>&1 >/dev/null |
            awk -F, '/sys_enter_futex/ {print $1}')
        python3 - "$json" "$name" "$calls" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
runs = [b for b in data["benchmarks"] if b.get("run_type") == "iteration"]
if not runs:
    sys.exit(0)
tasks = sum(b["items_per_second"] * b["real_time"] / 1e3 for b in runs)  # real_time in ms
calls = int(sys.argv[3])
port = [b.get("port_calls_per_item") for b in runs if "port_calls_per_item" in b]
port_text = f"{sum(port) / len(port):15.4f}" if port else f"{'-':>15}"
print(f"{sys.argv[2]:48} {tasks:11.0f} {calls:11d} {calls / tasks:15.4f} {port_text}")
PY
    done
done
