// Coroutines against callbacks, and against Asio's coroutines, in one run:
//
// 1. echo ping-pong over loopback: the same TCP echo server written four ways, each on the same
//    number of threads, driven by the same blocking clients (one thread per connection, each
//    sending a message and waiting for its echo, again and again; every byte is checked):
//      iocp-callback   iocp::socket::recv / send_all with handlers (echo_native_bench's server)
//      iocp-coroutine  iocp::task + co_await async_recv / async_send_all (co_echo_server's)
//      asio-callback   asio::io_context, async_read_some / async_write with handlers
//      asio-awaitable  asio::co_spawn + use_awaitable
//    iocp runs on the I/O backend of this process (IOCP_IO_BACKEND=io_uring|epoll: run the
//    binary once per backend); Asio on its default reactor (epoll).
// 2. `co_await pool.schedule()` round trip (a coroutine hops to a worker and back to the loop,
//    one hop at a time) against `co_await asio::post(ctx, asio::use_awaitable)` on an io_context
//    run by the same number of threads.
//
//   co_echo_bench [--threads N] [--connections C] [--seconds S] [--repeat R] [--hops H]
//
// Prints messages/s per server (median of R runs) and the ratios the coroutine issue asks for.

#include <iocp/config.hpp>

#if IOCP_HAS_IO && !IOCP_HAS_IOCP

#include <iocp/acceptor.hpp>
#include <iocp/coroutine.hpp>
#include <iocp/socket.hpp>
#include <iocp/thread_pool.hpp>

#include <asio.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;
constexpr std::size_t message_size = 64;
constexpr std::size_t buffer_size = std::size_t{64} * 1024;

// --- the four servers ------------------------------------------------------------------------

class iocp_callback_server {
public:
    explicit iocp_callback_server(std::size_t threads)
        : pool_(threads),
          acceptor_(pool_, iocp::endpoint::loopback(iocp::address_family::ipv4, 0)) {
        accept_next();
    }
    iocp_callback_server(const iocp_callback_server&) = delete;
    iocp_callback_server& operator=(const iocp_callback_server&) = delete;
    ~iocp_callback_server() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
            acceptor_.close();
        }
        pool_.join();
    }
    std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

private:
    struct session : std::enable_shared_from_this<session> {
        explicit session(iocp::socket s) : sock(std::move(s)), buffer(buffer_size) {}
        iocp::socket sock;
        std::vector<char> buffer;
        void read() {
            sock.recv(iocp::buffer(buffer),
                      [self = shared_from_this()](std::error_code ec, std::size_t n) {
                          if (ec)
                              return;
                          self->sock.send_all(iocp::buffer(self->buffer.data(), n),
                                              [self](std::error_code ec, std::size_t) {
                                                  if (!ec)
                                                      self->read();
                                              });
                      });
        }
    };
    void accept_next() {
        acceptor_.accept([this](std::error_code ec, iocp::socket s) {
            std::shared_ptr<session> started;
            {
                std::lock_guard lock(mutex_);
                if (stopping_ || ec == iocp::errc::operation_aborted)
                    return;
                if (!ec) {
                    s.set_no_delay(true);
                    started = std::make_shared<session>(std::move(s));
                }
                accept_next();
            }
            if (started)
                started->read();
        });
    }
    iocp::thread_pool pool_;
    iocp::acceptor acceptor_;
    std::mutex mutex_;
    bool stopping_ = false;
};

