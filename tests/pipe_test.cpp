#include "iocp/pipe.hpp"

#include <gtest/gtest.h>

#include "iocp/config.hpp"

// Win32 only, as the header (on Linux there are no named pipes of this kind; see pipe.hpp).
#if IOCP_HAS_IOCP

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "iocp/thread_pool.hpp"
#include "iocp/unique_handle.hpp"
#include "support/platform.hpp"
#include "support/waiting.hpp"

using namespace std::chrono_literals;

namespace {

using iocp_test::await;
using iocp_test::deadline;

std::wstring pipe_name(const char* what) {
    static std::atomic<int> serial{0};
    std::string s = R"(\\.\pipe\iocp_pipe_test_)" + std::to_string(::GetCurrentProcessId()) + "_" +
                    what + "_" + std::to_string(serial++);
    return {s.begin(), s.end()};
}

struct io_result {
    std::error_code ec;
    std::size_t bytes = 0;
};

// A handler that hands its result to a future (for the client side, driven step by step).
struct promised {
    std::shared_ptr<std::promise<io_result>> p = std::make_shared<std::promise<io_result>>();
    std::future<io_result> f = p->get_future();
    auto handler() {
        return [p = p](std::error_code ec, std::size_t n) { p->set_value({ec, n}); };
    }
};

io_result read_some(iocp::named_pipe& p, char* buf, std::size_t n) {
    promised r;
    p.read(iocp::buffer(buf, n), r.handler());
    return await(std::move(r.f), "a read");
}

io_result write_all(iocp::named_pipe& p, const char* buf, std::size_t n) {
    promised r;
    p.write_all(iocp::buffer(buf, n), r.handler());
    return await(std::move(r.f), "a write");
}

// What the echo server's sessions did: every operation a session starts ends in exactly one of
// `completed`; every session created is destroyed.
struct server_counts {
    std::atomic<int> sessions{0};
    std::atomic<int> destroyed{0};
    std::atomic<int> started{0};
    std::atomic<int> completed{0};
    std::atomic<int> eof{0};
    std::atomic<int> aborted{0};
    std::atomic<int> other_errors{0};
    std::atomic<int> listen_errors{0};
};

// One connection of the echo server: reads, writes back what it read, until an error.
class session : public std::enable_shared_from_this<session> {
public:
    session(iocp::named_pipe p, server_counts& c) : pipe_(std::move(p)), counts_(c) {
        ++counts_.sessions;
    }
    session(const session&) = delete;
    session& operator=(const session&) = delete;
    ~session() { ++counts_.destroyed; }

    void read() {
        ++counts_.started;
        pipe_.read(iocp::buffer(buf_),
                   [self = shared_from_this()](std::error_code ec, std::size_t n) {
                       ++self->counts_.completed;
                       if (self->ended(ec))
                           return;
                       ++self->counts_.started;
                       self->pipe_.write_all(iocp::buffer(self->buf_, n),
                                             [self](std::error_code wec, std::size_t) {
                                                 ++self->counts_.completed;
                                                 if (!self->ended(wec))
                                                     self->read();
                                             });
                   });
    }

private:
    bool ended(const std::error_code& ec) {
        if (!ec)
            return false;
        if (ec == iocp::errc::eof)
            ++counts_.eof;
        else if (ec == iocp::errc::operation_aborted)
            ++counts_.aborted;
        else
            ++counts_.other_errors;
        return true;
    }

