// Echo throughput over loopback on Linux: the same TCP echo server written on iocp::thread_pool
// (on io_uring and on epoll) and on asio::io_context (epoll; io_uring too when the helper
// binary that builds Asio with ASIO_HAS_IO_URING_AS_DEFAULT exists), all run on the same number
// of threads and driven by the same blocking clients, in one run, so that the ratios compare
// like with like.
//
//   echo_native_bench [--threads N] [--seconds S] [--repeat R] [--syscalls]
//                     [--spin-us N] [--batch N] [--servers a,b,...]
//
// Each server runs in a child process (this binary again, `--serve <kind>`), because the I/O
// backend of iocp is chosen once per process (IOCP_IO_BACKEND) and because Asio's io_uring
// build is a different compilation of Asio (`echo_native_bench_asio_uring`, next to this
// binary). The clients run here, one thread per connection (two for stream), plain blocking
// sockets with TCP_NODELAY. Workloads:
//   ping-pong:  each connection sends a message and waits for its echo, again and again
//               (messages/s = round trips per second; latency-bound);
//   stream:     each connection sends 64 KiB writes continuously from one thread while
//               another reads the echo (MiB/s of payload echoed; throughput-bound).
// Every echoed byte is checked. Each (workload, server) runs R times; the servers' order
// rotates from one repetition to the next, so that none always runs first. The table shows the
// median and the range. With --syscalls each server runs under `perf stat` counting its system
// calls (raw_syscalls:sys_enter and a few by name), reported per message: the server's calls
// only, start-up included (a few hundred against millions of messages).

#include <iocp/config.hpp>

#if IOCP_HAS_IO && !IOCP_HAS_IOCP

#include <iocp/acceptor.hpp>
#include <iocp/socket.hpp>
#include <iocp/thread_pool.hpp>

#include <asio.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

extern char** environ;

namespace {

using clock_type = std::chrono::steady_clock;

#if defined(ASIO_HAS_IO_URING_AS_DEFAULT)
constexpr const char* asio_backend = "io_uring";
#else
constexpr const char* asio_backend = "epoll";
#endif

// --- the server on iocp::thread_pool --------------------------------------------------------

iocp::thread_pool_options g_pool_options; // --spin-us, --batch; the defaults are the pool's own

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
    static const char* backend() { return iocp::io_backend_name(); }

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
    static const char* backend() { return asio_backend; }

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

// The child: start a server, print "<port> <backend>", serve until stdin closes.
template <class Server>
int run_server(std::size_t threads) {
    Server server(threads);
    std::printf("%u %s\n", static_cast<unsigned>(server.port()), Server::backend());
    std::fflush(stdout);
    char sink[64];
    while (::read(STDIN_FILENO, sink, sizeof sink) > 0 || errno == EINTR) {
        errno = 0;
    }
    return 0;
}

// --- the parent: servers as child processes ---------------------------------------------------

struct server_kind {
    std::string name;       // as shown in the table
    std::string program;    // this binary, or the Asio io_uring helper
    std::string serve;      // "iocp" or "asio"
    std::string io_backend; // IOCP_IO_BACKEND for iocp; the backend Asio must report otherwise
};

// The events counted with --syscalls: the total, then the calls that make up most of it.
const std::vector<std::string> g_syscall_events = {
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_io_uring_enter",
    "syscalls:sys_enter_epoll_wait",
    "syscalls:sys_enter_epoll_pwait",
    "syscalls:sys_enter_epoll_ctl",
    "syscalls:sys_enter_futex",
    "syscalls:sys_enter_recvmsg",
    "syscalls:sys_enter_sendmsg",
    "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_read",
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_sched_yield",
    "context-switches",
    "task-clock",
};

class server_process {
public:
    server_process(const server_kind& kind, std::size_t threads, bool count_syscalls,
                   const std::vector<std::string>& extra) {
        std::vector<std::string> args;
        if (count_syscalls) {
            char name[] = "/tmp/echo_native_bench_perf_XXXXXX";
            const int fd = ::mkstemp(name);
            if (fd < 0)
                fail("mkstemp");
            ::close(fd);
            perf_output_ = name;
            args = {"perf", "stat", "-x", ",", "-o", perf_output_};
            for (const auto& e : g_syscall_events) {
                args.push_back("-e");
                args.push_back(e);
            }
            args.push_back("--");
        }
        args.insert(args.end(),
                    {kind.program, "--serve", kind.serve, "--threads", std::to_string(threads)});
        args.insert(args.end(), extra.begin(), extra.end());

        std::vector<std::string> env;
        for (char** e = environ; *e != nullptr; ++e)
            if (std::strncmp(*e, "IOCP_IO_BACKEND=", 16) != 0)
                env.emplace_back(*e);
        if (kind.serve == "iocp")
            env.push_back("IOCP_IO_BACKEND=" + kind.io_backend);

        int in[2];
        int out[2];
        if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0)
            fail("pipe2");
        posix_spawn_file_actions_t actions;
        ::posix_spawn_file_actions_init(&actions);
        ::posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
        ::posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
        std::vector<char*> argv;
        for (auto& a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        std::vector<char*> envp;
        for (auto& e : env)
            envp.push_back(e.data());
        envp.push_back(nullptr);
        const int rc = ::posix_spawnp(&pid_, argv[0], &actions, nullptr, argv.data(), envp.data());
        ::posix_spawn_file_actions_destroy(&actions);
        ::close(in[0]);
        ::close(out[1]);
        if (rc != 0) {
            errno = rc;
            fail(("posix_spawnp " + args[0]).c_str());
        }
        to_child_ = in[1];
        std::string line;
        char c = 0;
        while (::read(out[0], &c, 1) == 1 && c != '\n')
            line += c;
        ::close(out[0]);
        std::istringstream parse(line);
        unsigned port = 0;
        parse >> port >> backend_;
        if (port == 0) {
            std::fprintf(stderr, "echo_native_bench: server %s did not start\n", kind.name.c_str());
            std::exit(1);
        }
        port_ = static_cast<std::uint16_t>(port);
        if (backend_ != kind.io_backend) {
            std::fprintf(stderr, "echo_native_bench: %s runs on %s, not %s\n", kind.name.c_str(),
                         backend_.c_str(), kind.io_backend.c_str());
            std::exit(1);
        }
    }

