// Clients of pipe_echo_server (Windows): N clients at once, each sends random bytes and checks
// every byte of the echo.
//
//   pipe_echo_client --name NAME|- [--clients N] [--bytes N]
//
// `--name -` reads the server's "listening on \\.\pipe\NAME" line from stdin, so that the two
// run as one pipeline:
//   pipe_echo_server --once 8 | pipe_echo_client --name - --clients 8
// Exit status 0 when every client got back exactly what it sent.

#include <iocp/config.hpp>

#if IOCP_HAS_IOCP

#include <iocp/pipe.hpp>
#include <iocp/thread_pool.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

// One client: connect, write everything while reading the echo back, compare.
bool run_client(iocp::thread_pool& pool, const std::wstring& name, std::size_t bytes,
                unsigned seed) {
    std::vector<char> out(bytes);
    std::mt19937 rng(seed);
    for (char& c : out)
        c = static_cast<char>(rng());
    iocp::named_pipe pipe(pool);
    std::error_code ec;
    pipe.connect(name, std::chrono::seconds(20), ec);
    if (ec) {
        std::fprintf(stderr, "connect: %s\n", ec.message().c_str());
        return false;
    }
    std::promise<std::error_code> wrote;
    // The echo comes back while we write (the message is larger than the pipe's buffers).
    pipe.write_all(iocp::buffer(out.data(), out.size()),
                   [&](std::error_code e, std::size_t) { wrote.set_value(e); });
    std::vector<char> in(bytes);
    std::size_t got = 0;
    while (got < bytes) {
        std::promise<std::pair<std::error_code, std::size_t>> read;
        pipe.read(iocp::buffer(in.data() + got, bytes - got),
                  [&](std::error_code e, std::size_t n) {
                      read.set_value({e, n});
                  });
        auto [e, n] = read.get_future().get();
        if (e) {
            std::fprintf(stderr, "read: %s\n", e.message().c_str());
            break;
        }
        got += n;
    }
    const std::error_code write_error = wrote.get_future().get();
    if (write_error)
        std::fprintf(stderr, "write: %s\n", write_error.message().c_str());
    return !write_error && got == bytes && in == out;
}

} // namespace

int main(int argc, char** argv) {
    std::string name;
    int clients = 8;
    std::size_t bytes = 256 * 1024;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--name") == 0)
            name = argv[i + 1];
        else if (std::strcmp(argv[i], "--clients") == 0)
            clients = std::atoi(argv[i + 1]);
        else if (std::strcmp(argv[i], "--bytes") == 0)
            bytes = static_cast<std::size_t>(std::atoll(argv[i + 1]));
        else {
            std::fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (name == "-") {
        char line[512];
        char parsed[512];
        if (std::fgets(line, sizeof line, stdin) == nullptr ||
            std::sscanf(line, "listening on %511s", parsed) != 1) {
            std::fprintf(stderr, "pipe_echo_client: no \"listening on\" line on stdin\n");
            return 2;
        }
        name = parsed;
    } else if (name.rfind("\\\\", 0) != 0) {
        name = "\\\\.\\pipe\\" + name;
    }
    if (name.empty() || clients <= 0) {
        std::fprintf(stderr, "usage: pipe_echo_client --name NAME|- [--clients N] [--bytes N]\n");
        return 2;
    }
    try {
        iocp::thread_pool pool(2);
        const std::wstring wide(name.begin(), name.end());
        std::atomic<int> ok{0};
        std::vector<std::thread> threads;
        for (int i = 0; i < clients; ++i)
            threads.emplace_back([&, i] {
                if (run_client(pool, wide, bytes, static_cast<unsigned>(i) + 1))
                    ++ok;
            });
        for (auto& t : threads)
            t.join();
        std::printf("%d of %d clients echoed correctly\n", ok.load(), clients);
        return ok.load() == clients ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "pipe_echo_client: %s\n", e.what());
        return 1;
    }
}

#else

#include <cstdio>

int main() {
    std::puts("named pipes are a Windows feature: nothing to do here");
    return 0;
}

#endif
