#include "iocp/port.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "iocp/unique_handle.hpp"
#include "support/platform.hpp"

using namespace std::chrono_literals;

namespace {

struct conn {
    int id = 0;
};

using port_type = iocp::port<conn>;

// Blocks until `n` threads wait in get on `p`. The POSIX backend can tell; the kernel port
// cannot, so on Win32 we give the threads time to block (only the tests that need the real
// Windows behaviour use this, and they skip under Wine).
void wait_for_waiters(port_type& p, std::size_t n) {
#if IOCP_HAS_IOCP
    (void)p;
    (void)n;
    std::this_thread::sleep_for(200ms);
#else
    while (p.native_handle()->waiting() < n)
        std::this_thread::yield();
#endif
}

} // namespace

// --- RAII checklist ------------------------------------------------------------------------

TEST(port_test, default_constructed_port_is_open) {
    port_type p;
    EXPECT_TRUE(p.is_open());
    EXPECT_NE(p.native_handle(), nullptr);
}

TEST(port_test, move_constructor_transfers_the_port) {
    port_type a;
    auto native = a.native_handle();
    port_type b(std::move(a));
    EXPECT_FALSE(a.is_open()); // NOLINT(bugprone-use-after-move): the moved-from state is specified
    EXPECT_TRUE(b.is_open());
    EXPECT_EQ(b.native_handle(), native);
    iocp::overlapped ov{};
    b.post(&ov, nullptr, 7);
    auto got = b.get(0ms);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->ov, &ov);
}

TEST(port_test, moved_from_port_reports_closed) {
    port_type a;
    port_type b(std::move(a));
    std::error_code ec;
    a.post(nullptr, nullptr, 0, ec); // NOLINT(bugprone-use-after-move)
    EXPECT_EQ(ec, iocp::errc::closed);
    EXPECT_FALSE(a.get(0ms, ec));
    EXPECT_EQ(ec, iocp::errc::closed);
}

TEST(port_test, move_assignment_closes_the_old_port) {
    port_type a;
    port_type b;
    auto old_native = a.native_handle();
#if IOCP_HAS_IOCP
    a = std::move(b);
    // The old kernel object is gone: posting to its handle fails.
    EXPECT_FALSE(::PostQueuedCompletionStatus(old_native, 0, 0, nullptr));
    EXPECT_EQ(::GetLastError(), static_cast<DWORD>(ERROR_INVALID_HANDLE));
#else
    // This thread's binding (made by the get) keeps the old state alive to look at it.
    std::error_code ec;
    (void)a.get(0ms, ec);
    a = std::move(b);
    EXPECT_TRUE(old_native->closed());
#endif
    EXPECT_TRUE(a.is_open());
}

TEST(port_test, destructor_closes_the_port) {
    port_type::native_handle_type native{};
    {
        port_type p;
        native = p.native_handle();
#if !IOCP_HAS_IOCP
        std::error_code ec;
        (void)p.get(0ms, ec); // bind this thread, keeping the state alive after ~port
#endif
    }
#if IOCP_HAS_IOCP
    EXPECT_FALSE(::PostQueuedCompletionStatus(native, 0, 0, nullptr));
    EXPECT_EQ(::GetLastError(), static_cast<DWORD>(ERROR_INVALID_HANDLE));
#else
    EXPECT_TRUE(native->closed());
#endif
}

TEST(port_test, close_is_idempotent_and_later_calls_report_closed) {
    port_type p;
    std::error_code ec;
    p.close(ec);
    EXPECT_FALSE(ec);
    EXPECT_FALSE(p.is_open());
    p.close(ec); // closing a closed port is not an error
    EXPECT_FALSE(ec);
    EXPECT_NO_THROW(p.close());

    iocp::overlapped ov{};
    p.post(&ov, nullptr, 0, ec);
    EXPECT_EQ(ec, iocp::errc::closed);
    EXPECT_FALSE(p.get(0ms, ec));
    EXPECT_EQ(ec, iocp::errc::closed);
    std::array<iocp::packet<conn>, 4> out{};
    EXPECT_EQ(p.get_many(out, 0ms, ec), 0u);
    EXPECT_EQ(ec, iocp::errc::closed);
    EXPECT_THROW(p.post(&ov), std::system_error);
    EXPECT_THROW((void)p.get(0ms), std::system_error);
    EXPECT_THROW((void)p.get_many(out, 0ms), std::system_error);
    try {
        p.post(&ov);
    } catch (const std::system_error& e) {
        EXPECT_NE(std::string(e.what()).find("closed"), std::string::npos) << e.what();
    }
}

