// The io_uring backend driven directly with linux_ops (no pool, no I/O objects): files at 64-bit
// offsets, sockets with 8 buffers, accept/connect, cancellation by fd, CQ overflow, and a stress
// of issues racing cancels. Every operation must complete exactly once, never on the issuing
// thread. Skipped, with io_uring_queue_init's reason, where io_uring cannot be set up.
#include "iocp/detail/io/linux/uring_backend.hpp"

#include <gtest/gtest.h>

#include "support/platform.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/net_tstamp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using iocp::detail::io::lnx::linux_op;
using iocp::detail::io::lnx::uring_backend;
using iocp::detail::io::lnx::uring_options;

// Counts completions; a test waits for a number of them (ctest's timeout is the only clock).
class completion_counter {
public:
    void add() {
        std::lock_guard lock(mutex_);
        ++count_;
        cv_.notify_all();
    }
    void wait_for(std::size_t n) {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return count_ >= n; });
    }
    std::size_t count() {
        std::lock_guard lock(mutex_);
        return count_;
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    std::size_t count_ = 0;
};

struct test_op : linux_op {
    completion_counter* counter = nullptr;
    std::atomic<int> calls{0};
    std::atomic<int> result{0};
    std::thread::id completed_on{};
    std::thread::id issued_by{};
    std::atomic<bool> on_issuing_thread{false};

    explicit test_op(completion_counter& c) : counter(&c) {
        on_complete = [](linux_op* base, int res) noexcept {
            auto* self = static_cast<test_op*>(base);
            if (std::this_thread::get_id() == self->issued_by)
                self->on_issuing_thread.store(true);
            self->result.store(res);
            self->calls.fetch_add(1);
            self->counter->add(); // last: the test may reuse the op once counted
        };
    }
};

struct fd_closer {
    int fd = -1;
    explicit fd_closer(int f) : fd(f) {}
    fd_closer(const fd_closer&) = delete;
    fd_closer& operator=(const fd_closer&) = delete;
    ~fd_closer() {
        if (fd >= 0)
            ::close(fd);
    }
};

std::array<int, 2> make_socketpair() {
    std::array<int, 2> fds{-1, -1};
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds.data()), 0)
        << std::strerror(errno);
    return fds;
}

// A TCP listener on 127.0.0.1 at a port the kernel picks.
int make_listener(::sockaddr_in& bound) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_GE(fd, 0) << std::strerror(errno);
    ::sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd, reinterpret_cast<::sockaddr*>(&addr), sizeof addr), 0)
        << std::strerror(errno);
    EXPECT_EQ(::listen(fd, 64), 0) << std::strerror(errno);
    ::socklen_t len = sizeof bound;
    EXPECT_EQ(::getsockname(fd, reinterpret_cast<::sockaddr*>(&bound), &len), 0);
    return fd;
}

class uring_backend_test : public ::testing::Test {
protected:
    void SetUp() override { create(uring_options{}); }

    void create(const uring_options& options) {
        backend_.reset();
        std::error_code why;
        backend_ = uring_backend::create(options, why);
        if (!backend_)
            GTEST_SKIP() << "io_uring cannot be set up here: " << why.message() << " ("
                         << why.value() << ")";
    }

    void issue(test_op& op) {
        op.issued_by = std::this_thread::get_id();
        backend_->issue(op);
    }

    // The op completed exactly once, not on the thread that issued it; its result.
    static int completed_once(const test_op& op) {
        EXPECT_EQ(op.calls.load(), 1);
        EXPECT_FALSE(op.on_issuing_thread.load());
        return op.result.load();
    }

    completion_counter done_;
    std::unique_ptr<uring_backend> backend_;
};

TEST_F(uring_backend_test, reports_its_name_and_attaches_open_descriptors_only) {
    EXPECT_STREQ(backend_->name(), "io_uring");
    EXPECT_EQ(backend_->attach(-1), std::errc::bad_file_descriptor);
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    ::close(fds[1]);
    EXPECT_EQ(backend_->attach(fds[1]), std::errc::bad_file_descriptor); // closed
    EXPECT_FALSE(backend_->attach(fds[0]));
    backend_->detach(fds[0]); // nothing in flight: nothing to do
    ::close(fds[0]);
}

TEST_F(uring_backend_test, reads_and_writes_files_at_offsets_beyond_4_gib) {
    const std::string path =
        (std::filesystem::temp_directory_path() / "iocp_uring_XXXXXX").string();
    std::vector<char> name(path.begin(), path.end());
    name.push_back('\0');
    const int fd = ::mkstemp(name.data());
    ASSERT_GE(fd, 0) << std::strerror(errno);
    ::unlink(name.data());
    fd_closer closer(fd);
    ASSERT_FALSE(backend_->attach(fd));

    const std::uint64_t far = (std::uint64_t{5} << 30) + 3; // 5 GiB + 3: above any 32-bit offset
    char message[] = "far away";
    test_op write(done_);
    write.what = linux_op::kind::write_at;
    write.fd = fd;
    write.offset = far;
    write.iov[0] = {message, sizeof message - 1};
    issue(write);
    done_.wait_for(1);
    ASSERT_EQ(completed_once(write), static_cast<int>(sizeof message - 1));

    char buffer[32] = {};
    test_op read(done_);
    read.what = linux_op::kind::read_at;
    read.fd = fd;
    read.offset = far;
    read.iov[0] = {buffer, sizeof buffer}; // more than the file holds: a short read
    issue(read);
    done_.wait_for(2);
    ASSERT_EQ(completed_once(read), static_cast<int>(sizeof message - 1));
    EXPECT_EQ(std::string(buffer), "far away");

    // The hole before it reads as zeros; past the end reads 0 bytes (the layer's eof).
    test_op hole(done_);
    hole.what = linux_op::kind::read_at;
    hole.fd = fd;
    hole.offset = std::uint64_t{1} << 32;
    std::memset(buffer, 'x', sizeof buffer);
    hole.iov[0] = {buffer, 8};
    issue(hole);
    test_op end(done_);
    end.what = linux_op::kind::read_at;
    end.fd = fd;
    end.offset = far + 100;
    end.iov[0] = {buffer + 16, 8};
    issue(end);
    done_.wait_for(4);
    EXPECT_EQ(completed_once(hole), 8);
    EXPECT_EQ(std::string(buffer, 8), std::string(8, '\0'));
    EXPECT_EQ(completed_once(end), 0);
    backend_->detach(fd);
}

TEST_F(uring_backend_test, sends_and_receives_over_8_buffers) {
    auto fds = make_socketpair();
    fd_closer a(fds[0]), b(fds[1]);
    ASSERT_FALSE(backend_->attach(fds[0]));
    ASSERT_FALSE(backend_->attach(fds[1]));

    // 8 buffers of different sizes (1, 3, 7, ... bytes), a counting pattern across them.
    std::vector<std::vector<char>> out(8), in(8);
    std::size_t total = 0;
    char next = 0;
    test_op send(done_), recv(done_);
    send.what = linux_op::kind::send;
    send.fd = fds[0];
    recv.what = linux_op::kind::recv;
    recv.fd = fds[1];
    for (unsigned i = 0; i < 8; ++i) {
        out[i].resize((std::size_t{1} << (i + 1)) - 1);
        in[i].resize(out[i].size());
        for (char& c : out[i])
            c = next++;
        total += out[i].size();
        send.iov[i] = {out[i].data(), out[i].size()};
        recv.iov[i] = {in[i].data(), in[i].size()};
    }
    send.iov_count = recv.iov_count = 8;
    issue(recv); // pending first: it completes when the send arrives
    issue(send);
    done_.wait_for(2);
    EXPECT_EQ(completed_once(send), static_cast<int>(total));
    EXPECT_EQ(completed_once(recv), static_cast<int>(total));
    EXPECT_EQ(in, out);
}

TEST_F(uring_backend_test, refuses_bad_requests_on_its_thread_without_the_kernel) {
    auto fds = make_socketpair();
    fd_closer a(fds[0]), b(fds[1]);
    char byte = 0;
    test_op nine(done_), negative(done_), offset(done_), sockaddr_too_long(done_);
    nine.what = linux_op::kind::send;
    nine.fd = fds[0];
    nine.iov_count = 9; // the layer refuses these first; the backend does not trust it
    for (auto& v : nine.iov)
        v = {&byte, 1};
    negative.what = linux_op::kind::recv;
    negative.fd = -1;
    offset.what = linux_op::kind::read_at;
    offset.fd = fds[0];
    offset.offset = std::uint64_t{1} << 63; // -1 and friends mean "the file position"
    offset.iov[0] = {&byte, 1};
    sockaddr_too_long.what = linux_op::kind::connect;
    sockaddr_too_long.fd = fds[0];
    sockaddr_too_long.addr_len = sizeof(::sockaddr_storage) + 1;
    for (test_op* op : {&nine, &negative, &offset, &sockaddr_too_long})
        issue(*op);
    done_.wait_for(4);
    EXPECT_EQ(completed_once(nine), -EINVAL);
    EXPECT_EQ(completed_once(negative), -EBADF);
    EXPECT_EQ(completed_once(offset), -EINVAL);
    EXPECT_EQ(completed_once(sockaddr_too_long), -EINVAL);
    // Nothing was sent.
    EXPECT_EQ(::recv(fds[1], &byte, 1, MSG_DONTWAIT), -1);
    EXPECT_EQ(errno, EAGAIN);
}

