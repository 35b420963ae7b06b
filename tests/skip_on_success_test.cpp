// Skipping the port on success (FILE_SKIP_COMPLETION_PORT_ON_SUCCESS), per handle: a call that
// succeeds at once queues no packet, and the library delivers it through the pool's own queue,
// exactly once, never inside the start call. The counter of packets saved is read through the
// operation's state (detail: io_access::state, win32::skipped_packets).
#include "iocp/detail/io/win32/skip_on_success.hpp"

#include <gtest/gtest.h>

#include "iocp/config.hpp"

#if IOCP_HAS_IOCP

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "iocp/acceptor.hpp"
#include "iocp/file.hpp"
#include "iocp/io_operation.hpp"
#include "iocp/pipe.hpp"
#include "iocp/socket.hpp"
#include "iocp/thread_pool.hpp"
#include "support/platform.hpp"
#include "support/waiting.hpp"

using namespace std::chrono_literals;

namespace {

using iocp_test::await;
using iocp_test::deadline;

std::wstring pipe_name(const char* what) {
    static std::atomic<int> serial{0};
    std::string s = R"(\\.\pipe\iocp_skip_test_)" + std::to_string(::GetCurrentProcessId()) + "_" +
                    what + "_" + std::to_string(serial++);
    return {s.begin(), s.end()};
}

// Both ends of a pipe, on `pool`.
struct pipe_pair {
    iocp::named_pipe server;
    iocp::named_pipe client;
    explicit pipe_pair(iocp::thread_pool& pool) : server(pool), client(pool) {
        const std::wstring name = pipe_name("pair");
        server.assign(iocp::unique_handle(::CreateNamedPipeW(
            name.c_str(), PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED,
            PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT, 1, 65536, 65536, 0, nullptr)));
        client.connect(name, 5s);
    }
};

// An operation that counts its completions and whether one ran inside its start call.
struct counted_op : iocp::io_operation {
    std::atomic<int> runs{0};
    std::atomic<bool> started_returned{false};
    std::atomic<bool> ran_inside{false};
    std::error_code ec;
    std::size_t bytes = 0;
    std::promise<void> done;
    char buf[64] = {};
    counted_op() : io_operation(&counted_op::on_done) {}
    static void on_done(iocp::io_operation* base, const std::error_code& ec,
                        std::size_t n) noexcept {
        auto* self = static_cast<counted_op*>(base);
        if (!self->started_returned.load())
            self->ran_inside = true;
        self->ec = ec;
        self->bytes = n;
        if (self->runs.fetch_add(1) == 0)
            self->done.set_value();
    }
};

std::uint64_t saved_packets(counted_op& op) {
    return iocp::detail::io::win32::skipped_packets(iocp::detail::io::io_access::state(op));
}

// Starts `start(op)` from the only worker of `pool` (a one-thread pool: a completion can run
// only after the starting task returned) and waits for the completion.
template <class Start>
void start_on_worker_and_wait(iocp::thread_pool& pool, counted_op& op, Start start) {
    std::promise<std::error_code> started;
    pool.post([&] {
        std::error_code ec = start(op);
        op.started_returned = true;
        started.set_value(ec);
    });
    ASSERT_FALSE(await(started.get_future(), "the start")) << "the start failed";
    await(op.done.get_future(), "the completion");
}

} // namespace

// Wine completes a pipe read that finds data waiting at once (measured): with the mode set,
// no packet is queued, and each such read costs the port nothing.
TEST(skip_on_success_test, a_pipe_read_that_finds_data_skips_the_port_and_completes_once) {
    iocp::thread_pool pool(1);
    pipe_pair p(pool);
    p.server.skip_completion_port_on_success();
    EXPECT_TRUE(p.server.skips_completion_port_on_success());
    constexpr int reads = 20;
    std::uint64_t saved = 0;
    for (int i = 0; i < reads; ++i) {
        std::promise<std::error_code> wrote;
        p.client.write_all(iocp::buffer("0123456789", 10),
                           [&](std::error_code ec, std::size_t) { wrote.set_value(ec); });
        ASSERT_FALSE(await(wrote.get_future(), "the write"));
        counted_op op;
        start_on_worker_and_wait(pool, op, [&](counted_op& o) {
            return iocp::start_read(p.server, o, iocp::buffer(o.buf, 10));
        });
        EXPECT_FALSE(op.ec) << op.ec.message();
        EXPECT_EQ(op.bytes, 10u);
        EXPECT_EQ(std::string(op.buf, 10), "0123456789");
        EXPECT_FALSE(op.ran_inside);
        EXPECT_EQ(op.runs, 1);
        saved = saved_packets(op);
    }
    pool.join();
    std::printf("pipe reads with data waiting: %.2f port packets saved per read (%llu of %d)\n",
                static_cast<double>(saved) / reads, static_cast<unsigned long long>(saved), reads);
    RecordProperty("port_packets_saved_per_read",
                   std::to_string(static_cast<double>(saved) / reads));
    EXPECT_EQ(saved, static_cast<std::uint64_t>(reads)); // every read found its data waiting
}

