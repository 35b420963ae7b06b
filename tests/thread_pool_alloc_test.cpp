#include "iocp/thread_pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

// Counts every allocation of this program (a separate test program for that reason), so that
// the tests can show that posting small callables allocates nothing once the pool is warm.
#include "support/count_allocations.hpp"

namespace {
std::atomic<long long>& allocations = iocp_test::allocations;
}

TEST(thread_pool_alloc_test, steady_state_posting_of_small_callables_allocates_nothing) {
    iocp::thread_pool pool(2);
    std::atomic<long long> sum{0};
    const int n = 20000;
    // Steady state: bursts of 200 posts, each drained before the next, so that how many items
    // are in flight at once (and so how many blocks exist) does not depend on scheduling.
    auto round = [&] {
        for (int i = 0; i < n; ++i) {
            long long value = i;
            pool.post([&sum, value] { sum.fetch_add(value, std::memory_order_relaxed); });
            if (i % 200 == 199)
                pool.wait();
        }
        pool.wait();
    };
    round(); // warm-up: the block caches fill
    round();
    const long long before = allocations.load();
    round();
    const long long during = allocations.load() - before;
    EXPECT_EQ(sum.load(), 3LL * n * (n - 1) / 2);
    // Recycled blocks move between the producer and the workers in batches of 64; a few
    // fresh ones may still be needed while those batches settle, but nothing per item.
    EXPECT_LE(during, n / 100) << during << " allocations for " << n << " posts";
}

TEST(thread_pool_alloc_test, large_callables_are_boxed_and_still_run) {
    iocp::thread_pool pool(1);
    struct big {
        char payload[512] = {};
        std::atomic<int>* ran;
        void operator()() const { ++*ran; }
    };
    std::atomic<int> ran{0};
    const long long before = allocations.load();
    for (int i = 0; i < 10; ++i)
        pool.post(big{{}, &ran});
    pool.wait();
    EXPECT_EQ(ran, 10);
    EXPECT_GE(allocations.load() - before, 10) << "a callable too big for a block is boxed";
}
