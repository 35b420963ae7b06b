#!/usr/bin/env python3
"""Proves the house rule of DESIGN.md: no include ever points up a layer.

Every header under include/iocp belongs to one layer (by its path, below); a header may include
headers of its own layer or of layers below it. Prints each upward include and exits 1 if there
is one; prints the layer of every header otherwise.

Layers, bottom up:
  0 base      config, version, error (with the one Win32 error table), unique_handle, time,
              fault injection, thread names, per-thread caches, <windows.h>, the handle traits
  1 operation overlapped, operation
  2 port      port and its backends (detail/win32/port_impl, detail/posix/port_impl)
  3 pool      thread_pool and its parts (work queue, work items, timers), the future of submit
  4 I/O       the I/O layer: io_operation, buffer, endpoint, detail/io/** (the neutral layer and
              the Win32, io_uring and epoll backends that issue calls, skip-on-success)
  5 objects   file, socket, acceptor, datagram_socket, overlapped_handle (any overlapped call),
              pipe (named pipes)
  6 coroutine tasks, spawn, sync_wait, when_all and the I/O awaitables (coro/**), coroutine.hpp
              (the pool's own awaitables, schedule and sleep, are pool parts: detail/pool/)
  7 umbrella  iocp.hpp
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2] / "include" / "iocp"

RULES = [  # (layer, name, path patterns); the first match wins
    (7, "umbrella", [r"iocp\.hpp"]),
    (6, "coroutine", [r"coroutine\.hpp", r"coro/.*"]),
    (5, "objects", [r"file\.hpp", r"socket\.hpp", r"acceptor\.hpp", r"datagram_socket\.hpp",
                    r"overlapped_handle\.hpp", r"pipe\.hpp"]),
    (4, "I/O", [r"io_operation\.hpp", r"buffer\.hpp", r"endpoint\.hpp", r"detail/io/.*"]),
    (3, "pool", [r"thread_pool\.hpp", r"future\.hpp", r"detail/work_queue\.hpp",
                 r"detail/work_item\.hpp",
                 r"detail/block_allocator\.hpp",
                 r"detail/timer_queue\.hpp", r"detail/pool/.*"]),
    (2, "port", [r"port\.hpp", r"detail/packet\.hpp", r"detail/backend\.hpp",
                 r"detail/posix/completion_poller\.hpp",
                 r"detail/(win32|posix)/port_impl\.hpp"]),
    (1, "operation", [r"overlapped\.hpp", r"operation\.hpp"]),
    (0, "base", [r"config\.hpp", r"version\.hpp", r"error\.hpp", r"unique_handle\.hpp",
                 r"detail/time\.hpp", r"detail/fault_injection\.hpp", r"detail/thread_name\.hpp",
                 r"detail/per_thread\.hpp", r"detail/win32/windows\.hpp",
                 r"detail/win32/error_table\.hpp",
                 r"detail/(win32|posix)/handle\.hpp"]),
]


def layer_of(rel):
    for layer, name, patterns in RULES:
        if any(re.fullmatch(p, rel) for p in patterns):
            return layer, name
    return None, None


def main():
    headers = sorted(p for p in ROOT.rglob("*.hpp"))
    problems = []
    layers = {}
    for h in headers:
        rel = h.relative_to(ROOT).as_posix()
        layer, name = layer_of(rel)
        if layer is None:
            problems.append(f"{rel}: no layer (add it to tests/layers/check_layers.py)")
            continue
        layers[rel] = (layer, name)
    for h in headers:
        rel = h.relative_to(ROOT).as_posix()
        if rel not in layers:
            continue
        for target in re.findall(r'^\s*#\s*include\s+"([^"]+)"', h.read_text(), re.M):
            inc = (h.parent / target).resolve()
            try:
                inc_rel = inc.relative_to(ROOT).as_posix()
            except ValueError:
                continue
            if inc_rel not in layers:
                continue
            if layers[inc_rel][0] > layers[rel][0]:
                problems.append(f"{rel} ({layers[rel][1]}) includes {inc_rel} "
                                f"({layers[inc_rel][1]}): an include pointing up a layer")
    if problems:
        print("\n".join(problems))
        print(f"layers: {len(problems)} problem(s)")
        return 1
    for rel, (layer, name) in sorted(layers.items(), key=lambda kv: (kv[1][0], kv[0])):
        print(f"{layer} {name:<9} {rel}")
    print(f"layers: {len(layers)} headers, no include points up a layer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
