#include "iocp/port.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <system_error>
#include <thread>
#include <vector>

#include "iocp/unique_handle.hpp"
#include "support/platform.hpp"

#if !IOCP_WINDOWS
#include <sys/socket.h>
#include <unistd.h>
#endif

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

// Blocks until `n` threads wait in get on `p` where the backend can tell (the POSIX port).
// The kernel port cannot; the tests that use this are correct in either order there (a post
// before the wait is dequeued by the wait), and the POSIX backend proves the blocked case.
template <class Key>
void wait_until_blocked(iocp::port<Key>& p, std::size_t n) {
#if IOCP_HAS_IOCP
    (void)p;
    (void)n;
#else
    while (p.native_handle()->waiting() < n)
        std::this_thread::yield();
#endif
}

// A category of the test's own: post_failure must carry any category, not only the two the
// kernel port knows.
class test_category final : public std::error_category {
public:
    const char* name() const noexcept override { return "port_test"; }
    std::string message(int value) const override {
        return "port_test error " + std::to_string(value);
    }
};

const std::error_category& the_test_category() {
    static const test_category instance;
    return instance;
}

// Every byte of an OVERLAPPED set to a pattern the port would disturb by writing any field.
iocp::overlapped patterned_overlapped() {
    iocp::overlapped ov;
    std::memset(&ov, 0xA5, sizeof ov);
    return ov;
}

