#!/usr/bin/env bash
# The "I/O on Linux" numbers of bench/README.md: builds the release preset's I/O benchmarks and
# runs them once each, printing the machine first. The ratios come from one run; the machine
# is shared, so run it when it is quiet and compare the ranges, not only the medians.
#
#   bash bench/run_io_bench.sh [build-dir] [seconds] [repeat]
#
# Needs libasio-dev (the Asio peers), liburing-dev (the io_uring backends) and, for the system
# call counts, perf with the syscalls tracepoints (Debian: linux-perf, as root).
set -euo pipefail
build=${1:-build/release}
seconds=${2:-2}
repeat=${3:-5}
if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake --preset release -B "$build"
fi
cmake --build "$build" -j2 --target echo_native_bench echo_native_bench_asio_uring file_bench
date -u
grep -m1 'model name' /proc/cpuinfo
lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Hypervisor)'
uname -sr
echo
"$build/bench/echo_native_bench" --seconds "$seconds" --repeat "$repeat"
echo
"$build/bench/file_bench" --seconds "$seconds" --repeat "$repeat"
echo
if perf stat -e raw_syscalls:sys_enter true >/dev/null 2>&1; then
    "$build/bench/echo_native_bench" --seconds "$seconds" --repeat 1 --syscalls
else
    echo "(no system call counts: perf cannot count raw_syscalls:sys_enter here)"
fi