class iocp_coroutine_server {
public:
    explicit iocp_coroutine_server(std::size_t threads)
        : pool_(threads),
          acceptor_(pool_, iocp::endpoint::loopback(iocp::address_family::ipv4, 0)) {
        iocp::spawn(pool_, accept_loop(pool_, acceptor_, stop_.get_token()));
    }
    iocp_coroutine_server(const iocp_coroutine_server&) = delete;
    iocp_coroutine_server& operator=(const iocp_coroutine_server&) = delete;
    ~iocp_coroutine_server() {
        stop_.request_stop(); // the pending accept resumes aborted; the loop ends
        pool_.join();
    }
    std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

private:
    static iocp::task<> session(iocp::socket sock) {
        std::vector<char> buffer(buffer_size);
        for (;;) {
            auto [ec, n] = co_await iocp::async_recv(sock, iocp::buffer(buffer));
            if (ec)
                co_return;
            auto [wec, sent] = co_await iocp::async_send_all(sock, iocp::buffer(buffer.data(), n));
            if (wec)
                co_return;
        }
    }
    static iocp::task<> accept_loop(iocp::thread_pool& pool, iocp::acceptor& acceptor,
                                    std::stop_token stop) {
        for (;;) {
            iocp::accept_result r = co_await iocp::async_accept(acceptor, stop);
            if (r.ec)
                co_return;
            r.conn.set_no_delay(true);
            iocp::spawn(pool, session(std::move(r.conn)));
        }
    }
    iocp::thread_pool pool_;
    iocp::acceptor acceptor_;
    std::stop_source stop_;
};

class asio_callback_server {
public:
    explicit asio_callback_server(std::size_t threads)
        : acceptor_(context_, asio::ip::tcp::endpoint(asio::ip::address_v4::loopback(), 0)) {
        accept_next();
        for (std::size_t i = 0; i < threads; ++i)
            threads_.emplace_back([this] { context_.run(); });
    }
    asio_callback_server(const asio_callback_server&) = delete;
    asio_callback_server& operator=(const asio_callback_server&) = delete;
    ~asio_callback_server() {
        context_.stop();
        for (auto& t : threads_)
            t.join();
    }
    std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

private:
    struct session : std::enable_shared_from_this<session> {
        explicit session(asio::ip::tcp::socket s) : sock(std::move(s)), buffer(buffer_size) {}
        asio::ip::tcp::socket sock;
        std::vector<char> buffer;
        void read() {
            sock.async_read_some(asio::buffer(buffer), [self = shared_from_this()](
                                                           std::error_code ec, std::size_t n) {
                if (ec)
                    return;
                asio::async_write(self->sock, asio::buffer(self->buffer.data(), n),
                                  [self](std::error_code ec, std::size_t) {
                                      if (!ec)
                                          self->read();
                                  });
            });
        }
    };
    void accept_next() {
        acceptor_.async_accept([this](std::error_code ec, asio::ip::tcp::socket s) {
            if (ec == asio::error::operation_aborted)
                return;
            if (!ec) {
                s.set_option(asio::ip::tcp::no_delay(true));
                std::make_shared<session>(std::move(s))->read();
            }
            accept_next();
        });
    }
    asio::io_context context_;
    asio::ip::tcp::acceptor acceptor_;
    std::vector<std::thread> threads_;
};

class asio_awaitable_server {
public:
    explicit asio_awaitable_server(std::size_t threads)
        : acceptor_(context_, asio::ip::tcp::endpoint(asio::ip::address_v4::loopback(), 0)) {
        asio::co_spawn(context_, accept_loop(acceptor_), asio::detached);
        for (std::size_t i = 0; i < threads; ++i)
            threads_.emplace_back([this] { context_.run(); });
    }
    asio_awaitable_server(const asio_awaitable_server&) = delete;
    asio_awaitable_server& operator=(const asio_awaitable_server&) = delete;
    ~asio_awaitable_server() {
        context_.stop();
        for (auto& t : threads_)
            t.join();
    }
    std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

private:
    static asio::awaitable<void> session(asio::ip::tcp::socket sock) {
        std::vector<char> buffer(buffer_size);
        std::error_code ec; // errors as values, as the iocp coroutine server takes them
        for (;;) {
            const std::size_t n = co_await sock.async_read_some(
                asio::buffer(buffer), asio::redirect_error(asio::use_awaitable, ec));
            if (ec)
                co_return;
            co_await asio::async_write(sock, asio::buffer(buffer.data(), n),
                                       asio::redirect_error(asio::use_awaitable, ec));
            if (ec)
                co_return;
        }
    }
    static asio::awaitable<void> accept_loop(asio::ip::tcp::acceptor& acceptor) {
        std::error_code ec;
        for (;;) {
            asio::ip::tcp::socket s =
                co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
            if (ec)
                co_return;
            s.set_option(asio::ip::tcp::no_delay(true));
            asio::co_spawn(acceptor.get_executor(), session(std::move(s)), asio::detached);
        }
    }
    asio::io_context context_;
    asio::ip::tcp::acceptor acceptor_;
    std::vector<std::thread> threads_;
};