bool has_pattern(const void* p, std::size_t offset, std::size_t size) {
    const auto* bytes = static_cast<const unsigned char*>(p) + offset;
    return std::all_of(bytes, bytes + size, [](unsigned char b) { return b == 0xA5; });
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

// --- timeouts: any duration, saturating (issue 8 item 1) -----------------------------------

namespace {

// A thread waits in get (or get_many) with `timeout`; a post from this thread must reach it.
template <class Duration>
void expect_huge_timeout_waits_for_a_post(Duration timeout, bool many) {
    port_type p;
    conn c{11};
    iocp::overlapped ov{};
    std::optional<iocp::packet<conn>> got;
    std::error_code ec;
    std::thread waiter([&] {
        if (many) {
            std::array<iocp::packet<conn>, 2> out{};
            if (p.get_many(out, timeout, ec) == 1)
                got = out[0];
        } else {
            got = p.get(timeout, ec);
        }
    });
    wait_until_blocked(p, 1); // the wait really blocked: no overflow turned it into a poll
    p.post(&ov, &c, 21);
    waiter.join();
    ASSERT_TRUE(got) << ec.message();
    EXPECT_EQ(got->ov, &ov);
    EXPECT_EQ(got->key, &c);
    EXPECT_EQ(got->bytes, 21u);
}

} // namespace

TEST(port_test, huge_timeouts_wait_for_a_post_from_another_thread) {
    using namespace std::chrono;
    for (bool many : {false, true}) {
        SCOPED_TRACE(many ? "get_many" : "get");
        expect_huge_timeout_waits_for_a_post(hours::max(), many);
        expect_huge_timeout_waits_for_a_post(steady_clock::duration::max(), many);
        expect_huge_timeout_waits_for_a_post(milliseconds::max(), many);
        expect_huge_timeout_waits_for_a_post(hours(24 * 365 * 1000), many);
        expect_huge_timeout_waits_for_a_post(iocp::infinite, many);
        expect_huge_timeout_waits_for_a_post(duration<double>(1e300), many);
        expect_huge_timeout_waits_for_a_post(
            duration<double, std::milli>(std::numeric_limits<double>::infinity()), many);
        expect_huge_timeout_waits_for_a_post(duration<std::uint64_t, std::nano>(~0ull), many);
    }
}

TEST(port_test, negative_timeouts_poll_and_time_out_at_once) {
    using namespace std::chrono;
    port_type p;
    std::array<iocp::packet<conn>, 4> out{};
    std::error_code ec;
    auto expect_poll = [&](auto timeout) {
        EXPECT_FALSE(p.get(timeout, ec));
        EXPECT_EQ(ec, iocp::errc::timed_out);
        EXPECT_EQ(p.get_many(out, timeout, ec), 0u);
        EXPECT_EQ(ec, iocp::errc::timed_out);
        EXPECT_FALSE(p.get(timeout)); // the throwing forms treat a timeout as "nothing"
        EXPECT_EQ(p.get_many(out, timeout), 0u);
    };
    expect_poll(-1ms);
    expect_poll(hours::min());
    expect_poll(nanoseconds::min());
    expect_poll(steady_clock::duration::min());
    expect_poll(duration<double>(-1e300));
    expect_poll(duration<double>(-std::numeric_limits<double>::infinity()));
    expect_poll(duration<double>(std::numeric_limits<double>::quiet_NaN()));

    // A poll still dequeues what is there.
    iocp::overlapped ov{};
    p.post(&ov);
    auto got = p.get(hours::min(), ec);
    ASSERT_TRUE(got) << ec.message();
    EXPECT_EQ(got->ov, &ov);
}

TEST(port_test, sub_millisecond_timeouts_round_up_to_a_real_wait_and_time_out) {
    using namespace std::chrono;
    port_type p;
    std::error_code ec;
    EXPECT_FALSE(p.get(1ns, ec));
    EXPECT_EQ(ec, iocp::errc::timed_out);
    EXPECT_FALSE(p.get(duration<double, std::milli>(0.25), ec));
    EXPECT_EQ(ec, iocp::errc::timed_out);
    std::array<iocp::packet<conn>, 2> out{};
    EXPECT_EQ(p.get_many(out, 999us, ec), 0u);
    EXPECT_EQ(ec, iocp::errc::timed_out);
}

// --- sizes at 0, 1 and their maximum (issue 8 item 2) --------------------------------------

TEST(port_test, concurrency_at_zero_one_and_beyond_its_maximum_makes_a_working_port) {
    for (std::size_t concurrency :
         {std::size_t{0}, std::size_t{1}, std::size_t{UINT_MAX}, (std::size_t{1} << 32) + 1,
          std::numeric_limits<std::size_t>::max()}) {
        SCOPED_TRACE(concurrency);
        port_type p(concurrency);
        std::error_code ec;
        port_type q(concurrency, ec);
        EXPECT_FALSE(ec) << ec.message();
        iocp::overlapped ov{};
        p.post(&ov, nullptr, 1);
        auto got = p.get(0ms);
        ASSERT_TRUE(got);
        EXPECT_EQ(got->ov, &ov);
#if !IOCP_HAS_IOCP
        // 0 is the number of processors; anything above the maximum is the maximum, never a
        // truncated value (2^32 + 1 once became 1: a silently serialised port).
        unsigned expected =
            concurrency == 0
                ? (std::max)(1u, std::thread::hardware_concurrency())
                : static_cast<unsigned>((std::min)(concurrency, port_type::max_concurrency));
        EXPECT_EQ(p.native_handle()->concurrency(), expected);
#endif
    }
}

TEST(port_test, get_many_returns_at_most_max_batch_per_call_on_every_backend) {
    const std::size_t total = port_type::max_batch + 36;
    port_type p;
    std::vector<iocp::overlapped> ovs(total);
    for (std::size_t i = 0; i < total; ++i)
        p.post(&ovs[i], nullptr, i);
    std::vector<iocp::packet<conn>> out(1000); // far larger than one call returns
    std::error_code ec;
    ASSERT_EQ(p.get_many(out, 0ms, ec), port_type::max_batch) << ec.message();
    for (std::size_t i = 0; i < port_type::max_batch; ++i)
        EXPECT_EQ(out[i].ov, &ovs[i]);
    ASSERT_EQ(p.get_many(out, 0ms, ec), 36u);
    EXPECT_EQ(out[0].ov, &ovs[port_type::max_batch]);
    // A span of one is a get.
    p.post(&ovs[0], nullptr, 5);
    ASSERT_EQ(p.get_many(std::span(out).first(1), 0ms, ec), 1u);
    EXPECT_EQ(out[0].bytes, 5u);
}

TEST(port_test, post_refuses_more_bytes_than_a_dword_instead_of_truncating) {
    port_type p;
    iocp::overlapped ov{};
    std::error_code ec;
    // The largest count round-trips exactly...
    p.post(&ov, nullptr, port_type::max_bytes, ec);
    ASSERT_FALSE(ec) << ec.message();
    auto got = p.get(0ms);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->bytes, port_type::max_bytes);
    EXPECT_EQ(port_type::max_bytes, std::size_t{0xFFFFFFFFu});
    // ...one more is refused, and nothing is queued (it would arrive as 0 bytes on Win32).
    if constexpr (sizeof(std::size_t) > 4) {
        const std::size_t too_many = port_type::max_bytes + 1;
        p.post(&ov, nullptr, too_many, ec);
        EXPECT_EQ(ec, std::errc::invalid_argument);
        EXPECT_THROW(p.post(&ov, nullptr, too_many), std::system_error);
        p.post(&ov, nullptr, std::numeric_limits<std::size_t>::max(), ec);
        EXPECT_EQ(ec, std::errc::invalid_argument);
        EXPECT_FALSE(p.get(0ms, ec));
        EXPECT_EQ(ec, iocp::errc::timed_out);
    }
}