// --- post / get ----------------------------------------------------------------------------

TEST(port_test, post_get_round_trip_keeps_bytes_key_and_overlapped) {
    port_type p;
    conn c{42};
    iocp::overlapped ov{};
    p.post(&ov, &c, 1234);
    std::error_code ec;
    auto got = p.get(0ms, ec);
    ASSERT_TRUE(got) << ec.message();
    EXPECT_FALSE(ec);
    EXPECT_EQ(got->ov, &ov);
    EXPECT_EQ(got->key, &c);
    EXPECT_EQ(got->key->id, 42);
    EXPECT_EQ(got->bytes, 1234u);
    EXPECT_FALSE(got->error);
}

TEST(port_test, a_packet_without_overlapped_is_a_packet_not_a_timeout) {
    port_type p;
    conn c{1};
    p.post(nullptr, &c, 5);
    auto got = p.get(0ms);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->ov, nullptr);
    EXPECT_EQ(got->key, &c);
    EXPECT_EQ(got->bytes, 5u);
}

TEST(port_test, packets_are_dequeued_fifo) {
    const int n = iocp_test::scaled(10000, 300);
    port_type p;
    std::vector<iocp::overlapped> ovs(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i)
        p.post(&ovs[static_cast<std::size_t>(i)], nullptr, static_cast<std::size_t>(i));
    for (int i = 0; i < n; ++i) {
        auto got = p.get(0ms);
        ASSERT_TRUE(got) << "packet " << i;
        ASSERT_EQ(got->ov, &ovs[static_cast<std::size_t>(i)]);
        ASSERT_EQ(got->bytes, static_cast<std::size_t>(i));
    }
    EXPECT_FALSE(p.get(0ms));
}

TEST(port_test, zero_timeout_on_an_empty_port_times_out) {
    port_type p;
    std::error_code ec;
    EXPECT_FALSE(p.get(0ms, ec));
    EXPECT_EQ(ec, iocp::errc::timed_out);
    EXPECT_FALSE(p.get(0ms)); // the throwing form returns nothing on a timeout
}

TEST(port_test, timed_wait_times_out_and_dequeues_nothing) {
    port_type p;
    std::error_code ec;
    auto start = std::chrono::steady_clock::now();
    EXPECT_FALSE(p.get(50ms, ec));
    auto waited = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(ec, iocp::errc::timed_out);
    // It did wait (a lower bound only, with slack for coarse system timers).
    EXPECT_GE(waited, 25ms);

    // The timeout consumed nothing: the next packet posted is the next one dequeued.
    iocp::overlapped ov{};
    p.post(&ov, nullptr, 3);
    auto got = p.get(50ms, ec);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->ov, &ov);
}

TEST(port_test, a_waiter_is_woken_by_a_post) {
    port_type p;
    iocp::overlapped ov{};
    std::optional<iocp::packet<conn>> got;
    std::thread waiter([&] { got = p.get(iocp::infinite); });
    std::this_thread::sleep_for(10ms); // usually blocked by now; correct either way
    p.post(&ov, nullptr, 9);
    waiter.join();
    ASSERT_TRUE(got);
    EXPECT_EQ(got->ov, &ov);
    EXPECT_EQ(got->bytes, 9u);
}

