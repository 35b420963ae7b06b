// A TCP echo server on the pool: accept connections, read what each client sends and write it
// back, until the client closes.
//
//   echo_server [--port N] [--once N] [--ipv6] [--threads N]
//
// Listens on the loopback address, port N (default 0: the system picks a free port), and
// prints "listening on port P" on stdout as soon as it accepts. With --once N it exits after
// serving N connections (that is how the example runs as a test, piped into echo_client:
//   echo_server --port 0 --once 8 | echo_client --port - --clients 8).

#include <iocp/acceptor.hpp>
#include <iocp/socket.hpp>
#include <iocp/thread_pool.hpp>

#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <system_error>
#include <utility>
#include <vector>

namespace {

class server;

// One connection: receive into the buffer, send it all back, receive again. The handlers hold
// the session (shared_ptr), so it lives exactly as long as an operation is pending, and its
// socket closes when the last one ends.
class session : public std::enable_shared_from_this<session> {
public:
    session(iocp::socket socket, server& owner)
        : socket_(std::move(socket)), buffer_(std::size_t{64} * 1024), owner_(owner) {}

    session(const session&) = delete;
    session& operator=(const session&) = delete;
    ~session();

    void read() {
        socket_.recv(iocp::buffer(buffer_),
                     [self = shared_from_this()](std::error_code ec, std::size_t n) {
                         if (ec) {
                             // errc::eof: the client is done. Anything else: reset, aborted.
                             if (ec != iocp::errc::eof)
                                 std::fprintf(stderr, "recv: %s\n", ec.message().c_str());
                             return;
                         }
                         self->write(n);
                     });
    }

private:
    void write(std::size_t n) {
        socket_.send_all(iocp::buffer(buffer_.data(), n),
                         [self = shared_from_this()](std::error_code ec, std::size_t) {
                             if (ec) {
                                 std::fprintf(stderr, "send: %s\n", ec.message().c_str());
                                 return;
                             }
                             self->read();
                         });
    }

    iocp::socket socket_;
    std::vector<char> buffer_;
    server& owner_;
};

// The accept loop: one accept pending at a time; each connection starts a session.
class server {
public:
    server(iocp::thread_pool& pool, const iocp::endpoint& where)
        : pool_(pool), acceptor_(pool, where) {}

    server(const server&) = delete;
    server& operator=(const server&) = delete;
    ~server() {
        try {
            stop();
        } catch (...) {
            std::abort(); // the pending accept refers to us: we cannot go before it completed
        }
    }

    iocp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }

    void start() {
        std::lock_guard lock(mutex_);
        accepting_ = true;
        accept_next();
    }

    // Stops accepting and waits until the pending accept has completed (it refers to us), or
    // the pending retry after running out of descriptors has run (at most 100 ms).
    // Accepts restart from the pool's workers, so closing and restarting are serialised by
    // the mutex: a socket object is never used from two threads at once.
    void stop() {
        std::unique_lock lock(mutex_);
        stopping_ = true;
        acceptor_.close(); // the pending accept completes with errc::operation_aborted
        changed_.wait(lock, [&] { return !accepting_; });
    }

    // Waits until `n` sessions have finished.
    void wait_for_sessions(int n) {
        std::unique_lock lock(mutex_);
        changed_.wait(lock, [&] { return finished_ >= n; });
    }

    void session_finished() {
        {
            std::lock_guard lock(mutex_);
            ++finished_;
        }
        changed_.notify_all();
    }

private:
    void accept_next() { // with mutex_ held
        acceptor_.accept([this](std::error_code ec, iocp::socket socket, iocp::endpoint peer) {
            std::shared_ptr<session> started;
            {
                std::lock_guard lock(mutex_);
                if (stopping_) {
                    accepting_ = false;
                    changed_.notify_all();
                    return;
                }
                if (ec == std::errc::too_many_files_open ||
                    ec == std::errc::too_many_files_open_in_system) {
                    // Out of descriptors: the client stays in the backlog and an accept now
                    // would fail the same way at once (acceptor.hpp). Try again shortly.
                    std::fprintf(stderr, "accept: %s (again in 100 ms)\n", ec.message().c_str());
                    retry_later();
                    return;
                }
                if (ec)
                    std::fprintf(stderr, "accept: %s\n", ec.message().c_str());
                else
                    started = std::make_shared<session>(std::move(socket), *this);
                (void)peer; // a real server would log peer.to_string()
                accept_next();
            }
            if (started)
                started->read(); // outside the lock: a session's end takes it too
        });
    }

    void retry_later() { // with mutex_ held
        std::error_code ec;
        pool_.post_after(
            std::chrono::milliseconds(100),
            [this] {
                std::lock_guard lock(mutex_);
                if (stopping_) {
                    accepting_ = false;
                    changed_.notify_all();
                    return;
                }
                accept_next();
            },
            ec);
        if (ec) { // the pool is shutting down: no more accepts
            accepting_ = false;
            changed_.notify_all();
        }
    }

    iocp::thread_pool& pool_;
    iocp::acceptor acceptor_;
    std::mutex mutex_;
    std::condition_variable changed_;
    bool accepting_ = false;
    bool stopping_ = false;
    int finished_ = 0;
};

session::~session() { owner_.session_finished(); }

} // namespace

int main(int argc, char** argv) {
    unsigned port = 0;
    int once = 0;
    std::size_t threads = 0;
    auto family = iocp::address_family::ipv4;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = static_cast<unsigned>(std::atoi(argv[++i]));
        else if (std::strcmp(argv[i], "--once") == 0 && i + 1 < argc)
            once = std::atoi(argv[++i]);
        else if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = static_cast<std::size_t>(std::atoi(argv[++i]));
        else if (std::strcmp(argv[i], "--ipv6") == 0)
            family = iocp::address_family::ipv6;
        else {
            std::fprintf(stderr,
                         "usage: echo_server [--port N] [--once N] [--ipv6] [--threads N]\n");
            return 2;
        }
    }

    try {
        iocp::thread_pool pool(threads);
        server srv(pool, iocp::endpoint::loopback(family, static_cast<std::uint16_t>(port)));
        srv.start();
        std::printf("listening on port %u\n", static_cast<unsigned>(srv.local_endpoint().port()));
        std::fflush(stdout);

        if (once > 0) {
            srv.wait_for_sessions(once);
            srv.stop();
            // Cancels what is still pending (a client beyond the N-th) and waits for it, while
            // `srv`, which the sessions report to, is still alive.
            pool.join();
            std::fprintf(stderr, "echo_server: served %d connections\n", once);
            return 0;
        }
        srv.wait_for_sessions(INT_MAX); // serve until killed
    } catch (const std::system_error& e) {
        std::fprintf(stderr, "echo_server: %s\n", e.what());
        return 1;
    }
    return 0;
}
