// Echo throughput over loopback: the same TCP echo server written on iocp::thread_pool and on
// asio::io_context (run on the same number of threads), driven by the same blocking clients,
// in one run, so that the ratio compares like with like.
//
//   echo_bench [--threads N] [--seconds S] [--repeat R] [--spin-us N] [--batch N]
//
// Workloads (each client connection has its own client thread(s), plain blocking Winsock):
//   ping-pong:  each connection sends a message and waits for its echo, again and again
//               (messages/s is the number of round trips; latency-bound);
//   stream:     each connection sends 64 KiB writes continuously from one thread while
//               another reads the echo (MiB/s of payload echoed; throughput-bound).
// Every echoed byte is checked. Each (workload, server) runs R times, alternating servers; the
// table shows the median. Google Benchmark is not available for MinGW here, hence a plain
// main: see bench/README.md for the numbers and the command.

#include <iocp/config.hpp>

#if IOCP_HAS_IOCP

#include <iocp/acceptor.hpp>
#include <iocp/socket.hpp>
#include <iocp/thread_pool.hpp>

#include <asio.hpp>

#include <algorithm>
#include <atomic>
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
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

// --- the server on iocp::thread_pool --------------------------------------------------------

// Pool options for the iocp server (--spin-us, --batch); the defaults are the pool's own.
iocp::thread_pool_options g_pool_options;

class iocp_echo_server {
public:
    explicit iocp_echo_server(std::size_t threads)
        : pool_(options(threads)),
          acceptor_(pool_, iocp::endpoint::loopback(iocp::address_family::ipv4, 0)) {
        std::lock_guard lock(mutex_);
        accept_next();
    }

    iocp_echo_server(const iocp_echo_server&) = delete;
    iocp_echo_server& operator=(const iocp_echo_server&) = delete;

    ~iocp_echo_server() {
        try {
            {
                std::lock_guard lock(mutex_);
                stopping_ = true;
                acceptor_.close();
            }
            pool_.join(); // cancels whatever is still pending and waits for its completion
        } catch (...) {
            std::abort();
        }
    }

    std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

private:
    static iocp::thread_pool_options options(std::size_t threads) {
        iocp::thread_pool_options o = g_pool_options;
        o.threads = threads;
        return o;
    }

    struct session : std::enable_shared_from_this<session> {
        explicit session(iocp::socket s) : sock(std::move(s)), buffer(std::size_t{64} * 1024) {}
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