// --- what the caller hands over round-trips untouched and unread (issue 8 item 7) ----------

TEST(port_test, post_neither_reads_nor_writes_the_overlapped_or_the_key) {
    port_type p;
    iocp::overlapped ov = patterned_overlapped();
    // Values no object has, as classic IOCP code uses them: never dereferenced by the port.
    // NOLINTBEGIN(performance-no-int-to-ptr)
    auto* bogus_ov = reinterpret_cast<iocp::overlapped*>(-1); // a classic shutdown marker
    auto* bogus_key = reinterpret_cast<conn*>(-1);
    auto* odd_key = reinterpret_cast<conn*>(std::uintptr_t{0x13});
    // NOLINTEND(performance-no-int-to-ptr)

    p.post(&ov, odd_key, 1);
    p.post(bogus_ov, bogus_key, 2);
    p.post(bogus_ov, nullptr, 3);
    EXPECT_TRUE(has_pattern(&ov, 0, sizeof ov)) << "post wrote into the OVERLAPPED";

    auto first = p.get(0ms);
    ASSERT_TRUE(first);
    EXPECT_EQ(first->ov, &ov);
    EXPECT_EQ(first->key, odd_key);
    EXPECT_FALSE(first->error);
    std::array<iocp::packet<conn>, 4> out{};
    ASSERT_EQ(p.get_many(out, 0ms), 2u);
    EXPECT_EQ(out[0].ov, bogus_ov);
    EXPECT_EQ(out[0].key, bogus_key);
    EXPECT_EQ(out[0].bytes, 2u);
    EXPECT_FALSE(out[0].error);
    EXPECT_EQ(out[1].ov, bogus_ov);
    EXPECT_EQ(out[1].key, nullptr);
    EXPECT_FALSE(out[1].error);
    EXPECT_TRUE(has_pattern(&ov, 0, sizeof ov)) << "a dequeue wrote into the OVERLAPPED";

    // A patterned OVERLAPPED's Internal looks like a failed NTSTATUS (0xA5A5A5A5): a dequeue
    // that read it would report an error.
    p.post(&ov, nullptr, 4);
    ASSERT_EQ(p.get_many(out, 0ms), 1u);
    EXPECT_FALSE(out[0].error) << out[0].error.message();
    p.post(&ov, nullptr, 4);
    auto again = p.get(0ms);
    ASSERT_TRUE(again);
    EXPECT_FALSE(again->error) << again->error.message();
}

TEST(port_test, post_failure_writes_only_internal_and_internal_high) {
    port_type p;
    conn c{5};
    iocp::overlapped ov = patterned_overlapped();
    p.post_failure(&ov, &c, std::error_code(EIO, std::generic_category()));
    constexpr std::size_t result_fields = offsetof(iocp::overlapped, Offset);
    EXPECT_TRUE(has_pattern(&ov, result_fields, sizeof ov - result_fields))
        << "post_failure touched Offset, OffsetHigh or hEvent";
    auto got = p.get(0ms);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->ov, &ov);
    EXPECT_EQ(got->key, &c);
    EXPECT_EQ(got->bytes, 0u);
    EXPECT_EQ(got->error, std::error_code(EIO, std::generic_category()));
    EXPECT_TRUE(has_pattern(&ov, result_fields, sizeof ov - result_fields));
}

namespace {

enum class request : std::uint16_t { open = 1, read = 2, close = 0xFFFF };

} // namespace