TEST(port_test, get_many_fills_in_order_and_partially) {
    port_type p;
    std::array<iocp::overlapped, 10> ovs{};
    for (std::size_t i = 0; i < ovs.size(); ++i)
        p.post(&ovs[i], nullptr, i);

    std::array<iocp::packet<conn>, 4> small{};
    std::error_code ec;
    ASSERT_EQ(p.get_many(small, 0ms, ec), 4u) << ec.message();
    for (std::size_t i = 0; i < 4; ++i) {
        EXPECT_EQ(small[i].ov, &ovs[i]);
        EXPECT_EQ(small[i].bytes, i);
        EXPECT_FALSE(small[i].error);
    }

    std::array<iocp::packet<conn>, 16> large{};
    ASSERT_EQ(p.get_many(large, 0ms, ec), 6u); // partial fill: only 6 were left
    for (std::size_t i = 0; i < 6; ++i)
        EXPECT_EQ(large[i].ov, &ovs[i + 4]);

    EXPECT_EQ(p.get_many(large, 0ms, ec), 0u);
    EXPECT_EQ(ec, iocp::errc::timed_out);
    EXPECT_EQ(p.get_many(large, 20ms, ec), 0u);
    EXPECT_EQ(ec, iocp::errc::timed_out);
    EXPECT_EQ(p.get_many(large, 0ms), 0u); // throwing form: a timeout is 0, not an exception
}

TEST(port_test, get_many_with_an_empty_span_is_an_error) {
    port_type p;
    std::error_code ec;
    EXPECT_EQ(p.get_many(std::span<iocp::packet<conn>>{}, 0ms, ec), 0u);
    EXPECT_EQ(ec, std::errc::invalid_argument);
}

TEST(port_test, posted_failure_arrives_as_the_operations_error_and_port_keeps_working) {
    port_type p;
    conn c{3};
    iocp::overlapped failed{};
    iocp::overlapped fine{};
    iocp::overlapped failed_too{};
    p.post_failure(&failed, &c, iocp::make_error_code(iocp::errc::connection_reset));
    p.post(&fine, &c, 1);
    p.post_failure(&failed_too, &c, std::error_code(5, std::system_category()));

    std::error_code ec;
    auto got = p.get(0ms, ec);
    ASSERT_TRUE(got);
    EXPECT_FALSE(ec) << "a failed operation is not a failed port";
    EXPECT_EQ(got->ov, &failed);
    EXPECT_EQ(got->key, &c);
    EXPECT_EQ(got->error, iocp::errc::connection_reset);

    // get_many reads each entry's own status.
    std::array<iocp::packet<conn>, 4> out{};
    ASSERT_EQ(p.get_many(out, 0ms, ec), 2u);
    EXPECT_EQ(out[0].ov, &fine);
    EXPECT_FALSE(out[0].error);
    EXPECT_EQ(out[1].ov, &failed_too);
    EXPECT_EQ(out[1].error, std::error_code(5, std::system_category()));

    EXPECT_THROW(p.post_failure(nullptr, &c, iocp::make_error_code(iocp::errc::eof)),
                 std::system_error);
}

#if IOCP_HAS_IOCP
// --- real failed I/O on the kernel port ------------------------------------------------------

namespace {

// Both ends of an overlapped named pipe, the server end associated with `p`.
struct pipe_pair {
    iocp::unique_handle server;
    iocp::unique_handle client;
};

pipe_pair make_pipe(port_type& p, conn* key) {
    static std::atomic<int> counter{0};
    std::wstring name = L"\\\\.\\pipe\\iocp-port-test-" + std::to_wstring(::GetCurrentProcessId()) +
                        L"-" + std::to_wstring(counter++);
    pipe_pair pp;
    pp.server.reset(::CreateNamedPipeW(name.c_str(), PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED,
                                       PIPE_TYPE_BYTE, 1, 4096, 4096, 0, nullptr));
    EXPECT_TRUE(pp.server) << ::GetLastError();
    pp.client.reset(::CreateFileW(name.c_str(), GENERIC_READ | GENERIC_WRITE, 0, nullptr,
                                  OPEN_EXISTING, FILE_FLAG_OVERLAPPED, nullptr));
    EXPECT_TRUE(pp.client) << ::GetLastError();
    p.associate(pp.server.get(), key);
    return pp;
}

} // namespace

