#!/usr/bin/env python3
"""Compiles every code block of the documentation, so that the docs cannot drift from the API.

The blocks: README.md's ```cpp fences and the `@code` ... `@endcode` blocks of the public
headers (include/iocp/*.hpp, include/iocp/coro/*.hpp). Each block is compiled with
-std=c++20 -Wall -Wextra -Wpedantic -Werror (the flags of the tests), and an error is reported
at the block's own file and line: the generated source carries `#line` directives, so the
compiler itself names README.md:123 or include/iocp/file.hpp:10.

A block is rarely a whole program: it uses names its prose implies (a `pool`, a handler to
call, a socket handle). What each block needs lives in CONTEXTS below, keyed by the block:
README blocks by the name in the HTML comment `<!-- snippet: NAME -->` on the line before the
fence (invisible on GitHub), header blocks by the header's path (one block per header; a second
would be `path#2`). A block without a context, or a context without a block, is an error, so a
new block cannot go unchecked. Kinds:

  program       a whole program: compiled as is, linked and, with `run`, run natively (it must
                exit 0 within RUN_TIMEOUT seconds);
  declarations  namespace-scope code (types, functions, coroutines), after `prelude`;
  statements    statements: the body of `signature` (default `void snippet()`), after `prelude`
                at namespace scope and `setup` at the top of the body.

Declarations and statements blocks are compiled together, each in a namespace of its own, in
one translation unit per target (fast: the library's headers are parsed once per target); the
unused-name warnings are off for them, since a doc names a handler's `ec` and `n` for the
reader even where its body is `/* ... */`. Programs are their own units, with every warning on.

Targets: `native` (the host compiler: Linux's io_uring/epoll backends) and `win32` (MinGW-w64,
compile only: the IOCP backend). A portable block is compiled for both; a block that needs
Windows (overlapped_handle, named pipes, Win32 calls) for win32 only.

Usage: check_snippets.py [--cxx g++] [--mingw-cxx x86_64-w64-mingw32-g++-posix | --no-win32]
                         [--build-dir build/snippets] [--jobs 2] [--list]
Exit status 0 when every block compiles (and every program that runs exits 0), 1 otherwise.
"""
import argparse
import concurrent.futures
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 20  # seconds, for a program that runs

FLAGS = ["-std=c++20", "-Wall", "-Wextra", "-Wpedantic", "-Werror"]
FRAGMENT_FLAGS = ["-Wno-unused-parameter", "-Wno-unused-variable", "-Wno-unused-but-set-variable"]
TARGET_FLAGS = {
    "native": ["-pthread"],
    "win32": [],
}
# What a user's file around a fragment includes: the library and the standard headers the
# fragments use without showing their #include lines.
BATCH_HEADER = """\
#include <iocp/iocp.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>
"""

