#include "iocp/thread_pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <utility>
#include <vector>

#include "iocp/detail/fault_injection.hpp"
#include "support/platform.hpp"
#include "support/tracked.hpp"

// Port posts fail on demand, as PostQueuedCompletionStatus does when the kernel runs out of
// non-paged pool: posts, wait(), join() and stop() must still complete, run or abandon every
// item exactly once, and never block a producer. This program is built with IOCP_FAULT_INJECTION.

using namespace std::chrono_literals;

namespace {

// The I/O layer's side of the pool (in-flight counts, the cancel registry): tested here directly.
using io_access = iocp::detail::pool_io_access;

namespace fi = iocp::detail::fault_injection;

// More failures than any test posts (long is 32 bits on Windows).
constexpr long endless = 1L << 30;

// Every port post fails while one of these lives.
struct failing_port_posts {
    failing_port_posts() { fi::port_post_failures.store(endless); }
    failing_port_posts(const failing_port_posts&) = delete;
    failing_port_posts& operator=(const failing_port_posts&) = delete;
    ~failing_port_posts() { fi::port_post_failures.store(0); }
    static bool some_failed() { return fi::port_post_failures.load() < endless; }
};

using iocp_test::ledger;
using iocp_test::tracked;

// An operation that records how it ended.
struct probe_op : iocp::operation {
    probe_op() : operation(&on_complete) {}
    static void on_complete(void* owner, iocp::operation* base,
                            const iocp::completion& c) noexcept {
        auto* self = static_cast<probe_op*>(base);
        if (owner != nullptr) {
            self->result = c.error;
            self->bytes = c.bytes;
            self->on_worker = iocp::thread_pool::this_worker_index().has_value();
            ++self->completed;
            if (self->counted)
                io_access::operation_finished(*static_cast<iocp::thread_pool*>(owner));
        } else {
            ++self->destroyed;
        }
    }
    std::error_code result;
    std::size_t bytes = 0;
    bool on_worker = false;
    bool counted = true;
    std::atomic<int> completed{0};
    std::atomic<int> destroyed{0};
};

iocp::thread_pool_options sleepy(std::size_t threads) {
    iocp::thread_pool_options o;
    o.threads = threads;
    o.spin = 0us; // straight to sleep: every post to an idle pool needs a wake-up
    return o;
}

} // namespace

// Workers asleep, every wake-up post fails: the items still run (an idle worker finds them at
// its periodic look) and the pool counts those late finds. Without the bounded wait, wait()
// never returns (ctest's timeout fails the test).
TEST(thread_pool_fault_test, posts_and_wait_complete_while_every_port_post_fails) {
    ledger l;
    iocp::thread_pool pool(sleepy(2));
    pool.post([] {});
    pool.wait();
    std::this_thread::sleep_for(20ms); // both workers asleep on the port
    {
        failing_port_posts failing;
        for (int round = 0; round < 3; ++round) {
            std::vector<std::thread> producers;
            for (int p = 0; p < 4; ++p)
                producers.emplace_back([&] {
                    for (int i = 0; i < 50; ++i)
                        pool.post(tracked(l)); // never blocks, never throws
                });
            for (auto& t : producers)
                t.join();
            pool.wait();
            std::this_thread::sleep_for(20ms);
        }
        EXPECT_TRUE(failing_port_posts::some_failed());
    }
    EXPECT_EQ(l.ran, 3 * 4 * 50);
    EXPECT_EQ(l.abandoned, 0);
    EXPECT_GT(pool.stats().recoveries, 0u) << "a failed wake-up was made up by a periodic look";
}

// The sentinels cannot be posted either: join() must still end.
TEST(thread_pool_fault_test, join_ends_when_no_sentinel_can_be_posted) {
    ledger l;
    {
        iocp::thread_pool pool(sleepy(4));
        failing_port_posts failing;
        for (int i = 0; i < 100; ++i)
            pool.post(tracked(l));
        pool.join();
        EXPECT_TRUE(failing_port_posts::some_failed());
    }
    EXPECT_EQ(l.ran, 100);
    EXPECT_EQ(l.abandoned, 0);
}