TEST_F(uring_backend_test, a_closed_descriptor_and_a_recv_on_a_file_fail_with_their_errno) {
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    fd_closer w(fds[1]);
    ::close(fds[0]);
    char byte = 0;
    test_op closed(done_), not_socket(done_);
    closed.what = linux_op::kind::read_at;
    closed.fd = fds[0];
    closed.iov[0] = {&byte, 1};
    not_socket.what = linux_op::kind::recv;
    not_socket.fd = fds[1];
    not_socket.iov[0] = {&byte, 1};
    not_socket.iov_count = 1;
    issue(closed);
    issue(not_socket);
    done_.wait_for(2);
    EXPECT_EQ(completed_once(closed), -EBADF);
    EXPECT_EQ(completed_once(not_socket), -ENOTSOCK);
}

TEST_F(uring_backend_test, accepts_and_connects_over_loopback) {
    ::sockaddr_in where{};
    fd_closer listener(make_listener(where));
    fd_closer client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_FALSE(backend_->attach(listener.fd));
    ASSERT_FALSE(backend_->attach(client.fd));

    test_op accept(done_), connect(done_);
    accept.what = linux_op::kind::accept;
    accept.fd = listener.fd;
    connect.what = linux_op::kind::connect;
    connect.fd = client.fd;
    std::memcpy(&connect.addr, &where, sizeof where);
    connect.addr_len = sizeof where;
    issue(accept);
    issue(connect);
    done_.wait_for(2);
    EXPECT_EQ(completed_once(connect), 0);
    const int accepted = completed_once(accept);
    ASSERT_GE(accepted, 0) << std::strerror(-accepted);
    fd_closer server(accepted);
    EXPECT_NE(::fcntl(accepted, F_GETFD) & FD_CLOEXEC, 0); // SOCK_CLOEXEC
    // The peer's address, as getsockname reports it on the client.
    ::sockaddr_in client_addr{};
    ::socklen_t len = sizeof client_addr;
    ASSERT_EQ(::getsockname(client.fd, reinterpret_cast<::sockaddr*>(&client_addr), &len), 0);
    ASSERT_EQ(accept.addr_len, sizeof(::sockaddr_in));
    const auto& peer = reinterpret_cast<const ::sockaddr_in&>(accept.addr);
    EXPECT_EQ(peer.sin_family, AF_INET);
    EXPECT_EQ(peer.sin_port, client_addr.sin_port);
    EXPECT_EQ(peer.sin_addr.s_addr, client_addr.sin_addr.s_addr);
    // And the connection carries bytes.
    ASSERT_EQ(::send(client.fd, "ping", 4, MSG_NOSIGNAL), 4);
    char buffer[4];
    ASSERT_EQ(::recv(accepted, buffer, 4, MSG_WAITALL), 4);
    EXPECT_EQ(std::memcmp(buffer, "ping", 4), 0);
}

TEST_F(uring_backend_test, connect_to_a_port_without_listener_is_refused) {
    // A bound socket that never listens holds the port, so nobody else can take it meanwhile.
    fd_closer holder(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ::sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(holder.fd, reinterpret_cast<::sockaddr*>(&addr), sizeof addr), 0);
    ::socklen_t len = sizeof addr;
    ASSERT_EQ(::getsockname(holder.fd, reinterpret_cast<::sockaddr*>(&addr), &len), 0);

    fd_closer client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    test_op connect(done_);
    connect.what = linux_op::kind::connect;
    connect.fd = client.fd;
    std::memcpy(&connect.addr, &addr, sizeof addr);
    connect.addr_len = sizeof addr;
    issue(connect);
    done_.wait_for(1);
    EXPECT_EQ(completed_once(connect), -ECONNREFUSED);
}

TEST_F(uring_backend_test, peer_close_reads_0_and_peer_reset_is_econnreset) {
    ::sockaddr_in where{};
    fd_closer listener(make_listener(where));
    auto connect_pair = [&](int& client, int& server) {
        client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_EQ(::connect(client, reinterpret_cast<::sockaddr*>(&where), sizeof where), 0);
        server = ::accept4(listener.fd, nullptr, nullptr, SOCK_CLOEXEC);
        ASSERT_GE(server, 0);
    };
    int c1 = -1, s1 = -1, c2 = -1, s2 = -1;
    connect_pair(c1, s1);
    connect_pair(c2, s2);
    fd_closer fc1(c1), fs1(s1), fs2(s2);
    char b1[8], b2[8];
    test_op eof(done_), reset(done_);
    eof.what = reset.what = linux_op::kind::recv;
    eof.fd = s1;
    eof.iov[0] = {b1, sizeof b1};
    reset.fd = s2;
    reset.iov[0] = {b2, sizeof b2};
    eof.iov_count = reset.iov_count = 1;
    issue(eof);
    issue(reset);
    ::shutdown(c1, SHUT_WR);          // FIN
    const ::linger abort_close{1, 0}; // RST on close
    ASSERT_EQ(::setsockopt(c2, SOL_SOCKET, SO_LINGER, &abort_close, sizeof abort_close), 0);
    ::close(c2);
    done_.wait_for(2);
    EXPECT_EQ(completed_once(eof), 0);
    EXPECT_EQ(completed_once(reset), -ECONNRESET);
}

// Pending recvs and accepts, cancelled by fd: each completes once with -ECANCELED, and a byte
// sent afterwards is still there for the next reader (no orphan recv ate it).
void cancel_pending(uring_backend& backend, completion_counter& done, bool detach) {
    auto fds = make_socketpair();
    fd_closer a(fds[0]), b(fds[1]);
    ::sockaddr_in where{};
    fd_closer listener(make_listener(where));
    ASSERT_FALSE(backend.attach(fds[0]));
    ASSERT_FALSE(backend.attach(listener.fd));
    std::vector<std::unique_ptr<test_op>> ops;
    char buffers[3][4];
    for (auto& buffer : buffers) {
        auto op = std::make_unique<test_op>(done);
        op->what = linux_op::kind::recv;
        op->fd = fds[0];
        op->iov[0] = {buffer, sizeof buffer};
        op->iov_count = 1;
        ops.push_back(std::move(op));
    }
    for (int i = 0; i < 2; ++i) {
        auto op = std::make_unique<test_op>(done);
        op->what = linux_op::kind::accept;
        op->fd = listener.fd;
        ops.push_back(std::move(op));
    }
    for (auto& op : ops) {
        op->issued_by = std::this_thread::get_id();
        backend.issue(*op);
    }
    EXPECT_EQ(done.count(), 0u); // nothing to receive or accept yet
    if (detach) {
        backend.detach(fds[0]);
        backend.detach(listener.fd);
    } else {
        backend.cancel(fds[0]);
        backend.cancel(listener.fd);
    }
    done.wait_for(ops.size());
    for (auto& op : ops) {
        EXPECT_EQ(op->calls.load(), 1);
        EXPECT_EQ(op->result.load(), -ECANCELED);
        EXPECT_FALSE(op->on_issuing_thread.load());
    }
    ASSERT_EQ(::send(fds[1], "z", 1, MSG_NOSIGNAL), 1);
    char byte = 0;
    EXPECT_EQ(::recv(fds[0], &byte, 1, 0), 1);
    EXPECT_EQ(byte, 'z');
}

TEST_F(uring_backend_test, cancel_by_fd_completes_pending_recvs_and_accepts_once) {
    EXPECT_TRUE(backend_->cancels_by_fd()) << "this kernel predates IORING_ASYNC_CANCEL_FD (5.19)";
    cancel_pending(*backend_, done_, false);
}

TEST_F(uring_backend_test, cancel_by_user_data_completes_pending_recvs_and_accepts_once) {
    uring_options options;
    options.force_cancel_by_user_data = true; // what kernels before 5.19 get
    create(options);
    ASSERT_FALSE(backend_->cancels_by_fd());
    cancel_pending(*backend_, done_, false);
}

// cancel(op) cancels that one operation: the middle of three pending recvs completes with
// -ECANCELED, the other two then receive the bytes; a second cancel of it, or a cancel of an op
// already completed, does nothing.
TEST_F(uring_backend_test, cancel_of_one_op_completes_only_that_op_once) {
    auto fds = make_socketpair();
    fd_closer a(fds[0]), b(fds[1]);
    ASSERT_FALSE(backend_->attach(fds[0]));
    char buffers[3][2] = {};
    std::vector<std::unique_ptr<test_op>> ops;
    for (auto& buffer : buffers) {
        auto op = std::make_unique<test_op>(done_);
        op->what = linux_op::kind::recv;
        op->fd = fds[0];
        op->iov[0] = {buffer, sizeof buffer};
        op->iov_count = 1;
        issue(*op);
        ops.push_back(std::move(op));
    }
    backend_->cancel(*ops[1]);
    done_.wait_for(1);
    EXPECT_EQ(completed_once(*ops[1]), -ECANCELED);
    backend_->cancel(*ops[1]); // no longer in flight: nothing happens
    EXPECT_EQ(ops[0]->calls.load(), 0);
    EXPECT_EQ(ops[2]->calls.load(), 0);
    ASSERT_EQ(::send(fds[1], "ab", 2, MSG_NOSIGNAL), 2);
    done_.wait_for(2);
    ASSERT_EQ(::send(fds[1], "cd", 2, MSG_NOSIGNAL), 2);
    done_.wait_for(3);
    EXPECT_EQ(completed_once(*ops[0]), 2);
    EXPECT_EQ(completed_once(*ops[2]), 2);
    backend_->cancel(*ops[0]); // completed already: left alone
    backend_.reset();          // joins the reaper: the counts below are final
    EXPECT_EQ(ops[0]->calls.load(), 1);
    EXPECT_EQ(ops[1]->calls.load(), 1);
    EXPECT_EQ(ops[2]->calls.load(), 1);
}