# --- the context of each block ---------------------------------------------------------------
# platform: "any" (native and win32) or "win32". Names declared in prelude/setup are the ones
# the block's prose implies; keep them minimal.
CONTEXTS = {
    # README.md
    "readme-example": dict(kind="program", run=True),
    "readme-thread-pool": dict(
        kind="statements",
        prelude="inline void handle_request() {}\n",
    ),
    "readme-timers": dict(
        kind="statements",
        prelude="inline void retry() {}\ninline void tick() {}\n",
        signature="void snippet(iocp::thread_pool& pool)",
    ),
    "readme-overlapped-handle": dict(kind="statements", platform="win32"),
    "readme-per-io": dict(
        kind="statements",
        platform="win32",
        signature="void snippet(iocp::overlapped_handle& pipe)",
    ),
    "readme-port-alone": dict(
        kind="statements",
        prelude="struct connection { int id; };\n"
        "#if IOCP_HAS_IOCP\nusing socket_handle_type = SOCKET;\n"
        "#else\nusing socket_handle_type = int;\n#endif\n",
        signature="void snippet(socket_handle_type socket_handle, connection& conn)",
    ),
    "readme-named-pipes": dict(
        kind="statements",
        platform="win32",
        setup="static char buf[512];\nstatic const char request[] = \"hello\";\n",
        signature="void snippet(iocp::thread_pool& pool)",
    ),
    "readme-errors": dict(kind="statements", signature="void snippet(std::error_code ec)"),
    "readme-files-sockets": dict(
        kind="statements",
        setup="static const char message[] = \"hello\";\n",
    ),
    "readme-datagrams": dict(kind="statements", signature="void snippet(iocp::thread_pool& pool)"),
    "readme-coroutines": dict(kind="declarations"),
    # include/iocp
    "include/iocp/acceptor.hpp": dict(
        kind="statements",
        prelude="inline void serve(iocp::socket, const iocp::endpoint&) {}\n",
    ),
    "include/iocp/buffer.hpp": dict(
        kind="statements",
        signature="void snippet(iocp::socket& sock)",
    ),
    "include/iocp/coroutine.hpp": dict(kind="program", run=True),
    "include/iocp/datagram_socket.hpp": dict(kind="statements"),
    "include/iocp/endpoint.hpp": dict(kind="statements"),
    "include/iocp/error.hpp": dict(kind="statements", signature="void snippet(std::error_code ec)"),
    "include/iocp/file.hpp": dict(kind="statements"),
    "include/iocp/io_operation.hpp": dict(kind="declarations"),
    "include/iocp/operation.hpp": dict(kind="declarations"),
    "include/iocp/overlapped.hpp": dict(
        kind="statements",
        signature="void snippet(iocp::overlapped* dequeued_overlapped)",
    ),
    "include/iocp/overlapped_handle.hpp": dict(kind="statements", platform="win32"),
    "include/iocp/pipe.hpp": dict(kind="statements", platform="win32"),
    "include/iocp/port.hpp": dict(
        kind="statements",
        prelude="struct connection { int id; };\n"
        "#if IOCP_HAS_IOCP\nusing socket_handle_type = SOCKET;\n"
        "#else\nusing socket_handle_type = int;\n#endif\n",
        signature="void snippet(socket_handle_type socket_handle, connection& conn, "
        "iocp::overlapped& op, std::uintptr_t request_code)",
    ),
    "include/iocp/socket.hpp": dict(kind="statements"),
    "include/iocp/future.hpp": dict(kind="statements"),
    "include/iocp/thread_pool.hpp": dict(
        kind="statements",
        prelude="inline void do_something() {}\ninline void later() {}\n",
    ),
    "include/iocp/coro/io.hpp": dict(kind="declarations"),
    "include/iocp/coro/spawn.hpp": dict(
        kind="statements",
        signature="void snippet(iocp::thread_pool& pool, iocp::socket conn)",
    ),
    "include/iocp/coro/sync_wait.hpp": dict(
        kind="program",
        run=True,
        prelude="#include <iocp/coroutine.hpp>\n\n"
        "iocp::task<int> serve(iocp::thread_pool& pool) {\n"
        "    co_await pool.schedule();\n    co_return 0;\n}\n",
    ),
    "include/iocp/coro/task.hpp": dict(kind="declarations"),
    "include/iocp/coro/when_all.hpp": dict(
        kind="statements",
        prelude="inline iocp::task<int> fetch(int n) { co_return n; }\n"
        "inline iocp::task<> job(int) { co_return; }\n",
        signature="iocp::task<> snippet()",
    ),
}


class Block:
    def __init__(self, key, path, line, lines):
        self.key = key  # the CONTEXTS key
        self.path = path  # relative to ROOT, as the compiler will print it
        self.line = line  # 1-based line of the block's first code line
        self.lines = lines  # the code, one string per doc line

    @property
    def origin(self):
        return f"{self.path}:{self.line}"