// A read that has to wait still completes through its packet.
TEST(skip_on_success_test, a_pipe_read_that_waits_completes_through_its_packet) {
    iocp::thread_pool pool(2);
    pipe_pair p(pool);
    p.server.skip_completion_port_on_success();
    counted_op op;
    ASSERT_FALSE(iocp::start_read(p.server, op, iocp::buffer(op.buf, 4)));
    op.started_returned = true;
    std::this_thread::sleep_for(20ms); // let the read pend (either way the test holds)
    std::promise<std::error_code> wrote;
    p.client.write_all(iocp::buffer("late", 4),
                       [&](std::error_code ec, std::size_t) { wrote.set_value(ec); });
    await(op.done.get_future(), "the read");
    ASSERT_FALSE(await(wrote.get_future(), "the write"));
    EXPECT_FALSE(op.ec);
    EXPECT_EQ(std::string(op.buf, op.bytes), "late");
    pool.join();
    EXPECT_EQ(op.runs, 1);
}

// Sockets: allowed only where every provider is IFS (Wine's TCP/UDP providers are; its IPX
// provider is not, and does not count). A receive that finds data waiting skips the port.
TEST(skip_on_success_test, a_socket_receive_that_finds_data_skips_the_port) {
    iocp::thread_pool pool(1);
    iocp::acceptor listener(pool, iocp::endpoint::loopback(iocp::address_family::ipv4, 0));
    std::promise<iocp::socket> accepted;
    listener.accept([&](std::error_code ec, iocp::socket s) {
        if (!ec)
            accepted.set_value(std::move(s));
    });
    iocp::socket client(pool, iocp::address_family::ipv4);
    std::promise<std::error_code> connected;
    client.connect(listener.local_endpoint(), [&](std::error_code ec) { connected.set_value(ec); });
    ASSERT_FALSE(await(connected.get_future(), "connect"));
    iocp::socket server = await(accepted.get_future(), "accept");
    std::error_code ec;
    server.skip_completion_port_on_success(ec);
    if (ec == std::errc::operation_not_supported)
        GTEST_SKIP() << "a Winsock provider of TCP/UDP here is not IFS (an LSP): the library "
                        "refuses skip-on-success on sockets, as it must";
    ASSERT_FALSE(ec) << ec.message();
    constexpr int rounds = 20;
    std::uint64_t saved = 0;
    for (int i = 0; i < rounds; ++i) {
        std::promise<std::error_code> sent;
        client.send_all(iocp::buffer("ping", 4),
                        [&](std::error_code e, std::size_t) { sent.set_value(e); });
        ASSERT_FALSE(await(sent.get_future(), "send"));
        std::this_thread::sleep_for(2ms); // let the bytes arrive (else the receive pends: fine)
        counted_op op;
        start_on_worker_and_wait(pool, op, [&](counted_op& o) {
            return iocp::start_recv(server, o, iocp::buffer(o.buf, 4));
        });
        EXPECT_FALSE(op.ec) << op.ec.message();
        EXPECT_EQ(std::string(op.buf, op.bytes), std::string("ping", op.bytes));
        EXPECT_FALSE(op.ran_inside);
        EXPECT_EQ(op.runs, 1);
        if (op.bytes < 4) { // a partial receive: take the rest the usual way
            char rest[4];
            std::promise<void> got;
            server.recv(iocp::buffer(rest, 4 - op.bytes),
                        [&](std::error_code, std::size_t) { got.set_value(); });
            await(got.get_future(), "the rest");
        }
        saved = saved_packets(op);
    }
    pool.join();
    std::printf("socket receives with data waiting: %.2f port packets saved per receive (%llu of "
                "%d)\n",
                static_cast<double>(saved) / rounds, static_cast<unsigned long long>(saved),
                rounds);
    RecordProperty("port_packets_saved_per_recv",
                   std::to_string(static_cast<double>(saved) / rounds));
    EXPECT_GT(saved, 0u);
}