    server_process(const server_process&) = delete;
    server_process& operator=(const server_process&) = delete;

    // Closes the child's stdin (it stops its server and exits) and waits for it; returns the
    // system call counts perf wrote, if it ran under perf.
    std::map<std::string, double> stop() {
        ::close(std::exchange(to_child_, -1));
        int status = 0;
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        std::map<std::string, double> counts;
        if (!perf_output_.empty()) {
            std::ifstream f(perf_output_);
            std::string line;
            while (std::getline(f, line)) {
                // value,unit,event,...
                std::vector<std::string> fields;
                std::stringstream s(line);
                std::string field;
                while (std::getline(s, field, ','))
                    fields.push_back(field);
                if (fields.size() >= 3 &&
                    (fields[2].find("sys_enter") != std::string::npos ||
                     fields[2] == "context-switches" || fields[2] == "task-clock"))
                    counts[fields[2]] = std::atof(fields[0].c_str());
            }
            ::unlink(perf_output_.c_str());
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            std::fprintf(stderr, "echo_native_bench: a server exited with status %d\n", status);
            std::exit(1);
        }
        return counts;
    }

    ~server_process() {
        if (to_child_ >= 0)
            (void)stop();
    }

    std::uint16_t port() const { return port_; }

private:
    [[noreturn]] static void fail(const char* what) {
        std::fprintf(stderr, "echo_native_bench: %s: %s\n", what, std::strerror(errno));
        std::exit(1);
    }