def readme_blocks():
    path = "README.md"
    text = (ROOT / path).read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(text):
        if text[i].strip() in ("```cpp", "```c++"):
            m = re.match(r"\s*<!--\s*snippet:\s*([\w-]+)\s*-->\s*$", text[i - 1]) if i else None
            key = m.group(1) if m else None
            j = i + 1
            while j < len(text) and text[j].strip() != "```":
                j += 1
            blocks.append(Block(key, path, i + 2, text[i + 1:j]))
            i = j
        i += 1
    return blocks


def header_blocks():
    blocks = []
    headers = sorted((ROOT / "include/iocp").glob("*.hpp")) + sorted(
        (ROOT / "include/iocp/coro").glob("*.hpp"))
    for header in headers:
        path = header.relative_to(ROOT).as_posix()
        text = header.read_text(encoding="utf-8").splitlines()
        code, start, count = None, 0, 0
        for n, line in enumerate(text, 1):
            body = re.sub(r"^\s*///? ?", "", line)
            if code is None and re.match(r"\s*///.*[@\\]code\b", line):
                code, start = [], n + 1
            elif code is not None and re.match(r"\s*///.*[@\\]endcode\b", line):
                count += 1
                key = path if count == 1 else f"{path}#{count}"
                blocks.append(Block(key, path, start, code))
                code = None
            elif code is not None:
                code.append(body)
    return blocks


def escape(s):
    return s.replace("\\", "\\\\").replace('"', '\\"')


def hoist_includes(lines):
    """The block's #include lines (moved to the top of a batch) and its code without them
    (blank lines in their place, so that line numbers stay right)."""
    includes = [l for l in lines if l.lstrip().startswith("#include")]
    rest = ["" if l.lstrip().startswith("#include") else l for l in lines]
    return includes, rest


def unit_of_program(block, ctx):
    out = []
    if ctx.get("prelude"):
        out.append(f'#line 1 "context of {escape(block.origin)} (tests/docs/check_snippets.py)"')
        out.append(ctx["prelude"])
    out.append(f'#line {block.line} "{escape(block.path)}"')
    out.extend(block.lines)
    return "\n".join(out) + "\n"


def unit_of_batch(blocks):
    """Every non-program block of one target, each in its own namespace."""
    includes, bodies = [], []
    for index, (block, ctx) in enumerate(blocks):
        block_includes, code = hoist_includes(block.lines)
        includes += block_includes
        ctx_origin = escape(f"context of {block.origin} (tests/docs/check_snippets.py)")
        part = [f"namespace snippet_{index} {{", f'#line 1 "{ctx_origin}"', ctx.get("prelude", "")]
        if ctx["kind"] == "declarations":
            part.append(f'#line {block.line} "{escape(block.path)}"')
            part.extend(code)
        else:
            part.append(ctx.get("signature", "void snippet()") + " {")
            part.append(ctx.get("setup", ""))
            part.append(f'#line {block.line} "{escape(block.path)}"')
            part.extend(code)
            part.append(f'#line 1 "{ctx_origin}"')
            part.append("}")
        part.append(f"}} // namespace snippet_{index}")
        bodies.append("\n".join(part))
    return BATCH_HEADER + "\n".join(dict.fromkeys(includes)) + "\n\n" + "\n\n".join(bodies) + "\n"