    void accept_next() { // with mutex_ held
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

// --- the same server on asio::io_context ----------------------------------------------------

class asio_echo_server {
public:
    explicit asio_echo_server(std::size_t threads)
        : acceptor_(context_, asio::ip::tcp::endpoint(asio::ip::address_v4::loopback(), 0)) {
        accept_next();
        for (std::size_t i = 0; i < threads; ++i)
            threads_.emplace_back([this] { context_.run(); });
    }

    asio_echo_server(const asio_echo_server&) = delete;
    asio_echo_server& operator=(const asio_echo_server&) = delete;

    ~asio_echo_server() {
        try {
            guard_.reset();
            context_.stop();
            for (auto& t : threads_)
                t.join();
        } catch (...) {
            std::abort();
        }
    }

    std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

private:
    struct session : std::enable_shared_from_this<session> {
        explicit session(asio::ip::tcp::socket s)
            : sock(std::move(s)), buffer(std::size_t{64} * 1024) {}
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
    asio::executor_work_guard<asio::io_context::executor_type> guard_{context_.get_executor()};
    asio::ip::tcp::acceptor acceptor_;
    std::vector<std::thread> threads_;
};

// --- the clients: plain blocking Winsock, identical for both servers -------------------------

SOCKET connect_to(std::uint16_t port) {
    SOCKET s = ::socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = ::htons(port);
    addr.sin_addr.s_addr = ::htonl(INADDR_LOOPBACK);
    if (s == INVALID_SOCKET ||
        ::connect(s, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        std::fprintf(stderr, "echo_bench: connect failed (%d)\n", ::WSAGetLastError());
        std::exit(1);
    }
    int one = 1;
    ::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const char*>(&one), sizeof one);
    return s;
}

bool send_exactly(SOCKET s, const char* p, std::size_t n) {
    while (n > 0) {
        const int k = ::send(s, p, static_cast<int>((std::min)(n, std::size_t{1} << 20)), 0);
        if (k <= 0)
            return false;
        p += k;
        n -= static_cast<std::size_t>(k);
    }
    return true;
}

bool recv_exactly(SOCKET s, char* p, std::size_t n) {
    while (n > 0) {
        const int k = ::recv(s, p, static_cast<int>((std::min)(n, std::size_t{1} << 20)), 0);
        if (k <= 0)
            return false;
        p += k;
        n -= static_cast<std::size_t>(k);
    }
    return true;
}

struct measurement {
    double seconds = 0;
    std::uint64_t messages = 0; // round trips (ping-pong) or writes echoed (stream)
    std::uint64_t bytes = 0;    // payload echoed
    bool ok = true;
    double messages_per_second() const { return static_cast<double>(messages) / seconds; }
    double mib_per_second() const {
        return static_cast<double>(bytes) / (1024.0 * 1024.0) / seconds;
    }
};

// `connections` clients, each sending `size`-byte messages and waiting for their echo.
measurement ping_pong(std::uint16_t port, int connections, std::size_t size, double seconds) {
    std::atomic<bool> go{false};
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> round_trips{0};
    std::atomic<bool> ok{true};
    std::vector<std::thread> clients;
    std::vector<SOCKET> sockets;
    for (int c = 0; c < connections; ++c)
        sockets.push_back(connect_to(port));
    for (int c = 0; c < connections; ++c) {
        clients.emplace_back([&, s = sockets[static_cast<std::size_t>(c)], c] {
            std::vector<char> out(size);
            std::vector<char> in(size);
            std::uint64_t n = 0;
            while (!go.load())
                std::this_thread::yield();
            while (!stop.load(std::memory_order_relaxed)) {
                std::memset(out.data(), static_cast<int>('a' + (n + static_cast<unsigned>(c)) % 26),
                            size);
                if (!send_exactly(s, out.data(), size) || !recv_exactly(s, in.data(), size) ||
                    std::memcmp(out.data(), in.data(), size) != 0) {
                    ok = false;
                    break;
                }
                ++n;
            }
            round_trips += n;
        });
    }
    const auto start = clock_type::now();
    go = true;
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    stop = true;
    for (auto& t : clients)
        t.join();
    measurement m;
    m.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
    m.messages = round_trips.load();
    m.bytes = m.messages * size;
    m.ok = ok.load();
    for (SOCKET s : sockets)
        ::closesocket(s);
    return m;
}

// `connections` clients, each with a writer thread sending `size`-byte writes for `seconds`
// and a reader thread checking the echo until everything sent has come back.
measurement stream(std::uint16_t port, int connections, std::size_t size, double seconds) {
    std::atomic<bool> go{false};
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> writes{0};
    std::atomic<std::uint64_t> echoed{0};
    std::atomic<bool> ok{true};
    std::vector<std::thread> threads;
    std::vector<SOCKET> sockets;
    for (int c = 0; c < connections; ++c)
        sockets.push_back(connect_to(port));
    for (int c = 0; c < connections; ++c) {
        const SOCKET s = sockets[static_cast<std::size_t>(c)];
        threads.emplace_back([&, s] {
            std::vector<char> out(size);
            while (!go.load())
                std::this_thread::yield();
            std::uint64_t n = 0;
            while (!stop.load(std::memory_order_relaxed)) {
                std::memset(out.data(), static_cast<int>('a' + n % 26), size);
                if (!send_exactly(s, out.data(), size)) {
                    ok = false;
                    break;
                }
                ++n;
            }
            writes += n;
            ::shutdown(s, SD_SEND); // the server sees eof once it has echoed everything
        });
        threads.emplace_back([&, s] {
            std::vector<char> in(size);
            std::uint64_t n = 0;
            for (;;) {
                if (!recv_exactly(s, in.data(), size))
                    break; // eof: everything sent came back
                const char expected = static_cast<char>('a' + n % 26);
                if (in.front() != expected || in.back() != expected ||
                    std::count(in.begin(), in.end(), expected) != static_cast<long>(size)) {
                    ok = false;
                    break;
                }
                ++n;
            }
            echoed += n;
        });
    }
    const auto start = clock_type::now();
    go = true;
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    stop = true;
    for (auto& t : threads)
        t.join();
    measurement m;
    m.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
    m.messages = echoed.load();
    m.bytes = m.messages * size;
    m.ok = ok.load() && echoed.load() == writes.load();
    for (SOCKET s : sockets)
        ::closesocket(s);
    return m;
}

struct workload {
    std::string name;
    bool is_stream;
    int connections;
    std::size_t size;
};

template <class Server>
measurement run_one(const workload& w, std::size_t threads, double seconds) {
    Server server(threads);
    return w.is_stream ? stream(server.port(), w.connections, w.size, seconds)
                       : ping_pong(server.port(), w.connections, w.size, seconds);
}

measurement median(std::vector<measurement> v, bool by_bytes) {
    std::sort(v.begin(), v.end(), [&](const measurement& a, const measurement& b) {
        return by_bytes ? a.mib_per_second() < b.mib_per_second()
                        : a.messages_per_second() < b.messages_per_second();
    });
    return v[v.size() / 2];
}

} // namespace

int main(int argc, char** argv) {
    std::size_t threads = (std::max)(1u, std::thread::hardware_concurrency());
    double seconds = 1.0;
    int repeat = 3;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = static_cast<std::size_t>(std::atoi(argv[++i]));
        else if (std::strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = std::atof(argv[++i]);
        else if (std::strcmp(argv[i], "--repeat") == 0 && i + 1 < argc)
            repeat = (std::max)(1, std::atoi(argv[++i]));
        else if (std::strcmp(argv[i], "--spin-us") == 0 && i + 1 < argc)
            g_pool_options.spin = std::chrono::microseconds(std::atoi(argv[++i]));
        else if (std::strcmp(argv[i], "--batch") == 0 && i + 1 < argc)
            g_pool_options.batch = static_cast<std::size_t>(std::atoi(argv[++i]));
        else {
            std::fprintf(stderr, "usage: echo_bench [--threads N] [--seconds S] [--repeat R] "
                                 "[--spin-us N] [--batch N]\n");
            return 2;
        }
    }
    WSADATA data;
    ::WSAStartup(MAKEWORD(2, 2), &data);

    const std::vector<workload> workloads = {
        {"ping-pong 64 B x 8 connections", false, 8, 64},
        {"ping-pong 4 KiB x 8 connections", false, 8, 4096},
        {"stream 64 KiB writes x 4 connections", true, 4, std::size_t{64} * 1024},
    };
    std::printf("echo over 127.0.0.1, servers on %zu threads, %.1f s per run, median of %d; "
                "pool spin %lld us, batch %zu\n\n",
                threads, seconds, repeat, static_cast<long long>(g_pool_options.spin.count()),
                g_pool_options.batch);
    std::printf("%-38s %-18s %14s %12s\n", "workload", "server", "messages/s", "MiB/s");
    bool all_ok = true;
    for (const workload& w : workloads) {
        std::vector<measurement> ours;
        std::vector<measurement> theirs;
        for (int r = 0; r < repeat; ++r) {
            // Alternate which goes first, so that neither always runs on a warmer system.
            if (r % 2 == 0) {
                ours.push_back(run_one<iocp_echo_server>(w, threads, seconds));
                theirs.push_back(run_one<asio_echo_server>(w, threads, seconds));
            } else {
                theirs.push_back(run_one<asio_echo_server>(w, threads, seconds));
                ours.push_back(run_one<iocp_echo_server>(w, threads, seconds));
            }
        }
        for (const auto& m : ours)
            all_ok = all_ok && m.ok;
        for (const auto& m : theirs)
            all_ok = all_ok && m.ok;
        const measurement a = median(ours, w.is_stream);
        const measurement b = median(theirs, w.is_stream);
        std::printf("%-38s %-18s %14.0f %12.1f\n", w.name.c_str(), "iocp::thread_pool",
                    a.messages_per_second(), a.mib_per_second());
        std::printf("%-38s %-18s %14.0f %12.1f\n", "", "asio::io_context", b.messages_per_second(),
                    b.mib_per_second());
        std::printf("%-38s %-18s %14.2fx\n", "", "ratio iocp/asio",
                    a.messages_per_second() / b.messages_per_second());
    }
    ::WSACleanup();
    if (!all_ok) {
        std::fprintf(stderr, "echo_bench: an echo was wrong or incomplete\n");
        return 1;
    }
    return 0;
}

#else

#include <cstdio>

int main() {
    std::puts("echo_bench needs the Win32 backend; on Linux run echo_native_bench");
    return 0;
}

#endif