// A recv that waits for its readiness POLL_ADD (as one does after an -EAGAIN) on a quiet
// socket: cancel(op) completes it once, with -ECANCELED, and the byte the peer sends afterwards
// is still there for the next reader. (When the poll was linked to the recv, the kernel did not
// find the recv by its address: the recv waited, then ate the byte.)
TEST_F(uring_backend_test, cancel_of_one_op_waiting_for_readiness_completes_it_once) {
    uring_options options;
    options.force_poll_first = true;
    create(options);
    auto fds = make_socketpair();
    fd_closer a(fds[0]), b(fds[1]);
    ASSERT_FALSE(backend_->attach(fds[0]));
    char buffer[4] = {};
    test_op recv(done_);
    recv.what = linux_op::kind::recv;
    recv.fd = fds[0];
    recv.iov[0] = {buffer, sizeof buffer};
    recv.iov_count = 1;
    issue(recv);
    backend_->cancel(recv);
    ASSERT_EQ(::send(fds[1], "z", 1, MSG_NOSIGNAL), 1);
    done_.wait_for(1);
    EXPECT_EQ(completed_once(recv), -ECANCELED);
    backend_->cancel(recv); // completed already: left alone
    char byte = 0;
    EXPECT_EQ(::recv(fds[0], &byte, 1, MSG_DONTWAIT), 1);
    EXPECT_EQ(byte, 'z');
    backend_.reset(); // joins the reaper: the count below is final
    EXPECT_EQ(recv.calls.load(), 1);
}

