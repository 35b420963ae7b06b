// detail::outstanding_work alone: the pool's accounting of unfinished work items and
// operations, and (under TSan) that a wait never returns while work accepted before it is
// unfinished, and never sleeps through the last finish.
#include "iocp/detail/pool/outstanding_work.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

using iocp::detail::outstanding_work;

TEST(outstanding_work_test, idle_when_every_accepted_item_finished_in_any_slot) {
    outstanding_work w(3);
    std::uint64_t pushed = 0;
    auto accepted = [&] { return pushed; };
    EXPECT_TRUE(w.idle(accepted));
    pushed = 5;
    EXPECT_FALSE(w.idle(accepted));
    w.finish_items(0, 2);
    w.finish_items(2, 2);
    EXPECT_FALSE(w.idle(accepted));
    w.finish_items(1, 1);
    EXPECT_TRUE(w.idle(accepted));
}

TEST(outstanding_work_test, operations_count_only_in_the_wait_with_io) {
    outstanding_work w(1);
    auto none = [] { return std::uint64_t{0}; };
    w.operation_started();
    EXPECT_TRUE(w.idle(none));
    EXPECT_FALSE(w.idle_with_io(none));
    w.operation_finished();
    EXPECT_TRUE(w.idle_with_io(none));
    EXPECT_EQ(w.operations_started(), 1u);
    EXPECT_EQ(w.operations_finished(), 1u);
}

TEST(outstanding_work_test, a_wait_returns_when_the_last_item_finishes_elsewhere) {
    outstanding_work w(1);
    std::atomic<std::uint64_t> pushed{1};
    auto accepted = [&] { return pushed.load(); };
    std::atomic<bool> returned{false};
    std::thread waiter([&] {
        w.wait_until_idle(false, accepted);
        returned = true;
    });
    std::this_thread::yield();
    EXPECT_FALSE(returned.load()); // an item is unfinished: it cannot have returned
    w.finish_items(0, 1);
    waiter.join(); // hangs (and the test times out) if the finish went unnoticed
    EXPECT_TRUE(returned.load());
}

// Producers accept items and start operations, workers finish them; waiters, over and over,
// note what was accepted and started, wait, and check that at least that much finished (the
// test's own counters, bumped before each finish). The waits must also return at all: a
// finish that no waiter noticed hangs the test.
TEST(outstanding_work_test, stress_waits_never_return_early_nor_sleep_through_the_last_finish) {
    constexpr int workers = 2;
    constexpr int per_producer = 20000;
    outstanding_work w(workers);
    std::atomic<std::uint64_t> pushed{0};
    std::atomic<long> queued{0}; // accepted, not yet taken by a worker
    std::atomic<long> io_pending{0};
    std::atomic<std::uint64_t> done_items{0};
    std::atomic<std::uint64_t> done_ops{0};
    std::atomic<bool> producing{true};
    std::atomic<int> early{0};
    auto accepted = [&] { return pushed.load(std::memory_order_acquire); };
    std::vector<std::thread> threads;
    threads.emplace_back([&] {
        for (int i = 0; i < per_producer; ++i) {
            pushed.fetch_add(1, std::memory_order_release); // accept ...
            queued.fetch_add(1);                            // ... then hand over
            if (i % 4 == 0) {
                w.operation_started();
                io_pending.fetch_add(1);
            }
        }
        producing = false;
    });
    for (int k = 0; k < workers; ++k) {
        threads.emplace_back([&, k] {
            for (;;) {
                long n = queued.load();
                bool took = false;
                while (n > 0 && !(took = queued.compare_exchange_weak(n, n - 1))) {
                }
                long m = io_pending.load();
                bool op = false;
                while (m > 0 && !(op = io_pending.compare_exchange_weak(m, m - 1))) {
                }
                if (took) {
                    done_items.fetch_add(1);
                    w.finish_items(static_cast<std::size_t>(k), 1);
                }
                if (op) {
                    done_ops.fetch_add(1);
                    w.operation_finished();
                }
                if (!took && !op && !producing.load() && queued.load() == 0 &&
                    io_pending.load() == 0)
                    return;
            }
        });
    }
    for (int k = 0; k < 2; ++k) {
        threads.emplace_back([&, k] {
            while (producing.load()) {
                const std::uint64_t items = pushed.load();
                const std::uint64_t ops = w.operations_started();
                w.wait_until_idle(k == 1, accepted);
                if (done_items.load() < items || (k == 1 && done_ops.load() < ops))
                    early.fetch_add(1);
            }
        });
    }
    for (auto& t : threads)
        t.join();
    w.wait_until_idle(true, accepted);
    EXPECT_EQ(early.load(), 0) << "a wait returned while accepted work was unfinished";
    EXPECT_EQ(done_items.load(), std::uint64_t{per_producer});
    EXPECT_EQ(done_ops.load(), w.operations_started());
}