def compile_unit(name, source, compiler, flags, build_dir, link=False, run=False):
    """Writes, compiles (and links and runs) one unit. Returns (ok, report). A compiler
    message names the block's own file and line (#line); a run names the unit's program."""
    label, name = name, name.split(" ")[0]
    src = build_dir / f"{name}.cpp"
    src.write_text(source, encoding="utf-8")
    out = build_dir / (name + (".exe" if link else ".o"))
    cmd = [compiler, *flags, "-I", "include", str(src), "-o", str(out)]
    if not link:
        cmd.insert(1, "-c")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        return False, f"{label}: compile FAILED ({seconds:.1f}s)\n{proc.stdout}{proc.stderr}"
    if not run:
        return True, f"{label}: compiled ({seconds:.1f}s)"
    try:
        ran = subprocess.run([str(out)], cwd=build_dir, capture_output=True, text=True,
                             timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, f"{label}: built, but did not exit within {RUN_TIMEOUT} s when run"
    if ran.returncode != 0:
        return False, (f"{label}: built and run: exit status {ran.returncode}\n"
                       f"{ran.stdout}{ran.stderr}")
    return True, f"{label}: compiled and ran ({seconds:.1f}s)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cxx", default=os.environ.get("CXX", "g++"))
    parser.add_argument("--mingw-cxx", default="x86_64-w64-mingw32-g++-posix")
    parser.add_argument("--no-win32", action="store_true", help="skip the MinGW compiles")
    parser.add_argument("--build-dir", default=str(ROOT / "build" / "snippets"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--list", action="store_true", help="list the blocks and their kind")
    args = parser.parse_args()

    blocks = readme_blocks() + header_blocks()
    problems = []
    seen = set()
    for block in blocks:
        if block.key is None:
            problems.append(f"{block.origin}: a ```cpp block without <!-- snippet: NAME --> "
                            "on the line before it")
        elif block.key not in CONTEXTS:
            problems.append(f"{block.origin}: block '{block.key}' has no context in "
                            "tests/docs/check_snippets.py")
        elif block.key in seen:
            problems.append(f"{block.origin}: a second block named '{block.key}'")
        seen.add(block.key)
    for key in CONTEXTS.keys() - seen:
        problems.append(f"tests/docs/check_snippets.py: context '{key}' matches no block")
    if problems:
        print("\n".join(problems))
        return 1
    if args.list:
        for block in blocks:
            ctx = CONTEXTS[block.key]
            print(f"{block.origin:40} {block.key:36} {ctx['kind']:13} {ctx.get('platform', 'any')}")
        return 0

    targets = {"native": args.cxx}
    if not args.no_win32:
        if shutil.which(args.mingw_cxx) is None:
            print(f"{args.mingw_cxx} not found (install g++-mingw-w64-x86-64-posix, "
                  "or pass --no-win32)")
            return 1
        targets["win32"] = args.mingw_cxx
    build_dir = pathlib.Path(args.build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)

    jobs = []  # (name, source, compiler, flags, link, run)
    for target, compiler in targets.items():
        mine = [(b, CONTEXTS[b.key]) for b in blocks
                if CONTEXTS[b.key].get("platform", "any") in ("any", target)]
        batch = [(b, c) for b, c in mine if c["kind"] != "program"]
        flags = FLAGS + TARGET_FLAGS[target]
        if batch:
            jobs.append((f"{target}_fragments", unit_of_batch(batch), compiler,
                         flags + FRAGMENT_FLAGS, False, False))
        for b, c in mine:
            if c["kind"] == "program":
                # The unit's name says which block it is (README's by its snippet name).
                name = target + "_" + re.sub(r"\W+", "_", b.key).strip("_")
                native = target == "native"
                jobs.append((f"{name} ({b.origin})", unit_of_program(b, c), compiler, flags,
                             native, native and c.get("run", False)))

    t0 = time.monotonic()
    failed = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(compile_unit, name, src, cxx, flags, build_dir, link, run)
                   for name, src, cxx, flags, link, run in jobs]
        for future in futures:
            ok, report = future.result()
            failed += not ok
            print(report, flush=True)
    counts = {t: sum(1 for b in blocks if CONTEXTS[b.key].get("platform", "any") in ("any", t))
              for t in targets}
    summary = ", ".join(f"{n} for {t}" for t, n in counts.items())
    verdict = "all passed" if not failed else f"{failed} units FAILED"
    print(f"[snippets] {len(blocks)} blocks ({summary}) in {len(jobs)} units, "
          f"{time.monotonic() - t0:.0f}s: {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