// Files: the mode is accepted and every operation completes once. Wine 8 never completes file
// I/O at once (WIN32-NOTES.md), so nothing is saved there; Windows does for cached data.
TEST(skip_on_success_test, a_file_with_the_mode_completes_every_operation_once) {
    const std::filesystem::path path =
        std::filesystem::temp_directory_path() /
        ("iocp_skip_test_" + std::to_string(::GetCurrentProcessId()) + ".bin");
    std::uint64_t saved = 0;
    constexpr int rounds = 20;
    {
        iocp::thread_pool pool(1);
        iocp::file f(pool, path,
                     iocp::file_mode::read_write | iocp::file_mode::create |
                         iocp::file_mode::truncate);
        f.skip_completion_port_on_success();
        for (int i = 0; i < rounds; ++i) {
            counted_op w;
            start_on_worker_and_wait(pool, w, [&](counted_op& o) {
                return iocp::start_write_at(f, o, static_cast<std::uint64_t>(i) * 8,
                                            iocp::buffer("ABCDEFGH", 8));
            });
            EXPECT_FALSE(w.ec);
            EXPECT_FALSE(w.ran_inside);
            counted_op r;
            start_on_worker_and_wait(pool, r, [&](counted_op& o) {
                return iocp::start_read_at(f, o, static_cast<std::uint64_t>(i) * 8,
                                           iocp::buffer(o.buf, 8));
            });
            EXPECT_FALSE(r.ec);
            EXPECT_EQ(std::string(r.buf, r.bytes), "ABCDEFGH");
            EXPECT_FALSE(r.ran_inside);
            EXPECT_EQ(w.runs + r.runs, 2);
            saved = saved_packets(r);
        }
        f.close();
        pool.join();
    }
    std::filesystem::remove(path);
    std::printf("file writes and reads: %.2f port packets saved per operation%s\n",
                static_cast<double>(saved) / (2 * rounds),
                iocp_test::running_under_wine() ? " (Wine never completes file I/O at once)" : "");
}

// The mode changes what a call's success means to the start guard: it is refused while an
// operation of the handle is in flight (its packet, queued under the old mode, would arrive for
// an operation the guard no longer expects one for).
TEST(skip_on_success_test, enabling_is_refused_while_an_operation_is_in_flight) {
    iocp::thread_pool pool(2);
    pipe_pair p(pool);
    counted_op op;
    ASSERT_FALSE(iocp::start_read(p.server, op, iocp::buffer(op.buf, 4)));
    std::error_code ec;
    p.server.skip_completion_port_on_success(ec);
    EXPECT_EQ(ec, std::errc::device_or_resource_busy);
    EXPECT_FALSE(p.server.skips_completion_port_on_success());
    p.server.cancel();
    await(op.done.get_future(), "the cancelled read");
    EXPECT_EQ(op.ec, iocp::errc::operation_aborted);
    // The completion gives the state back after the function returns: wait for it.
    for (int i = 0; i < 1000 && ec; ++i) {
        p.server.skip_completion_port_on_success(ec);
        if (ec)
            std::this_thread::sleep_for(1ms);
    }
    EXPECT_FALSE(ec) << ec.message();
    iocp::named_pipe closed(pool);
    closed.skip_completion_port_on_success(ec);
    EXPECT_EQ(ec, iocp::errc::invalid_handle);
}

// Many threads, both ends skipping: ping-pong chains on several pipes, then shutdown in the
// middle of the traffic (join or stop). Every operation started completes exactly once,
// whether through a packet or the pool's queue; join/stop returns (nothing left in flight).
TEST(skip_on_success_test, stress_every_operation_completes_once_across_shutdown) {
    for (bool immediate : {false, true}) {
        constexpr int pipes = 4;
        std::atomic<int> started{0};
        std::atomic<int> completed{0};
        {
            iocp::thread_pool pool(3);
            std::vector<std::unique_ptr<pipe_pair>> pairs;
            for (int i = 0; i < pipes; ++i) {
                pairs.push_back(std::make_unique<pipe_pair>(pool));
                pairs.back()->server.skip_completion_port_on_success();
                pairs.back()->client.skip_completion_port_on_success();
            }
            // Each end: write 8 bytes, read 8 bytes, again, until an error.
            struct chain {
                iocp::named_pipe* end;
                std::atomic<int>* started;
                std::atomic<int>* completed;
                char buf[8];
                void step() {
                    ++*started;
                    end->write_all(
                        iocp::buffer("12345678", 8), [this](std::error_code ec, std::size_t) {
                            ++*completed;
                            if (ec)
                                return;
                            ++*started;
                            end->read(iocp::buffer(buf), [this](std::error_code rec, std::size_t) {
                                ++*completed;
                                if (!rec)
                                    step();
                            });
                        });
                }
            };
            std::vector<std::unique_ptr<chain>> chains;
            for (auto& pp : pairs) {
                chains.push_back(
                    std::make_unique<chain>(chain{&pp->server, &started, &completed, {}}));
                chains.push_back(
                    std::make_unique<chain>(chain{&pp->client, &started, &completed, {}}));
            }
            for (auto& c : chains)
                c->step();
            const int target = iocp_test::scaled(4000, 400);
            const auto end = std::chrono::steady_clock::now() + deadline;
            while (completed.load() < target && std::chrono::steady_clock::now() < end)
                std::this_thread::sleep_for(1ms);
            EXPECT_GE(completed.load(), target) << "the traffic stalled";
            if (immediate)
                (void)pool.stop();
            else
                pool.join();
            EXPECT_EQ(started.load(), completed.load());
        }
        EXPECT_EQ(started.load(), completed.load());
        EXPECT_GT(completed.load(), 0);
    }
}

#endif // IOCP_HAS_IOCP