TEST(port_test, integral_and_enumeration_keys_round_trip_by_value) {
    {
        iocp::port<std::uintptr_t> p; // a ULONG_PTR / WPARAM key, no casts into a pointer
        static_assert(std::is_same_v<iocp::port<std::uintptr_t>::key_type, std::uintptr_t>);
        iocp::overlapped ov{};
        p.post(nullptr, 0);
        p.post(nullptr, 1, 7);
        p.post(&ov, std::numeric_limits<std::uintptr_t>::max());
        p.post_failure(&ov, 42, iocp::make_error_code(iocp::errc::eof));
        auto a = p.get(0ms);
        ASSERT_TRUE(a);
        EXPECT_EQ(a->key, 0u);
        std::array<iocp::packet<std::uintptr_t>, 4> out{};
        ASSERT_EQ(p.get_many(out, 0ms), 3u);
        EXPECT_EQ(out[0].key, 1u);
        EXPECT_EQ(out[0].bytes, 7u);
        EXPECT_EQ(out[1].key, std::numeric_limits<std::uintptr_t>::max());
        EXPECT_EQ(out[2].key, 42u);
        EXPECT_EQ(out[2].error, iocp::errc::eof);
    }
    {
        iocp::port<int> p; // signed values come back with their sign
        iocp::overlapped ov{};
        p.post(nullptr, -1);
        p.post(nullptr, INT_MIN);
        p.post_failure(&ov, INT_MAX, std::error_code(ENOENT, std::generic_category()));
        EXPECT_EQ(p.get(0ms)->key, -1);
        EXPECT_EQ(p.get(0ms)->key, INT_MIN);
        auto f = p.get(0ms);
        ASSERT_TRUE(f);
        EXPECT_EQ(f->key, INT_MAX);
        EXPECT_EQ(f->error, std::error_code(ENOENT, std::generic_category()));
    }
    {
        iocp::port<request> p;
        p.post(nullptr, request::read);
        p.post(nullptr, request::close);
        EXPECT_EQ(p.get(0ms)->key, request::read);
        EXPECT_EQ(p.get(0ms)->key, request::close);
    }
}

TEST(port_test, the_reserved_key_value_is_refused_so_no_user_packet_is_taken_for_the_ports_own) {
    iocp::port<std::uintptr_t> p;
    const std::uintptr_t reserved = iocp::port<std::uintptr_t>::reserved_key;
    iocp::overlapped ov{};
    std::error_code ec;
    p.post(&ov, reserved, 3, ec);
    EXPECT_EQ(ec, std::errc::invalid_argument);
    p.post_failure(&ov, reserved, std::error_code(EIO, std::generic_category()), ec);
    EXPECT_EQ(ec, std::errc::invalid_argument);
    EXPECT_THROW(p.post(nullptr, reserved), std::system_error);
    EXPECT_FALSE(p.get(0ms, ec)) << "a refused post queues nothing";
    EXPECT_EQ(ec, iocp::errc::timed_out);
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
    p.associate(rh.get(), reserved, ec);
    EXPECT_EQ(ec, std::errc::invalid_argument);
    // Its neighbours are ordinary keys.
    p.post(nullptr, reserved - 1);
    p.post(nullptr, reserved + 1);
    EXPECT_EQ(p.get(0ms)->key, reserved - 1);
    EXPECT_EQ(p.get(0ms)->key, reserved + 1);
}

// A classic IOCP thread pool, written the Win32 way on the port: requests are integral keys
// (a WPARAM there), and shutdown posts (OVERLAPPED*)-1 once per thread.
TEST(port_test, classic_request_queue_with_integral_keys_and_minus_one_shutdown) {
    constexpr int threads = 4;
    const int requests = iocp_test::scaled(5000, 200);
    iocp::port<std::uintptr_t> queue(threads);
    auto* const quit = reinterpret_cast<iocp::overlapped*>(-1); // NOLINT(performance-no-int-to-ptr)
    std::atomic<int> handled{0};
    std::atomic<std::uint64_t> sum{0};
    std::atomic<int> exited{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&] {
            while (auto pk = queue.get(iocp::infinite)) {
                if (pk->ov == quit)
                    break; // one marker per thread: this one exits
                sum += pk->key;
                ++handled;
            }
            ++exited;
        });
    }
    std::uint64_t expected = 0;
    for (int i = 1; i <= requests; ++i) {
        queue.post(nullptr, static_cast<std::uintptr_t>(i));
        expected += static_cast<std::uint64_t>(i);
    }
    for (int t = 0; t < threads; ++t)
        queue.post(quit, 0, 0);
    for (auto& w : workers)
        w.join();
    EXPECT_EQ(exited, threads);
    EXPECT_EQ(handled, requests) << "every request handled exactly once";
    EXPECT_EQ(sum, expected);
    EXPECT_FALSE(queue.get(0ms)) << "no marker left over: each thread took exactly one";
}