// Several recvs pending on one TCP socket take its bytes in the order they were issued (the
// kernel alone completes them newest first: the backend keeps one in the ring and queues the
// rest), while another thread cancels some of them at random moments and the peer sends one
// byte at a time. Each recv completes once: cancelled (no byte taken) or with bytes; the bytes
// of the recvs that got some, in issue order, are the stream in order, nothing lost or repeated.
TEST_F(uring_backend_test, stress_recvs_pending_on_one_socket_keep_the_stream_order) {
    ::sockaddr_in where{};
    fd_closer listener(make_listener(where));
    fd_closer client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(::connect(client.fd, reinterpret_cast<::sockaddr*>(&where), sizeof where), 0);
    fd_closer server(::accept4(listener.fd, nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_GE(server.fd, 0) << std::strerror(errno);
    const int on = 1;
    ASSERT_EQ(::setsockopt(client.fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on), 0);
    ASSERT_FALSE(backend_->attach(server.fd));
#if IOCP_TEST_TSAN
    constexpr int rounds = 60;
#else
    constexpr int rounds = 300;
#endif
    constexpr int per_round = 6;
    std::mt19937 rng(12345);
    std::uint8_t next_to_send = 0;  // the stream is 0, 1, 2, ... modulo 256
    std::uint8_t next_expected = 0; // the first byte no recv has taken yet
    std::size_t cancelled_total = 0;
    for (int round = 0; round < rounds; ++round) {
        completion_counter done;
        std::vector<std::unique_ptr<test_op>> ops;
        std::vector<std::array<std::uint8_t, 3>> buffers(per_round);
        for (int i = 0; i < per_round; ++i) {
            auto op = std::make_unique<test_op>(done);
            op->what = linux_op::kind::recv;
            op->fd = server.fd;
            op->iov[0] = {buffers[static_cast<std::size_t>(i)].data(),
                          1 + static_cast<std::size_t>(rng() % 3)};
            op->iov_count = 1;
            op->issued_by = std::this_thread::get_id();
            backend_->issue(*op);
            ops.push_back(std::move(op));
        }
        // Cancels of random recvs at random moments, racing the bytes below.
        std::vector<int> victims;
        for (int i = 0; i < per_round; ++i)
            if (rng() % 3 == 0)
                victims.push_back(i);
        const auto seed = static_cast<unsigned>(rng());
        std::thread canceller([&, seed] {
            std::mt19937 local(seed);
            for (int i : victims) {
                for (unsigned spin = local() % 2000; spin > 0; --spin)
                    std::atomic_signal_fence(std::memory_order_seq_cst);
                if (local() % 4 == 0)
                    std::this_thread::yield();
                backend_->cancel(*ops[static_cast<std::size_t>(i)]);
            }
        });
        // One byte at a time until every recv has completed; bytes no recv took stay in the
        // socket for the next round's recvs.
        while (done.count() < per_round) {
            ASSERT_EQ(::send(client.fd, &next_to_send, 1, MSG_NOSIGNAL), 1);
            ++next_to_send;
            if (rng() % 2 == 0)
                std::this_thread::yield();
        }
        canceller.join();
        done.wait_for(per_round);
        for (int i = 0; i < per_round; ++i) {
            const test_op& op = *ops[static_cast<std::size_t>(i)];
            const int res = completed_once(op);
            if (res == -ECANCELED) {
                ++cancelled_total;
                continue;
            }
            ASSERT_GT(res, 0) << "round " << round << ", recv " << i << ": " << std::strerror(-res);
            for (int k = 0; k < res; ++k) {
                ASSERT_EQ(buffers[static_cast<std::size_t>(i)][static_cast<std::size_t>(k)],
                          next_expected)
                    << "round " << round << ", recv " << i << ", byte " << k;
                ++next_expected;
            }
        }
    }
    // What no recv took is still in the socket, in order.
    while (next_expected != next_to_send) {
        std::uint8_t byte = 0;
        ASSERT_EQ(::recv(server.fd, &byte, 1, 0), 1);
        ASSERT_EQ(byte, next_expected);
        ++next_expected;
    }
    EXPECT_GT(cancelled_total, 0u) << "no cancel ever won its race: the test proved little";
}

// cancel(op) racing the op's completion from another thread: one completion each.
void cancel_racing_completion(uring_backend& backend, completion_counter& done) {
    auto fds = make_socketpair();
    fd_closer a(fds[0]), b(fds[1]);
    ASSERT_FALSE(backend.attach(fds[0]));
    constexpr int rounds = 2000;
    int cancelled = 0;
    for (int i = 0; i < rounds; ++i) {
        char c = 0;
        test_op op(done);
        op.what = linux_op::kind::recv;
        op.fd = fds[0];
        op.iov[0] = {&c, 1};
        op.iov_count = 1;
        op.issued_by = std::this_thread::get_id();
        backend.issue(op);
        std::thread canceller([&] { backend.cancel(op); });
        ASSERT_EQ(::send(fds[1], "x", 1, MSG_NOSIGNAL), 1);
        done.wait_for(static_cast<std::size_t>(i) + 1);
        canceller.join();
        EXPECT_EQ(op.calls.load(), 1);
        EXPECT_FALSE(op.on_issuing_thread.load());
        const int res = op.result.load();
        if (res == -ECANCELED) {
            ++cancelled;
            char drain = 0;
            ASSERT_EQ(::recv(fds[0], &drain, 1, 0), 1);
        } else {
            EXPECT_EQ(res, 1);
        }
    }
    std::printf("[ race     ] %d of %d receives cancelled before their byte\n", cancelled, rounds);
    backend.detach(fds[0]);
}

TEST_F(uring_backend_test, cancel_of_one_op_racing_its_completion_completes_it_once) {
    cancel_racing_completion(*backend_, done_);
}

TEST_F(uring_backend_test, cancel_of_one_op_racing_its_readiness_completes_it_once) {
    uring_options options;
    options.force_poll_first = true;
    create(options);
    cancel_racing_completion(*backend_, done_);
}

// The kernel's own -EAGAIN, reached without a test switch: an O_NONBLOCK UDP socket whose error
// queue holds a transmit timestamp polls POLLERR with nothing to read, so io_uring's internal
// poll wakes the recvmsg again and again until its retry cap sends it to io-wq, where the
// socket's O_NONBLOCK gives -EAGAIN (measured on 6.18; a blocking socket waits there). The
// backend never reports it: the recv waits for its readiness poll, is issued again, and so on
// (busily, while the error queue stays full: a few hundred rounds in 50 ms here). cancel(op), at
// a random moment of that cycle, still completes it once with -ECANCELED, and the next recv gets
// the next datagram.
TEST_F(uring_backend_test, a_kernel_eagain_is_never_reported_and_the_op_stays_cancellable) {
    ::sockaddr_in here{};
    here.sin_family = AF_INET;
    here.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::sockaddr_in there = here;
    fd_closer receiver(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    fd_closer sender(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ASSERT_GE(receiver.fd, 0);
    ASSERT_GE(sender.fd, 0);
    ::socklen_t len = sizeof here;
    ASSERT_EQ(::bind(receiver.fd, reinterpret_cast<::sockaddr*>(&here), sizeof here), 0);
    ASSERT_EQ(::getsockname(receiver.fd, reinterpret_cast<::sockaddr*>(&here), &len), 0);
    len = sizeof there;
    ASSERT_EQ(::bind(sender.fd, reinterpret_cast<::sockaddr*>(&there), sizeof there), 0);
    ASSERT_EQ(::getsockname(sender.fd, reinterpret_cast<::sockaddr*>(&there), &len), 0);
    // A datagram sent by the receiver leaves a transmit timestamp on its error queue.
    const int stamping =
        SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_TX_SCHED | SOF_TIMESTAMPING_SOFTWARE;
    ASSERT_EQ(::setsockopt(receiver.fd, SOL_SOCKET, SO_TIMESTAMPING, &stamping, sizeof stamping), 0)
        << std::strerror(errno);
    ASSERT_EQ(::sendto(receiver.fd, "s", 1, 0, reinterpret_cast<::sockaddr*>(&there), sizeof there),
              1);
    ::pollfd ready{receiver.fd, POLLIN, 0};
    ASSERT_EQ(::poll(&ready, 1, 0), 1);
    ASSERT_EQ(ready.revents & (POLLIN | POLLERR), POLLERR); // an error queued, nothing to read
    ASSERT_FALSE(backend_->attach(receiver.fd));
    char buffer[4] = {};
    std::minstd_rand rng(7);
    constexpr std::size_t rounds = 50;
    for (std::size_t round = 0; round < rounds; ++round) {
        test_op recv(done_);
        recv.what = linux_op::kind::recv;
        recv.fd = receiver.fd;
        recv.iov[0] = {buffer, sizeof buffer};
        recv.iov_count = 1;
        issue(recv);
        // A random moment (the cycle takes ~100 us here): not a clock assertion, a spread.
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
        backend_->cancel(recv);
        done_.wait_for(round + 1);
        EXPECT_EQ(completed_once(recv), -ECANCELED);
    }
    test_op next(done_);
    next.what = linux_op::kind::recv;
    next.fd = receiver.fd;
    next.iov[0] = {buffer, sizeof buffer};
    next.iov_count = 1;
    issue(next);
    ASSERT_EQ(::sendto(sender.fd, "d", 1, 0, reinterpret_cast<::sockaddr*>(&here), sizeof here), 1);
    done_.wait_for(rounds + 1);
    EXPECT_EQ(completed_once(next), 1);
    EXPECT_EQ(buffer[0], 'd');
    backend_->detach(receiver.fd);
}

// A recv pending on a socket that is detached and closed, and its number taken at once by a new
// socket (dup2: the number is the same every time): the recv completes once with -ECANCELED,
// whatever arrives on the old socket afterwards, and never reads the new socket's bytes.
// force_poll_first: the recv waits for its readiness POLL_ADD, as after an -EAGAIN (when the
// poll was linked to the recv, the kernel resolved the recv's fd only when the poll fired: it
// read the new socket's bytes; on kernels before 5.19, where cancel is by user_data, detach did
// not even find it).
void close_and_reuse(uring_backend& backend, completion_counter& done) {
    auto old_pair = make_socketpair();
    const int number = old_pair[0];
    fd_closer old_peer(old_pair[1]);
    ASSERT_FALSE(backend.attach(number));
    char buffer[8] = {};
    test_op recv(done);
    recv.what = linux_op::kind::recv;
    recv.fd = number;
    recv.iov[0] = {buffer, sizeof buffer};
    recv.iov_count = 1;
    recv.issued_by = std::this_thread::get_id();
    backend.issue(recv);
    backend.detach(number); // as socket::close does, before close(2)
    auto new_pair = make_socketpair();
    fd_closer new_peer(new_pair[1]);
    ASSERT_EQ(::dup2(new_pair[0], number), number) << std::strerror(errno); // closes the old one
    ::close(new_pair[0]);
    fd_closer reused(number);
    ASSERT_FALSE(backend.attach(number));
    ASSERT_EQ(::send(new_peer.fd, "NEW", 3, MSG_NOSIGNAL), 3);
    (void)::send(old_peer.fd, "OLD", 3, MSG_NOSIGNAL); // wakes a stale poll, if any is left
    done.wait_for(1);
    EXPECT_EQ(recv.calls.load(), 1);
    EXPECT_EQ(recv.result.load(), -ECANCELED) << "the stale recv read: " << buffer;
    char got[8] = {};
    EXPECT_EQ(::recv(number, got, sizeof got, MSG_DONTWAIT), 3);
    EXPECT_STREQ(got, "NEW");
    backend.detach(number);
}

TEST_F(uring_backend_test, close_and_reuse_of_the_number_never_feeds_a_stale_recv) {
    close_and_reuse(*backend_, done_);
}

TEST_F(uring_backend_test, close_and_reuse_with_the_recv_waiting_for_readiness) {
    uring_options options;
    options.force_poll_first = true;
    create(options);
    close_and_reuse(*backend_, done_);
}

TEST_F(uring_backend_test, close_and_reuse_with_the_recv_waiting_for_readiness_by_user_data) {
    uring_options options;
    options.force_poll_first = true;
    options.force_cancel_by_user_data = true;
    create(options);
    close_and_reuse(*backend_, done_);
}

TEST_F(uring_backend_test, detach_cancels_what_is_still_in_flight) {
    cancel_pending(*backend_, done_, true);
}

TEST_F(uring_backend_test, destructor_cancels_and_waits_for_every_operation) {
    auto fds = make_socketpair();
    fd_closer a(fds[0]), b(fds[1]);
    char byte;
    test_op recv(done_);
    recv.what = linux_op::kind::recv;
    recv.fd = fds[0];
    recv.iov[0] = {&byte, 1};
    recv.iov_count = 1;
    issue(recv);
    backend_.reset(); // returns once the recv has completed
    EXPECT_EQ(done_.count(), 1u);
    EXPECT_EQ(completed_once(recv), -ECANCELED);
}

// A completion queue of 8 entries, and 64 completions while the reaper is held inside a
// completion: the kernel keeps what does not fit (IORING_FEAT_NODROP) and the reaper must flush
// it (IORING_SQ_CQ_OVERFLOW); every op still completes exactly once.
TEST_F(uring_backend_test, an_overflowing_completion_queue_loses_nothing) {
    uring_options options;
    options.sq_entries = 4;
    options.cq_entries = 8;
    create(options);
    auto fds = make_socketpair();
    fd_closer a(fds[0]), b(fds[1]);

    // The first completion blocks the reaper until the test has issued the rest.
    std::mutex gate_mutex;
    std::condition_variable gate_cv;
    bool entered = false, open = false;
    struct gate_op : test_op {
        using test_op::test_op;
        std::mutex* m;
        std::condition_variable* cv;
        bool* entered;
        bool* open;
    } first(done_);
    first.m = &gate_mutex;
    first.cv = &gate_cv;
    first.entered = &entered;
    first.open = &open;
    first.on_complete = [](linux_op* base, int res) noexcept {
        auto* self = static_cast<gate_op*>(base);
        {
            std::unique_lock lock(*self->m);
            *self->entered = true;
            self->cv->notify_all();
            self->cv->wait(lock, [&] { return *self->open; });
        }
        self->result.store(res);
        self->calls.fetch_add(1);
        self->counter->add();
    };
    char payload = 'p';
    first.what = linux_op::kind::send;
    first.fd = fds[0];
    first.iov[0] = {&payload, 1};
    first.iov_count = 1;
    issue(first);
    {
        std::unique_lock lock(gate_mutex);
        gate_cv.wait(lock, [&] { return entered; });
    }
    // Sends of one byte into an empty socket buffer complete within their submit.
    std::vector<std::unique_ptr<test_op>> ops;
    for (int i = 0; i < 64; ++i) {
        auto op = std::make_unique<test_op>(done_);
        op->what = linux_op::kind::send;
        op->fd = fds[0];
        op->iov[0] = {&payload, 1};
        op->iov_count = 1;
        issue(*op);
        ops.push_back(std::move(op));
    }
    {
        std::lock_guard lock(gate_mutex);
        open = true;
        gate_cv.notify_all();
    }
    done_.wait_for(65);
    EXPECT_EQ(completed_once(first), 1);
    for (auto& op : ops)
        EXPECT_EQ(completed_once(*op), 1);
    char sink[128];
    EXPECT_EQ(::recv(fds[1], sink, sizeof sink, MSG_DONTWAIT), 65);
}

// 4 threads, each with its own socketpair and 8 op slots, issue recvs and sends through the
// ring while all of them cancel each other's descriptors at random, and each cancels its own ops
// one by one at random (cancel(op), as a stop request does). Every op completes exactly once, and
// no byte is lost: bytes received by completed recvs plus bytes left in the sockets equal the
// bytes sent.
void stress(uring_backend& backend) {
    constexpr int threads = 4;
    constexpr int issues_per_thread = 3000;
    constexpr int slots = 8;
    struct lane {
        std::array<int, 2> fds{-1, -1};
        completion_counter done;
        std::vector<std::unique_ptr<test_op>> ops;
        std::vector<std::array<char, 16>> buffers;
        std::size_t issued = 0;
        std::int64_t sent = 0;
        std::int64_t received = 0;
        std::size_t cancelled = 0; // recvs and sends that completed with -ECANCELED
    };
    std::vector<lane> lanes(threads);
    for (auto& l : lanes) {
        l.fds = make_socketpair();
        ASSERT_FALSE(backend.attach(l.fds[0]));
        ASSERT_FALSE(backend.attach(l.fds[1]));
        l.buffers.resize(slots);
        for (int s = 0; s < slots; ++s)
            l.ops.push_back(std::make_unique<test_op>(l.done));
    }
    std::atomic<int> go{0};
    auto body = [&](int index) {
        lane& l = lanes[static_cast<std::size_t>(index)];
        std::minstd_rand rng(static_cast<unsigned>(index) + 1);
        go.fetch_add(1);
        while (go.load() < threads)
            std::this_thread::yield();
        std::vector<int> issued_calls(slots, 0); // calls each slot must have reached
        for (int i = 0; i < issues_per_thread; ++i) {
            const auto s = static_cast<std::size_t>(i % slots);
            test_op& op = *l.ops[s];
            if (i >= slots) {
                // Wait until this slot's previous op completed (then it may be reused). A recv
                // waits for a byte or a cancel: every 16 turns, give it one or the other.
                for (unsigned spins = 1; op.calls.load() < issued_calls[s]; ++spins) {
                    if (spins % 16 == 0) {
                        // Never blocking: with the buffer full and no recv pending (this
                        // slot's op is a send waiting for room), a blocking send would wait
                        // for a reader that never comes.
                        const auto choice = rng() % 3;
                        if (choice == 0 &&
                            ::send(l.fds[1], "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1)
                            ++l.sent;
                        else if (choice == 1)
                            backend.cancel(op); // this thread alone issues this slot
                        else
                            backend.cancel(l.fds[0]);
                    }
                    std::this_thread::yield();
                }
                const int res = op.result.load();
                if (op.what == linux_op::kind::recv && res > 0)
                    l.received += res;
                else if (op.what == linux_op::kind::send && res > 0)
                    l.sent += res;
                EXPECT_TRUE(res >= 0 || res == -ECANCELED) << res;
                l.cancelled += res == -ECANCELED ? 1 : 0;
                EXPECT_EQ(op.calls.load(), issued_calls[s]); // never twice
            }
            const bool send = rng() % 3 == 0;
            op.what = send ? linux_op::kind::send : linux_op::kind::recv;
            op.fd = send ? l.fds[1] : l.fds[0];
            op.iov[0] = {l.buffers[s].data(), send ? 1 + rng() % 8 : l.buffers[s].size()};
            op.iov_count = 1;
            op.issued_by = std::this_thread::get_id();
            ++issued_calls[s];
            backend.issue(op);
            ++l.issued;
            switch (rng() % 8) {
            case 0: // cancel a random lane's receiving end (racing its owner's issues)
                backend.cancel(lanes[rng() % threads].fds[0]);
                break;
            case 1: backend.cancel(lanes[rng() % threads].fds[1]); break;
            case 2: // one of this lane's ops: in flight, or completed (then nothing happens)
                backend.cancel(*l.ops[rng() % slots]);
                break;
            default: break;
            }
        }
        // Drain: cancel what is pending (recvs with nothing to read) until all completed.
        for (;;) {
            backend.cancel(l.fds[0]);
            backend.cancel(l.fds[1]);
            bool all = true;
            for (std::size_t s = 0; s < slots; ++s)
                all = all && l.ops[s]->calls.load() == issued_calls[s];
            if (all)
                break;
            std::this_thread::yield();
        }
        for (std::size_t s = 0; s < slots; ++s) {
            const test_op& op = *l.ops[s];
            const int res = op.result.load();
            if (op.what == linux_op::kind::recv && res > 0)
                l.received += res;
            else if (op.what == linux_op::kind::send && res > 0)
                l.sent += res;
            EXPECT_FALSE(op.on_issuing_thread.load());
        }
    };
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t)
        workers.emplace_back(body, t);
    for (auto& w : workers)
        w.join();
    std::size_t cancelled = 0;
    std::int64_t received = 0;
    for (auto& l : lanes) {
        cancelled += l.cancelled;
        received += l.received;
    }
    // Not vacuous: cancels hit operations in flight, and data went through the ring.
    EXPECT_GT(cancelled, 0u);
    EXPECT_GT(received, 0);
    for (auto& l : lanes) {
        EXPECT_EQ(l.done.count(), l.issued); // exactly one completion per issue
        char sink[4096];
        std::int64_t left = 0;
        for (;;) {
            const auto r = ::recv(l.fds[0], sink, sizeof sink, MSG_DONTWAIT);
            if (r <= 0)
                break;
            left += r;
        }
        EXPECT_EQ(l.received + left, l.sent);
        backend.detach(l.fds[0]);
        backend.detach(l.fds[1]);
        ::close(l.fds[0]);
        ::close(l.fds[1]);
    }
}

TEST_F(uring_backend_test, stress_issues_racing_cancels_complete_each_op_once) {
    stress(*backend_);
}

TEST_F(uring_backend_test, stress_with_cancel_by_user_data) {
    uring_options options;
    options.force_cancel_by_user_data = true;
    create(options);
    stress(*backend_);
}

TEST_F(uring_backend_test, stress_with_every_op_waiting_for_readiness) {
    uring_options options;
    options.force_poll_first = true;
    create(options);
    stress(*backend_);
}

TEST_F(uring_backend_test, stress_with_every_op_waiting_for_readiness_by_user_data) {
    uring_options options;
    options.force_poll_first = true;
    options.force_cancel_by_user_data = true;
    create(options);
    stress(*backend_);
}

// 4 threads, 200 rounds each: a socketpair, 1 to 3 recvs on one end, the peer sending bytes 'O'
// at random moments, cancel(op) of a random recv, then detach and, at once, a new socket on the
// same number (dup2) that is sent bytes 'N' while the old peer goes on sending. Every recv
// completes once, with -ECANCELED or with bytes of the old socket only, and every byte sent to
// the new socket is read from it.
void close_reuse_stress(uring_backend& backend) {
    constexpr int threads = 4;
    constexpr int rounds = 200;
    std::atomic<std::size_t> cancelled{0};
    std::atomic<std::size_t> received{0};
    std::atomic<int> go{0};
    auto body = [&](int index) {
        std::minstd_rand rng(static_cast<unsigned>(index) + 1);
        go.fetch_add(1);
        while (go.load() < threads)
            std::this_thread::yield();
        completion_counter done;
        std::size_t issued = 0;
        for (int round = 0; round < rounds; ++round) {
            const auto old_pair = make_socketpair();
            const int number = old_pair[0];
            fd_closer old_peer(old_pair[1]);
            ASSERT_FALSE(backend.attach(number));
            const auto count = 1 + rng() % 3;
            std::vector<std::unique_ptr<test_op>> ops;
            std::vector<std::array<char, 8>> buffers(count);
            for (std::size_t i = 0; i < count; ++i) {
                auto op = std::make_unique<test_op>(done);
                op->what = linux_op::kind::recv;
                op->fd = number;
                op->iov[0] = {buffers[i].data(), buffers[i].size()};
                op->iov_count = 1;
                op->issued_by = std::this_thread::get_id();
                backend.issue(*op);
                ++issued;
                ops.push_back(std::move(op));
            }
            auto old_bytes = [&] {
                if (rng() % 2 == 0)
                    (void)::send(old_peer.fd, "OO", 1 + rng() % 2, MSG_NOSIGNAL | MSG_DONTWAIT);
            };
            old_bytes();
            if (rng() % 2 == 0)
                backend.cancel(*ops[rng() % count]);
            old_bytes();
            if (rng() % 2 == 0)
                std::this_thread::yield();
            backend.detach(number);
            const auto new_pair = make_socketpair();
            fd_closer new_peer(new_pair[1]);
            ASSERT_EQ(::dup2(new_pair[0], number), number) << std::strerror(errno);
            ::close(new_pair[0]);
            fd_closer reused(number);
            ASSERT_FALSE(backend.attach(number));
            const auto sent = static_cast<::ssize_t>(1 + rng() % 4);
            ASSERT_EQ(::send(new_peer.fd, "NNNN", static_cast<std::size_t>(sent), MSG_NOSIGNAL),
                      sent);
            old_bytes();
            (void)::send(old_peer.fd, "O", 1, MSG_NOSIGNAL | MSG_DONTWAIT); // wakes stale polls
            done.wait_for(issued);
            for (std::size_t i = 0; i < count; ++i) {
                EXPECT_EQ(ops[i]->calls.load(), 1);
                EXPECT_FALSE(ops[i]->on_issuing_thread.load());
                const int res = ops[i]->result.load();
                if (res == -ECANCELED) {
                    cancelled.fetch_add(1);
                    continue;
                }
                ASSERT_GT(res, 0);
                received.fetch_add(1);
                for (int b = 0; b < res; ++b)
                    EXPECT_EQ(buffers[i][static_cast<std::size_t>(b)], 'O') << "a stale recv";
            }
            std::array<char, 8> got{};
            EXPECT_EQ(::recv(number, got.data(), got.size(), MSG_DONTWAIT), sent);
            for (::ssize_t b = 0; b < sent; ++b)
                EXPECT_EQ(got[static_cast<std::size_t>(b)], 'N');
            backend.detach(number);
        }
    };
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t)
        workers.emplace_back(body, t);
    for (auto& w : workers)
        w.join();
    std::printf("[ reuse    ] %zu recvs cancelled, %zu received old bytes\n", cancelled.load(),
                received.load());
    EXPECT_GT(cancelled.load(), 0u); // not vacuous: recvs were pending at the close
}

TEST_F(uring_backend_test, stress_closes_and_reuses_numbers_under_pending_recvs) {
    close_reuse_stress(*backend_);
}

TEST_F(uring_backend_test, stress_closes_and_reuses_numbers_with_ops_waiting_for_readiness) {
    uring_options options;
    options.force_poll_first = true;
    create(options);
    close_reuse_stress(*backend_);
}

TEST_F(uring_backend_test, stress_closes_and_reuses_numbers_waiting_for_readiness_by_user_data) {
    uring_options options;
    options.force_poll_first = true;
    options.force_cancel_by_user_data = true;
    create(options);
    close_reuse_stress(*backend_);
}

// The kernel ties a request to the task that entered it (io_uring_enter) and cancels what is
// pending when that task exits. Threads that issue and exit at once race long-lived threads whose
// recvs stay pending: no thread may enter another's SQE, or those recvs would complete with
// -ECANCELED when the short-lived thread that entered them exits. Each long-lived thread stays
// alive until its own recvs completed (its own exit would cancel them, rightly).
TEST_F(uring_backend_test, pending_ops_survive_the_exit_of_other_issuing_threads) {
    constexpr int long_lived = 2;
    constexpr int pending_each = 160;
    constexpr int spawners = 2;
    constexpr int short_lived_each = 40;
    constexpr int quick_each = 16;
    std::atomic<int> ready{0};
    std::atomic<int> spawners_done{0};
    std::atomic<std::size_t> survived{0};
    auto wait_for_all = [&] {
        ready.fetch_add(1);
        while (ready.load() < long_lived + spawners)
            std::this_thread::yield();
    };
    auto keeper = [&] {
        completion_counter done;
        std::vector<std::array<int, 2>> pairs;
        std::vector<std::unique_ptr<fd_closer>> closers;
        for (int i = 0; i < pending_each; ++i) {
            pairs.push_back(make_socketpair());
            closers.push_back(std::make_unique<fd_closer>(pairs.back()[0]));
            closers.push_back(std::make_unique<fd_closer>(pairs.back()[1]));
            ASSERT_FALSE(backend_->attach(pairs.back()[0]));
        }
        std::vector<std::unique_ptr<test_op>> ops;
        std::vector<std::array<char, 2>> buffers(pending_each);
        wait_for_all();
        for (std::size_t i = 0; i < pairs.size(); ++i) {
            auto op = std::make_unique<test_op>(done);
            op->what = linux_op::kind::recv;
            op->fd = pairs[i][0];
            op->iov[0] = {buffers[i].data(), 2};
            op->iov_count = 1;
            op->issued_by = std::this_thread::get_id();
            backend_->issue(*op);
            ops.push_back(std::move(op));
            std::this_thread::yield();
        }
        while (spawners_done.load() < spawners)
            std::this_thread::yield();
        for (const auto& pair : pairs)
            ASSERT_EQ(::send(pair[1], "w", 1, MSG_NOSIGNAL), 1);
        done.wait_for(pairs.size());
        for (std::size_t i = 0; i < pairs.size(); ++i) {
            EXPECT_EQ(ops[i]->calls.load(), 1);
            EXPECT_EQ(ops[i]->result.load(), 1) << "recv " << i << " ended by another's exit";
            if (ops[i]->result.load() == 1 && buffers[i][0] == 'w')
                survived.fetch_add(1);
            backend_->detach(pairs[i][0]);
        }
    };
    auto spawner = [&] {
        wait_for_all();
        for (int t = 0; t < short_lived_each; ++t) {
            // Its recvs find their byte at once (each completes while it is entered, never
            // left pending), then the thread exits.
            std::thread([&] {
                const auto pair = make_socketpair();
                fd_closer a(pair[0]);
                fd_closer b(pair[1]);
                ASSERT_FALSE(backend_->attach(a.fd));
                completion_counter quick;
                for (int q = 0; q < quick_each; ++q) {
                    ASSERT_EQ(::send(b.fd, "q", 1, MSG_NOSIGNAL), 1);
                    std::array<char, 2> buffer{};
                    test_op op(quick);
                    op.what = linux_op::kind::recv;
                    op.fd = a.fd;
                    op.iov[0] = {buffer.data(), buffer.size()};
                    op.iov_count = 1;
                    op.issued_by = std::this_thread::get_id();
                    backend_->issue(op);
                    quick.wait_for(static_cast<std::size_t>(q) + 1);
                    EXPECT_EQ(op.result.load(), 1);
                }
                backend_->detach(a.fd);
            }).join();
        }
        spawners_done.fetch_add(1);
    };
    std::vector<std::thread> threads;
    for (int k = 0; k < long_lived; ++k)
        threads.emplace_back(keeper);
    for (int k = 0; k < spawners; ++k)
        threads.emplace_back(spawner);
    for (auto& t : threads)
        t.join();
    EXPECT_EQ(survived.load(), static_cast<std::size_t>(long_lived * pending_each));
}

} // namespace

// --- Operations whose issuing thread exits before they complete -------------------------------
// The kernel ends such a request, without running it, when its fd becomes ready (-ECANCELED from
// the fallback task_work of the exited task); the backend issues it again from the reaper. Each
// op below is issued by a thread that exits while the op waits, then made ready: it must
// complete once with its real result.

// Runs fn on a thread that exits before this returns.
template <class F>
void on_a_thread_that_exits(F&& fn) {
    std::thread(std::forward<F>(fn)).join();
}

class uring_backend_exit_test : public uring_backend_test,
                                public ::testing::WithParamInterface<bool> {
protected:
    // The parameter: every op first waits for its readiness POLL_ADD (the re-issue path).
    void SetUp() override {
        uring_options options;
        options.force_poll_first = GetParam();
        create(options);
    }
};

INSTANTIATE_TEST_SUITE_P(first_try, uring_backend_exit_test, ::testing::Values(false));
INSTANTIATE_TEST_SUITE_P(poll_first, uring_backend_exit_test, ::testing::Values(true));

TEST_P(uring_backend_exit_test, an_accept_completes_with_the_connection) {
    ::sockaddr_in where{};
    fd_closer listener(make_listener(where));
    ASSERT_FALSE(backend_->attach(listener.fd));
    test_op accept(done_);
    accept.what = linux_op::kind::accept;
    accept.fd = listener.fd;
    on_a_thread_that_exits([&] { issue(accept); });
    fd_closer client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(::connect(client.fd, reinterpret_cast<::sockaddr*>(&where), sizeof where), 0);
    done_.wait_for(1);
    const int accepted = completed_once(accept);
    ASSERT_GE(accepted, 0) << std::strerror(-accepted);
    fd_closer server(accepted);
    ASSERT_EQ(::send(client.fd, "a", 1, MSG_NOSIGNAL), 1);
    char byte = 0;
    ASSERT_EQ(::recv(accepted, &byte, 1, 0), 1); // the connection the accept took is ours
    EXPECT_EQ(byte, 'a');
    backend_->detach(listener.fd);
}

// A connect to a listener whose accept queue is full stays in SYN_SENT (the listener drops the
// SYN) until the queue drains and the client sends its SYN again (about 1 s later): the
// handshake outlives the thread. A second listener is closed instead: the retry gets a reset,
// and the connect reports ECONNREFUSED (read from SO_ERROR).
TEST_P(uring_backend_exit_test, a_connect_completes_with_the_handshake_result) {
    ::sockaddr_in where[2]{};
    fd_closer ok_listener(make_listener(where[0]));
    auto listener_2 = std::make_unique<fd_closer>(make_listener(where[1]));
    std::vector<std::unique_ptr<fd_closer>> fillers;
    for (const auto& to : where) {
        ASSERT_EQ(::listen(&to == &where[0] ? ok_listener.fd : listener_2->fd, 0), 0);
        // Backlog 0 holds one connection: one filler, established, makes the queue full.
        fillers.push_back(std::make_unique<fd_closer>(::socket(AF_INET, SOCK_STREAM, 0)));
        ASSERT_EQ(
            ::connect(fillers.back()->fd, reinterpret_cast<const ::sockaddr*>(&to), sizeof to), 0);
    }
    std::vector<std::unique_ptr<fd_closer>> clients;
    std::vector<std::unique_ptr<test_op>> connects;
    for (const auto& to : where) {
        clients.push_back(std::make_unique<fd_closer>(::socket(AF_INET, SOCK_STREAM, 0)));
        ASSERT_FALSE(backend_->attach(clients.back()->fd));
        connects.push_back(std::make_unique<test_op>(done_));
        connects.back()->what = linux_op::kind::connect;
        connects.back()->fd = clients.back()->fd;
        std::memcpy(&connects.back()->addr, &to, sizeof to);
        connects.back()->addr_len = sizeof to;
    }
    on_a_thread_that_exits([&] {
        for (auto& c : connects)
            issue(*c);
    });
    EXPECT_EQ(done_.count(), 0u) << "the handshakes should still be going";
    // Drain the first queue (the SYN sent again is then taken), close the second listener (the
    // SYN sent again gets a reset).
    const int taken = ::accept(ok_listener.fd, nullptr, nullptr);
    ASSERT_GE(taken, 0) << std::strerror(errno);
    fd_closer taken_closer(taken);
    listener_2.reset();
    done_.wait_for(2);
    EXPECT_EQ(completed_once(*connects[0]), 0);
    EXPECT_EQ(completed_once(*connects[1]), -ECONNREFUSED);
    const int second = ::accept(ok_listener.fd, nullptr, nullptr);
    ASSERT_GE(second, 0) << std::strerror(errno);
    fd_closer second_closer(second);
    ASSERT_EQ(::send(clients[0]->fd, "c", 1, MSG_NOSIGNAL), 1);
    char byte = 0;
    ASSERT_EQ(::recv(second, &byte, 1, 0), 1);
    EXPECT_EQ(byte, 'c');
    for (auto& c : clients)
        backend_->detach(c->fd);
}

TEST_P(uring_backend_exit_test, a_send_that_waits_for_room_sends_its_bytes) {
    const auto pair = make_socketpair();
    fd_closer a(pair[0]);
    fd_closer b(pair[1]);
    ASSERT_FALSE(backend_->attach(a.fd));
    // Fill a's send buffer (and b's receive buffer) until a send would block.
    std::vector<char> chunk(4096, 'f');
    std::size_t filled = 0;
    for (;;) {
        const ::ssize_t n = ::send(a.fd, chunk.data(), chunk.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            ASSERT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK) << std::strerror(errno);
            break;
        }
        filled += static_cast<std::size_t>(n);
    }
    char message[] = "last";
    test_op send(done_);
    send.what = linux_op::kind::send;
    send.fd = a.fd;
    send.iov[0] = {message, 4};
    send.iov_count = 1;
    on_a_thread_that_exits([&] { issue(send); });
    EXPECT_EQ(done_.count(), 0u) << "the send should wait for room";
    // Read the filler: room for the send, which then sends its bytes once, after the filler.
    std::string got;
    std::vector<char> buffer(65536);
    while (got.size() < filled) {
        const ::ssize_t n =
            ::recv(b.fd, buffer.data(), std::min(buffer.size(), filled - got.size()), 0);
        ASSERT_GT(n, 0) << std::strerror(errno);
        got.append(buffer.data(), static_cast<std::size_t>(n));
    }
    EXPECT_EQ(got.find_first_not_of('f'), std::string::npos);
    done_.wait_for(1);
    ASSERT_EQ(completed_once(send), 4);
    ASSERT_EQ(::recv(b.fd, buffer.data(), 4, MSG_WAITALL), 4);
    EXPECT_EQ(std::string(buffer.data(), 4), "last");
    backend_->detach(a.fd);
}

TEST_P(uring_backend_exit_test, a_recv_from_gets_its_datagram_and_sender) {
    auto udp = [] {
        const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ::sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        EXPECT_EQ(::bind(fd, reinterpret_cast<::sockaddr*>(&addr), sizeof addr), 0);
        return fd;
    };
    fd_closer receiver(udp());
    fd_closer sender(udp());
    ASSERT_FALSE(backend_->attach(receiver.fd));
    char buffer[16] = {};
    test_op recv(done_);
    recv.what = linux_op::kind::recv_from;
    recv.fd = receiver.fd;
    recv.iov[0] = {buffer, sizeof buffer};
    recv.iov_count = 1;
    on_a_thread_that_exits([&] { issue(recv); });
    ::sockaddr_in to{}, from{};
    ::socklen_t len = sizeof to;
    ASSERT_EQ(::getsockname(receiver.fd, reinterpret_cast<::sockaddr*>(&to), &len), 0);
    len = sizeof from;
    ASSERT_EQ(::getsockname(sender.fd, reinterpret_cast<::sockaddr*>(&from), &len), 0);
    ASSERT_EQ(::sendto(sender.fd, "datagram", 8, 0, reinterpret_cast<::sockaddr*>(&to), sizeof to),
              8);
    done_.wait_for(1);
    EXPECT_EQ(completed_once(recv), 8);
    EXPECT_EQ(std::string(buffer, 8), "datagram");
    EXPECT_EQ(recv.msg.msg_namelen, sizeof(::sockaddr_in));
    EXPECT_EQ(reinterpret_cast<const ::sockaddr_in&>(recv.addr).sin_port, from.sin_port);
    backend_->detach(receiver.fd);
}

// A file read that must wait: the read end of a pipe (a regular file's read never waits for an
// fd's readiness, it completes while the issuing thread is in the kernel).
TEST_P(uring_backend_exit_test, a_read_at_of_a_pipe_reads_what_is_written_later) {
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    fd_closer read_end(fds[0]);
    fd_closer write_end(fds[1]);
    ASSERT_FALSE(backend_->attach(read_end.fd));
    char buffer[8] = {};
    test_op read(done_);
    read.what = linux_op::kind::read_at;
    read.fd = read_end.fd;
    read.offset = 0;
    read.iov[0] = {buffer, sizeof buffer};
    on_a_thread_that_exits([&] { issue(read); });
    EXPECT_EQ(done_.count(), 0u) << "the read should wait for bytes";
    ASSERT_EQ(::write(write_end.fd, "pipe", 4), 4);
    done_.wait_for(1);
    EXPECT_EQ(completed_once(read), 4);
    EXPECT_EQ(std::string(buffer, 4), "pipe");
    backend_->detach(read_end.fd);
}

// A cancel we asked for still ends an op whose issuing thread exited, once, as cancelled, and
// detach does too: neither is mistaken for the kernel's cancel at thread exit.
TEST_P(uring_backend_exit_test, cancel_and_detach_still_abort_once) {
    const auto p1 = make_socketpair();
    const auto p2 = make_socketpair();
    fd_closer a1(p1[0]), b1(p1[1]), b2(p2[1]);
    ASSERT_FALSE(backend_->attach(p1[0]));
    ASSERT_FALSE(backend_->attach(p2[0]));
    char x[2], y[2];
    test_op one(done_), two(done_);
    for (auto* op : {&one, &two}) {
        op->what = linux_op::kind::recv;
        op->iov_count = 1;
    }
    one.fd = p1[0];
    one.iov[0] = {x, 2};
    two.fd = p2[0];
    two.iov[0] = {y, 2};
    on_a_thread_that_exits([&] {
        issue(one);
        issue(two);
    });
    backend_->cancel(one);
    backend_->detach(p2[0]);
    ::close(p2[0]);
    done_.wait_for(2);
    EXPECT_EQ(completed_once(one), -ECANCELED);
    EXPECT_EQ(completed_once(two), -ECANCELED);
    backend_->detach(p1[0]);
}

// Stress: short-lived threads issue recvs and exit at random moments while a writer feeds the
// recvs as soon as they are issued, a canceller cancels some and a closer detaches and closes
// some sockets. Every recv completes exactly once: with its byte, or -ECANCELED only when it
// was cancelled or its socket closed.
void exit_stress(uring_backend& backend) {
    constexpr int rounds = 6;
    constexpr int issuers = 6;
    constexpr int ops_each = 12;
    constexpr int total = issuers * ops_each;
    for (int round = 0; round < rounds; ++round) {
        completion_counter done;
        struct slot {
            std::array<int, 2> fds{-1, -1};
            std::unique_ptr<test_op> op;
            char buffer[2] = {};
            std::atomic<bool> issued{false};
            std::atomic<bool> cancelled{false};
            std::atomic<bool> closed{false};
        };
        std::vector<slot> slots(total);
        for (auto& s : slots) {
            s.fds = make_socketpair();
            ASSERT_FALSE(backend.attach(s.fds[0]));
            s.op = std::make_unique<test_op>(done);
            s.op->what = linux_op::kind::recv;
            s.op->fd = s.fds[0];
            s.op->iov[0] = {s.buffer, sizeof s.buffer};
            s.op->iov_count = 1;
        }
        std::atomic<bool> go{false};
        std::vector<std::thread> threads;
        for (int t = 0; t < issuers; ++t) {
            threads.emplace_back([&, t] {
                std::minstd_rand random(static_cast<unsigned>(round * 131 + t));
                while (!go.load())
                    std::this_thread::yield();
                // Each issuer is itself a chain of threads: a link issues a few recvs and exits.
                int next = t * ops_each;
                const int end = next + ops_each;
                while (next < end) {
                    const int count = 1 + static_cast<int>(random() % 4);
                    const unsigned spin = random() % 64;
                    std::thread([&, count, spin] {
                        for (int k = 0; k < count && next < end; ++k, ++next) {
                            slot& s = slots[static_cast<std::size_t>(next)];
                            s.op->issued_by = std::this_thread::get_id();
                            backend.issue(*s.op);
                            s.issued.store(true);
                        }
                        for (unsigned y = 0; y < spin; ++y)
                            std::this_thread::yield();
                    }).join();
                }
            });
        }
        std::thread writer([&] {
            std::minstd_rand random(static_cast<unsigned>(round));
            std::vector<int> order(total);
            for (int i = 0; i < total; ++i)
                order[static_cast<std::size_t>(i)] = i;
            std::shuffle(order.begin(), order.end(), random);
            while (!go.load())
                std::this_thread::yield();
            for (int i : order) {
                slot& s = slots[static_cast<std::size_t>(i)];
                while (!s.issued.load())
                    std::this_thread::yield();
                if (random() % 4 == 0)
                    std::this_thread::yield(); // the issuing thread may be gone by now, or not
                // The peer may have been closed by the closer: the send then fails, ignored.
                (void)::send(s.fds[1], "r", 1, MSG_NOSIGNAL);
            }
        });
        std::thread canceller([&] {
            std::minstd_rand random(static_cast<unsigned>(round + 7));
            while (!go.load())
                std::this_thread::yield();
            for (int n = 0; n < total / 6; ++n) {
                slot& s = slots[random() % total];
                if (!s.issued.load())
                    continue;
                s.cancelled.store(true);
                backend.cancel(*s.op);
            }
        });
        std::thread closer([&] {
            std::minstd_rand random(static_cast<unsigned>(round + 13));
            while (!go.load())
                std::this_thread::yield();
            for (int n = 0; n < total / 6; ++n) {
                slot& s = slots[random() % total];
                if (!s.issued.load() || s.closed.exchange(true))
                    continue;
                backend.detach(s.fds[0]);
                ::close(s.fds[0]);
            }
        });
        go.store(true);
        for (auto& t : threads)
            t.join();
        writer.join();
        canceller.join();
        closer.join();
        done.wait_for(total);
        for (auto& s : slots) {
            EXPECT_EQ(s.op->calls.load(), 1);
            const int res = s.op->result.load();
            if (s.cancelled.load() || s.closed.load()) {
                EXPECT_TRUE(res == 1 || res == -ECANCELED) << res;
            } else {
                EXPECT_EQ(res, 1) << "a recv nobody cancelled ended with " << res;
            }
            if (res == 1) {
                EXPECT_EQ(s.buffer[0], 'r');
            }
            if (!s.closed.load()) {
                backend.detach(s.fds[0]);
                ::close(s.fds[0]);
            }
            ::close(s.fds[1]);
        }
        EXPECT_EQ(done.count(), static_cast<std::size_t>(total)); // none completed twice
    }
}

TEST_P(uring_backend_exit_test, stress_issuers_exit_while_others_cancel_and_close) {
    exit_stress(*backend_);
}

TEST_F(uring_backend_test, stress_issuers_exit_while_others_cancel_by_user_data_and_close) {
    uring_options options;
    options.force_cancel_by_user_data = true;
    create(options);
    exit_stress(*backend_);
}

// --- IORING_SETUP_COOP_TASKRUN (uring_options::coop_taskrun) ----------------------------------
// io_uring finishes a recv whose socket became ready as task work of the thread that submitted
// it. With COOP_TASKRUN the kernel no longer interrupts that thread while it runs, but it still
// wakes it when it sleeps: neither a sleeping nor a computing submitter may hold the completion
// back for good (the reaper here is the backend's watchdog, a different thread).

TEST_F(uring_backend_test, coop_taskrun_is_on_by_default_and_can_be_turned_off) {
    EXPECT_TRUE(backend_->coop_taskrun())
        << "this kernel predates IORING_SETUP_COOP_TASKRUN (5.19)";
    uring_options options;
    options.coop_taskrun = false;
    create(options);
    EXPECT_FALSE(backend_->coop_taskrun());
}

// The scheduler state of thread `tid` of this process ('R', 'S', ...), from /proc.
char thread_state(pid_t tid) {
    const std::string path = "/proc/self/task/" + std::to_string(tid) + "/stat";
    std::FILE* f = std::fopen(path.c_str(), "r");
    if (f == nullptr)
        return '?';
    char line[512] = {};
    const bool read = std::fgets(line, sizeof line, f) != nullptr;
    std::fclose(f);
    const char* end = read ? std::strrchr(line, ')') : nullptr; // "pid (comm) S ..."
    return end != nullptr && end[1] == ' ' ? end[2] : '?';
}

// How the thread that issued a recv spends the time until the recv has completed.
enum class submitter_then { sleeps, computes };

// A thread issues a recv that must wait for data, then either sleeps on a condition variable
// (the bytes are sent only once /proc shows it asleep: its task work must wake it), or computes
// (loads an atomic, no system call: the kernel must run its task work anyway, at the next
// interrupt with COOP_TASKRUN) until the recv has completed. 20 rounds; otherwise this never ends.
void recv_completes_while_submitter(uring_backend& backend, submitter_then then) {
    auto fds = make_socketpair();
    fd_closer a(fds[0]), b(fds[1]);
    ASSERT_FALSE(backend.attach(fds[0]));
    for (int round = 0; round < 20; ++round) {
        completion_counter done;
        test_op op(done);
        char byte = 0;
        op.what = linux_op::kind::recv;
        op.fd = fds[0];
        op.iov[0] = {&byte, 1};
        op.iov_count = 1;
        std::atomic<pid_t> tid{0};
        std::thread submitter([&] {
            op.issued_by = std::this_thread::get_id();
            backend.issue(op); // nothing to read yet: the ring arms a poll for it
            tid.store(::gettid());
            if (then == submitter_then::sleeps) {
                done.wait_for(1); // asleep in the kernel (a futex) until the watchdog reaps it
            } else {
                while (op.calls.load() == 0) {
                    // user code: no system call
                }
            }
        });
        while (op.calls.load() == 0 && (tid.load() == 0 || (then == submitter_then::sleeps &&
                                                            thread_state(tid.load()) != 'S')))
            std::this_thread::yield();
        // No ASSERT before join(): leaving with the thread joinable would terminate.
        const bool completed_early = op.calls.load() != 0;
        const char sent = static_cast<char>('a' + round);
        bool sent_ok = false;
        int send_error = 0;
        if (!completed_early) {
            sent_ok = ::send(fds[1], &sent, 1, MSG_NOSIGNAL) == 1;
            send_error = errno;
            if (!sent_ok)
                backend.cancel(op); // ends the submitter's wait
        }
        submitter.join();
        done.wait_for(1);
        EXPECT_FALSE(completed_early)
            << "a recv completed with nothing to read: " << op.result.load();
        EXPECT_TRUE(completed_early || sent_ok) << std::strerror(send_error);
        EXPECT_EQ(op.calls.load(), 1);
        EXPECT_EQ(op.result.load(), 1);
        EXPECT_FALSE(op.on_issuing_thread.load());
        EXPECT_EQ(byte, sent);
    }
    backend.detach(fds[0]);
}

TEST_F(uring_backend_test, a_recv_completes_while_its_submitter_sleeps) {
    recv_completes_while_submitter(*backend_, submitter_then::sleeps);
    uring_options options;
    options.coop_taskrun = false;
    create(options);
    recv_completes_while_submitter(*backend_, submitter_then::sleeps);
}

TEST_F(uring_backend_test, a_recv_completes_while_its_submitter_computes) {
    recv_completes_while_submitter(*backend_, submitter_then::computes);
    uring_options options;
    options.coop_taskrun = false;
    create(options);
    recv_completes_while_submitter(*backend_, submitter_then::computes);
}

TEST_F(uring_backend_test, direct_recvs_skip_their_try_after_misses_and_try_again_when_data_waits) {
    // issue_now tries a recv with recvmsg(MSG_DONTWAIT) first. A request-reply connection's recv
    // finds no data almost every time, so after misses in a row the next recvs go straight to
    // the ring (up to 15 of them); a recv that then finds data waiting resets that. Either way
    // every byte arrives once, in order.
    auto fds = make_socketpair();
    fd_closer a(fds[0]), b(fds[1]);
    ASSERT_FALSE(backend_->attach(fds[0]));
    ASSERT_FALSE(backend_->attach(fds[1]));
    std::size_t completions = 0;
    char next = 'a';
    // One 1-byte recv on `a`; writes the byte to `b` after (nothing waits) or before (data
    // waits). Returns whether issue_now finished it directly.
    const auto one_recv = [&](bool data_waits) {
        test_op op(done_);
        op.what = linux_op::kind::recv;
        op.fd = fds[0];
        char got = 0;
        op.iov[0] = {&got, 1};
        op.iov_count = 1;
        op.issued_by = std::this_thread::get_id();
        const char sent = next++;
        if (data_waits) {
            EXPECT_EQ(::write(fds[1], &sent, 1), 1) << std::strerror(errno);
        }
        int res = 0;
        const bool direct = backend_->issue_now(op, res);
        if (!data_waits) {
            EXPECT_FALSE(direct) << "a recv finished with nothing sent: " << res;
        }
        if (!direct) {
            if (!data_waits) {
                EXPECT_EQ(::write(fds[1], &sent, 1), 1) << std::strerror(errno);
            }
            done_.wait_for(++completions);
            res = completed_once(op);
        } else {
            EXPECT_EQ(op.calls.load(), 0); // a direct result never reaches on_complete
        }
        EXPECT_EQ(res, 1);
        EXPECT_EQ(got, sent);
        return direct;
    };
    // Data waits, no miss yet: the try finds it.
    EXPECT_TRUE(one_recv(true));
    // Eight recvs in a row with nothing to read: three tries miss (the 1st, 3rd and 7th), the
    // others skip their try.
    for (int i = 0; i < 8; ++i)
        one_recv(false);
    // Now data waits before each recv: the first ones still skip their try (the ring reads the
    // data), then one tries, finds the data, and every later one tries again.
    int skipped = 0;
    while (!one_recv(true) && skipped < 16)
        ++skipped;
    EXPECT_GE(skipped, 1) << "no recv skipped its try after 3 misses in a row";
    EXPECT_LE(skipped, 15) << "recvs kept skipping their try while data waited";
    for (int i = 0; i < 20; ++i)
        EXPECT_TRUE(one_recv(true)) << "recv " << i << " after a hit skipped its try";
    backend_->detach(fds[0]);
    backend_->detach(fds[1]);
}
