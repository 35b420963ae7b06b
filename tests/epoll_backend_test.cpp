// The epoll backend driven directly through the backend contract (linux_op, issue, cancel,
// attach, detach), below the I/O layer: files at offsets, socketpairs, loopback TCP.
#include "iocp/detail/io/linux/epoll_backend.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/platform.hpp"

namespace {

namespace lnx = iocp::detail::io::lnx;
using kind = lnx::linux_op::kind;

// True on the threads of a test that call into the backend; the backend's own threads see
// false. An on_complete that sees true ran on a caller's thread (maybe inside issue()): a bug.
thread_local bool tl_caller_thread = false;

// A linux_op that records its completions: how many, the last result, and whether one ran on a
// caller's thread. wait() blocks until the first completion (ctest's timeout is the only clock).
struct recorded_op : lnx::linux_op {
    recorded_op() { on_complete = &recorded_op::record; }
    recorded_op(kind k, int op_fd) : recorded_op() {
        what = k;
        fd = op_fd;
    }

    static void record(lnx::linux_op* op, int res) noexcept {
        auto* self = static_cast<recorded_op*>(op);
        std::lock_guard lock(self->mutex_);
        ++self->calls_;
        self->res_ = res;
        if (tl_caller_thread)
            self->on_caller_thread_ = true;
        self->cv_.notify_all();
    }

    int wait() {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return calls_ > 0; });
        return res_;
    }

    int calls() {
        std::lock_guard lock(mutex_);
        return calls_;
    }

    bool ran_on_caller_thread() {
        std::lock_guard lock(mutex_);
        return on_caller_thread_;
    }

    // Points iov[0..n) at `buffers`.
    void set_buffers(std::vector<std::string>& buffers) {
        iov_count = static_cast<unsigned>(buffers.size());
        for (std::size_t i = 0; i < buffers.size(); ++i)
            iov[i] = ::iovec{buffers[i].data(), buffers[i].size()};
    }

    void set_buffer(void* data, std::size_t size) {
        iov[0] = ::iovec{data, size};
        iov_count = 1;
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    int calls_ = 0;
    int res_ = 0;
    bool on_caller_thread_ = false;
};

// Closes an fd at scope exit.
struct unique_fd {
    int fd = -1;
    unique_fd() = default;
    explicit unique_fd(int f) : fd(f) {}
    unique_fd(const unique_fd&) = delete;
    unique_fd& operator=(const unique_fd&) = delete;
    unique_fd(unique_fd&& other) noexcept : fd(other.release()) {}
    unique_fd& operator=(unique_fd&& other) noexcept {
        reset(other.release());
        return *this;
    }
    ~unique_fd() { reset(); }
    void reset(int f = -1) {
        if (fd >= 0)
            ::close(fd);
        fd = f;
    }
    int release() { return std::exchange(fd, -1); }
};

struct fd_pair {
    unique_fd a;
    unique_fd b;
};

fd_pair make_socketpair() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
        throw std::system_error(errno, std::system_category(), "socketpair");
    fd_pair p;
    p.a.reset(fds[0]);
    p.b.reset(fds[1]);
    return p;
}