    iocp::named_pipe pipe_;
    server_counts& counts_;
    char buf_[4096];
};

auto echo_handler(server_counts& counts) {
    return [&counts](std::error_code ec, iocp::named_pipe client) {
        if (ec) {
            ++counts.listen_errors;
            return;
        }
        std::make_shared<session>(std::move(client), counts)->read();
    };
}

iocp::unique_handle make_raw_server(const std::wstring& name, DWORD max_instances) {
    return iocp::unique_handle(::CreateNamedPipeW(
        name.c_str(), PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED,
        PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT, max_instances, 4096, 4096, 0, nullptr));
}

// Waits (bounded) until the server's count reaches `n`; the counts settle on workers.
template <class F>
bool eventually(F&& f) {
    const auto end = std::chrono::steady_clock::now() + deadline;
    while (!f()) {
        if (std::chrono::steady_clock::now() > end)
            return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

} // namespace

// --- The client's connect ------------------------------------------------------------------------

TEST(pipe_test, connect_to_a_missing_pipe_fails_at_once) {
    iocp::thread_pool pool(1);
    iocp::named_pipe p(pool);
    std::error_code ec;
    const auto start = std::chrono::steady_clock::now();
    p.connect(pipe_name("missing"), 20s, ec);
    EXPECT_EQ(ec, std::errc::no_such_file_or_directory) << ec.message();
    EXPECT_LT(std::chrono::steady_clock::now() - start, 10s); // not the 20 s of the timeout
    EXPECT_FALSE(p.is_open());
    iocp::named_pipe no_pool;
    no_pool.connect(L"\\\\.\\pipe\\x", 1s, ec);
    EXPECT_EQ(ec, std::errc::invalid_argument);
    p.connect(L"", 1s, ec);
    EXPECT_EQ(ec, std::errc::invalid_argument);
}

// Every instance busy: connect waits (WaitNamedPipe, bounded) and reports timed_out.
TEST(pipe_test, connect_to_a_busy_pipe_times_out) {
    iocp::thread_pool pool(1);
    const std::wstring name = pipe_name("busy");
    iocp::unique_handle server = make_raw_server(name, 1);
    ASSERT_TRUE(server);
    iocp::named_pipe first(pool);
    first.connect(name, 5s); // the only instance
    iocp::named_pipe second(pool);
    std::error_code ec;
    second.connect(name, 100ms, ec);
    EXPECT_EQ(ec, iocp::errc::timed_out) << ec.message();
    EXPECT_FALSE(second.is_open());
}

// ... and connects when an instance listens again within the timeout.
TEST(pipe_test, connect_to_a_busy_pipe_waits_for_a_free_instance) {
    iocp::thread_pool pool(1);
    const std::wstring name = pipe_name("busy_then_free");
    iocp::unique_handle server = make_raw_server(name, 1);
    ASSERT_TRUE(server);
    iocp::named_pipe first(pool);
    first.connect(name, 5s);
    std::thread freer([&] {
        std::this_thread::sleep_for(50ms);
        first.close();
        ::DisconnectNamedPipe(server.get()); // the instance can take the next client
        OVERLAPPED ov{};
        ov.hEvent = ::CreateEventW(nullptr, TRUE, FALSE, nullptr);
        ::ConnectNamedPipe(server.get(), &ov); // listens (pending until the client comes)
        DWORD unused = 0;
        ::GetOverlappedResult(server.get(), &ov, &unused, TRUE);
        ::CloseHandle(ov.hEvent);
    });
    iocp::named_pipe second(pool);
    std::error_code ec;
    second.connect(name, 20s, ec);
    freer.join();
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_TRUE(second.is_open());
}

// --- Errors as for sockets ---------------------------------------------------------------------

TEST(pipe_test, the_other_ends_close_is_eof_for_reads_and_reset_for_writes) {
    iocp::thread_pool pool(2);
    const std::wstring name = pipe_name("peer_close");
    std::promise<iocp::named_pipe> accepted;
    iocp::named_pipe_server server(pool, name, {1});
    server.listen([&](std::error_code ec, iocp::named_pipe p) {
        if (!ec)
            accepted.set_value(std::move(p));
    });
    iocp::named_pipe client(pool);
    client.connect(name, 5s);
    iocp::named_pipe conn = await(accepted.get_future(), "the connection");
    ASSERT_EQ(write_all(client, "tail", 4).bytes, 4u);
    client.close();
    char buf[16];
    io_result r = read_some(conn, buf, sizeof buf); // data written before the close stays
    EXPECT_FALSE(r.ec) << r.ec.message();
    EXPECT_EQ(std::string(buf, r.bytes), "tail");
    r = read_some(conn, buf, sizeof buf);
    EXPECT_EQ(r.ec, iocp::errc::eof) << r.ec.message();
    r = write_all(conn, "x", 1);
    EXPECT_EQ(r.ec, iocp::errc::connection_reset) << r.ec.message();
}

TEST(pipe_test, close_and_cancel_abort_pending_reads) {
    iocp::thread_pool pool(2);
    const std::wstring name = pipe_name("abort");
    std::promise<iocp::named_pipe> accepted;
    iocp::named_pipe_server server(pool, name, {1});
    server.listen([&](std::error_code ec, iocp::named_pipe p) {
        if (!ec)
            accepted.set_value(std::move(p));
    });
    iocp::named_pipe client(pool);
    client.connect(name, 5s);
    iocp::named_pipe conn = await(accepted.get_future(), "the connection");
    char a[8];
    char b[8];
    promised cancelled;
    client.read(iocp::buffer(a), cancelled.handler());
    client.cancel();
    EXPECT_EQ(await(std::move(cancelled.f), "cancelled").ec, iocp::errc::operation_aborted);
    promised closed;
    client.read(iocp::buffer(b), closed.handler());
    client.close();
    EXPECT_EQ(await(std::move(closed.f), "closed").ec, iocp::errc::operation_aborted);
    // Our close, not the peer's: the peer sees the end of the stream.
    EXPECT_EQ(read_some(conn, a, sizeof a).ec, iocp::errc::eof);
}

// --- The server --------------------------------------------------------------------------------

TEST(pipe_test, listen_twice_is_refused) {
    iocp::thread_pool pool(1);
    iocp::named_pipe_server server(pool, pipe_name("twice"));
    server.listen([](std::error_code, iocp::named_pipe) {});
    EXPECT_EQ(server.listening(), 4u);
    std::error_code ec;
    server.listen([](std::error_code, iocp::named_pipe) {}, ec);
    EXPECT_EQ(ec, std::errc::invalid_argument);
    server.close();
    server.listen([](std::error_code, iocp::named_pipe) {}, ec);
    EXPECT_EQ(ec, std::errc::invalid_argument);
}

// FILE_FLAG_FIRST_PIPE_INSTANCE: a second server cannot share a name in use (pipe squatting).
TEST(pipe_test, a_second_server_cannot_take_a_name_in_use) {
    if (iocp_test::running_under_wine())
        GTEST_SKIP() << "Wine 8 ignores FILE_FLAG_FIRST_PIPE_INSTANCE (measured: a second server "
                        "gets the name too); Windows refuses it with ERROR_ACCESS_DENIED";
    iocp::thread_pool pool(1);
    const std::wstring name = pipe_name("taken");
    iocp::named_pipe_server first(pool, name);
    first.listen([](std::error_code, iocp::named_pipe) {});
    iocp::named_pipe_server second(pool, name);
    std::error_code ec;
    second.listen([](std::error_code, iocp::named_pipe) {}, ec);
    EXPECT_EQ(ec, std::errc::permission_denied) << ec.message();
}

// Many clients at once, more than the instances listening: each is served, every byte echoed,
// every operation completes exactly once, every session ends (eof) and is freed.
TEST(pipe_test, many_clients_are_served_and_every_operation_completes_once) {
    const int clients = iocp_test::scaled(48, 16);
    const std::size_t bytes = 20000; // several reads and writes per client
    server_counts counts;
    std::atomic<int> clients_ok{0};
    {
        iocp::thread_pool pool(3);
        const std::wstring name = pipe_name("many");
        iocp::named_pipe_server server(pool, name, {4});
        server.listen(echo_handler(counts));
        std::vector<std::thread> ts;
        for (int t = 0; t < 4; ++t) {
            ts.emplace_back([&, t] {
                std::mt19937 rng(static_cast<unsigned>(t) + 11u);
                for (int i = t; i < clients; i += 4) {
                    std::string out(bytes, '\0');
                    for (char& ch : out)
                        ch = static_cast<char>('a' + rng() % 26);
                    iocp::named_pipe c(pool);
                    c.connect(name, 20s);
                    // Reads while the write is under way: the message is larger than the pipe's
                    // buffers, so the echo must be drained for the write to finish.
                    promised wrote;
                    c.write_all(iocp::buffer(out.data(), out.size()), wrote.handler());
                    std::string in(bytes, '\0');
                    std::size_t got = 0;
                    while (got < bytes) {
                        io_result r = read_some(c, in.data() + got, bytes - got);
                        if (r.ec)
                            break;
                        got += r.bytes;
                    }
                    const io_result w = await(std::move(wrote.f), "the client's write");
                    if (!w.ec && got == bytes && in == out)
                        ++clients_ok;
                }
            });
        }
        for (auto& th : ts)
            th.join();
        EXPECT_TRUE(eventually([&] { return counts.eof.load() == clients; }));
        EXPECT_EQ(server.listening(), 4u); // replaced after every connection
        server.close();
        pool.join();
    }
    EXPECT_EQ(clients_ok.load(), clients);
    EXPECT_EQ(counts.sessions.load(), clients);
    EXPECT_EQ(counts.destroyed.load(), clients);
    EXPECT_EQ(counts.started.load(), counts.completed.load());
    EXPECT_EQ(counts.other_errors.load(), 0);
    EXPECT_EQ(counts.listen_errors.load(), 0);
}

// A client that writes part of a message and goes away: the server reads what came, then eof;
// its session ends once and is freed.
TEST(pipe_test, a_client_vanishing_mid_message_ends_its_session_once) {
    server_counts counts;
    {
        iocp::thread_pool pool(2);
        const std::wstring name = pipe_name("vanish");
        iocp::named_pipe_server server(pool, name, {2});
        server.listen(echo_handler(counts));
        for (int i = 0; i < 8; ++i) {
            char buf[16]; // outlives `c`, whose close ends the read into it
            iocp::named_pipe c(pool);
            c.connect(name, 20s);
            std::string half(1000 + 500 * i, 'h');
            ASSERT_FALSE(write_all(c, half.data(), half.size()).ec);
            if (i % 2 == 1) { // also with its read pending when it goes
                c.read(iocp::buffer(buf), [](std::error_code, std::size_t) {});
            }
            // Gone without reading the echo (nor the rest of its message).
        }
        EXPECT_TRUE(eventually([&] { return counts.destroyed.load() == 8; }));
        pool.join();
    }
    EXPECT_EQ(counts.sessions.load(), 8);
    EXPECT_EQ(counts.destroyed.load(), 8);
    EXPECT_EQ(counts.started.load(), counts.completed.load());
    // Each ended by eof (a read) or by the write that found the client gone.
    EXPECT_EQ(counts.eof.load() + counts.other_errors.load(), 8);
}

// Shutdown with clients connected: the pool's join cancels the sessions' pending reads and the
// listening instances and waits for them; everything started completes exactly once and every
// session is freed. The clients then see the end of the stream.
TEST(pipe_test, pool_shutdown_with_clients_connected_completes_everything_once) {
    for (bool immediate : {false, true}) {
        server_counts counts;
        constexpr int clients = 6;
        iocp::thread_pool client_pool(1);
        std::vector<iocp::named_pipe> connected;
        {
            iocp::thread_pool pool(2);
            const std::wstring name = pipe_name("shutdown");
            iocp::named_pipe_server server(pool, name, {3});
            server.listen(echo_handler(counts));
            for (int i = 0; i < clients; ++i) {
                connected.emplace_back(client_pool);
                connected.back().connect(name, 20s);
                ASSERT_EQ(write_all(connected.back(), "ping", 4).bytes, 4u);
                char buf[4];
                ASSERT_EQ(read_some(connected.back(), buf, 4).bytes, 4u); // a session is up
            }
            EXPECT_TRUE(eventually([&] { return counts.started.load() == 3 * clients; }));
            if (immediate)
                (void)pool.stop();
            else
                pool.join();
            EXPECT_EQ(server.listening(), 0u); // the listeners stopped, freed
        }
        EXPECT_EQ(counts.sessions.load(), clients);
        EXPECT_EQ(counts.destroyed.load(), clients);
        EXPECT_EQ(counts.started.load(), counts.completed.load());
        EXPECT_EQ(counts.aborted.load(), clients);
        EXPECT_EQ(counts.listen_errors.load(), 0);
        for (auto& c : connected) {
            char buf[4];
            EXPECT_EQ(read_some(c, buf, 4).ec, iocp::errc::eof);
        }
    }
}

// close() stops listening; connections already handed over go on.
TEST(pipe_test, server_close_stops_listening_and_keeps_connections) {
    iocp::thread_pool pool(2);
    const std::wstring name = pipe_name("close");
    server_counts counts;
    iocp::named_pipe_server server(pool, name, {2});
    server.listen(echo_handler(counts));
    iocp::named_pipe c(pool);
    c.connect(name, 20s);
    // Handed over first: a connection that completes after close() is closed instead.
    ASSERT_TRUE(eventually([&] { return counts.sessions.load() == 1; }));
    server.close();
    EXPECT_TRUE(eventually([&] { return server.listening() == 0; }));
    iocp::named_pipe late(pool);
    std::error_code ec;
    late.connect(name, 50ms, ec); // the name lives on (a connected instance) but nobody listens
    EXPECT_TRUE(ec);
    ASSERT_EQ(write_all(c, "still", 5).bytes, 5u);
    char buf[5];
    io_result r = read_some(c, buf, 5);
    EXPECT_FALSE(r.ec);
    EXPECT_EQ(std::string(buf, r.bytes), "still");
    c.close();
    EXPECT_TRUE(eventually([&] { return counts.destroyed.load() == 1; }));
}

#endif // IOCP_HAS_IOCP
