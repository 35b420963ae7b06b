#include "iocp/thread_pool.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <future>
#include <new>
#include <thread>
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

TEST(thread_pool_alloc_test, steady_state_submit_of_small_callables_allocates_nothing) {
    iocp::thread_pool pool(2);
    const int n = 20000;
    long long sum = 0;
    // As above: bursts of 200, each collected before the next. Each submit's shared state and
    // result slot come from the pool's recycled blocks (detail/block_allocator.hpp), as its
    // work item does; before, they were two heap allocations per submit.
    auto round = [&] {
        std::vector<iocp::future<long long>> futures;
        futures.reserve(200);
        for (int i = 0; i < n; ++i) {
            const long long value = i;
            futures.push_back(pool.submit([value] { return value; }));
            if (futures.size() == 200) {
                for (auto& f : futures)
                    sum += f.get();
                futures.clear();
            }
        }
        for (auto& f : futures)
            sum += f.get();
    };
    round(); // warm-up: the block caches fill
    round();
    const long long before = allocations.load();
    round();
    const long long during = allocations.load() - before;
    EXPECT_EQ(sum, 3LL * n * (n - 1) / 2);
    EXPECT_LE(during, n / 100) << during << " allocations for " << n << " submits";
}

TEST(thread_pool_alloc_test, submit_with_a_result_too_big_for_a_block_still_delivers_it) {
    iocp::thread_pool pool(2);
    struct big {
        char bytes[4096];
    };
    std::vector<iocp::future<big>> futures;
    for (int i = 0; i < 100; ++i)
        futures.push_back(pool.submit([i] {
            big b{};
            b.bytes[0] = static_cast<char>(i);
            b.bytes[sizeof b.bytes - 1] = static_cast<char>(i + 1);
            return b;
        }));
    for (int i = 0; i < 100; ++i) {
        const big b = futures[static_cast<std::size_t>(i)].get();
        EXPECT_EQ(b.bytes[0], static_cast<char>(i));
        EXPECT_EQ(b.bytes[sizeof b.bytes - 1], static_cast<char>(i + 1));
    }
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
// lock-free slots (the overflow list takes the rest), none lost, none taken twice, of every
// size a batch can have (a batch's blocks hold its descriptors: one in ten is one).
TEST(thread_pool_alloc_test, block_depot_hands_every_batch_over_once_slots_and_overflow) {
    using namespace iocp::detail;
    block_depot& depot = block_depot::instance();
    constexpr std::size_t max = block_depot::max_batch;
    // Empty the depot first (other tests' threads left batches there); they go back at the end.
    std::vector<std::vector<void*>> parked;
    for (;;) {
        std::vector<void*> b(max);
        b.resize(depot.take(b.data()));
        if (b.empty())
            break;
        parked.push_back(std::move(b));
    }
    constexpr std::size_t batches = block_depot_slots + 5;
    // Sizes 1, 2, ..., and the largest: groups end at every position of a descriptor.
    auto size_of = [](std::size_t b) { return b + 1 == batches ? max : b % max + 1; };
    std::size_t total = 0;
    for (std::size_t b = 0; b < batches; ++b)
        total += size_of(b);
    struct alignas(std::max_align_t) block {
        unsigned char bytes[work_item_block];
    };
    std::vector<block> storage(total);
    std::vector<int> seen(total, 0);
    const std::uint64_t locked_before = depot.locked_calls();
    std::thread giver([&] {
        std::size_t next = 0;
        for (std::size_t b = 0; b < batches; ++b) {
            std::vector<void*> blocks;
            for (std::size_t i = 0; i < size_of(b); ++i)
                blocks.push_back(&storage[next++]);
            depot.give(blocks.data(), blocks.size());
        }
    });
    giver.join();
    EXPECT_EQ(depot.locked_calls() - locked_before, 5u) << "only the batches past the slots lock";
    std::size_t taken = 0;
    std::vector<std::size_t> sizes;
    for (;;) {
        std::vector<void*> b(max);
        const std::size_t n = depot.take(b.data());
        if (n == 0)
            break;
        ++taken;
        sizes.push_back(n);
        for (std::size_t i = 0; i < n; ++i) {
            const auto index = static_cast<std::size_t>(static_cast<block*>(b[i]) - storage.data());
            ASSERT_LT(index, total);
            ++seen[index];
        }
    }
    EXPECT_EQ(taken, batches);
    for (std::size_t i = 0; i < total; ++i)
        EXPECT_EQ(seen[i], 1) << "block " << i;
    std::sort(sizes.begin(), sizes.end());
    std::vector<std::size_t> expected;
    for (std::size_t b = 0; b < batches; ++b)
        expected.push_back(size_of(b));
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(sizes, expected);
    for (const auto& b : parked)
        depot.give(b.data(), b.size());
}
