// A sixth set of programs a user might write from the README and the public headers, each built
// from a scenario that broke another I/O library (its bug report named below), aimed at the I/O
// objects: descriptors reused, objects closed, moved or destroyed under their own operations,
// error paths (out of descriptors, wrong family, unconnected, reset peers, read-only files,
// directories, FIFOs), extreme arguments (0-byte transfers, offsets past 4 GiB) and thousands of
// operations in flight. Each test counts what it started and checks that every handler ran
// exactly once, with an error a user can act on.
//
// Scenarios and the reports they come from:
//  1. accept when the process is out of descriptors: the handler gets EMFILE once, no spin, and
//     the waiting client is accepted once descriptors are free (libuv joyent/libuv#690 "Endless
//     loop in EMFILE"; cpprestsdk#546 "server will never accept() again"; cpp-netlib#172).
//  2. a socket closed with a receive pending whose number is reused at once by a file: the
//     stale receive never reads the file (liburing#363 "outstanding read operations don't notice
//     that the underneath fd change"; liburing#568, after Asio#401).
//  3. close racing bytes that arrive for a pending receive: exactly one completion, bytes or
//     aborted (liburing#932 "Socket close in combination with a read/recv").
//  4. a socket destroyed inside its own completion handler while another of its operations is
//     pending (node-v0.x-archive#6968 "make Socket destroy() re-entrance safe"; SiriDB#39).
//  5. a handler that starts the next operation on the socket it just moved from (SIPp#224
//     "Potential use-after-free bugs in SIPpSocket").
//  6. connect to an endpoint of the other family and to port 0 (Asio/libuv connect error paths;
//     bun#30176's connect-error handler path).
//  7. 0-byte send and send_all: complete with 0 bytes, the peer sees no eof (shadow#3094 "Fix
//     read() and recv() with 0-length buffer"; Tmds.LinuxAsync#8).
//  8. half-close: shutdown(send), the peer reads to eof and answers, then eof back (libuv#3449
//     "Missing events on TCP RST after FIN"; iotjs#109 allowHalfOpen).
//  9. the peer closes with unread data: our pending receive sees a reset, not eof (libuv#3034
//     "Closing a socket with a pending read makes Windows send a TCP RST packet").
// 10. sends on a connection the peer reset (SO_LINGER 0): errors, and EPIPE raises no SIGPIPE
//     (vibe-d/eventcore#127 "SIGPIPE on send"; bitcoin-echo#22; liburing#1015).
// 11. a send after our own shutdown(send): an error, no SIGPIPE (micropython#2216 "SIGPIPE
//     handling problem").
// 12. receive and send on a socket that never connected: not_connected, once each (libuv#2409
//     "clear read/write states on close", the unconnected-stream case).
// 13. thousands of receives pending on one socket take one byte each, in order (liburing ring
//     full reports; a10#153 "Close direct fd if submission queue is full").
// 14. thousands of operations in flight across many sockets, all closed: each aborted once
//     (liburing#1192; Mooncake#2719 oversized io_uring batches).
// 15. file reads and writes at offsets past 4 GiB (compio#600 "silent length truncation to u32";
//     liburing#403 "How to read/write large files").
// 16. a write to a file opened read-only (a read from one opened write-only) fails once with
//     a clear error, not "bad handle" (nodejs/node#38607 "Correct the error type of
//     fs.writeFile with read-only mode"; crystal-lang#1281; ziglang/zig#3880).
// 17. opening a directory as a file is refused (liburing#175 / libuv fs error paths).
// 18. /dev/null reads eof at once and takes writes (WSL#975 "zero-length read() should return
//     immediately"; liburing#184 reading stdin at EOF).
// 19. opening a FIFO that has no writer: refused at once, not blocked in open(2) (liburing#184;
//     WSL#975: a read path that blocks where Linux returns).
// 20. cancel racing receive completions from another thread: each completes once
//     (AntelopeIO/leap#471 event storms; liburing#568).
// 21. cancel racing file reads from another thread: each completes once, data intact.
// 22. closing the acceptor inside an accept handler aborts the other pending accepts once
//     (cpprestsdk#546; yrmcds#91 "Fix busy loop when FDs are exhausted").
// 23. a server restarted on its port while its old connection sits in TIME_WAIT listens again
//     (AntelopeIO/leap#470 restart path; the classic "Address already in use" after restart).
// 24. a datagram received into an empty buffer: truncation reported (or the empty buffer
//     refused) and the next receive gets the next datagram (zephyr#31100 "Recvfrom not
//     returning -1 if UDP and len is too small"; PowerDNS#2939; envoy#14122).
// 25. thousands of file reads in flight at once on one file, each with its own bytes
//     (liburing#175 "Requesting reads larger than file size"; Mooncake#2719).
// 26. shutdown on a socket never connected, or closed: an error, not a crash (libuv#884
//     "assert did not call uv_close()").
// 27. connect on a socket already connected, to another address: an error, and the first
//     connection carries on (liburing#980 "connect() doesn't return EISCONN"; microsoft/WSL#2949
//     "non blocking connect() never succeeds"; xjdrew/levent#27).
// 28. a second listener on a port in use: address_in_use, the first unharmed (SO_REUSEADDR
//     must not let two servers share a port: Asio reuse_address reports).
// 29. every call that opens a descriptor (file, socket, connect, acceptor, datagram socket)
//     out of descriptors: EMFILE, no handler run, and each works once descriptors are free
//     (nanomsg#152 "Need to delay accepting connections on EMFILE"; pg_doorman#262).
// 30. a datagram sent to the other family: an error once, and the socket goes on (zig-aio#67
//     "Operations has inconsistent behavior with io_uring & posix").
// 31. SO_LINGER times the platforms cannot hold (negative, over Win32's u_short) are refused,
//     not truncated or read as "for ever" (libuv#2409's dont_linger review; Asio linger
//     option reports).
// 32. the process's first file or socket with one or two descriptors left: the descriptor opens,
//     but no I/O backend can start (io_uring's ring and epoll's descriptors need more). The
//     open fails with EMFILE, and the next, with descriptors back, works (it used to abort the
//     process; Tokio and libuv report a driver that cannot start as an error, not an abort).

#include "iocp/config.hpp"

#include <gtest/gtest.h>

#if IOCP_HAS_IO

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <limits>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "iocp/acceptor.hpp"
#include "iocp/buffer.hpp"
#include "iocp/coro/io.hpp"
#include "iocp/coro/sync_wait.hpp"
#include "iocp/coro/task.hpp"
#include "iocp/datagram_socket.hpp"
#include "iocp/endpoint.hpp"
#include "iocp/error.hpp"
#include "iocp/file.hpp"
#include "iocp/socket.hpp"
#include "iocp/thread_pool.hpp"
#include "support/completion.hpp"
#include "support/platform.hpp"
#include "support/socket_pair.hpp"
#include "support/temp_path.hpp"
#include "support/waiting.hpp"

#if !IOCP_WINDOWS
#include <csignal>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace {

using iocp::address_family;
using iocp_test::await;
using iocp_test::tsan_divisor;
using iocp_test::wait_until;

using iocp_test::completion;
using iocp_test::outcome;

std::filesystem::path temp_path(const char* name) {
    return iocp_test::temp_path("user_trial6", name);
}

// A few hundred cycles of random length, to move one thread's call against another's.
void busy_wait(int rounds) {
    static std::atomic<int> sink{0};
    for (int k = 0; k < rounds; ++k)
        sink.fetch_add(1, std::memory_order_relaxed);
}

