// A named-pipe echo server on the pool (Windows): keep a few instances listening, read what
// each client sends and write it back, until the client closes.
//
//   pipe_echo_server [--name NAME] [--once N] [--instances N] [--threads N]
//
// Serves \\.\pipe\NAME (default: a name made from the process id) and prints
// "listening on \\.\pipe\NAME" on stdout once it listens. With --once N it exits after serving
// N connections (that is how the example runs as a test, piped into pipe_echo_client:
//   pipe_echo_server --once 8 | pipe_echo_client --name - --clients 8).

#include <iocp/config.hpp>

#if IOCP_HAS_IOCP

#include <iocp/pipe.hpp>
#include <iocp/thread_pool.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace {

// Counts finished connections; main waits on it for --once.
struct tally {
    std::mutex mutex;
    std::condition_variable changed;
    int finished = 0;
    void one_more() {
        {
            std::lock_guard lock(mutex);
            ++finished;
        }
        changed.notify_all();
    }
};

// One connection: read into the buffer, write it all back, read again. The handlers hold the
// session (shared_ptr), so it lives exactly as long as an operation is pending, and its pipe
// closes when the last one ends.
class session : public std::enable_shared_from_this<session> {
public:
    session(iocp::named_pipe pipe, tally& t)
        : pipe_(std::move(pipe)), buffer_(std::size_t{64} * 1024), tally_(t) {}
    session(const session&) = delete;
    session& operator=(const session&) = delete;
    ~session() { tally_.one_more(); }

    void read() {
        pipe_.read(iocp::buffer(buffer_),
                   [self = shared_from_this()](std::error_code ec, std::size_t n) {
                       if (ec) {
                           // errc::eof: the client closed its end. Anything else: aborted, ...
                           if (ec != iocp::errc::eof)
                               std::fprintf(stderr, "read: %s\n", ec.message().c_str());
                           return;
                       }
                       self->write(n);
                   });
    }

private:
    void write(std::size_t n) {
        pipe_.write_all(iocp::buffer(buffer_.data(), n),
                        [self = shared_from_this()](std::error_code ec, std::size_t) {
                            if (ec) {
                                std::fprintf(stderr, "write: %s\n", ec.message().c_str());
                                return;
                            }
                            self->read();
                        });
    }

    iocp::named_pipe pipe_;
    std::vector<char> buffer_;
    tally& tally_;
};

} // namespace

int main(int argc, char** argv) {
    std::string name = "iocp-pipe-echo-" + std::to_string(::GetCurrentProcessId());
    int once = 0;
    std::size_t instances = 4;
    std::size_t threads = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--name") == 0)
            name = argv[i + 1];
        else if (std::strcmp(argv[i], "--once") == 0)
            once = std::atoi(argv[i + 1]);
        else if (std::strcmp(argv[i], "--instances") == 0)
            instances = static_cast<std::size_t>(std::atoi(argv[i + 1]));
        else if (std::strcmp(argv[i], "--threads") == 0)
            threads = static_cast<std::size_t>(std::atoi(argv[i + 1]));
        else {
            std::fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    const std::string full = "\\\\.\\pipe\\" + name;
    try {
        iocp::thread_pool pool(threads);
        tally t;
        iocp::named_pipe_server_options options;
        options.listening = instances;
        iocp::named_pipe_server server(pool, std::wstring(full.begin(), full.end()), options);
        server.listen([&t](std::error_code ec, iocp::named_pipe client) {
            if (ec) {
                std::fprintf(stderr, "listen: %s\n", ec.message().c_str());
                return;
            }
            std::make_shared<session>(std::move(client), t)->read();
        });
        std::printf("listening on %s\n", full.c_str());
        std::fflush(stdout);
        if (once <= 0)
            for (;;)
                std::this_thread::sleep_for(std::chrono::hours(1));
        std::unique_lock lock(t.mutex);
        t.changed.wait(lock, [&] { return t.finished >= once; });
        lock.unlock();
        server.close();
        pool.join();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "pipe_echo_server: %s\n", e.what());
        return 1;
    }
    return 0;
}

#else

#include <cstdio>

int main() {
    std::puts("named pipes are a Windows feature: nothing to do here");
    return 0;
}

#endif
