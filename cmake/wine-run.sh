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

exec "$wine" "$@"