// A handle's number, to compare a socket's with a file's (Win32: a SOCKET and a HANDLE).
template <class Handle>
std::uint64_t handle_number(Handle h) {
    if constexpr (std::is_pointer_v<Handle>)
        return reinterpret_cast<std::uintptr_t>(h);
    else
        return static_cast<std::uint64_t>(h);
}

// Whether `ec` is `condition`: on Win32 the library passes Winsock's own code through (the
// documented "system's" error), which MinGW's std::system_category does not map to the generic
// conditions, so the Winsock value (WSAENOTCONN 10057, WSAEADDRINUSE 10048) counts too.
bool is(const std::error_code& ec, std::errc condition, int winsock_value) {
    if (ec == condition)
        return true;
    return IOCP_WINDOWS && ec.category() == std::system_category() && ec.value() == winsock_value;
}

// Runs `body` on the pool's threads as a coroutine and waits for it.
template <class F>
void run(F body) {
    iocp::sync_wait(body());
}

// ---------------------------------------------------------------------------------------------
// 1. Out of descriptors
// ---------------------------------------------------------------------------------------------

#if !IOCP_WINDOWS
// UBSan's vptr check (GCC 12's libubsan) makes a pipe(2) to look at the vtable of a type pair it
// has not cached; with no descriptor left it reports a false "invalid vptr" error, for a call in
// the library or in the test, and a warm-up does not help (its cache of 128 entries evicts by
// hash: 3 of 12 runs failed with one). So the tests that use up every descriptor skip there;
// the other builds (TSan, release, -O2) run them.
#if defined(IOCP_TEST_UBSAN)
constexpr bool under_ubsan = true;
#else
constexpr bool under_ubsan = false;
#endif
constexpr const char* ubsan_needs_descriptors =
    "UBSan's vptr check needs a free descriptor (a pipe) and would report a false error";

// Every descriptor of the process in use until give_back() (or the destructor): RLIMIT_NOFILE
// lowered to at most 256, and what is left under it filled with /dev/null.
class descriptors_used_up {
public:
    descriptors_used_up() {
        EXPECT_EQ(::getrlimit(RLIMIT_NOFILE, &old_limit_), 0);
        rlimit low = old_limit_;
        low.rlim_cur = std::min<rlim_t>(old_limit_.rlim_cur, 256);
        EXPECT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
        for (;;) {
            const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                break;
            fillers_.push_back(fd);
        }
    }
    descriptors_used_up(const descriptors_used_up&) = delete;
    descriptors_used_up& operator=(const descriptors_used_up&) = delete;
    ~descriptors_used_up() { give_back(); }

    // Closes `n` of the fillers: that many descriptors are free again.
    void free_some(std::size_t n) {
        for (; n > 0 && !fillers_.empty(); --n) {
            ::close(fillers_.back());
            fillers_.pop_back();
        }
    }

    void give_back() {
        for (int fd : fillers_)
            ::close(fd);
        fillers_.clear();
        if (!restored_) {
            EXPECT_EQ(::setrlimit(RLIMIT_NOFILE, &old_limit_), 0);
            restored_ = true;
        }
    }

private:
    rlimit old_limit_{};
    std::vector<int> fillers_;
    bool restored_ = false;
};
#endif