TEST(port_test, cancelled_read_arrives_as_that_operations_error_via_get) {
    port_type p;
    conn c{7};
    auto pp = make_pipe(p, &c);
    iocp::overlapped ov{};
    char buffer[16];
    ASSERT_FALSE(::ReadFile(pp.server.get(), buffer, sizeof buffer, nullptr, &ov));
    ASSERT_EQ(::GetLastError(), static_cast<DWORD>(ERROR_IO_PENDING));
    ASSERT_TRUE(::CancelIoEx(pp.server.get(), &ov));

    std::error_code ec;
    auto got = p.get(5s, ec);
    ASSERT_TRUE(got) << ec.message();
    EXPECT_FALSE(ec) << "the port itself is fine";
    EXPECT_EQ(got->ov, &ov);
    EXPECT_EQ(got->key, &c);
    EXPECT_EQ(got->error, iocp::errc::operation_aborted) << got->error.message();

    // The port keeps working.
    iocp::overlapped next{};
    p.post(&next, &c, 1);
    auto after = p.get(0ms);
    ASSERT_TRUE(after);
    EXPECT_EQ(after->ov, &next);
    EXPECT_FALSE(after->error);
}

TEST(port_test, cancelled_read_arrives_as_that_operations_error_via_get_many) {
    port_type p;
    conn c{8};
    auto pp = make_pipe(p, &c);
    iocp::overlapped posted{};
    iocp::overlapped cancelled{};
    p.post(&posted, &c, 0);
    char buffer[16];
    ASSERT_FALSE(::ReadFile(pp.server.get(), buffer, sizeof buffer, nullptr, &cancelled));
    ASSERT_EQ(::GetLastError(), static_cast<DWORD>(ERROR_IO_PENDING));
    ASSERT_TRUE(::CancelIoEx(pp.server.get(), &cancelled));

    // GetQueuedCompletionStatusEx: each entry's status comes from its own OVERLAPPED.
    std::array<iocp::packet<conn>, 4> out{};
    std::size_t n = 0;
    std::error_code ec;
    for (int i = 0; i < 50 && n < 2; ++i)
        n += p.get_many(std::span(out).subspan(n), 100ms, ec);
    ASSERT_EQ(n, 2u) << ec.message();
    EXPECT_EQ(out[0].ov, &posted);
    EXPECT_FALSE(out[0].error) << out[0].error.message();
    EXPECT_EQ(out[1].ov, &cancelled);
    EXPECT_EQ(out[1].key, &c);
    EXPECT_EQ(out[1].error, iocp::errc::operation_aborted) << out[1].error.message();
}

TEST(port_test, reading_past_end_of_file_is_that_operations_eof) {
    port_type p;
    conn c{9};
    wchar_t dir[MAX_PATH];
    wchar_t path[MAX_PATH];
    ASSERT_NE(::GetTempPathW(MAX_PATH, dir), 0u);
    ASSERT_NE(::GetTempFileNameW(dir, L"iop", 0, path), 0u);
    iocp::unique_handle file(
        ::CreateFileW(path, GENERIC_READ | GENERIC_WRITE, 0, nullptr, CREATE_ALWAYS,
                      FILE_FLAG_OVERLAPPED | FILE_FLAG_DELETE_ON_CLOSE, nullptr));
    ASSERT_TRUE(file) << ::GetLastError();
    p.associate(file.get(), &c);

    iocp::overlapped ov{};
    iocp::set_offset(ov, 1 << 20); // far past the end of the empty file
    char buffer[16];
    std::error_code error;
    if (::ReadFile(file.get(), buffer, sizeof buffer, nullptr, &ov)) {
        FAIL() << "read past EOF succeeded";
    } else if (DWORD e = ::GetLastError(); e == ERROR_IO_PENDING) {
        auto got = p.get(5s); // Wine: always through the port
        ASSERT_TRUE(got);
        EXPECT_EQ(got->ov, &ov);
        error = got->error;
    } else {
        error.assign(static_cast<int>(e), std::system_category()); // Windows: at once, no packet
        EXPECT_FALSE(p.get(0ms)) << "an immediate failure queues no packet";
    }
    EXPECT_EQ(error, iocp::errc::eof) << error.message();
}

TEST(port_test, associating_a_handle_twice_is_an_error) {
    port_type a;
    port_type b;
    conn c;
    pipe_pair pp = make_pipe(a, &c);
    std::error_code ec;
    b.associate(pp.server.get(), &c, ec);
    EXPECT_TRUE(ec) << "a handle belongs to one port";
}
#endif // IOCP_HAS_IOCP

// --- bad input -----------------------------------------------------------------------------

