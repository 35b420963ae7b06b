#!/usr/bin/env bash
# Runs a Windows program under Wine for ctest (CMAKE_CROSSCOMPILING_EMULATOR).
#
# Wine starts background processes (services.exe, explorer.exe, ...) on the first run in a
# prefix. If a test starts them, they inherit ctest's pipes and every test then runs until
# its timeout. So, once per prefix and under a lock, this script starts a persistent
# wineserver and boots the prefix with all output detached; tests then find Wine running.
# `wineserver -k` (with the same WINEPREFIX) stops it; .ci/test-all does that at the end.
set -eu

wine=${IOCP_WINE:-/usr/lib/wine/wine64}
wineserver=${IOCP_WINESERVER:-/usr/lib/wine/wineserver}
export WINEPREFIX=${IOCP_WINEPREFIX:-${TMPDIR:-/tmp}/iocp-wine-$(id -u)}
# fixme-all, not -all: with -all a missing DLL makes Wine exit with code 53 and say nothing.
export WINEDEBUG=${WINEDEBUG:-fixme-all}

mkdir -p "$WINEPREFIX"
(
    flock 9
    # Exit status 0: this call started the server, so the prefix needs booting; 2: one runs.
    # 9>&-: the server and Wine's services live on, and must not inherit (and hold) the lock.
    if "$wineserver" -p </dev/null >/dev/null 2>&1 9>&-; then
        "$wine" wineboot </dev/null >/dev/null 2>&1 9>&- || true
    fi
) 9>"$WINEPREFIX.lock"

# TRICKY: Wine itself sometimes fails to start a program, before any of it runs: "wine: failed
# to map the shared user data: c0000018" (STATUS_CONFLICTING_ADDRESSES: the fixed address Wine
# needs for that page was already taken in the new process, by address-space randomisation).
# Seen once in CI (a socket_test case, 2026-12-01). Only that start-up failure is retried, at
# most twice; otherwise the program's status is returned as it is. Its stderr is held in a file
# to be looked at, then passed on (after its stdout, which goes through untouched).
errors=$(mktemp "${TMPDIR:-/tmp}/iocp-wine-stderr.XXXXXX")
trap 'rm -f "$errors"' EXIT
for attempt in 1 2 3; do
    status=0
    "$wine" "$@" 2>"$errors" || status=$?
    cat "$errors" >&2
    if [ "$status" -ne 0 ] && [ "$attempt" -lt 3 ] &&
        grep -q 'failed to map the shared user data' "$errors"; then
        echo "wine-run.sh: Wine failed to start the program (attempt $attempt); starting it again" >&2
        continue
    fi
    exit "$status"
done