TEST(port_test, associate_takes_a_socket_without_a_cast) {
    port_type p;
    conn c{4};
    std::error_code ec;
#if IOCP_WINDOWS
    WSADATA data;
    ASSERT_EQ(::WSAStartup(MAKEWORD(2, 2), &data), 0);
    SOCKET s = ::WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_OVERLAPPED);
    ASSERT_NE(s, INVALID_SOCKET) << ::WSAGetLastError();
    p.associate(s, &c, ec); // SOCKET, as classic Winsock code writes it
    EXPECT_FALSE(ec) << ec.message();
    p.associate(INVALID_SOCKET, &c, ec);
    EXPECT_EQ(ec, iocp::errc::invalid_handle) << ec.message();
    EXPECT_THROW(p.associate(INVALID_SOCKET, &c), std::system_error);
    ::closesocket(s);
    ::WSACleanup();
#else
    int s = ::socket(AF_INET, SOCK_STREAM, 0); // a socket is a descriptor here
    ASSERT_GE(s, 0);
    p.associate(s, &c, ec);
    EXPECT_FALSE(ec) << ec.message();
    ::close(s);
#endif
}

// --- posted failures keep their category and value (issue 8 item 8) ------------------------

TEST(port_test, posted_failures_keep_their_category_and_value_exactly) {
    const std::error_code failures[] = {
        std::error_code(ENOMEM, std::generic_category()), // once arrived as system error 12
        std::error_code(70000, std::system_category()),   // once arrived as 4464 (16 bits)
        std::error_code(-1, std::system_category()),
        std::error_code(INT_MIN, std::generic_category()),
        std::error_code(INT_MAX, std::system_category()),
        iocp::make_error_code(iocp::errc::operation_aborted),
        std::error_code(123456, the_test_category()),
    };
    constexpr std::size_t n = std::size(failures);
    port_type p;
    conn c{6};
    std::array<iocp::overlapped, n> ovs{};
    for (bool many : {false, true}) {
        SCOPED_TRACE(many ? "get_many" : "get");
        for (std::size_t i = 0; i < n; ++i)
            p.post_failure(&ovs[i], &c, failures[i]);
        std::array<iocp::packet<conn>, n> got{};
        if (many) {
            ASSERT_EQ(p.get_many(got, 0ms), n);
        } else {
            for (auto& g : got) {
                auto pk = p.get(0ms);
                ASSERT_TRUE(pk);
                g = *pk;
            }
        }
        for (std::size_t i = 0; i < n; ++i) {
            EXPECT_EQ(got[i].ov, &ovs[i]);
            EXPECT_EQ(got[i].key, &c);
            EXPECT_EQ(got[i].bytes, 0u);
            EXPECT_EQ(&got[i].error.category(), &failures[i].category())
                << i << ": " << got[i].error.category().name() << " instead of "
                << failures[i].category().name();
            EXPECT_EQ(got[i].error.value(), failures[i].value()) << i;
        }
    }
    // "Failing" with no error is a plain completion.
    iocp::overlapped ov{};
    p.post_failure(&ov, &c, std::error_code{});
    auto ok = p.get(0ms);
    ASSERT_TRUE(ok);
    EXPECT_FALSE(ok->error);
}