TEST(port_test, associating_an_invalid_handle_is_a_clear_error) {
    port_type p;
    conn c;
    std::error_code ec;
    p.associate(iocp::unique_handle{}.get(), &c, ec);
    EXPECT_EQ(ec, iocp::errc::invalid_handle) << ec.message();
    EXPECT_THROW(p.associate(iocp::unique_handle{}.get(), &c), std::system_error);
}

TEST(port_test, associating_a_closed_handle_is_a_clear_error) {
    port_type p;
    conn c;
    iocp::native_handle_type stale{};
#if IOCP_WINDOWS
    HANDLE r = nullptr;
    HANDLE w = nullptr;
    ASSERT_TRUE(::CreatePipe(&r, &w, nullptr, 0));
    ::CloseHandle(w);
    ::CloseHandle(r);
    stale = r;
#else
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    ::close(fds[0]);
    ::close(fds[1]);
    stale = fds[0];
#endif
    std::error_code ec;
    p.associate(stale, &c, ec);
    EXPECT_EQ(ec, iocp::errc::invalid_handle) << ec.message();
}

TEST(port_test, associating_with_a_closed_port_reports_closed) {
    port_type p;
    p.close();
    conn c;
#if IOCP_WINDOWS
    HANDLE r = nullptr;
    HANDLE w = nullptr;
    ASSERT_TRUE(::CreatePipe(&r, &w, nullptr, 0));
    iocp::unique_handle rh(r);
    iocp::unique_handle wh(w);
#else
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    iocp::unique_handle rh(fds[0]);
    iocp::unique_handle wh(fds[1]);
#endif
    std::error_code ec;
    p.associate(rh.get(), &c, ec);
    EXPECT_EQ(ec, iocp::errc::closed);
}

// --- the kernel-port behaviours the POSIX backend reproduces ---------------------------------

TEST(port_test, waiters_are_released_lifo) {
    IOCP_SKIP_UNDER_WINE_IF_NATIVE("Wine releases waiters FIFO");
    port_type p(8);
    constexpr int waiters = 3;
    std::array<std::atomic<int>, waiters> got_bytes{};
    for (auto& g : got_bytes)
        g = -1;
    std::vector<std::thread> threads;
    // Start them one at a time so that the blocking order is known: 0, 1, 2.
    for (int i = 0; i < waiters; ++i) {
        threads.emplace_back([&, i] {
            if (auto pk = p.get(10s))
                got_bytes[static_cast<std::size_t>(i)] = static_cast<int>(pk->bytes);
        });
        wait_for_waiters(p, static_cast<std::size_t>(i) + 1);
    }
    // Each post releases the most recent waiter still blocked.
    for (int k = 0; k < waiters; ++k) {
        p.post(nullptr, nullptr, 100 + static_cast<std::size_t>(k));
        const auto expected_thread =
            static_cast<std::size_t>(waiters) - 1 - static_cast<std::size_t>(k);
        while (got_bytes[expected_thread] == -1)
            std::this_thread::yield();
        EXPECT_EQ(got_bytes[expected_thread], 100 + k) << "post " << k;
    }
    for (auto& t : threads)
        t.join();
}

TEST(port_test, concurrency_limit_holds_back_a_second_thread) {
    IOCP_SKIP_UNDER_WINE_IF_NATIVE("Wine ignores NumberOfConcurrentThreads");
    port_type p(1);
    std::atomic<bool> a_has_packet{false};
    std::atomic<bool> a_may_exit{false};
    std::atomic<int> b_got{-1};

    p.post(nullptr, nullptr, 1);
    std::thread a([&] {
        auto pk = p.get(10s); // takes the one active slot...
        a_has_packet = pk.has_value();
        while (!a_may_exit)
            std::this_thread::yield(); // ...and keeps it: no get until the thread exits
    });
    while (!a_has_packet)
        std::this_thread::yield();

    std::thread b([&] {
        if (auto pk = p.get(10s))
            b_got = static_cast<int>(pk->bytes);
    });
    wait_for_waiters(p, 1);
    p.post(nullptr, nullptr, 2);
    // B stays blocked while A is active; a negative check, so give B every chance to run.
    std::this_thread::sleep_for(100ms);
    EXPECT_EQ(b_got, -1) << "a second thread ran although concurrency is 1";

    a_may_exit = true; // A's exit frees the slot, which releases B
    a.join();
    b.join();
    EXPECT_EQ(b_got, 2);
}