    pid_t pid_ = -1;
    int to_child_ = -1;
    std::uint16_t port_ = 0;
    std::string backend_;
    std::string perf_output_;
};

// --- the clients: plain blocking sockets, identical for every server -------------------------

int connect_to(std::uint16_t port) {
    const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s < 0 || ::connect(s, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        std::fprintf(stderr, "echo_native_bench: connect failed (%s)\n", std::strerror(errno));
        std::exit(1);
    }
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

struct measurement {
    double seconds = 0;
    std::uint64_t messages = 0; // round trips (ping-pong) or writes echoed (stream)
    std::uint64_t bytes = 0;    // payload echoed
    bool ok = true;
    std::map<std::string, double> syscalls; // the server's, with --syscalls
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
    std::vector<int> sockets;
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
    for (int s : sockets)
        ::close(s);
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
    std::vector<int> sockets;
    for (int c = 0; c < connections; ++c)
        sockets.push_back(connect_to(port));
    for (int c = 0; c < connections; ++c) {
        const int s = sockets[static_cast<std::size_t>(c)];
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
            ::shutdown(s, SHUT_WR); // the server sees eof once it has echoed everything
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
    for (int s : sockets)
        ::close(s);
    return m;
}

struct workload {
    std::string name;
    bool is_stream;
    int connections;
    std::size_t size;
};

double value(const measurement& m, bool is_stream) {
    return is_stream ? m.mib_per_second() : m.messages_per_second();
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::stringstream in(s);
    std::string part;
    while (std::getline(in, part, sep))
        if (!part.empty())
            out.push_back(part);
    return out;
}

std::string self_path(const char* argv0) {
    char resolved[4096];
    const ::ssize_t n = ::readlink("/proc/self/exe", resolved, sizeof resolved - 1);
    return n > 0 ? std::string(resolved, static_cast<std::size_t>(n)) : std::string(argv0);
}

} // namespace

int main(int argc, char** argv) {
    std::size_t threads = 2;
    double seconds = 1.0;
    int repeat = 3;
    bool count_syscalls = false;
    std::string serve;
    std::string servers_wanted = "iocp-io_uring,iocp-epoll,asio-epoll,asio-io_uring";
    std::vector<std::string> pool_args; // passed on to iocp servers
    for (int i = 1; i < argc; ++i) {
        const auto arg = [&](const char* name) {
            return std::strcmp(argv[i], name) == 0 && i + 1 < argc;
        };
        if (arg("--threads"))
            threads = static_cast<std::size_t>(std::atoi(argv[++i]));
        else if (arg("--seconds"))
            seconds = std::atof(argv[++i]);
        else if (arg("--repeat"))
            repeat = std::max(1, std::atoi(argv[++i]));
        else if (std::strcmp(argv[i], "--syscalls") == 0)
            count_syscalls = true;
        else if (arg("--servers"))
            servers_wanted = argv[++i];
        else if (arg("--serve"))
            serve = argv[++i];
        else if (arg("--spin-us")) {
            g_pool_options.spin = std::chrono::microseconds(std::atoi(argv[i + 1]));
            pool_args.insert(pool_args.end(), {argv[i], argv[i + 1]});
            ++i;
        } else if (arg("--batch")) {
            g_pool_options.batch = static_cast<std::size_t>(std::atoi(argv[i + 1]));
            pool_args.insert(pool_args.end(), {argv[i], argv[i + 1]});
            ++i;
        } else {
            std::fprintf(stderr,
                         "usage: echo_native_bench [--threads N] [--seconds S] [--repeat R] "
                         "[--syscalls] [--spin-us N] [--batch N] [--servers a,b,...]\n"
                         "servers: iocp-io_uring iocp-epoll asio-epoll asio-io_uring\n");
            return 2;
        }
    }
    if (serve == "iocp")
        return run_server<iocp_echo_server>(threads);
    if (serve == "asio")
        return run_server<asio_echo_server>(threads);
    if (!serve.empty()) {
        std::fprintf(stderr, "echo_native_bench: unknown server %s\n", serve.c_str());
        return 2;
    }

    const std::string self = self_path(argv[0]);
    const std::string dir = self.substr(0, self.rfind('/') + 1);
    const std::string asio_uring_helper = dir + "echo_native_bench_asio_uring";
    std::vector<server_kind> servers;
    for (const std::string& name : split(servers_wanted, ',')) {
        if (name == "iocp-io_uring" || name == "iocp-epoll")
            servers.push_back({name, self, "iocp", name.substr(5)});
        else if (name == "asio-epoll")
            servers.push_back({name, self, "asio", "epoll"});
        else if (name == "asio-io_uring") {
            if (::access(asio_uring_helper.c_str(), X_OK) == 0)
                servers.push_back({name, asio_uring_helper, "asio", "io_uring"});
            else
                std::printf("(asio-io_uring skipped: %s was not built)\n",
                            asio_uring_helper.c_str());
        } else {
            std::fprintf(stderr, "echo_native_bench: unknown server %s\n", name.c_str());
            return 2;
        }
    }
    if (servers.empty())
        return 2;

    const std::vector<workload> workloads = {
        {"ping-pong 64 B x 8", false, 8, 64},
        {"ping-pong 4 KiB x 8", false, 8, 4096},
        {"stream 64 KiB x 4", true, 4, std::size_t{64} * 1024},
    };
    std::printf("echo over 127.0.0.1, servers on %zu threads, %.1f s per run, median of %d "
                "(min..max); iocp pool spin %lld us, batch %zu%s\n\n",
                threads, seconds, repeat, static_cast<long long>(g_pool_options.spin.count()),
                g_pool_options.batch, count_syscalls ? "; servers under perf stat" : "");
    std::printf("%-20s %-14s %12s %21s %8s", "workload", "server", "median", "range", "vs asio");
    if (count_syscalls)
        std::printf(" %9s  %s", "calls/msg",
                    "per message: server CPU, context switches; calls by name");
    std::printf("\n");
    bool all_ok = true;
    for (const workload& w : workloads) {
        std::vector<std::vector<measurement>> results(servers.size());
        for (int r = 0; r < repeat; ++r) {
            for (std::size_t k = 0; k < servers.size(); ++k) {
                const std::size_t i = (k + static_cast<std::size_t>(r)) % servers.size();
                server_process server(servers[i], threads, count_syscalls, pool_args);
                measurement m = w.is_stream
                                    ? stream(server.port(), w.connections, w.size, seconds)
                                    : ping_pong(server.port(), w.connections, w.size, seconds);
                m.syscalls = server.stop();
                all_ok = all_ok && m.ok;
                results[i].push_back(std::move(m));
            }
        }
        std::vector<double> medians;
        for (auto& v : results) {
            std::sort(v.begin(), v.end(), [&](const measurement& a, const measurement& b) {
                return value(a, w.is_stream) < value(b, w.is_stream);
            });
            medians.push_back(value(v[v.size() / 2], w.is_stream));
        }
        double asio_epoll = 0;
        for (std::size_t i = 0; i < servers.size(); ++i)
            if (servers[i].name == "asio-epoll")
                asio_epoll = medians[i];
        for (std::size_t i = 0; i < servers.size(); ++i) {
            const auto& v = results[i];
            char range[64];
            std::snprintf(range, sizeof range, "%.0f..%.0f", value(v.front(), w.is_stream),
                          value(v.back(), w.is_stream));
            std::printf("%-20s %-14s %12.0f %21s", i == 0 ? w.name.c_str() : "",
                        servers[i].name.c_str(), medians[i], range);
            if (asio_epoll > 0)
                std::printf(" %7.2fx", medians[i] / asio_epoll);
            else
                std::printf(" %8s", "-");
            if (count_syscalls) {
                // Per message, over every repetition of this server.
                std::map<std::string, double> calls;
                double messages = 0;
                for (const auto& m : v) {
                    messages += static_cast<double>(m.messages);
                    for (const auto& [event, n] : m.syscalls)
                        calls[event] += n;
                }
                std::printf(" %9.2f ", calls["raw_syscalls:sys_enter"] / messages);
                // task-clock is in ms: the server's CPU time per message, in us.
                std::printf(" (CPU %.2f us, context switches %.2f)",
                            calls["task-clock"] * 1000.0 / messages,
                            calls["context-switches"] / messages);
                for (const auto& [event, n] : calls) {
                    const std::string prefix = "syscalls:sys_enter_";
                    if (event.rfind(prefix, 0) == 0 && n / messages >= 0.005)
                        std::printf(" %s %.2f", event.substr(prefix.size()).c_str(), n / messages);
                }
            }
            std::printf("\n");
        }
        std::printf("%-20s %s\n", "", w.is_stream ? "(MiB/s)" : "(round trips/s)");
        std::fflush(stdout);
    }
    if (!all_ok) {
        std::fprintf(stderr, "echo_native_bench: an echo was wrong or incomplete\n");
        return 1;
    }
    return 0;
}

#else

#include <cstdio>

int main() {
    std::puts("echo_native_bench needs the Linux I/O backends (on Windows: echo_bench)");
    return 0;
}

#endif
