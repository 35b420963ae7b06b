#include "iocp/thread_pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

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
    const std::uint64_t locked_before = iocp::detail::block_depot::instance().locked_calls();
    round();
    const long long during = allocations.load() - before;
    EXPECT_EQ(sum.load(), 3LL * n * (n - 1) / 2);
    // No lock on the post path: the blocks go round through the depot's lock-free slots.
    EXPECT_EQ(iocp::detail::block_depot::instance().locked_calls(), locked_before)
        << "the block depot fell back to its locked overflow in steady state";
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

// The depot alone: batches handed over by one thread and taken by another, past the number of
// lock-free slots (the overflow list takes the rest), none lost, none taken twice.
TEST(thread_pool_alloc_test, block_depot_hands_every_batch_over_once_slots_and_overflow) {
    using namespace iocp::detail;
    block_depot& depot = block_depot::instance();
    // Empty the depot first (other tests' threads left batches there); they go back at the end.
    std::vector<block_batch> parked;
    for (block_batch b = depot.take(); b.head != nullptr; b = depot.take())
        parked.push_back(b);
    constexpr std::size_t batches = block_depot_slots + 5;
    constexpr std::size_t per_batch = 3;
    alignas(std::max_align_t) static unsigned char storage[batches][per_batch][work_item_block];
    const std::uint64_t locked_before = depot.locked_calls();
    for (std::size_t b = 0; b < batches; ++b) {
        block_batch batch;
        for (std::size_t i = 0; i < per_batch; ++i) {
            batch.head = ::new (storage[b][i]) free_block{batch.head};
        }
        batch.count = per_batch;
        depot.give(batch);
    }
    EXPECT_EQ(depot.locked_calls() - locked_before, 5u) << "only the batches past the slots lock";
    std::size_t taken = 0;
    std::size_t blocks_seen = 0;
    while (true) {
        block_batch batch = depot.take();
        if (batch.head == nullptr)
            break;
        ++taken;
        std::size_t n = 0;
        for (free_block* f = batch.head; f != nullptr; f = f->next)
            ++n;
        EXPECT_EQ(n, batch.count);
        blocks_seen += n;
    }
    EXPECT_EQ(taken, batches);
    EXPECT_EQ(blocks_seen, batches * per_batch);
    for (const block_batch& b : parked)
        depot.give(b);
}