TEST(port_test, never_more_than_concurrency_threads_hold_packets) {
    IOCP_SKIP_UNDER_WINE_IF_NATIVE("Wine ignores NumberOfConcurrentThreads");
    constexpr unsigned concurrency = 2;
    const int packets = iocp_test::scaled(2000, 200);
    port_type p(concurrency);
    std::atomic<int> holding{0};
    std::atomic<int> max_holding{0};
    std::atomic<int> delivered{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 5; ++t) {
        threads.emplace_back([&, t] {
            std::mt19937 rng(static_cast<unsigned>(t));
            std::error_code ec;
            while (delivered < packets) {
                if (!p.get(20ms, ec))
                    continue;
                int now = ++holding;
                int seen = max_holding;
                while (now > seen && !max_holding.compare_exchange_weak(seen, now)) {
                }
                if (rng() % 8 == 0)
                    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 500));
                --holding;
                ++delivered; // the slot is released by the next get, after this
            }
        });
    }
    for (int i = 0; i < packets; ++i)
        p.post(nullptr, nullptr, 0);
    for (auto& t : threads)
        t.join();
    EXPECT_EQ(delivered, packets);
    EXPECT_LE(max_holding, static_cast<int>(concurrency));
    EXPECT_GE(max_holding, 1);
}

TEST(port_test, close_wakes_every_waiter_with_closed) {
    IOCP_SKIP_UNDER_WINE_IF_NATIVE("Wine's CloseHandle leaves waiters blocked");
    port_type p(4);
    constexpr int waiters = 4;
    std::atomic<int> woke_closed{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < waiters; ++i) {
        threads.emplace_back([&] {
            std::error_code ec;
            if (!p.get(iocp::infinite, ec) && ec == iocp::errc::closed)
                ++woke_closed;
        });
    }
    wait_for_waiters(p, waiters);
    p.close();
    for (auto& t : threads)
        t.join();
    EXPECT_EQ(woke_closed, waiters);
}

// --- stress --------------------------------------------------------------------------------

TEST(port_test, stress_many_producers_and_consumers_deliver_each_packet_once) {
    const int producers = 4;
    const int consumers = 4;
    const int per_producer = iocp_test::scaled(20000, 300);
    const int total = producers * per_producer;
    port_type p;
    std::vector<iocp::overlapped> ovs(static_cast<std::size_t>(total));
    std::vector<std::atomic<int>> seen(static_cast<std::size_t>(total));
    std::atomic<int> delivered{0};

    std::vector<std::thread> threads;
    for (int c = 0; c < consumers; ++c) {
        threads.emplace_back([&, c] {
            std::mt19937 rng(static_cast<unsigned>(100 + c));
            std::array<iocp::packet<conn>, 8> batch{};
            std::error_code ec;
            while (delivered.load() < total) {
                std::size_t n = 0;
                if (rng() % 2 == 0) {
                    if (auto pk = p.get(5ms, ec))
                        batch[n++] = *pk;
                } else {
                    n = p.get_many(std::span(batch).first(1 + rng() % 8), 5ms, ec);
                }
                for (std::size_t i = 0; i < n; ++i) {
                    auto index = static_cast<std::size_t>(batch[i].ov - ovs.data());
                    ASSERT_LT(index, ovs.size());
                    ASSERT_EQ(batch[i].bytes, index);
                    ++seen[index];
                    ++delivered;
                }
            }
        });
    }
    for (int pr = 0; pr < producers; ++pr) {
        threads.emplace_back([&, pr] {
            std::mt19937 rng(static_cast<unsigned>(pr));
            for (int i = 0; i < per_producer; ++i) {
                auto index = static_cast<std::size_t>(pr) * static_cast<std::size_t>(per_producer) +
                             static_cast<std::size_t>(i);
                p.post(&ovs[index], nullptr, index);
                if (rng() % 1024 == 0)
                    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 200));
            }
        });
    }
    for (auto& t : threads)
        t.join();
    EXPECT_EQ(delivered, total);
    int wrong = 0;
    for (auto& s : seen)
        wrong += s.load() != 1;
    EXPECT_EQ(wrong, 0) << "packets not delivered exactly once";
    EXPECT_FALSE(p.get(0ms));
}