// --- the clients: plain blocking sockets, identical for every server -------------------------

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "co_echo_bench: %s: %s\n", what, std::strerror(errno));
    std::exit(1);
}

int connect_to(std::uint16_t port) {
    const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s < 0 || ::connect(s, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
        fail("connect");
    int one = 1;
    ::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return s;
}

bool send_exactly(int s, const char* p, std::size_t n) {
    while (n > 0) {
        const ::ssize_t k = ::send(s, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        p += k;
        n -= static_cast<std::size_t>(k);
    }
    return true;
}

bool recv_exactly(int s, char* p, std::size_t n) {
    while (n > 0) {
        const ::ssize_t k = ::recv(s, p, n, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        p += k;
        n -= static_cast<std::size_t>(k);
    }
    return true;
}

// Round trips per second of `connections` ping-pong clients for `seconds`.
double ping_pong(std::uint16_t port, std::size_t connections, double seconds) {
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> total{0};
    std::vector<std::thread> clients;
    std::vector<int> sockets;
    for (std::size_t c = 0; c < connections; ++c)
        sockets.push_back(connect_to(port));
    const auto start = clock_type::now();
    for (std::size_t c = 0; c < connections; ++c) {
        clients.emplace_back([&, s = sockets[c], c] {
            char out[message_size];
            char in[message_size];
            std::uint64_t n = 0;
            while (!stop.load(std::memory_order_relaxed)) {
                for (std::size_t i = 0; i < message_size; ++i)
                    out[i] = static_cast<char>((n * 31 + i + c) & 0xFF);
                if (!send_exactly(s, out, sizeof out) || !recv_exactly(s, in, sizeof in) ||
                    std::memcmp(in, out, sizeof out) != 0) {
                    std::fprintf(stderr, "co_echo_bench: echo mismatch or connection lost\n");
                    std::exit(1);
                }
                ++n;
            }
            total.fetch_add(n);
        });
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    stop.store(true);
    for (auto& t : clients)
        t.join();
    const double elapsed = std::chrono::duration<double>(clock_type::now() - start).count();
    for (int s : sockets)
        ::close(s);
    return static_cast<double>(total.load()) / elapsed;
}

template <class Server>
double measure_echo(std::size_t threads, std::size_t connections, double seconds) {
    Server server(threads);
    return ping_pong(server.port(), connections, seconds);
}

// --- schedule round trip ----------------------------------------------------------------------

// Nanoseconds per `co_await pool.schedule()` of one coroutine hopping `hops` times.
double measure_iocp_schedule(std::size_t threads, std::uint64_t hops) {
    iocp::thread_pool pool(threads);
    auto body = [&]() -> iocp::task<double> {
        co_await pool.schedule();
        for (int i = 0; i < 1000; ++i) // warm up
            co_await pool.schedule();
        const auto start = clock_type::now();
        for (std::uint64_t i = 0; i < hops; ++i)
            co_await pool.schedule();
        co_return std::chrono::duration<double, std::nano>(clock_type::now() - start).count() /
            static_cast<double>(hops);
    };
    return iocp::sync_wait(body());
}

double measure_asio_post(std::size_t threads, std::uint64_t hops) {
    asio::io_context context;
    double result = 0;
    auto body = [&]() -> asio::awaitable<void> {
        for (int i = 0; i < 1000; ++i)
            co_await asio::post(context, asio::use_awaitable);
        const auto start = clock_type::now();
        for (std::uint64_t i = 0; i < hops; ++i)
            co_await asio::post(context, asio::use_awaitable);
        result = std::chrono::duration<double, std::nano>(clock_type::now() - start).count() /
                 static_cast<double>(hops);
    };
    asio::co_spawn(context, body(), asio::detached);
    std::vector<std::thread> runners;
    for (std::size_t i = 0; i < threads; ++i)
        runners.emplace_back([&] { context.run(); });
    for (auto& t : runners)
        t.join();
    return result;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

} // namespace

int main(int argc, char** argv) {
    std::size_t threads = 2;
    std::size_t connections = 8;
    double seconds = 2;
    int repeat = 3;
    std::uint64_t hops = 1'000'000;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i];
        if (a == "--threads")
            threads = static_cast<std::size_t>(std::atoi(argv[i + 1]));
        else if (a == "--connections")
            connections = static_cast<std::size_t>(std::atoi(argv[i + 1]));
        else if (a == "--seconds")
            seconds = std::atof(argv[i + 1]);
        else if (a == "--repeat")
            repeat = std::max(1, std::atoi(argv[i + 1]));
        else if (a == "--hops")
            hops = static_cast<std::uint64_t>(std::atoll(argv[i + 1]));
    }
    std::printf("echo ping-pong, %zu-byte messages, %zu connections, %zu server threads, "
                "%.1f s x %d (median); iocp on %s, Asio on epoll\n",
                message_size, connections, threads, seconds, repeat, iocp::io_backend_name());
    const char* names[] = {"iocp-callback", "iocp-coroutine", "asio-callback", "asio-awaitable"};
    using runner = double (*)(std::size_t, std::size_t, double);
    const runner runners[] = {
        &measure_echo<iocp_callback_server>, &measure_echo<iocp_coroutine_server>,
        &measure_echo<asio_callback_server>, &measure_echo<asio_awaitable_server>};
    std::vector<double> samples[4];
    for (int r = 0; r < repeat; ++r)
        for (int k = 0; k < 4; ++k) {
            const int which = (k + r) % 4; // rotate: none always runs first
            samples[which].push_back(runners[which](threads, connections, seconds));
        }
    double rate[4];
    for (int k = 0; k < 4; ++k) {
        rate[k] = median(samples[k]);
        std::printf("  %-15s %10.0f msg/s\n", names[k], rate[k]);
    }
    std::printf("  coroutine / callback (iocp):  %.3f\n", rate[1] / rate[0]);
    std::printf("  iocp coroutine / asio awaitable: %.3f\n", rate[1] / rate[3]);
    std::printf("  asio awaitable / asio callback:  %.3f\n", rate[3] / rate[2]);

    std::vector<double> ours;
    std::vector<double> theirs;
    for (int r = 0; r < repeat; ++r) {
        ours.push_back(measure_iocp_schedule(threads, hops));
        theirs.push_back(measure_asio_post(threads, hops));
    }
    const double a = median(ours);
    const double b = median(theirs);
    std::printf("hop to a worker, %zu threads, %llu hops x %d (median)\n", threads,
                static_cast<unsigned long long>(hops), repeat);
    std::printf("  co_await pool.schedule()             %8.1f ns\n", a);
    std::printf("  co_await asio::post(use_awaitable)   %8.1f ns\n", b);
    std::printf("  schedule / asio::post:               %.3f\n", a / b);
    return 0;
}

#else

#include <cstdio>

int main() {
    std::puts("co_echo_bench: Linux only (the Win32 build has echo_bench)");
    return 0;
}

#endif