TEST(thread_pool_fault_test, stop_counts_every_item_exactly_once_while_posts_fail) {
    ledger l;
    std::size_t stopped = 0;
    {
        iocp::thread_pool pool(sleepy(2));
        failing_port_posts failing;
        std::atomic<bool> release{false};
        std::atomic<int> running{0};
        for (int i = 0; i < 2; ++i)
            pool.post([&] {
                ++running;
                while (!release.load())
                    std::this_thread::yield();
            });
        while (running.load() < 2)
            std::this_thread::yield();
        const int n = 200;
        for (int i = 0; i < n; ++i)
            pool.post(tracked(l));
        pool.post_after(iocp::infinite, tracked(l));
        std::thread stopper([&] { stopped = pool.stop(); });
        // stop() refuses posts first; then let the running items end.
        for (;;) {
            std::error_code ec;
            pool.post([] {}, ec);
            if (ec)
                break;
            std::this_thread::yield();
        }
        release = true;
        stopper.join();
        EXPECT_EQ(l.ran + l.abandoned, n + 1);
    }
    EXPECT_EQ(l.ran, 0) << "both workers were busy until stop() had begun";
    EXPECT_GE(stopped, static_cast<std::size_t>(l.abandoned.load()));
}

// A completion the port refuses goes to the backlog and still runs once, on a worker.
TEST(thread_pool_fault_test, a_refused_completion_runs_from_the_backlog) {
    probe_op op;
    probe_op stray; // not counted as started: shutdown does not wait for it
    stray.counted = false;
    {
        iocp::thread_pool pool(sleepy(2));
        failing_port_posts failing;
        ASSERT_TRUE(io_access::operation_started(pool));
        std::error_code ec;
        pool.post_completion(&op, {iocp::make_error_code(iocp::errc::eof), 5, nullptr}, ec);
        EXPECT_FALSE(ec) << "queued on the backlog: " << ec.message();
        pool.post_completion(&stray, {}, ec);
        EXPECT_FALSE(ec);
        pool.join(); // waits for the counted operation
        EXPECT_EQ(op.completed, 1);
    }
    EXPECT_EQ(op.destroyed, 0);
    EXPECT_TRUE(op.on_worker);
    EXPECT_EQ(op.result, iocp::errc::eof);
    EXPECT_EQ(stray.completed + stray.destroyed, 1) << "exactly once, whichever way";
}

// Many producers, random failures, shutdown racing them: every accepted item ran or was
// abandoned exactly once, every refused one was destroyed unrun, nobody hung.
TEST(thread_pool_fault_test, stress_posts_and_shutdown_with_random_post_failures) {
    const int rounds = iocp_test::scaled(20, 4);
    for (int round = 0; round < rounds; ++round) {
        ledger l;
        std::atomic<int> refused{0};
        std::atomic<int> accepted{0};
        {
            iocp::thread_pool pool(sleepy(3));
            std::atomic<bool> go{true};
            std::thread chaos([&] {
                // Bursts of failures, on and off.
                while (go.load()) {
                    fi::port_post_failures.store(64);
                    std::this_thread::sleep_for(100us);
                }
                fi::port_post_failures.store(0);
            });
            std::vector<std::thread> producers;
            for (int p = 0; p < 3; ++p)
                producers.emplace_back([&] {
                    for (int i = 0; i < 300; ++i) {
                        std::error_code ec;
                        pool.post(tracked(l), ec);
                        if (ec)
                            ++refused;
                        else
                            ++accepted;
                    }
                });
            std::this_thread::sleep_for(1ms);
            if (round % 2 == 0)
                pool.stop();
            else
                pool.join();
            for (auto& t : producers)
                t.join();
            go = false;
            chaos.join();
        }
        ASSERT_EQ(l.ran + l.abandoned, accepted + refused) << "round " << round;
        ASSERT_GE(l.abandoned.load(), refused.load());
    }
}