::sockaddr_in loopback4(std::uint16_t port) {
    ::sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

std::uint16_t local_port(int fd) {
    ::sockaddr_storage a{};
    ::socklen_t len = sizeof a;
    if (::getsockname(fd, reinterpret_cast<::sockaddr*>(&a), &len) != 0)
        throw std::system_error(errno, std::system_category(), "getsockname");
    if (a.ss_family == AF_INET6)
        return ntohs(reinterpret_cast<::sockaddr_in6*>(&a)->sin6_port);
    return ntohs(reinterpret_cast<::sockaddr_in*>(&a)->sin_port);
}

// A listening TCP socket on 127.0.0.1, any port.
unique_fd make_listener4() {
    unique_fd l(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (l.fd < 0)
        throw std::system_error(errno, std::system_category(), "socket");
    ::sockaddr_in a = loopback4(0);
    if (::bind(l.fd, reinterpret_cast<::sockaddr*>(&a), sizeof a) != 0 || ::listen(l.fd, 64) != 0)
        throw std::system_error(errno, std::system_category(), "bind/listen");
    return l;
}

// A connected loopback TCP pair made with blocking calls: a = the client, b = the accepted.
// `buffer_size` > 0 sets SO_SNDBUF on a and SO_RCVBUF on b first (small buffers: partial sends).
fd_pair make_tcp_pair(int buffer_size = 0) {
    unique_fd l = make_listener4();
    fd_pair p;
    p.a.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (p.a.fd < 0)
        throw std::system_error(errno, std::system_category(), "socket");
    if (buffer_size > 0) {
        ::setsockopt(p.a.fd, SOL_SOCKET, SO_SNDBUF, &buffer_size, sizeof buffer_size);
        ::setsockopt(l.fd, SOL_SOCKET, SO_RCVBUF, &buffer_size, sizeof buffer_size);
    }
    ::sockaddr_in a = loopback4(local_port(l.fd));
    if (::connect(p.a.fd, reinterpret_cast<::sockaddr*>(&a), sizeof a) != 0)
        throw std::system_error(errno, std::system_category(), "connect");
    p.b.reset(::accept4(l.fd, nullptr, nullptr, SOCK_CLOEXEC));
    if (p.b.fd < 0)
        throw std::system_error(errno, std::system_category(), "accept4");
    return p;
}

// An unlinked temporary file, open for reading and writing.
unique_fd make_temp_file() {
    std::string path = (std::filesystem::temp_directory_path() / "iocp_epoll_XXXXXX").string();
    unique_fd f(::mkstemp(path.data()));
    if (f.fd < 0)
        throw std::system_error(errno, std::system_category(), "mkstemp");
    ::unlink(path.c_str());
    return f;
}

// Writes all of `data` with blocking calls (a peer the backend does not own).
void write_all(int fd, const void* data, std::size_t size) {
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
        const ::ssize_t n = ::send(fd, p, size, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            throw std::system_error(errno, std::system_category(), "send");
        p += n;
        size -= static_cast<std::size_t>(n);
    }
}

char pattern_byte(std::size_t i) { return static_cast<char>((i * 131 + 7) & 0xff); }

class epoll_backend_test : public ::testing::Test {
protected:
    void SetUp() override {
        tl_caller_thread = true;
        backend_ = lnx::epoll_backend::create();
    }

    lnx::epoll_backend& be() { return static_cast<lnx::epoll_backend&>(*backend_); }

    // Attaches and reports failure as a test failure.
    void attach(int fd) { ASSERT_EQ(be().attach(fd), std::error_code()) << "fd " << fd; }

    // Destroys the backend: its threads are joined, so every completion that will ever come has
    // come; counts checked after this are final ("exactly once", not "at least once").
    void finish() { backend_.reset(); }

    std::unique_ptr<lnx::backend> backend_;
};

// Every recorded op completed exactly once and never on a caller's thread.
void expect_once(recorded_op& op) {
    EXPECT_EQ(op.calls(), 1);
    EXPECT_FALSE(op.ran_on_caller_thread());
}

TEST_F(epoll_backend_test, names_itself_and_reports_creation_errors_through_error_code) {
    EXPECT_STREQ(backend_->name(), "epoll");
    std::error_code ec = std::make_error_code(std::errc::io_error);
    std::unique_ptr<lnx::backend> other = lnx::epoll_backend::create(ec);
    EXPECT_FALSE(ec);
    ASSERT_NE(other, nullptr);
    EXPECT_STREQ(other->name(), "epoll");
}

TEST_F(epoll_backend_test, file_write_at_and_read_at_offsets) {
    unique_fd f = make_temp_file();
    attach(f.fd); // epoll refuses regular files (EPERM): attached without registration
    std::string text = "hello, offset";
    recorded_op w(kind::write_at, f.fd);
    w.offset = 4096;
    w.set_buffer(text.data(), text.size());
    be().issue(w);
    EXPECT_EQ(w.wait(), static_cast<int>(text.size()));

    std::string back(64, '\0');
    recorded_op r(kind::read_at, f.fd);
    r.offset = 4096;
    r.set_buffer(back.data(), back.size());
    be().issue(r);
    EXPECT_EQ(r.wait(), static_cast<int>(text.size())); // short read at the end of the file
    EXPECT_EQ(back.substr(0, text.size()), text);

    std::string hole(16, 'x');
    recorded_op h(kind::read_at, f.fd);
    h.offset = 100;
    h.set_buffer(hole.data(), hole.size());
    be().issue(h);
    EXPECT_EQ(h.wait(), 16);
    EXPECT_EQ(hole, std::string(16, '\0')); // the hole before 4096 reads as zeros

    recorded_op eof(kind::read_at, f.fd);
    eof.offset = 1 << 20;
    eof.set_buffer(back.data(), back.size());
    be().issue(eof);
    EXPECT_EQ(eof.wait(), 0);

    be().detach(f.fd);
    finish();
    for (recorded_op* op : {&w, &r, &h, &eof})
        expect_once(*op);
}

TEST_F(epoll_backend_test, file_read_at_fills_several_buffers_in_order) {
    unique_fd f = make_temp_file();
    std::string data(3050, '\0');
    for (std::size_t i = 0; i < data.size(); ++i)
        data[i] = pattern_byte(i);
    ASSERT_EQ(::pwrite(f.fd, data.data(), data.size(), 0), static_cast<::ssize_t>(data.size()));

    // Not attached: read_at/write_at need no attach.
    std::vector<std::string> parts = {std::string(1, '\0'),    std::string(7, '\0'),
                                      std::string(100, '\0'),  std::string(1000, '\0'),
                                      std::string(2, '\0'),    std::string(500, '\0'),
                                      std::string(1390, '\0'), std::string(50, '\0')};
    recorded_op r(kind::read_at, f.fd);
    r.offset = 0;
    r.set_buffers(parts);
    be().issue(r);
    EXPECT_EQ(r.wait(), 3050);
    std::string joined;
    for (const std::string& p : parts)
        joined += p;
    EXPECT_TRUE(joined == data) << "the buffers do not hold the file's bytes in order";
    finish();
    expect_once(r);
}

TEST_F(epoll_backend_test, file_errors_are_negative_errno) {
    unique_fd f = make_temp_file();
    std::string path = "/proc/self/fd/" + std::to_string(f.fd);
    unique_fd read_only(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_GE(read_only.fd, 0);
    char byte = 'x';

    recorded_op w(kind::write_at, read_only.fd);
    w.set_buffer(&byte, 1);
    be().issue(w);
    EXPECT_EQ(w.wait(), -EBADF);

    recorded_op far(kind::read_at, f.fd);
    far.offset = static_cast<std::uint64_t>(INT64_MAX) + 1; // negative as an off_t: refused
    far.set_buffer(&byte, 1);
    be().issue(far);
    EXPECT_EQ(far.wait(), -EINVAL);

    fd_pair sp = make_socketpair();
    recorded_op on_socket(kind::read_at, sp.a.fd);
    on_socket.set_buffer(&byte, 1);
    be().issue(on_socket);
    EXPECT_EQ(on_socket.wait(), -ESPIPE);

    const int closed = ::dup(f.fd);
    ::close(closed);
    recorded_op on_closed(kind::read_at, closed);
    on_closed.set_buffer(&byte, 1);
    be().issue(on_closed);
    EXPECT_EQ(on_closed.wait(), -EBADF);

    finish();
    for (recorded_op* op : {&w, &far, &on_socket, &on_closed})
        expect_once(*op);
}

TEST_F(epoll_backend_test, send_and_recv_with_eight_buffers) {
    fd_pair sp = make_socketpair();
    attach(sp.a.fd);
    attach(sp.b.fd);
    std::vector<std::string> out = {"a", "bb", "ccc", "dddd", "eeeee", "ffffff", "g", "hh"};
    recorded_op s(kind::send, sp.a.fd);
    s.set_buffers(out);
    ASSERT_EQ(s.iov_count, 8u);
    be().issue(s);
    EXPECT_EQ(s.wait(), 24);

    std::vector<std::string> in = {std::string(3, '\0'), std::string(3, '\0'), std::string(3, '\0'),
                                   std::string(3, '\0'), std::string(3, '\0'), std::string(3, '\0'),
                                   std::string(3, '\0'), std::string(3, '\0')};
    recorded_op r(kind::recv, sp.b.fd);
    r.set_buffers(in);
    be().issue(r);
    ASSERT_EQ(r.wait(), 24);
    std::string joined;
    for (const std::string& p : in)
        joined += p;
    EXPECT_EQ(joined, "abbcccddddeeeeeffffffghh");

    be().detach(sp.a.fd);
    be().detach(sp.b.fd);
    finish();
    expect_once(s);
    expect_once(r);
}

TEST_F(epoll_backend_test, recv_waits_for_data_and_queued_recvs_complete_in_order) {
    fd_pair sp = make_socketpair();
    attach(sp.a.fd);
    char bytes[3] = {};
    recorded_op r1(kind::recv, sp.a.fd), r2(kind::recv, sp.a.fd), r3(kind::recv, sp.a.fd);
    r1.set_buffer(&bytes[0], 1);
    r2.set_buffer(&bytes[1], 1);
    r3.set_buffer(&bytes[2], 1);
    be().issue(r1); // no data: waits for an edge
    be().issue(r2); // queued behind r1
    be().issue(r3);
    write_all(sp.b.fd, "xyz", 3); // one edge for three bytes: all three must run
    EXPECT_EQ(r1.wait(), 1);
    EXPECT_EQ(r2.wait(), 1);
    EXPECT_EQ(r3.wait(), 1);
    EXPECT_EQ(std::string(bytes, 3), "xyz"); // FIFO: the first issued got the first byte
    be().detach(sp.a.fd);
    finish();
    for (recorded_op* op : {&r1, &r2, &r3})
        expect_once(*op);
}

TEST_F(epoll_backend_test, partial_send_then_the_rest_when_the_reader_drains) {
    // Small buffers and a reader that has not started: a large send cannot go in at once.
    fd_pair tcp = make_tcp_pair(4096);
    attach(tcp.a.fd);
    const std::size_t total = 8u << 20;
    std::string data(total, '\0');
    for (std::size_t i = 0; i < total; ++i)
        data[i] = pattern_byte(i);

    std::vector<int> results;
    std::size_t sent = 0;
    std::thread reader;
    std::string received;
    while (sent < total) {
        recorded_op s(kind::send, tcp.a.fd);
        s.set_buffer(data.data() + sent, total - sent);
        be().issue(s);
        const int n = s.wait();
        if (n <= 0) {
            ADD_FAILURE() << "send failed: " << std::strerror(-n);
            break; // the reader still ends: the shutdown below gives it EOF
        }
        results.push_back(n);
        sent += static_cast<std::size_t>(n);
        expect_once(s);
        if (!reader.joinable()) {
            // The first send went in only partly (the buffers hold far less than 8 MiB); the
            // next one waits for readiness, which the reader's draining gives.
            reader = std::thread([&] {
                std::vector<char> chunk(65536);
                for (;;) {
                    const ::ssize_t got = ::recv(tcp.b.fd, chunk.data(), chunk.size(), 0);
                    if (got <= 0)
                        return;
                    received.append(chunk.data(), static_cast<std::size_t>(got));
                }
            });
        }
    }
    ::shutdown(tcp.a.fd, SHUT_WR);
    reader.join();
    ASSERT_GE(results.size(), 2u);
    EXPECT_LT(static_cast<std::size_t>(results.front()), total); // a real partial send
    EXPECT_EQ(received.size(), total);
    EXPECT_TRUE(received == data) << "the stream differs from what was sent";
    be().detach(tcp.a.fd);
}

void accept_and_connect(lnx::epoll_backend& be, int family) {
    unique_fd listener(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_GE(listener.fd, 0) << std::strerror(errno);
    ::sockaddr_storage addr{};
    ::socklen_t addr_len = 0;
    if (family == AF_INET) {
        auto a = loopback4(0);
        std::memcpy(&addr, &a, sizeof a);
        addr_len = sizeof a;
    } else {
        ::sockaddr_in6 a{};
        a.sin6_family = AF_INET6;
        a.sin6_addr = in6addr_loopback;
        std::memcpy(&addr, &a, sizeof a);
        addr_len = sizeof a;
    }
    ASSERT_EQ(::bind(listener.fd, reinterpret_cast<::sockaddr*>(&addr), addr_len), 0);
    ASSERT_EQ(::listen(listener.fd, 16), 0);
    ASSERT_EQ(be.attach(listener.fd), std::error_code());

    recorded_op acc(kind::accept, listener.fd);
    be.issue(acc); // nobody connects yet: waits

    unique_fd client(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_GE(client.fd, 0);
    ASSERT_EQ(be.attach(client.fd), std::error_code());
    recorded_op con(kind::connect, client.fd);
    const std::uint16_t port = local_port(listener.fd);
    std::memcpy(&con.addr, &addr, addr_len);
    if (family == AF_INET)
        reinterpret_cast<::sockaddr_in*>(&con.addr)->sin_port = htons(port);
    else
        reinterpret_cast<::sockaddr_in6*>(&con.addr)->sin6_port = htons(port);
    con.addr_len = addr_len;
    be.issue(con);
    EXPECT_EQ(con.wait(), 0);
    const int accepted = acc.wait();
    ASSERT_GE(accepted, 0) << std::strerror(-accepted);
    unique_fd server(accepted);
    EXPECT_NE(::fcntl(accepted, F_GETFD) & FD_CLOEXEC, 0);
    EXPECT_NE(::fcntl(accepted, F_GETFL) & O_NONBLOCK, 0);
    EXPECT_EQ(acc.addr.ss_family, family);
    EXPECT_EQ(acc.addr_len, addr_len);
    const std::uint16_t peer_port =
        family == AF_INET ? ntohs(reinterpret_cast<::sockaddr_in*>(&acc.addr)->sin_port)
                          : ntohs(reinterpret_cast<::sockaddr_in6*>(&acc.addr)->sin6_port);
    EXPECT_EQ(peer_port, local_port(client.fd));

    // The accepted socket works through the backend.
    ASSERT_EQ(be.attach(accepted), std::error_code());
    char in[5] = {};
    recorded_op r(kind::recv, client.fd);
    r.set_buffer(in, sizeof in);
    be.issue(r);
    char out[] = "hello";
    recorded_op s(kind::send, accepted);
    s.set_buffer(out, 5);
    be.issue(s);
    EXPECT_EQ(s.wait(), 5);
    EXPECT_EQ(r.wait(), 5);
    EXPECT_EQ(std::string(in, 5), "hello");

    for (int fd : {listener.fd, client.fd, accepted})
        be.detach(fd);
    for (recorded_op* op : {&acc, &con, &r, &s})
        expect_once(*op);
}

TEST_F(epoll_backend_test, accept_and_connect_over_ipv4_loopback) {
    accept_and_connect(be(), AF_INET);
}

TEST_F(epoll_backend_test, accept_and_connect_over_ipv6_loopback) {
    unique_fd probe(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ::sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    if (probe.fd < 0 || ::bind(probe.fd, reinterpret_cast<::sockaddr*>(&a), sizeof a) != 0)
        GTEST_SKIP() << "no IPv6 loopback here: " << std::strerror(errno);
    probe.reset();
    accept_and_connect(be(), AF_INET6);
}

TEST_F(epoll_backend_test, connect_to_a_port_nobody_listens_on_is_refused) {
    // Bound and kept open but not listening: the port is ours and refuses (RST).
    unique_fd bound(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ::sockaddr_in a = loopback4(0);
    ASSERT_EQ(::bind(bound.fd, reinterpret_cast<::sockaddr*>(&a), sizeof a), 0);
    unique_fd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    attach(client.fd);
    recorded_op con(kind::connect, client.fd);
    a.sin_port = htons(local_port(bound.fd));
    std::memcpy(&con.addr, &a, sizeof a);
    con.addr_len = sizeof a;
    be().issue(con);
    EXPECT_EQ(con.wait(), -ECONNREFUSED);
    be().detach(client.fd);
    finish();
    expect_once(con);
}

TEST_F(epoll_backend_test, peer_fin_completes_a_waiting_recv_with_zero) {
    fd_pair sp = make_socketpair();
    attach(sp.a.fd);
    char buf[8];
    recorded_op r(kind::recv, sp.a.fd);
    r.set_buffer(buf, sizeof buf);
    be().issue(r);
    ::shutdown(sp.b.fd, SHUT_WR);
    EXPECT_EQ(r.wait(), 0);

    fd_pair tcp = make_tcp_pair();
    attach(tcp.a.fd);
    recorded_op rt(kind::recv, tcp.a.fd);
    rt.set_buffer(buf, sizeof buf);
    be().issue(rt);
    ::shutdown(tcp.b.fd, SHUT_WR);
    EXPECT_EQ(rt.wait(), 0);

    be().detach(sp.a.fd);
    be().detach(tcp.a.fd);
    finish();
    expect_once(r);
    expect_once(rt);
}

TEST_F(epoll_backend_test, send_to_a_closed_peer_is_epipe_and_never_sigpipe) {
    // SIGPIPE's default action ends the process: this test passing is the proof.
    fd_pair sp = make_socketpair();
    attach(sp.a.fd);
    sp.b.reset();
    char byte = 'x';
    recorded_op s(kind::send, sp.a.fd);
    s.set_buffer(&byte, 1);
    be().issue(s);
    EXPECT_EQ(s.wait(), -EPIPE);

    // TCP: the peer resets (SO_LINGER 0); the first send reports the reset or EPIPE.
    fd_pair tcp = make_tcp_pair();
    attach(tcp.a.fd);
    ::linger lg{1, 0};
    ::setsockopt(tcp.b.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    tcp.b.reset();
    char buf[1];
    recorded_op r(kind::recv, tcp.a.fd);
    r.set_buffer(buf, 1);
    be().issue(r);
    EXPECT_EQ(r.wait(), -ECONNRESET);
    recorded_op st(kind::send, tcp.a.fd);
    st.set_buffer(&byte, 1);
    be().issue(st);
    const int res = st.wait();
    EXPECT_TRUE(res == -EPIPE || res == -ECONNRESET) << res;

    be().detach(sp.a.fd);
    be().detach(tcp.a.fd);
    finish();
    for (recorded_op* op : {&s, &r, &st})
        expect_once(*op);
}

TEST_F(epoll_backend_test, cancel_completes_each_waiting_recv_and_accept_once) {
    fd_pair sp = make_socketpair();
    attach(sp.a.fd);
    unique_fd listener = make_listener4();
    attach(listener.fd);
    char buf[3][4];
    std::vector<std::unique_ptr<recorded_op>> ops;
    for (auto& b : buf) {
        ops.push_back(std::make_unique<recorded_op>(kind::recv, sp.a.fd));
        ops.back()->set_buffer(b, sizeof b);
        be().issue(*ops.back());
    }
    for (int i = 0; i < 2; ++i) {
        ops.push_back(std::make_unique<recorded_op>(kind::accept, listener.fd));
        be().issue(*ops.back());
    }
    be().cancel(sp.a.fd);
    be().cancel(listener.fd);
    for (auto& op : ops)
        EXPECT_EQ(op->wait(), -ECANCELED);
    be().cancel(sp.a.fd); // nothing left: harmless
    be().cancel(12345);   // never attached: harmless

    // The cancelled recvs consumed nothing: the next one gets the bytes.
    write_all(sp.b.fd, "abcd", 4);
    char got[4] = {};
    recorded_op after(kind::recv, sp.a.fd);
    after.set_buffer(got, sizeof got);
    be().issue(after);
    EXPECT_EQ(after.wait(), 4);
    EXPECT_EQ(std::string(got, 4), "abcd");

    be().detach(sp.a.fd);
    be().detach(listener.fd);
    finish();
    for (auto& op : ops)
        expect_once(*op);
    expect_once(after);
}

// cancel(op) takes out that one operation: the middle of three queued recvs completes with
// -ECANCELED, the others stay queued and get the bytes in order; cancelling it again, or an op
// that already completed, does nothing (each completes exactly once).
TEST_F(epoll_backend_test, cancel_of_one_op_completes_only_that_op_once) {
    fd_pair sp = make_socketpair();
    attach(sp.a.fd);
    char buf[3][2] = {};
    std::vector<std::unique_ptr<recorded_op>> ops;
    for (auto& b : buf) {
        ops.push_back(std::make_unique<recorded_op>(kind::recv, sp.a.fd));
        ops.back()->set_buffer(b, sizeof b);
        be().issue(*ops.back());
    }
    be().cancel(*ops[1]);
    EXPECT_EQ(ops[1]->wait(), -ECANCELED);
    be().cancel(*ops[1]); // no longer queued: nothing happens
    EXPECT_EQ(ops[0]->calls(), 0);
    EXPECT_EQ(ops[2]->calls(), 0);
    write_all(sp.b.fd, "abcd", 4);
    EXPECT_EQ(ops[0]->wait(), 2);
    EXPECT_EQ(ops[2]->wait(), 2);
    EXPECT_EQ(std::string(buf[0], 2), "ab");
    EXPECT_EQ(std::string(buf[2], 2), "cd");
    be().cancel(*ops[0]); // completed already: left alone

    // A queued accept too.
    unique_fd listener = make_listener4();
    attach(listener.fd);
    recorded_op accept(kind::accept, listener.fd);
    be().issue(accept);
    be().cancel(accept);
    EXPECT_EQ(accept.wait(), -ECANCELED);

    be().detach(sp.a.fd);
    be().detach(listener.fd);
    finish();
    for (auto& op : ops)
        expect_once(*op);
    expect_once(accept);
}

// cancel(op) looks for a recv_from where issue() queued it, with the reads: it completes once
// with -ECANCELED, and the datagram sent afterwards is still there for the next reader. (It was
// once looked for among the sends: a stop request left it waiting, and it took the datagram.)
TEST_F(epoll_backend_test, cancel_of_one_recv_from_completes_it_once) {
    unique_fd receiver(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    unique_fd sender(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ASSERT_GE(receiver.fd, 0);
    ASSERT_GE(sender.fd, 0);
    ::sockaddr_in here{};
    here.sin_family = AF_INET;
    here.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::socklen_t len = sizeof here;
    ASSERT_EQ(::bind(receiver.fd, reinterpret_cast<::sockaddr*>(&here), sizeof here), 0);
    ASSERT_EQ(::getsockname(receiver.fd, reinterpret_cast<::sockaddr*>(&here), &len), 0);
    attach(receiver.fd);
    char buf[4] = {};
    recorded_op recv_from(kind::recv_from, receiver.fd);
    recv_from.set_buffer(buf, sizeof buf);
    be().issue(recv_from);
    be().cancel(recv_from);
    ASSERT_EQ(::sendto(sender.fd, "d", 1, 0, reinterpret_cast<::sockaddr*>(&here), sizeof here), 1);
    EXPECT_EQ(recv_from.wait(), -ECANCELED);
    char got = 0;
    EXPECT_EQ(::recv(receiver.fd, &got, 1, MSG_DONTWAIT), 1);
    EXPECT_EQ(got, 'd');
    be().detach(receiver.fd);
    finish();
    expect_once(recv_from);
}

// cancel(op) racing the op's own completion from another thread: exactly one completion each,
// either -ECANCELED or the byte.
TEST_F(epoll_backend_test, cancel_of_one_op_racing_its_completion_completes_it_once) {
    fd_pair sp = make_socketpair();
    attach(sp.a.fd);
    constexpr int rounds = 2000;
    int cancelled = 0;
    for (int i = 0; i < rounds; ++i) {
        char c = 0;
        recorded_op op(kind::recv, sp.a.fd);
        op.set_buffer(&c, 1);
        be().issue(op);
        std::thread canceller([&] { be().cancel(op); });
        write_all(sp.b.fd, "x", 1);
        const int res = op.wait();
        canceller.join();
        if (res == -ECANCELED) {
            ++cancelled;
            char drain = 0; // the byte is still in the socket: take it for the next round
            ASSERT_EQ(::recv(sp.a.fd, &drain, 1, 0), 1);
        } else {
            EXPECT_EQ(res, 1);
        }
        EXPECT_EQ(op.calls(), 1);
    }
    std::printf("[ race     ] %d of %d receives cancelled before their byte\n", cancelled, rounds);
    be().detach(sp.a.fd);
    finish();
}

TEST_F(epoll_backend_test, bad_input_gets_a_clear_error) {
    EXPECT_EQ(be().attach(-1), std::error_code(EBADF, std::system_category()));
    fd_pair sp = make_socketpair();
    const int closed = ::dup(sp.a.fd);
    ::close(closed);
    EXPECT_EQ(be().attach(closed), std::error_code(EBADF, std::system_category()));
    attach(sp.a.fd);
    EXPECT_EQ(be().attach(sp.a.fd), std::error_code(EEXIST, std::system_category()));
    EXPECT_NE(::fcntl(sp.a.fd, F_GETFL) & O_NONBLOCK, 0); // attach made it non-blocking

    char buf[4];
    recorded_op unattached(kind::recv, sp.b.fd);
    unattached.set_buffer(buf, sizeof buf);
    be().issue(unattached);
    EXPECT_EQ(unattached.wait(), -EBADF);

    recorded_op nine(kind::send, sp.a.fd);
    nine.set_buffer(buf, sizeof buf);
    nine.iov_count = lnx::max_buffers + 1;
    be().issue(nine);
    EXPECT_EQ(nine.wait(), -EINVAL);

    unique_fd f = make_temp_file();
    attach(f.fd);
    recorded_op on_file(kind::recv, f.fd);
    on_file.set_buffer(buf, sizeof buf);
    be().issue(on_file);
    EXPECT_EQ(on_file.wait(), -ENOTSOCK);

    be().detach(99999); // never attached: harmless
    be().detach(-1);
    be().detach(sp.a.fd);
    be().detach(sp.a.fd);                               // twice: harmless
    EXPECT_EQ(be().attach(sp.a.fd), std::error_code()); // attach again after detach
    be().detach(sp.a.fd);
    be().detach(f.fd);
    finish();
    for (recorded_op* op : {&unattached, &nine, &on_file})
        expect_once(*op);
}

TEST_F(epoll_backend_test, completions_never_run_on_the_issuing_thread) {
    // Operations that finish inside issue() (room to send, data there, an error) are handed
    // to the reaper: on_complete runs on another thread, never inside issue() (issue_now is
    // the call that returns such a result instead).
    fd_pair sp = make_socketpair();
    attach(sp.a.fd);
    attach(sp.b.fd);
    const std::thread::id me = std::this_thread::get_id();
    constexpr int n = 1000;
    struct id_op : lnx::linux_op {
        std::atomic<int> calls{0};
        std::thread::id where;
        std::atomic<bool> during_issue{false};
    };
    static thread_local bool inside_issue = false;
    std::vector<std::unique_ptr<id_op>> ops;
    std::atomic<int> completed{0};
    static std::atomic<int>* completed_ptr;
    completed_ptr = &completed;
    char byte = 'z';
    for (int i = 0; i < n; ++i) {
        auto op = std::make_unique<id_op>();
        op->what = i % 2 == 0 ? kind::send : kind::recv;
        op->fd = i % 2 == 0 ? sp.a.fd : sp.b.fd;
        op->iov[0] = ::iovec{&byte, 1};
        op->iov_count = 1;
        op->on_complete = [](lnx::linux_op* o, int) noexcept {
            auto* self = static_cast<id_op*>(o);
            self->where = std::this_thread::get_id();
            self->during_issue = inside_issue;
            self->calls.fetch_add(1);
            completed_ptr->fetch_add(1);
            completed_ptr->notify_all();
        };
        inside_issue = true;
        be().issue(*op);
        inside_issue = false;
        ops.push_back(std::move(op));
    }
    for (int c = completed.load(); c < n; c = completed.load())
        completed.wait(c);
    be().detach(sp.a.fd);
    be().detach(sp.b.fd);
    finish();
    for (auto& op : ops) {
        EXPECT_EQ(op->calls.load(), 1);
        EXPECT_NE(op->where, me);
        EXPECT_FALSE(op->during_issue.load());
    }
}

// The hook detaches and closes the fd of the event about to be handled, then puts a new socket
// at the same number: the stale event must be dropped (its state is not freed until the batch
// is done: ASan proves it), and the new socket works.
struct batch_race {
    lnx::epoll_backend* be = nullptr;
    int target = -1;
    bool fired = false;
    unique_fd new_peer;
    recorded_op* new_recv = nullptr;
};

void detach_in_batch(void* context, int fd, std::uint32_t events) noexcept {
    auto* race = static_cast<batch_race*>(context);
    if (race->fired || fd != race->target || (events & EPOLLIN) == 0)
        return;
    race->fired = true;
    race->be->detach(fd); // completes the queued recv with -ECANCELED
    ::close(fd);
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
        return;
    if (fds[0] != fd) { // the number is reused: force it, to make the ABA certain
        ::dup3(fds[0], fd, O_CLOEXEC);
        ::close(fds[0]);
    }
    race->new_peer.reset(fds[1]);
    if (race->be->attach(fd))
        return;
    race->be->issue(*race->new_recv); // no data on the new socket: waits
}

TEST_F(epoll_backend_test, detach_drops_events_already_in_the_reactors_batch) {
    fd_pair sp = make_socketpair();
    attach(sp.a.fd);
    const int number = sp.a.release(); // the hook closes it
    char old_buf[4], new_buf[4];
    recorded_op old_recv(kind::recv, number);
    old_recv.set_buffer(old_buf, sizeof old_buf);
    recorded_op new_recv(kind::recv, number);
    new_recv.set_buffer(new_buf, sizeof new_buf);
    batch_race race;
    race.be = &be();
    race.target = number;
    race.new_recv = &new_recv;
    lnx::epoll_backend::test_hook hook{&detach_in_batch, &race};
    be().issue(old_recv);
    be().set_test_hook(&hook);
    write_all(sp.b.fd, "old!", 4); // the edge whose event the hook intercepts
    EXPECT_EQ(old_recv.wait(), -ECANCELED);
    be().set_test_hook(nullptr);
    ASSERT_TRUE(race.new_peer.fd >= 0);
    write_all(race.new_peer.fd, "new!", 4);
    EXPECT_EQ(new_recv.wait(), 4);
    EXPECT_EQ(std::string(new_buf, 4), "new!");
    be().detach(number);
    ::close(number);
    finish();
    expect_once(old_recv);
    EXPECT_EQ(new_recv.calls(), 1); // issued on the reactor thread by the hook: not checked
}

TEST_F(epoll_backend_test, detach_and_close_racing_events_complete_each_recv_once) {
    constexpr int rounds = 300;
    std::vector<std::unique_ptr<recorded_op>> ops;
    std::vector<char> bufs(static_cast<std::size_t>(rounds) * 4);
    for (int i = 0; i < rounds; ++i) {
        fd_pair sp = make_socketpair();
        attach(sp.a.fd);
        ops.push_back(std::make_unique<recorded_op>(kind::recv, sp.a.fd));
        ops.back()->set_buffer(&bufs[static_cast<std::size_t>(i) * 4], 4);
        be().issue(*ops.back());
        const int peer = sp.b.fd;
        // The write may come after the close (EPIPE): the race is the point, not its result.
        std::thread writer([peer] { (void)::send(peer, "data", 4, MSG_NOSIGNAL); });
        if (i % 2 == 0)
            be().cancel(sp.a.fd);
        be().detach(sp.a.fd);
        sp.a.reset();
        writer.join();
    }
    finish();
    int got_data = 0, cancelled = 0;
    for (auto& op : ops) {
        expect_once(*op);
        const int res = op->wait();
        EXPECT_TRUE(res == -ECANCELED || (res > 0 && res <= 4)) << res;
        (res > 0 ? got_data : cancelled)++;
    }
    EXPECT_EQ(got_data + cancelled, rounds);
}

TEST_F(epoll_backend_test, destroying_the_backend_cancels_what_is_queued) {
    fd_pair sp = make_socketpair();
    attach(sp.a.fd);
    unique_fd listener = make_listener4();
    attach(listener.fd);
    char buf[4];
    recorded_op r(kind::recv, sp.a.fd);
    r.set_buffer(buf, sizeof buf);
    be().issue(r);
    recorded_op acc(kind::accept, listener.fd);
    be().issue(acc);
    finish();
    EXPECT_EQ(r.wait(), -ECANCELED);
    EXPECT_EQ(acc.wait(), -ECANCELED);
    expect_once(r);
    expect_once(acc);
}

TEST_F(epoll_backend_test, file_reads_in_parallel_and_cancelled_ones_complete_once) {
    unique_fd f = make_temp_file();
    constexpr std::size_t block = 4096, blocks = 256;
    std::string data(block * blocks, '\0');
    for (std::size_t i = 0; i < data.size(); ++i)
        data[i] = pattern_byte(i);
    ASSERT_EQ(::pwrite(f.fd, data.data(), data.size(), 0), static_cast<::ssize_t>(data.size()));
    attach(f.fd);
    for (int round = 0; round < 2; ++round) {
        std::vector<std::unique_ptr<recorded_op>> ops;
        std::vector<std::string> bufs(blocks, std::string(block, '\0'));
        for (std::size_t i = 0; i < blocks; ++i) {
            // A scattered order: block (i * 97) % 256 covers every block once.
            const std::size_t b = (i * 97) % blocks;
            ops.push_back(std::make_unique<recorded_op>(kind::read_at, f.fd));
            ops.back()->offset = b * block;
            ops.back()->set_buffer(bufs[b].data(), block);
            be().issue(*ops.back());
        }
        if (round == 1)
            be().cancel(f.fd); // the queued ones: -ECANCELED; the running ones: their result
        for (std::size_t i = 0; i < blocks; ++i) {
            const std::size_t b = (i * 97) % blocks;
            const int res = ops[i]->wait();
            if (round == 0 || res != -ECANCELED) {
                ASSERT_EQ(res, static_cast<int>(block));
                EXPECT_TRUE(bufs[b] == data.substr(b * block, block)) << "block " << b;
            }
        }
        for (auto& op : ops) {
            EXPECT_EQ(op->calls(), 1);
            EXPECT_FALSE(op->ran_on_caller_thread());
        }
    }
    be().detach(f.fd);
}

// 4 threads x thousands of issues, cancels, detaches and closes at once on their own sockets,
// and sends across to each other's: every operation completes exactly once, never on a caller.
TEST_F(epoll_backend_test, stress_four_threads_issue_cancel_and_detach) {
    constexpr int threads = 4, rounds = 1500;
    std::atomic<int> bad{0};
    std::atomic<long> completions{0};
    auto body = [&](int t) {
        tl_caller_thread = true;
        for (int i = 0; i < rounds; ++i) {
            fd_pair sp = make_socketpair();
            if (be().attach(sp.a.fd) || be().attach(sp.b.fd)) {
                ++bad;
                return;
            }
            char in[2][8] = {}, out[] = "payload";
            recorded_op r1(kind::recv, sp.a.fd), r2(kind::recv, sp.a.fd);
            r1.set_buffer(in[0], sizeof in[0]);
            r2.set_buffer(in[1], sizeof in[1]);
            recorded_op s(kind::send, sp.b.fd);
            s.set_buffer(out, 7);
            be().issue(r1);
            be().issue(r2);
            be().issue(s);
            switch ((i + t) % 4) {
            case 0: be().cancel(sp.a.fd); break;
            case 1:
                be().detach(sp.a.fd); // with recvs maybe still queued: -ECANCELED
                break;
            case 2: be().cancel(sp.b.fd); break;
            default: break;
            }
            if (s.wait() != 7)
                ++bad;
            const int a = r1.wait();
            if (!(a == -ECANCELED || (a > 0 && a <= 7)))
                ++bad;
            // r2 has no data left unless r1 was cancelled: end it.
            be().cancel(sp.a.fd);
            const int b = r2.wait();
            if (!(b == -ECANCELED || (b > 0 && b <= 7)))
                ++bad;
            be().detach(sp.a.fd);
            be().detach(sp.b.fd);
            for (recorded_op* op : {&r1, &r2, &s}) {
                if (op->calls() != 1 || op->ran_on_caller_thread())
                    ++bad;
                completions += op->calls();
            }
        }
    };
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t)
        workers.emplace_back(body, t);
    for (std::thread& w : workers)
        w.join();
    EXPECT_EQ(bad.load(), 0);
    EXPECT_EQ(completions.load(), long{threads} * rounds * 3);
}

// The reaper's hand-off to a thread holding an fd's lock (epoll_detail::defer_or_lock /
// unlock_state): a reaper that finds the lock taken leaves its events to the holder instead of
// sleeping on the lock, and the holder performs them before it lets the lock go.

// A recv on `fd` as issue() prepares it (msghdr over iov[0]).
void prepare_recv(recorded_op& op, char* buf, std::size_t size) {
    op.set_buffer(buf, size);
    op.msg = ::msghdr{};
    op.msg.msg_iov = op.iov;
    op.msg.msg_iovlen = op.iov_count;
}

TEST(epoll_handoff_test, an_event_found_while_the_lock_is_held_is_performed_by_the_holder) {
    fd_pair sp = make_socketpair();
    lnx::epoll_detail::fd_state state(sp.a.fd, true);
    recorded_op op(kind::recv, sp.a.fd);
    char buf[8] = {};
    prepare_recv(op, buf, sizeof buf);

    state.mutex.lock(); // an issuer: its call would block, so it queues the recv
    int res = 0;
    ASSERT_FALSE(lnx::epoll_detail::attempt_socket_op(op, res));
    state.read_ops.push(&op);
    ASSERT_EQ(::send(sp.b.fd, "x", 1, MSG_NOSIGNAL), 1); // the data, then the reaper's event
    bool reaper_locked = true;
    std::thread([&] { reaper_locked = lnx::epoll_detail::defer_or_lock(state, EPOLLIN); }).join();
    EXPECT_FALSE(reaper_locked) << "the reaper must not take a lock another thread holds";
    EXPECT_EQ(state.deferred_events.load(), std::uint32_t{EPOLLIN});

    lnx::epoll_detail::op_queue done;
    lnx::epoll_detail::unlock_state(state, done); // performs the deferred event, then unlocks
    EXPECT_EQ(done.head, &op);
    EXPECT_EQ(lnx::epoll_detail::result_of(op), 1);
    EXPECT_EQ(buf[0], 'x');
    EXPECT_TRUE(state.read_ops.empty());
    EXPECT_EQ(state.deferred_events.load(), 0u);
    EXPECT_TRUE(state.mutex.try_lock()) << "unlock_state must release the lock";
    state.mutex.unlock();
}

// An issuer that queued a recv under the lock races a reaper whose event comes at a random
// moment (data written, then the event handled, as epoll_wait orders them): in every round the
// recv finishes exactly once (by the holder performing the deferred event, or by the reaper)
// and is never left queued with its data unread.
TEST(epoll_handoff_test, stress_an_issuer_and_a_reaper_never_lose_an_event) {
#if defined(IOCP_TEST_TSAN)
    constexpr int rounds = 1'000;
#else
    constexpr int rounds = 3'000;
#endif
    fd_pair sp = make_socketpair();
    ASSERT_EQ(::fcntl(sp.a.fd, F_SETFL, ::fcntl(sp.a.fd, F_GETFL) | O_NONBLOCK), 0);
    lnx::epoll_detail::fd_state state(sp.a.fd, true);
    recorded_op op(kind::recv, sp.a.fd);
    char buf[8] = {};
    prepare_recv(op, buf, sizeof buf);

    // Round r: the issuer queues its recv under the lock and publishes 2r+1, holds the lock a
    // random while and lets it go; the reaper, once it sees 2r+1, writes the byte at a random
    // moment and handles its event, then publishes 2r+2. A short spin, then a blocking wait: on
    // a loaded machine a yield can cost a whole time slice per round.
    std::atomic<int> step{0};
    auto await_step = [&step](int target) {
        for (int spin = 0; spin < 200000; ++spin)
            if (step.load(std::memory_order_acquire) >= target)
                return;
        for (int s = step.load(std::memory_order_acquire); s < target;
             s = step.load(std::memory_order_acquire))
            step.wait(s, std::memory_order_acquire);
    };
    auto set_step = [&step](int value) {
        step.store(value, std::memory_order_release);
        step.notify_all();
    };
    std::atomic<int> by_reaper{0};
    std::thread reaper([&] {
        std::mt19937 rng(7);
        for (int r = 0; r < rounds; ++r) {
            await_step(2 * r + 1);
            for (unsigned spin = rng() % 3000; spin != 0; --spin)
                std::atomic_signal_fence(std::memory_order_seq_cst);
            if (::send(sp.b.fd, "y", 1, MSG_NOSIGNAL) != 1)
                std::abort();
            if (lnx::epoll_detail::defer_or_lock(state, EPOLLIN | EPOLLOUT)) {
                lnx::epoll_detail::op_queue done;
                lnx::epoll_detail::unlock_state(state, done);
                by_reaper.fetch_add(static_cast<int>(lnx::epoll_detail::complete_all(done)));
            }
            set_step(2 * r + 2);
        }
    });
    int lost = 0, by_holder = 0;
    std::mt19937 rng(11);
    for (int r = 0; r < rounds; ++r) {
        state.mutex.lock();
        int res = 0;
        if (lnx::epoll_detail::attempt_socket_op(op, res)) {
            ADD_FAILURE() << "round " << r << ": data before the reaper wrote any";
            op.on_complete(&op, res);
        } else {
            state.read_ops.push(&op);
        }
        set_step(2 * r + 1);
        // The holder's own work under the lock (an issuer's call takes microseconds): the
        // reaper's event lands inside it in some rounds and after it in others.
        for (unsigned spin = rng() % 30000; spin != 0; --spin)
            std::atomic_signal_fence(std::memory_order_seq_cst);
        lnx::epoll_detail::op_queue done;
        lnx::epoll_detail::unlock_state(state, done);
        by_holder += static_cast<int>(lnx::epoll_detail::complete_all(done));
        await_step(2 * r + 2);
        std::lock_guard lock(state.mutex);
        if (!state.read_ops.empty()) {
            ++lost; // queued with its byte unread: an event went missing
            state.read_ops.pop();
            char sink = 0;
            (void)::recv(sp.a.fd, &sink, 1, MSG_DONTWAIT);
        }
    }
    reaper.join();
    EXPECT_EQ(lost, 0);
    EXPECT_EQ(op.calls(), rounds) << "each round's recv finishes exactly once";
    EXPECT_EQ(by_holder + by_reaper.load(), rounds);
    std::printf("[ handoff  ] %d rounds: %d by the holder, %d by the reaper\n", rounds, by_holder,
                by_reaper.load());
}

} // namespace
