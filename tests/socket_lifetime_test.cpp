// A socket stays the library's from open to close, whatever other threads do meanwhile: while
// one thread keeps a socket open, others start and end their own uses of the socket API (an
// endpoint::parse, a socket opened and closed), and the kept socket must still answer
// (getsockname) and close without an error.
//
// Why on Win32: the library starts Winsock itself, and Winsock's start-up is counted per
// process. Wine's WSAStartup/WSACleanup are not thread-safe (a plain int, and a final
// WSACleanup that closes and forgets every socket of the process without a lock), so a socket
// created on one thread while another ran the library's final WSACleanup was closed, or left
// open but unknown to ws2_32, whose closesocket then failed with WSAENOTSOCK and left it open
// (see detail/io/win32/winsock.hpp). On Linux the same tests check that no close of one
// thread reaches another thread's descriptor.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <system_error>
#include <thread>
#include <vector>

#include "iocp/acceptor.hpp"
#include "iocp/config.hpp"
#include "iocp/datagram_socket.hpp"
#include "iocp/endpoint.hpp"
#include "iocp/thread_pool.hpp"

namespace {

// Opens `n` listening sockets at once and closes them: a process that had many sockets once
// (a server after a burst) has large socket tables, which is when a final WSACleanup takes
// longest under Wine (it visits every entry).
void open_many_once(iocp::thread_pool& pool, int n) {
    std::vector<iocp::acceptor> many;
    for (int i = 0; i < n; ++i)
        many.emplace_back(pool, iocp::endpoint::loopback(iocp::address_family::ipv4, 0));
    for (auto& a : many) {
        std::error_code ec;
        a.close(ec);
        ASSERT_FALSE(ec) << ec.message();
    }
}

// What one socket lifetime found: its getsockname and its close, which must both succeed.
struct lifetime_errors {
    std::atomic<int> name{0};
    std::atomic<int> close{0};
    std::atomic<int> checked{0};
};

// Opens a listening socket, keeps it `hold`, then checks that it still answers and closes.
void one_lifetime(iocp::thread_pool& pool, std::chrono::microseconds hold, lifetime_errors& e) {
    std::error_code ec;
    iocp::acceptor a(pool);
    a.open(iocp::endpoint::loopback(iocp::address_family::ipv4, 0), SOMAXCONN, ec);
    ASSERT_FALSE(ec) << ec.message();
    std::this_thread::sleep_for(hold);
    (void)a.local_endpoint(ec);
    if (ec) {
        std::fprintf(stderr, "getsockname: %s (%d)\n", ec.message().c_str(), ec.value());
        e.name.fetch_add(1);
    }
    a.close(ec);
    if (ec) {
        std::fprintf(stderr, "close: %s (%d)\n", ec.message().c_str(), ec.value());
        e.close.fetch_add(1);
    }
    e.checked.fetch_add(1);
}

// Parses an address in a loop until `stop`: each parse is a use of the socket API that begins
// and ends (on Win32 it starts Winsock and gives it back, the final WSACleanup whenever no
// socket is open). Returns how many it did.
std::thread parse_until(std::atomic<bool>& stop, std::atomic<long>& parses) {
    return std::thread([&] {
        while (!stop.load()) {
            std::error_code ec;
            const iocp::endpoint e = iocp::endpoint::parse("127.0.0.1", 1, ec);
            if (ec || !e.is_specified())
                ADD_FAILURE() << "parse: " << ec.message();
            parses.fetch_add(1);
        }
    });
}

} // namespace

// Item: one thread opens a socket, holds it 2 ms and closes it, then holds none for 1 ms, again
// and again; another thread parses addresses all the while, so that the last use of the socket
// API ends on that thread just as a new socket is opened on this one. Every socket must answer
// and close. (Before the library serialised its own WSAStartup/WSACleanup, about half of these
// lifetimes failed under Wine with WSAENOTSOCK.)
TEST(socket_lifetime_test, a_socket_opened_while_another_thread_ends_its_use_stays_open) {
    iocp::thread_pool pool(2);
    open_many_once(pool, 64);
    std::atomic<bool> stop{false};
    std::atomic<long> parses{0};
    std::thread parser = parse_until(stop, parses);
    lifetime_errors e;
    constexpr int lifetimes = 60;
    for (int i = 0; i < lifetimes; ++i) {
        one_lifetime(pool, std::chrono::milliseconds(2), e);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    stop.store(true);
    parser.join();
    EXPECT_EQ(e.checked.load(), lifetimes);
    EXPECT_EQ(e.name.load(), 0);
    EXPECT_EQ(e.close.load(), 0);
    EXPECT_GT(parses.load(), 0);
}

// Stress: several threads each open and close sockets (listening TCP ones and UDP ones) with
// random holds and pauses, while another parses addresses. Every socket answers and closes,
// and each lifetime is counted once.
TEST(socket_lifetime_test, sockets_opened_and_closed_on_many_threads_stay_their_owners) {
    iocp::thread_pool pool(2);
    open_many_once(pool, 32);
    std::atomic<bool> stop{false};
    std::atomic<long> parses{0};
    std::thread parser = parse_until(stop, parses);
    lifetime_errors e;
    std::atomic<int> udp_errors{0};
    constexpr int threads = 3;
    constexpr int per_thread = 25;
    std::vector<std::thread> openers;
    for (int t = 0; t < threads; ++t)
        openers.emplace_back([&, t] {
            std::mt19937 rng(static_cast<unsigned>(t) + 7u);
            for (int i = 0; i < per_thread; ++i) {
                if (i % 3 == 2) {
                    // A UDP socket: Winsock's start-up counts it as any other socket.
                    std::error_code ec;
                    iocp::datagram_socket u(pool);
                    u.open(iocp::address_family::ipv4, ec);
                    if (!ec)
                        u.bind(iocp::endpoint::loopback(iocp::address_family::ipv4, 0), ec);
                    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 1500));
                    if (!ec)
                        (void)u.local_endpoint(ec);
                    if (!ec)
                        u.close(ec);
                    if (ec) {
                        std::fprintf(stderr, "udp: %s (%d)\n", ec.message().c_str(), ec.value());
                        udp_errors.fetch_add(1);
                    }
                    e.checked.fetch_add(1);
                } else {
                    one_lifetime(pool, std::chrono::microseconds(rng() % 1500), e);
                }
                std::this_thread::sleep_for(std::chrono::microseconds(rng() % 800));
            }
        });
    for (auto& t : openers)
        t.join();
    stop.store(true);
    parser.join();
    EXPECT_EQ(e.checked.load(), threads * per_thread);
    EXPECT_EQ(e.name.load(), 0);
    EXPECT_EQ(e.close.load(), 0);
    EXPECT_EQ(udp_errors.load(), 0);
    EXPECT_GT(parses.load(), 0);
}