TEST(user_trial6, accept_out_of_descriptors_reports_emfile_once_then_accepts_the_client) {
#if IOCP_WINDOWS
    GTEST_SKIP() << "RLIMIT_NOFILE is Linux's: AcceptEx takes a socket made before the call";
#else
    if (under_ubsan)
        GTEST_SKIP() << ubsan_needs_descriptors;
    iocp::thread_pool pool(2);
    iocp::acceptor listener(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    iocp::socket client(pool);
    completion connected;
    client.connect(listener.local_endpoint(), connected.handler());
    ASSERT_FALSE(connected.get("connect").ec); // the kernel completed the handshake: backlog

    descriptors_used_up used_up;
    completion refused;
    listener.accept([&](std::error_code ec, iocp::socket conn) {
        EXPECT_FALSE(conn.is_open());
        refused.handler()(ec);
    });
    const outcome r = refused.get("accept without descriptors");
    used_up.give_back();
    EXPECT_EQ(r.ec, std::errc::too_many_files_open) << r.ec.message();

    // The client still waits in the backlog: the next accept takes it.
    std::promise<iocp::socket> accepted;
    listener.accept([&](std::error_code ec, iocp::socket conn) {
        EXPECT_FALSE(ec) << ec.message();
        accepted.set_value(std::move(conn));
    });
    iocp::socket server = await(accepted.get_future(), "accept after descriptors came back");
    ASSERT_TRUE(server.is_open());
    completion sent;
    client.send(iocp::buffer("hi", 2), sent.handler());
    std::array<char, 2> got{};
    completion received;
    server.recv(iocp::buffer(got), received.handler());
    EXPECT_EQ(received.get("recv").bytes, 2u);
    EXPECT_EQ(sent.get("send").bytes, 2u);
    EXPECT_EQ(std::string(got.data(), 2), "hi");
    EXPECT_EQ(refused.calls(), 1);
#endif
}

// ---------------------------------------------------------------------------------------------
// 2-5. Descriptors reused, close races, destruction and moves inside handlers
// ---------------------------------------------------------------------------------------------

TEST(user_trial6, a_receive_left_on_a_closed_socket_never_reads_the_file_that_reuses_its_number) {
    iocp::thread_pool pool(2);
    const auto path = temp_path("reuse");
    {
        std::FILE* f = std::fopen(path.string().c_str(), "wb");
        ASSERT_NE(f, nullptr);
        std::fputs("FILEDATA", f);
        std::fclose(f);
    }
    const int rounds = iocp_test::scaled(100, 10) / tsan_divisor;
    int reused = 0;
    for (int i = 0; i < rounds; ++i) {
        auto pair = iocp_test::make_socket_pair(pool);
        const auto old_number = handle_number(pair.server.native_handle());
        auto buf = std::make_shared<std::array<char, 8>>();
        completion stale;
        pair.server.recv(iocp::buffer(*buf),
                         [&, buf](std::error_code ec, std::size_t n) { stale.handler()(ec, n); });
        pair.server.close();
        iocp::file f(pool, path, iocp::file_mode::read);
        if (handle_number(f.native_handle()) == old_number)
            ++reused;
        std::array<char, 8> data{};
        completion read;
        f.read_at(0, iocp::buffer(data), read.handler());
        const outcome r = read.get("file read", i);
        EXPECT_FALSE(r.ec) << r.ec.message();
        EXPECT_EQ(r.bytes, 8u);
        EXPECT_EQ(std::string(data.data(), 8), "FILEDATA");
        // The client's bytes would belong to the closed socket only.
        completion sent;
        pair.client.send(iocp::buffer("x", 1), sent.handler());
        (void)sent.get("send", i);
        const outcome s = stale.get("stale receive", i);
        EXPECT_EQ(s.ec, iocp::errc::operation_aborted) << s.ec.message();
        EXPECT_EQ(s.bytes, 0u);
        EXPECT_EQ(stale.calls(), 1);
        EXPECT_EQ(read.calls(), 1);
    }
    std::filesystem::remove(path);
    RecordProperty("descriptor_numbers_reused", reused);
}

TEST(user_trial6, close_racing_arriving_bytes_completes_each_receive_once) {
    iocp::thread_pool pool(2);
    const int rounds = iocp_test::scaled(200, 20) / tsan_divisor;
    std::mt19937 rng(6);
    int got_bytes = 0;
    int aborted = 0;
    for (int i = 0; i < rounds; ++i) {
        auto pair = iocp_test::make_socket_pair(pool);
        auto buf = std::make_shared<std::array<char, 4>>();
        completion recv;
        pair.server.recv(iocp::buffer(*buf),
                         [&, buf](std::error_code ec, std::size_t n) { recv.handler()(ec, n); });
        completion sent;
        const int spin = static_cast<int>(rng() % 200);
        std::thread sender([&] { pair.client.send(iocp::buffer("abcd", 4), sent.handler()); });
        busy_wait(spin);
        pair.server.close();
        sender.join();
        (void)sent.get("send", i);
        const outcome r = recv.get("receive", i);
        if (r.ec) {
            EXPECT_EQ(r.ec, iocp::errc::operation_aborted) << r.ec.message();
            EXPECT_EQ(r.bytes, 0u);
            ++aborted;
        } else {
            EXPECT_GE(r.bytes, 1u);
            EXPECT_EQ(std::string(buf->data(), r.bytes), std::string("abcd", r.bytes));
            ++got_bytes;
        }
        EXPECT_EQ(recv.calls(), 1);
    }
    EXPECT_EQ(got_bytes + aborted, rounds);
}

TEST(user_trial6, a_socket_destroyed_in_its_own_handler_aborts_its_other_receive_once) {
    iocp::thread_pool pool(2);
    const int rounds = iocp_test::scaled(100, 10) / tsan_divisor;
    for (int i = 0; i < rounds; ++i) {
        auto pair = iocp_test::make_socket_pair(pool);
        auto owned = std::make_unique<iocp::socket>(std::move(pair.server));
        std::array<char, 1> first{};
        std::array<char, 1> second{};
        completion a;
        completion b;
        owned->recv(iocp::buffer(first), [&](std::error_code ec, std::size_t n) {
            owned.reset(); // the socket whose completion this is, with b still pending
            a.handler()(ec, n);
        });
        owned->recv(iocp::buffer(second), b.handler());
        completion sent;
        pair.client.send(iocp::buffer("z", 1), sent.handler());
        const outcome ra = a.get("first receive", i);
        const outcome rb = b.get("second receive", i);
        EXPECT_FALSE(ra.ec) << ra.ec.message();
        EXPECT_EQ(ra.bytes, 1u);
        EXPECT_EQ(first[0], 'z');
        EXPECT_EQ(rb.ec, iocp::errc::operation_aborted) << rb.ec.message();
        EXPECT_EQ(a.calls(), 1);
        EXPECT_EQ(b.calls(), 1);
        (void)sent.get("send", i);
    }
}

TEST(user_trial6, a_handler_that_receives_on_the_socket_it_moved_from_gets_a_clear_error) {
    iocp::thread_pool pool(2);
    auto pair = iocp_test::make_socket_pair(pool);
    iocp::socket moved_to;
    std::array<char, 1> first{};
    std::array<char, 1> again{};
    completion a;
    completion b;
    std::error_code thrown;
    pair.server.recv(iocp::buffer(first), [&](std::error_code ec, std::size_t n) {
        moved_to = std::move(pair.server);
        try {
            pair.server.recv(iocp::buffer(again), b.handler()); // the moved-from object
        } catch (const std::system_error& e) {
            thrown = e.code();
            b.handler()(e.code(), 0);
        }
        a.handler()(ec, n);
    });
    completion sent;
    pair.client.send(iocp::buffer("m", 1), sent.handler());
    EXPECT_FALSE(a.get("first receive").ec);
    const outcome r = b.get("receive on the moved-from socket");
    EXPECT_EQ(r.ec, iocp::errc::invalid_handle) << r.ec.message() << " thrown: " << thrown;
    EXPECT_EQ(b.calls(), 1);
    EXPECT_TRUE(moved_to.is_open());
    EXPECT_FALSE(pair.server.is_open());
    (void)sent.get("send");
    // The moved-to socket carries on.
    completion more;
    completion sent_more;
    pair.client.send(iocp::buffer("n", 1), sent_more.handler());
    moved_to.recv(iocp::buffer(again), more.handler());
    EXPECT_EQ(more.get("receive on the moved-to socket").bytes, 1u);
    EXPECT_EQ(sent_more.get("second send").bytes, 1u);
    EXPECT_EQ(again[0], 'n');
}

// ---------------------------------------------------------------------------------------------
// 6-12. Connect, 0 bytes, half-close, resets, SIGPIPE, unconnected sockets
// ---------------------------------------------------------------------------------------------

TEST(user_trial6, connect_to_the_other_family_or_port_0_fails_once) {
    iocp::thread_pool pool(2);
    iocp::acceptor v6(pool, iocp::endpoint::loopback(address_family::ipv6, 0));
    {
        iocp::socket s(pool, address_family::ipv4);
        completion c;
        std::error_code thrown;
        try {
            s.connect(v6.local_endpoint(), c.handler());
        } catch (const std::system_error& e) {
            thrown = e.code();
        }
        if (!thrown) {
            const outcome r = c.get("connect across families");
            EXPECT_TRUE(r.ec) << "an IPv4 socket connected to an IPv6 address";
            EXPECT_EQ(c.calls(), 1);
        } else {
            EXPECT_EQ(c.calls(), 0);
        }
    }
    {
        iocp::socket s(pool);
        completion c;
        s.connect(iocp::endpoint::loopback(address_family::ipv4, 0), c.handler());
        const outcome r = c.get("connect to port 0");
        EXPECT_TRUE(r.ec) << "connected to port 0";
        EXPECT_EQ(c.calls(), 1);
    }
}

TEST(user_trial6, zero_byte_send_and_send_all_complete_with_0_and_the_peer_sees_no_eof) {
    iocp::thread_pool pool(2);
    auto pair = iocp_test::make_socket_pair(pool);
    char nothing = 0;
    completion send0;
    pair.client.send(iocp::buffer(&nothing, 0), send0.handler());
    const outcome s0 = send0.get("0-byte send");
    EXPECT_FALSE(s0.ec) << s0.ec.message();
    EXPECT_EQ(s0.bytes, 0u);
    completion all0;
    pair.client.send_all(iocp::buffer(&nothing, 0), all0.handler());
    const outcome a0 = all0.get("0-byte send_all");
    EXPECT_FALSE(a0.ec) << a0.ec.message();
    EXPECT_EQ(a0.bytes, 0u);
    completion real;
    pair.client.send(iocp::buffer("k", 1), real.handler());
    std::array<char, 4> got{};
    completion recv;
    pair.server.recv(iocp::buffer(got), recv.handler());
    const outcome r = recv.get("receive after 0-byte sends");
    EXPECT_FALSE(r.ec) << r.ec.message(); // not eof
    EXPECT_EQ(r.bytes, 1u);
    EXPECT_EQ(got[0], 'k');
    EXPECT_EQ(real.get("1-byte send").bytes, 1u);
    EXPECT_EQ(send0.calls() + all0.calls() + real.calls() + recv.calls(), 4);
}

TEST(user_trial6, half_close_reads_everything_then_eof_in_both_directions) {
    iocp::thread_pool pool(2);
    auto pair = iocp_test::make_socket_pair(pool);
    constexpr std::size_t size = std::size_t{256} * 1024;
    std::vector<char> out(size);
    for (std::size_t i = 0; i < size; ++i)
        out[i] = static_cast<char>(i * 7 + 1);
    std::vector<char> echoed;
    std::vector<char> at_server;
    run([&]() -> iocp::task<> {
        auto client_side = [&]() -> iocp::task<> {
            co_await iocp::async_send_all(pair.client, iocp::buffer(out)).or_throw();
            pair.client.shutdown(iocp::shutdown_type::send);
            std::array<char, 8192> buf{};
            for (;;) {
                auto [ec, n] = co_await iocp::async_recv(pair.client, iocp::buffer(buf));
                if (ec == iocp::errc::eof)
                    break;
                if (ec)
                    throw std::system_error(ec, "client recv");
                echoed.insert(echoed.end(), buf.data(), buf.data() + n);
            }
        };
        auto server_side = [&]() -> iocp::task<> {
            std::array<char, 8192> buf{};
            for (;;) {
                auto [ec, n] = co_await iocp::async_recv(pair.server, iocp::buffer(buf));
                if (ec == iocp::errc::eof)
                    break;
                if (ec)
                    throw std::system_error(ec, "server recv");
                at_server.insert(at_server.end(), buf.data(), buf.data() + n);
            }
            // Our side is still open for sending after the peer's FIN.
            co_await iocp::async_send_all(pair.server, iocp::buffer(at_server)).or_throw();
            pair.server.shutdown(iocp::shutdown_type::send);
        };
        co_await iocp::when_all(client_side(), server_side());
    });
    EXPECT_EQ(at_server, out);
    EXPECT_EQ(echoed, out);
}

TEST(user_trial6, closing_with_unread_data_resets_the_peers_pending_receive) {
    iocp::thread_pool pool(2);
    auto pair = iocp_test::make_socket_pair(pool);
    completion sent;
    std::vector<char> data(100, 'u');
    pair.client.send_all(iocp::buffer(data), sent.handler());
    ASSERT_FALSE(sent.get("send").ec);
    std::array<char, 1> one{};
    completion first;
    pair.server.recv(iocp::buffer(one), first.handler()); // proves the bytes arrived
    ASSERT_EQ(first.get("first byte").bytes, 1u);
    std::array<char, 8> buf{};
    completion pending;
    pair.client.recv(iocp::buffer(buf), pending.handler());
    pair.server.close(); // 99 bytes unread: the kernel resets (RFC 2525 2.17)
    const outcome r = pending.get("receive at the reset peer");
    EXPECT_EQ(r.ec, iocp::errc::connection_reset) << r.ec.message();
    EXPECT_EQ(pending.calls(), 1);
}

#if !IOCP_WINDOWS
// Restores SIGPIPE's disposition at the end of a test that set it to the default (death).
struct sigpipe_default {
    struct sigaction old {};
    sigpipe_default() {
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        ::sigemptyset(&dfl.sa_mask);
        ::sigaction(SIGPIPE, &dfl, &old);
    }
    ~sigpipe_default() { ::sigaction(SIGPIPE, &old, nullptr); }
    sigpipe_default(const sigpipe_default&) = delete;
    sigpipe_default& operator=(const sigpipe_default&) = delete;
};
#endif

TEST(user_trial6, sends_on_a_reset_connection_fail_and_raise_no_sigpipe) {
#if !IOCP_WINDOWS
    const sigpipe_default dies_on_sigpipe; // the default: an EPIPE without MSG_NOSIGNAL kills
#endif
    iocp::thread_pool pool(2);
    auto pair = iocp_test::make_socket_pair(pool);
    pair.server.set_linger(true, 0);
    pair.server.close(); // RST
    std::vector<char> data(1024, 'p');
    int failed = 0;
    for (int i = 0; i < 20; ++i) {
        completion c;
        if (i % 2 == 0)
            pair.client.send(iocp::buffer(data), c.handler());
        else
            pair.client.send_all(iocp::buffer(data), c.handler());
        const outcome r = c.get("send on a reset connection", i);
        if (r.ec) {
            ++failed;
            EXPECT_EQ(r.ec, iocp::errc::connection_reset) << r.ec.message();
        }
        EXPECT_EQ(c.calls(), 1);
    }
    EXPECT_GE(failed, 19); // the first may still be taken before the RST is seen
}

TEST(user_trial6, a_send_after_our_own_shutdown_fails_and_raises_no_sigpipe) {
#if !IOCP_WINDOWS
    const sigpipe_default dies_on_sigpipe;
#endif
    iocp::thread_pool pool(2);
    auto pair = iocp_test::make_socket_pair(pool);
    pair.client.shutdown(iocp::shutdown_type::send);
    for (int i = 0; i < 4; ++i) {
        completion c;
        pair.client.send(iocp::buffer("late", 4), c.handler());
        const outcome r = c.get("send after shutdown", i);
        EXPECT_TRUE(r.ec) << "a send after shutdown(send) succeeded";
        EXPECT_EQ(c.calls(), 1);
    }
    // The other direction still works.
    completion back;
    pair.server.send(iocp::buffer("ok", 2), back.handler());
    std::array<char, 2> got{};
    completion recv;
    pair.client.recv(iocp::buffer(got), recv.handler());
    EXPECT_EQ(recv.get("receive after our shutdown").bytes, 2u);
    EXPECT_EQ(back.get("send back").bytes, 2u);
}

TEST(user_trial6, receive_and_send_on_a_socket_that_never_connected_fail_once) {
    iocp::thread_pool pool(2);
    iocp::socket s(pool, address_family::ipv4);
    std::array<char, 4> buf{};
    completion r;
    s.recv(iocp::buffer(buf), r.handler());
    const outcome ro = r.get("receive on an unconnected socket");
    EXPECT_TRUE(is(ro.ec, std::errc::not_connected, 10057)) << ro.ec.message();
    completion w;
    s.send(iocp::buffer("xx", 2), w.handler());
    const outcome wo = w.get("send on an unconnected socket");
    EXPECT_TRUE(wo.ec) << "sent on an unconnected socket";
    EXPECT_EQ(r.calls() + w.calls(), 2);
}

// ---------------------------------------------------------------------------------------------
// 13-14. Thousands in flight
// ---------------------------------------------------------------------------------------------

TEST(user_trial6, thousands_of_receives_pending_on_one_socket_take_one_byte_each_in_order) {
    iocp::thread_pool pool(2);
    auto pair = iocp_test::make_socket_pair(pool);
    const int count = iocp_test::scaled(4096, 256) / tsan_divisor;
    std::vector<char> bytes(static_cast<std::size_t>(count));
    std::vector<std::atomic<int>> calls(static_cast<std::size_t>(count));
    std::vector<std::error_code> errors(static_cast<std::size_t>(count));
    std::atomic<int> done{0};
    for (int i = 0; i < count; ++i) {
        pair.server.recv(iocp::buffer(&bytes[static_cast<std::size_t>(i)], 1),
                         [&, i](std::error_code ec, std::size_t) {
                             errors[static_cast<std::size_t>(i)] = ec;
                             ++calls[static_cast<std::size_t>(i)];
                             ++done;
                         });
    }
    std::vector<char> out(static_cast<std::size_t>(count));
    for (int i = 0; i < count; ++i)
        out[static_cast<std::size_t>(i)] = static_cast<char>(i % 251);
    completion sent;
    pair.client.send_all(iocp::buffer(out), sent.handler());
    wait_until([&] { return done.load() == count; }, "every 1-byte receive");
    EXPECT_EQ(sent.get("send").bytes, out.size());
    for (int i = 0; i < count; ++i) {
        const auto u = static_cast<std::size_t>(i);
        ASSERT_EQ(calls[u].load(), 1) << i;
        ASSERT_FALSE(errors[u]) << i << ": " << errors[u].message();
        ASSERT_EQ(bytes[u], out[u]) << "receive " << i << " took another's byte";
    }
}

TEST(user_trial6, thousands_of_operations_in_flight_across_sockets_are_each_aborted_once) {
    iocp::thread_pool pool(2);
    const int sockets = iocp_test::scaled(32, 4);
    const int per_socket = iocp_test::scaled(256, 32) / tsan_divisor;
    std::vector<iocp_test::socket_pair> pairs;
    for (int i = 0; i < sockets; ++i)
        pairs.push_back(iocp_test::make_socket_pair(pool));
    std::vector<char> sink(static_cast<std::size_t>(sockets) *
                           static_cast<std::size_t>(per_socket));
    std::atomic<int> aborted{0};
    std::atomic<int> other{0};
    std::atomic<int> done{0};
    for (int s = 0; s < sockets; ++s)
        for (int k = 0; k < per_socket; ++k)
            pairs[static_cast<std::size_t>(s)].server.recv(
                iocp::buffer(
                    &sink[(static_cast<std::size_t>(s) * static_cast<std::size_t>(per_socket)) +
                          static_cast<std::size_t>(k)],
                    1),
                [&](std::error_code ec, std::size_t) {
                    (ec == iocp::errc::operation_aborted ? aborted : other)++;
                    ++done;
                });
    for (auto& p : pairs)
        p.server.close();
    wait_until([&] { return done.load() == sockets * per_socket; }, "every aborted receive");
    EXPECT_EQ(aborted.load(), sockets * per_socket);
    EXPECT_EQ(other.load(), 0);
}

// ---------------------------------------------------------------------------------------------
// 15-19. Files
// ---------------------------------------------------------------------------------------------

TEST(user_trial6, file_writes_and_reads_at_offsets_past_4_gib) {
    iocp::thread_pool pool(2);
    const auto path = temp_path("big");
    std::filesystem::remove(path);
    {
        iocp::file f(pool, path,
                     iocp::file_mode::read_write | iocp::file_mode::create |
                         iocp::file_mode::truncate);
        const std::uint64_t offsets[] = {(1ull << 32) - 2, (1ull << 32) + 4096, 5ull << 30};
        int n = 0;
        for (const std::uint64_t off : offsets) {
            const std::string text = "at " + std::to_string(off);
            completion w;
            f.write_at(off, iocp::buffer(text.data(), text.size()), w.handler());
            const outcome wo = w.get("write past 4 GiB", n);
            if (wo.ec == std::errc::file_too_large || wo.ec == std::errc::no_space_on_device) {
                f.close();
                std::filesystem::remove(path);
                GTEST_SKIP() << "the temporary file system refuses sparse files this large: "
                             << wo.ec.message();
            }
            ASSERT_FALSE(wo.ec) << wo.ec.message();
            ASSERT_EQ(wo.bytes, text.size());
            std::string back(text.size(), '\0');
            completion r;
            f.read_at(off, iocp::buffer(back.data(), back.size()), r.handler());
            const outcome ro = r.get("read past 4 GiB", n);
            ASSERT_FALSE(ro.ec) << ro.ec.message();
            EXPECT_EQ(back, text) << "offset " << off;
            ++n;
        }
        // Offset 2^32 + 4096 read as 4096 would find zeros, not this text.
        std::array<char, 8> low{};
        completion r;
        f.read_at(4096, iocp::buffer(low), r.handler());
        const outcome ro = r.get("read at 4096");
        ASSERT_FALSE(ro.ec) << ro.ec.message();
        EXPECT_EQ(low, (std::array<char, 8>{}));
        EXPECT_EQ(f.size(), (5ull << 30) + std::string("at " + std::to_string(5ull << 30)).size());
    }
    std::filesystem::remove(path);
}

TEST(user_trial6, a_write_to_a_file_opened_read_only_fails_once_with_a_clear_error) {
    iocp::thread_pool pool(2);
    const auto path = temp_path("ro");
    {
        std::FILE* f = std::fopen(path.string().c_str(), "wb");
        ASSERT_NE(f, nullptr);
        std::fputs("unchanged", f);
        std::fclose(f);
    }
    {
        iocp::file f(pool, path, iocp::file_mode::read);
        completion w;
        f.write_at(0, iocp::buffer("CHANGED", 7), w.handler());
        const outcome wo = w.get("write to a read-only file");
        EXPECT_TRUE(wo.ec) << "wrote through a read-only handle";
        // The file is open: "invalid handle" would send the user looking for a closed file.
        // Windows says ERROR_ACCESS_DENIED; Linux's EBADF is reported the same way.
        EXPECT_NE(wo.ec, iocp::errc::invalid_handle) << wo.ec.message();
#if !IOCP_WINDOWS
        EXPECT_EQ(wo.ec, std::errc::permission_denied) << wo.ec.message();
#endif
        EXPECT_EQ(w.calls(), 1);
        std::array<char, 9> back{};
        completion r;
        f.read_at(0, iocp::buffer(back), r.handler());
        EXPECT_EQ(r.get("read back").bytes, 9u);
        EXPECT_EQ(std::string(back.data(), 9), "unchanged");
    }
    {
        iocp::file f(pool, path, iocp::file_mode::write);
        std::array<char, 9> back{};
        completion r;
        f.read_at(0, iocp::buffer(back), r.handler());
        const outcome ro = r.get("read from a write-only file");
        EXPECT_TRUE(ro.ec) << "read through a write-only handle";
        EXPECT_NE(ro.ec, iocp::errc::invalid_handle) << ro.ec.message();
#if !IOCP_WINDOWS
        EXPECT_EQ(ro.ec, std::errc::permission_denied) << ro.ec.message();
#endif
        EXPECT_EQ(r.calls(), 1);
    }
    {
        // A file closed before the call still says so.
        iocp::file f(pool, path, iocp::file_mode::read_write);
        f.close();
        completion w;
        std::error_code thrown;
        try {
            f.write_at(0, iocp::buffer("x", 1), w.handler());
        } catch (const std::system_error& e) {
            thrown = e.code();
        }
        const std::error_code ec = thrown ? thrown : w.get("write to a closed file").ec;
        EXPECT_EQ(ec, iocp::errc::invalid_handle) << ec.message();
    }
    std::filesystem::remove(path);
}

TEST(user_trial6, opening_a_directory_as_a_file_is_refused) {
    iocp::thread_pool pool(2);
    const auto dir = temp_path("dir");
    std::filesystem::create_directories(dir);
    iocp::file f(pool);
    std::error_code ec;
    f.open(dir, iocp::file_mode::read, ec);
    EXPECT_TRUE(ec) << "a directory opened as a file";
    EXPECT_FALSE(f.is_open());
    EXPECT_THROW(iocp::file(pool, dir, iocp::file_mode::read), std::system_error);
    std::filesystem::remove(dir);
}

TEST(user_trial6, dev_null_reads_eof_and_takes_every_write) {
#if IOCP_WINDOWS
    GTEST_SKIP() << "/dev/null is Linux's (NUL is a device CreateFileW opens differently)";
#else
    iocp::thread_pool pool(2);
    iocp::file f(pool, "/dev/null", iocp::file_mode::read_write);
    std::array<char, 16> buf{};
    completion r;
    f.read_at(0, iocp::buffer(buf), r.handler());
    EXPECT_EQ(r.get("read /dev/null").ec, iocp::errc::eof);
    completion w;
    f.write_at(12345, iocp::buffer("discard", 7), w.handler());
    const outcome wo = w.get("write /dev/null");
    EXPECT_FALSE(wo.ec) << wo.ec.message();
    EXPECT_EQ(wo.bytes, 7u);
#endif
}

TEST(user_trial6, opening_a_fifo_without_a_writer_is_refused_at_once) {
#if IOCP_WINDOWS
    GTEST_SKIP() << "FIFOs (mkfifo) are Linux's";
#else
    iocp::thread_pool pool(2);
    const auto path = temp_path("fifo");
    std::filesystem::remove(path);
    ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
    for (const auto mode :
         {iocp::file_mode::read, iocp::file_mode::write, iocp::file_mode::read_write}) {
        // open(2) of a FIFO for reading alone waits for a writer (fifo(7)): a library that
        // opens it blocking never returns here. Run it on a thread and give up loudly.
        auto result = std::async(std::launch::async, [&] {
            iocp::file f(pool);
            std::error_code ec;
            f.open(path, mode, ec);
            return ec;
        });
        if (result.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
            // Unblock the open so the test can end, then fail.
            const int fd = ::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
            (void)result.get();
            if (fd >= 0)
                ::close(fd);
            std::filesystem::remove(path);
            FAIL() << "opening a FIFO blocked in open(2) (mode " << static_cast<unsigned>(mode)
                   << ")";
        }
        const std::error_code ec = result.get();
        EXPECT_EQ(ec, std::errc::invalid_seek)
            << static_cast<unsigned>(mode) << ": " << ec.message();
    }
    std::filesystem::remove(path);
#endif
}

// ---------------------------------------------------------------------------------------------
// 20-22. Cancel and close racing completions
// ---------------------------------------------------------------------------------------------

TEST(user_trial6, cancel_from_another_thread_racing_receives_completes_each_once) {
    iocp::thread_pool pool(2);
    auto pair = iocp_test::make_socket_pair(pool);
    const int rounds = iocp_test::scaled(1000, 50) / tsan_divisor;
    std::mt19937 rng(66);
    int got = 0;
    int aborted = 0;
    for (int i = 0; i < rounds; ++i) {
        std::array<char, 1> b{};
        completion r;
        pair.server.recv(iocp::buffer(b), r.handler());
        completion s;
        pair.client.send(iocp::buffer("c", 1), s.handler());
        const int spin = static_cast<int>(rng() % 300);
        std::thread canceller([&] {
            busy_wait(spin);
            pair.server.cancel();
        });
        canceller.join();
        const outcome ro = r.get("receive racing cancel", i);
        (void)s.get("send", i);
        if (ro.ec) {
            EXPECT_EQ(ro.ec, iocp::errc::operation_aborted) << ro.ec.message();
            ++aborted;
            // The byte stays queued: take it so the next round starts clean.
            completion drain;
            pair.server.recv(iocp::buffer(b), drain.handler());
            EXPECT_EQ(drain.get("drain", i).bytes, 1u);
        } else {
            EXPECT_EQ(ro.bytes, 1u);
            ++got;
        }
        EXPECT_EQ(b[0], 'c');
        EXPECT_EQ(r.calls(), 1);
    }
    EXPECT_EQ(got + aborted, rounds);
}

TEST(user_trial6, cancel_from_another_thread_racing_file_reads_completes_each_once) {
    iocp::thread_pool pool(2);
    const auto path = temp_path("cancel");
    std::vector<char> content(std::size_t{64} * 1024);
    for (std::size_t i = 0; i < content.size(); ++i)
        content[i] = static_cast<char>(i % 239);
    {
        std::FILE* f = std::fopen(path.string().c_str(), "wb");
        ASSERT_NE(f, nullptr);
        ASSERT_EQ(std::fwrite(content.data(), 1, content.size(), f), content.size());
        std::fclose(f);
    }
    iocp::file f(pool, path, iocp::file_mode::read);
    const int rounds = iocp_test::scaled(500, 30) / tsan_divisor;
    std::mt19937 rng(666);
    int whole = 0;
    int aborted = 0;
    for (int i = 0; i < rounds; ++i) {
        constexpr int reads = 8;
        std::vector<std::array<char, 4096>> bufs(reads);
        std::vector<std::unique_ptr<completion>> cs;
        for (int k = 0; k < reads; ++k) {
            cs.push_back(std::make_unique<completion>());
            f.read_at(static_cast<std::uint64_t>(k) * 4096,
                      iocp::buffer(bufs[static_cast<std::size_t>(k)]), cs.back()->handler());
        }
        const int spin = static_cast<int>(rng() % 500);
        std::thread canceller([&] {
            busy_wait(spin);
            f.cancel();
        });
        canceller.join();
        for (int k = 0; k < reads; ++k) {
            const outcome o = cs[static_cast<std::size_t>(k)]->get("read racing cancel", i);
            if (o.ec) {
                EXPECT_EQ(o.ec, iocp::errc::operation_aborted) << o.ec.message();
                ++aborted;
            } else {
                ASSERT_EQ(o.bytes, 4096u);
                EXPECT_EQ(std::memcmp(bufs[static_cast<std::size_t>(k)].data(),
                                      content.data() + static_cast<std::size_t>(k) * 4096, 4096),
                          0);
                ++whole;
            }
            EXPECT_EQ(cs[static_cast<std::size_t>(k)]->calls(), 1);
        }
    }
    EXPECT_EQ(whole + aborted, rounds * 8);
    f.close();
    std::filesystem::remove(path);
}

TEST(user_trial6, closing_the_acceptor_in_an_accept_handler_aborts_the_other_accepts_once) {
    iocp::thread_pool pool(2);
    const int rounds = iocp_test::scaled(50, 5) / tsan_divisor + 1;
    for (int i = 0; i < rounds; ++i) {
        iocp::acceptor listener(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
        std::mutex m; // close must not overlap the other accept calls (acceptor.hpp)
        constexpr int pending = 8;
        std::atomic<int> accepted{0};
        std::atomic<int> aborted{0};
        std::atomic<int> other{0};
        std::atomic<int> done{0};
        {
            std::lock_guard lock(m);
            for (int k = 0; k < pending; ++k)
                listener.accept([&](std::error_code ec, iocp::socket conn) {
                    if (!ec) {
                        ++accepted;
                        std::lock_guard inner(m);
                        listener.close();
                    } else if (ec == iocp::errc::operation_aborted) {
                        ++aborted;
                    } else {
                        ++other;
                    }
                    conn.close();
                    ++done;
                });
        }
        iocp::socket client(pool);
        completion c;
        client.connect(listener.local_endpoint(), c.handler());
        (void)c.get("connect", i);
        wait_until([&] { return done.load() == pending; }, "every accept");
        EXPECT_EQ(accepted.load(), 1);
        EXPECT_EQ(aborted.load(), pending - 1);
        EXPECT_EQ(other.load(), 0);
    }
}

// ---------------------------------------------------------------------------------------------
// 23-26. Restarts, empty datagram buffers, thousands of file reads, unconnected shutdown
// ---------------------------------------------------------------------------------------------

TEST(user_trial6, a_server_restarted_on_its_port_while_old_connections_linger_listens_again) {
    iocp::thread_pool pool(2);
    std::uint16_t port = 0;
    {
        iocp::acceptor first(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
        port = first.local_endpoint().port();
        std::promise<iocp::socket> accepted;
        first.accept([&](std::error_code ec, iocp::socket conn) {
            EXPECT_FALSE(ec) << ec.message();
            accepted.set_value(std::move(conn));
        });
        iocp::socket client(pool);
        completion c;
        client.connect(first.local_endpoint(), c.handler());
        ASSERT_FALSE(c.get("connect").ec);
        iocp::socket server = await(accepted.get_future(), "accept");
        server.close(); // the server closes first: its side waits in TIME_WAIT
        std::array<char, 1> b{};
        completion eof;
        client.recv(iocp::buffer(b), eof.handler());
        EXPECT_EQ(eof.get("eof").ec, iocp::errc::eof);
    }
    iocp::acceptor again(pool);
    std::error_code ec;
    again.open(iocp::endpoint::loopback(address_family::ipv4, port), 16, ec);
    ASSERT_FALSE(ec) << "re-listening on port " << port << ": " << ec.message();
    iocp::socket client(pool);
    completion c;
    client.connect(again.local_endpoint(), c.handler());
    std::promise<std::error_code> accepted;
    again.accept([&](std::error_code aec, iocp::socket) { accepted.set_value(aec); });
    EXPECT_FALSE(c.get("connect to the restarted server").ec);
    EXPECT_FALSE(await(accepted.get_future(), "accept on the restarted server"));
}

TEST(user_trial6, a_datagram_received_into_an_empty_buffer_is_reported_truncated_and_consumed) {
    iocp::thread_pool pool(2);
    iocp::datagram_socket rx(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    iocp::datagram_socket tx(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    for (const char* text : {"first datagram", "second"}) {
        completion s;
        tx.send_to(iocp::buffer(text, std::strlen(text)), rx.local_endpoint(), s.handler());
        ASSERT_FALSE(s.get("send_to").ec);
    }
    char nothing = 0;
    completion r0;
    std::error_code thrown;
    try {
        rx.recv_from(
            iocp::buffer(&nothing, 0),
            [&](std::error_code ec, std::size_t n, const iocp::endpoint&) { r0.handler()(ec, n); });
    } catch (const std::system_error& e) {
        thrown = e.code(); // refusing an empty buffer up front is also clear
    }
    if (!thrown) {
        const outcome o = r0.get("receive into 0 bytes");
        EXPECT_EQ(o.ec, std::errc::message_size) << o.ec.message();
        EXPECT_EQ(o.bytes, 0u);
        EXPECT_EQ(r0.calls(), 1);
    } else {
        EXPECT_EQ(thrown, std::errc::invalid_argument) << thrown.message();
        std::array<char, 32> skip{};
        completion first;
        rx.recv(iocp::buffer(skip), first.handler());
        EXPECT_EQ(first.get("first datagram").bytes, std::strlen("first datagram"));
    }
    // Whichever way: the next receive gets the next datagram, whole.
    std::array<char, 32> buf{};
    completion r1;
    rx.recv(iocp::buffer(buf), r1.handler());
    const outcome o1 = r1.get("the next datagram");
    EXPECT_FALSE(o1.ec) << o1.ec.message();
    EXPECT_EQ(std::string(buf.data(), o1.bytes), "second");
}

TEST(user_trial6, thousands_of_file_reads_in_flight_at_once_each_get_their_own_bytes) {
    iocp::thread_pool pool(2);
    const auto path = temp_path("many");
    const int count = iocp_test::scaled(8192, 512) / tsan_divisor;
    constexpr std::size_t chunk = 16;
    {
        std::FILE* f = std::fopen(path.string().c_str(), "wb");
        ASSERT_NE(f, nullptr);
        for (int i = 0; i < count; ++i) {
            char block[chunk];
            std::snprintf(block, sizeof block, "%015d", i);
            ASSERT_EQ(std::fwrite(block, 1, chunk, f), chunk);
        }
        std::fclose(f);
    }
    iocp::file f(pool, path, iocp::file_mode::read);
    std::vector<std::array<char, chunk>> bufs(static_cast<std::size_t>(count));
    std::vector<std::atomic<int>> calls(static_cast<std::size_t>(count));
    std::atomic<int> bad{0};
    std::atomic<int> done{0};
    for (int i = 0; i < count; ++i)
        f.read_at(static_cast<std::uint64_t>(i) * chunk,
                  iocp::buffer(bufs[static_cast<std::size_t>(i)]),
                  [&, i](std::error_code ec, std::size_t n) {
                      if (ec || n != chunk)
                          ++bad;
                      ++calls[static_cast<std::size_t>(i)];
                      ++done;
                  });
    wait_until([&] { return done.load() == count; }, "every file read");
    EXPECT_EQ(bad.load(), 0);
    for (int i = 0; i < count; ++i) {
        char want[chunk];
        std::snprintf(want, sizeof want, "%015d", i);
        ASSERT_EQ(calls[static_cast<std::size_t>(i)].load(), 1) << i;
        ASSERT_EQ(std::memcmp(bufs[static_cast<std::size_t>(i)].data(), want, chunk), 0) << i;
    }
    f.close();
    std::filesystem::remove(path);
}

TEST(user_trial6, shutdown_of_a_socket_never_connected_or_closed_is_an_error_not_a_crash) {
    iocp::thread_pool pool(2);
    iocp::socket s(pool, address_family::ipv4);
    std::error_code ec;
    s.shutdown(iocp::shutdown_type::both, ec);
    EXPECT_TRUE(is(ec, std::errc::not_connected, 10057)) << ec.message();
    s.close();
    s.shutdown(iocp::shutdown_type::send, ec);
    EXPECT_EQ(ec, iocp::errc::invalid_handle) << ec.message();
    EXPECT_THROW(s.shutdown(iocp::shutdown_type::receive), std::system_error);
    s.set_linger(true, 0, ec);
    EXPECT_EQ(ec, iocp::errc::invalid_handle) << ec.message();
}

TEST(user_trial6, connecting_a_connected_socket_elsewhere_fails_and_keeps_the_first_peer) {
    iocp::thread_pool pool(2);
    iocp::acceptor a(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    iocp::acceptor b(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    std::promise<iocp::socket> at_a;
    a.accept([&](std::error_code ec, iocp::socket conn) {
        EXPECT_FALSE(ec) << ec.message();
        at_a.set_value(std::move(conn));
    });
    iocp::socket client(pool);
    completion first;
    client.connect(a.local_endpoint(), first.handler());
    ASSERT_FALSE(first.get("first connect").ec);
    iocp::socket server = await(at_a.get_future(), "accept at a");
    completion second;
    std::error_code thrown;
    try {
        client.connect(b.local_endpoint(), second.handler());
    } catch (const std::system_error& e) {
        thrown = e.code();
    }
    const std::error_code ec = thrown ? thrown : second.get("second connect").ec;
    EXPECT_TRUE(ec) << "a connected socket reported connecting to another address";
    EXPECT_EQ(client.remote_endpoint().port(), a.local_endpoint().port());
    // Still the first connection.
    completion sent;
    client.send(iocp::buffer("a", 1), sent.handler());
    std::array<char, 1> got{};
    completion recv;
    server.recv(iocp::buffer(got), recv.handler());
    EXPECT_EQ(recv.get("receive at a").bytes, 1u);
    EXPECT_EQ(sent.get("send").bytes, 1u);
}

TEST(user_trial6, a_second_listener_on_a_port_in_use_is_refused_with_address_in_use) {
    iocp::thread_pool pool(2);
    iocp::acceptor first(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    iocp::acceptor second(pool);
    std::error_code ec;
    second.open(first.local_endpoint(), 16, ec);
    EXPECT_TRUE(is(ec, std::errc::address_in_use, 10048)) << ec.message();
    EXPECT_FALSE(second.is_open());
    EXPECT_TRUE(first.is_open());
}

TEST(user_trial6, every_opening_call_out_of_descriptors_reports_emfile_and_runs_no_handler) {
#if IOCP_WINDOWS
    GTEST_SKIP() << "RLIMIT_NOFILE is Linux's";
#else
    if (under_ubsan)
        GTEST_SKIP() << ubsan_needs_descriptors;
    iocp::thread_pool pool(2);
    iocp::acceptor listener(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    const iocp::endpoint where = listener.local_endpoint();
    const auto path = temp_path("emfile");
    {
        std::FILE* f = std::fopen(path.string().c_str(), "wb");
        ASSERT_NE(f, nullptr);
        std::fclose(f);
    }
    descriptors_used_up used_up;
    std::error_code file_ec;
    iocp::file f(pool);
    f.open(path, iocp::file_mode::read, file_ec);
    std::error_code socket_ec;
    iocp::socket s(pool);
    s.open(address_family::ipv4, socket_ec);
    std::error_code connect_ec;
    std::atomic<int> connect_handler_runs{0};
    iocp::socket c(pool);
    try {
        c.connect(where, [&](std::error_code) { ++connect_handler_runs; });
    } catch (const std::system_error& e) {
        connect_ec = e.code();
    }
    std::error_code acceptor_ec;
    iocp::acceptor a(pool);
    a.open(iocp::endpoint::loopback(address_family::ipv4, 0), 16, acceptor_ec);
    std::error_code datagram_ec;
    iocp::datagram_socket d(pool);
    d.open(address_family::ipv4, datagram_ec);
    used_up.give_back();
    EXPECT_EQ(file_ec, std::errc::too_many_files_open) << file_ec.message();
    EXPECT_EQ(socket_ec, std::errc::too_many_files_open) << socket_ec.message();
    EXPECT_EQ(connect_ec, std::errc::too_many_files_open) << connect_ec.message();
    EXPECT_EQ(acceptor_ec, std::errc::too_many_files_open) << acceptor_ec.message();
    EXPECT_EQ(datagram_ec, std::errc::too_many_files_open) << datagram_ec.message();
    EXPECT_FALSE(f.is_open() || s.is_open() || c.is_open() || a.is_open() || d.is_open());
    EXPECT_EQ(connect_handler_runs.load(), 0);
    // And each works again once descriptors are free.
    f.open(path, iocp::file_mode::read);
    s.open(address_family::ipv4);
    completion connected;
    c.connect(where, connected.handler());
    EXPECT_FALSE(connected.get("connect after descriptors came back").ec);
    f.close();
    std::filesystem::remove(path);
#endif
}

TEST(user_trial6, a_datagram_to_the_other_family_fails_once_and_the_socket_goes_on) {
    iocp::thread_pool pool(2);
    iocp::datagram_socket v4(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    iocp::datagram_socket v6(pool, iocp::endpoint::loopback(address_family::ipv6, 0));
    completion wrong;
    std::error_code thrown;
    try {
        v4.send_to(iocp::buffer("6", 1), v6.local_endpoint(), wrong.handler());
    } catch (const std::system_error& e) {
        thrown = e.code();
    }
    const std::error_code ec = thrown ? thrown : wrong.get("send_to across families").ec;
    EXPECT_TRUE(ec) << "an IPv4 socket sent to an IPv6 address";
    EXPECT_LE(wrong.calls(), 1);
    // The same socket still sends to its own family.
    iocp::datagram_socket other(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    completion ok;
    v4.send_to(iocp::buffer("4", 1), other.local_endpoint(), ok.handler());
    EXPECT_FALSE(ok.get("send_to its own family").ec);
    std::array<char, 4> buf{};
    completion got;
    other.recv(iocp::buffer(buf), got.handler());
    EXPECT_EQ(got.get("receive").bytes, 1u);
    EXPECT_EQ(buf[0], '4');
}

TEST(user_trial6, linger_times_the_platforms_cannot_hold_are_refused) {
    iocp::thread_pool pool(2);
    auto pair = iocp_test::make_socket_pair(pool);
    for (const int seconds : {-1, -65536, 65536, 70000, std::numeric_limits<int>::max(),
                              std::numeric_limits<int>::min()}) {
        std::error_code ec;
        pair.client.set_linger(true, seconds, ec);
        EXPECT_EQ(ec, std::errc::invalid_argument) << seconds << ": " << ec.message();
    }
    EXPECT_THROW(pair.client.set_linger(true, -1), std::system_error);
    std::error_code ec;
    pair.client.set_linger(true, 65535, ec);
    EXPECT_FALSE(ec) << ec.message();
    pair.client.set_linger(false, 0, ec);
    EXPECT_FALSE(ec) << ec.message();
    // The refused calls changed nothing: a graceful close, the peer reads eof.
    pair.client.close();
    std::array<char, 1> b{};
    completion eof;
    pair.server.recv(iocp::buffer(b), eof.handler());
    EXPECT_EQ(eof.get("eof after a graceful close").ec, iocp::errc::eof);
}

} // namespace

#endif // IOCP_HAS_IO

TEST(user_trial6, the_first_io_object_without_descriptors_for_a_backend_fails_then_the_next_works) {
#if IOCP_WINDOWS
    GTEST_SKIP() << "RLIMIT_NOFILE and the Linux I/O backends are Linux's";
#else
    if (under_ubsan)
        GTEST_SKIP() << ubsan_needs_descriptors;
    if (iocp::detail::io::lnx::chosen_backend.load() != nullptr)
        GTEST_SKIP() << "an earlier test of this process started the I/O backend (ctest runs each "
                        "test in a process of its own)";
    iocp::thread_pool pool(2);
    for (const std::size_t left : {1, 2}) {
        descriptors_used_up used_up;
        used_up.free_some(left);
        iocp::socket s(pool);
        std::error_code ec;
        s.open(iocp::address_family::ipv4, ec);
        EXPECT_EQ(ec, std::errc::too_many_files_open) << left << " left: " << ec.message();
        EXPECT_FALSE(s.is_open());
        EXPECT_EQ(iocp::detail::io::lnx::chosen_backend.load(), nullptr); // none started
    }
    // Descriptors are back: the backend starts, and the socket works.
    auto pair = iocp_test::make_socket_pair(pool);
    std::array<char, 1> byte{'x'};
    completion sent;
    pair.client.send(iocp::buffer(byte), sent.handler());
    const outcome r = sent.get("send after descriptors came back");
    EXPECT_FALSE(r.ec) << r.ec.message();
    EXPECT_EQ(r.bytes, 1u);
    EXPECT_EQ(sent.calls(), 1);
    EXPECT_STRNE(iocp::io_backend_name(), "none");
#endif
}