// The waiter record each thread reuses (it lives in the thread's binding on the POSIX port):
// waits that time out, waits released by a post and waits of either kind of call interleave
// at random, and every packet still arrives exactly once, the rest by a drain with timeout 0.
TEST(port_test, stress_timed_waits_racing_posts_deliver_each_packet_once_then_drain) {
    const int producers = 3;
    const int consumers = 6;
    const int per_producer = iocp_test::scaled(5000, 150);
    const int total = producers * per_producer;
    port_type p(2);
    std::vector<iocp::overlapped> ovs(static_cast<std::size_t>(total));
    std::vector<std::atomic<int>> seen(static_cast<std::size_t>(total));
    std::atomic<int> produced_done{0};
    std::atomic<bool> stop{false};

    auto count = [&](const iocp::packet<conn>& pk) {
        auto index = static_cast<std::size_t>(pk.ov - ovs.data());
        ASSERT_LT(index, ovs.size());
        ++seen[index];
    };
    std::vector<std::thread> threads;
    for (int c = 0; c < consumers; ++c) {
        threads.emplace_back([&, c] {
            std::mt19937 rng(static_cast<unsigned>(7 + c));
            std::array<iocp::packet<conn>, 8> batch{};
            std::error_code ec;
            while (!stop.load()) {
                // 0 (poll), sub-millisecond (rounded up to 1 ms), or a few milliseconds.
                const auto timeout = std::chrono::microseconds(rng() % 3 == 0 ? 0 : rng() % 3000);
                if (rng() % 2 == 0) {
                    if (auto pk = p.get(timeout, ec))
                        count(*pk);
                } else {
                    std::size_t n = p.get_many(std::span(batch).first(1 + rng() % 8), timeout, ec);
                    for (std::size_t i = 0; i < n; ++i)
                        count(batch[i]);
                }
            }
        });
    }
    std::vector<std::thread> posters;
    for (int pr = 0; pr < producers; ++pr) {
        posters.emplace_back([&, pr] {
            std::mt19937 rng(static_cast<unsigned>(pr));
            for (int i = 0; i < per_producer; ++i) {
                const std::size_t index =
                    static_cast<std::size_t>(pr) * static_cast<std::size_t>(per_producer) +
                    static_cast<std::size_t>(i);
                p.post(&ovs[index], nullptr, index);
                if (rng() % 256 == 0)
                    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
            }
            ++produced_done;
        });
    }
    for (auto& t : posters)
        t.join();
    stop = true;
    for (auto& t : threads)
        t.join();
    // Drain what the consumers left, as a shutdown does.
    std::array<iocp::packet<conn>, 16> rest{};
    while (std::size_t n = p.get_many(rest, 0ms))
        for (std::size_t i = 0; i < n; ++i)
            count(rest[i]);
    EXPECT_EQ(produced_done, producers);
    int wrong = 0;
    for (auto& s : seen)
        wrong += s.load() != 1;
    EXPECT_EQ(wrong, 0) << "packets not delivered exactly once";
}

// Closing a port with waiters mixed across get and get_many, with and without a time limit:
// each waiter wakes exactly once with closed, none is lost, and later calls report closed.
TEST(port_test, close_wakes_every_kind_of_waiter_exactly_once) {
    IOCP_SKIP_UNDER_WINE_IF_NATIVE("Wine's CloseHandle leaves waiters blocked");
    constexpr int waiters = 8;
    port_type p(waiters);
    std::atomic<int> woke_closed{0};
    std::atomic<int> woke_other{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < waiters; ++i) {
        threads.emplace_back([&, i] {
            std::error_code ec;
            std::array<iocp::packet<conn>, 4> out{};
            bool got = false;
            switch (i % 4) {
            case 0: got = p.get(iocp::infinite, ec).has_value(); break;
            case 1: got = p.get(std::chrono::hours::max(), ec).has_value(); break;
            case 2: got = p.get_many(out, iocp::infinite, ec) != 0; break;
            default: got = p.get_many(out, std::chrono::hours(1), ec) != 0; break;
            }
            if (!got && ec == iocp::errc::closed)
                ++woke_closed;
            else
                ++woke_other;
        });
    }
    wait_for_waiters(p, waiters);
    p.close();
    for (auto& t : threads)
        t.join();
    EXPECT_EQ(woke_closed, waiters);
    EXPECT_EQ(woke_other, 0);
    std::error_code ec;
    EXPECT_FALSE(p.get(std::chrono::hours::max(), ec));
    EXPECT_EQ(ec, iocp::errc::closed);
}

namespace {

// Uses a static port from a static object's destructor: after main returned, when the main
// thread's thread_locals (the POSIX port's thread binding among them) are already destroyed.
// A failure cannot be reported to the test framework any more: it ends the process with 1 (and
// ASan reports a use after free, which it did when the binding was used after its destruction).
struct static_port_user {
    iocp::port<>& port;
    ~static_port_user() {
        std::error_code ec;
        iocp::overlapped ov{};
        port.post(&ov, nullptr, 5, ec);
        const auto p = ec ? std::nullopt : port.get(0ms, ec);
        if (ec || !p || p->ov != &ov || p->bytes != 5) {
            std::fprintf(stderr, "static destruction: the static port failed: %s\n",
                         ec.message().c_str());
            std::_Exit(1);
        }
    }
};

} // namespace

TEST(port_test, a_static_port_works_during_static_destruction_after_the_thread_used_another) {
    static iocp::port<> port(1);        // destroyed after the user below
    static static_port_user user{port}; // destroyed after main's thread_locals
    // Bind this (the main) thread to another port, which is gone before main returns.
    iocp::port<> local(1);
    iocp::overlapped ov{};
    local.post(&ov, nullptr, 1);
    const auto p = local.get(0ms);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->ov, &ov);
}
