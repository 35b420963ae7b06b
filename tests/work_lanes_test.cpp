#include "iocp/detail/pool/work_lanes.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <random>
#include <thread>
#include <vector>

#include "support/work_items.hpp"

// The pool's lanes alone: a lane per posting thread, each thread's items in its order, every
// item handed over once with more producer threads than lanes, and restrictions that also bind
// the lanes made after them (run under TSan in CI).

namespace {

using iocp::detail::work_item;
using iocp::detail::work_lanes;

using iocp_test::items;
using iocp_test::pop_all;

} // namespace

TEST(work_lanes_test, one_threads_items_come_out_in_order_through_its_lanes_overflow) {
    work_lanes q(4, 2); // a lane holds 4: most of these overflow
    items it(100);
    for (std::size_t i = 0; i < 100; ++i)
        ASSERT_TRUE(q.push(it.at(i), false));
    EXPECT_TRUE(q.maybe_nonempty());
    EXPECT_EQ(q.pushed(), 100u);
    std::vector<std::size_t> seen;
    pop_all(q, it, 7, seen);
    ASSERT_EQ(seen.size(), 100u);
    for (std::size_t i = 0; i < seen.size(); ++i)
        EXPECT_EQ(seen[i], i);
    EXPECT_FALSE(q.maybe_nonempty());
}

// Each of 2 * lane_count threads posts a run of items (so lanes are made by their first post and
// shared once threads outnumber them); a consumer then finds them all, each thread's in order,
// and takes the lanes in turn rather than draining one before looking at the next.
TEST(work_lanes_test, every_threads_items_are_found_in_its_order_lanes_taken_in_turn) {
    constexpr std::size_t threads = 2 * work_lanes::lane_count;
    constexpr std::size_t per_thread = 50;
    work_lanes q(1024);
    items it(threads * per_thread);
    std::vector<std::size_t> lane_of(threads);
    std::vector<std::thread> producers;
    for (std::size_t t = 0; t < threads; ++t)
        producers.emplace_back([&, t] {
            lane_of[t] = work_lanes::lane_of_this_thread();
            for (std::size_t i = 0; i < per_thread; ++i)
                ASSERT_TRUE(q.push(it.at(t * per_thread + i), false));
        });
    for (auto& p : producers)
        p.join();
    EXPECT_TRUE(q.maybe_nonempty());
    EXPECT_EQ(q.pushed(), threads * per_thread);

    std::vector<long> last(threads, -1);
    std::vector<std::size_t> batch_lanes;
    std::size_t seen = 0;
    for (;;) {
        const work_lanes::pop_result r = q.pop(10);
        if (r.count == 0)
            break;
        std::size_t lane = work_lanes::lane_count;
        for (work_item* w = r.head; w != nullptr; w = w->next, ++seen) {
            const std::size_t t = it.index(w) / per_thread;
            EXPECT_LT(last[t], static_cast<long>(it.index(w))) << "thread " << t;
            last[t] = static_cast<long>(it.index(w));
            if (lane == work_lanes::lane_count)
                lane = lane_of[t];
            EXPECT_EQ(lane_of[t], lane) << "a batch comes from one lane";
        }
        batch_lanes.push_back(lane);
    }
    EXPECT_EQ(seen, threads * per_thread);
    // 16 threads made consecutive numbers: every lane holds two threads' 100 items, and the
    // first lane_count batches (10 items each) come from lane_count different lanes.
    ASSERT_GE(batch_lanes.size(), work_lanes::lane_count);
    std::vector<std::size_t> first(batch_lanes.begin(),
                                   batch_lanes.begin() + work_lanes::lane_count);
    std::sort(first.begin(), first.end());
    EXPECT_EQ(std::unique(first.begin(), first.end()), first.end()) << "a lane was taken twice";
    EXPECT_FALSE(q.maybe_nonempty());
}

TEST(work_lanes_test, restrictions_bind_lanes_made_after_them) {
    work_lanes q(16);
    items it(8);
    ASSERT_TRUE(q.push(it.at(0), false)); // this thread's lane exists
    q.restrict(work_lanes::access::privileged_only);
    // New threads map to other lanes (made now, after the restriction).
    for (std::size_t i = 0; i < work_lanes::lane_count; ++i) {
        std::thread([&] { EXPECT_FALSE(q.push(it.at(1), false)); }).join();
    }
    std::thread([&] { EXPECT_TRUE(q.push(it.at(2), true)); }).join();
    EXPECT_FALSE(q.push(it.at(3), false));
    q.restrict(work_lanes::access::closed);
    for (std::size_t i = 0; i < work_lanes::lane_count; ++i) {
        std::thread([&] { EXPECT_FALSE(q.push(it.at(4), true)); }).join();
    }
    EXPECT_FALSE(q.drained());
    std::vector<std::size_t> seen;
    pop_all(q, it, 16, seen);
    std::sort(seen.begin(), seen.end());
    EXPECT_EQ(seen, (std::vector<std::size_t>{0, 2}));
    EXPECT_TRUE(q.drained());
    EXPECT_EQ(q.pushed(), 2u);
}

// More producer threads than lanes and several consumers at random pace on tiny pages, with a
// close at a random moment (which new threads' first posts race, making lanes as it runs): every
// accepted item is popped exactly once, no refused one, each producer's in its order.
TEST(work_lanes_test, stress_each_item_once_while_lanes_are_made_and_closed) {
    constexpr int producers = static_cast<int>(work_lanes::lane_count) + 3;
    constexpr int consumers = 3;
    constexpr std::size_t per_producer = 8000;
    for (int round = 0; round < 4; ++round) {
        work_lanes q(4, 2);
        items it(producers * per_producer);
        std::vector<std::atomic<int>> taken(producers * per_producer);
        std::vector<std::atomic<bool>> accepted(producers * per_producer);
        std::atomic<int> producers_done{0};
        std::atomic<long> disorder{0};

        std::vector<std::thread> threads;
        for (int p = 0; p < producers; ++p)
            threads.emplace_back([&, p] {
                std::mt19937 rng(static_cast<unsigned>(p * 31 + round) + 1U);
                // Start at different moments, so that some lanes are made during the close.
                std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
                for (std::size_t i = 0; i < per_producer; ++i) {
                    const std::size_t id = static_cast<std::size_t>(p) * per_producer + i;
                    if (q.push(it.at(id), false))
                        accepted[id].store(true, std::memory_order_relaxed);
                    if (rng() % 256 == 0)
                        std::this_thread::yield();
                }
                producers_done.fetch_add(1);
            });
        for (int c = 0; c < consumers; ++c)
            threads.emplace_back([&, c] {
                std::mt19937 rng(static_cast<unsigned>(c) + 100U);
                std::vector<long> last(producers, -1);
                for (;;) {
                    const work_lanes::pop_result r = q.pop(1 + rng() % 16);
                    for (work_item* w = r.head; w != nullptr; w = w->next) {
                        const std::size_t id = it.index(w);
                        taken[id].fetch_add(1, std::memory_order_relaxed);
                        const std::size_t p = id / per_producer;
                        if (static_cast<long>(id) <= last[p])
                            disorder.fetch_add(1, std::memory_order_relaxed);
                        last[p] = static_cast<long>(id);
                    }
                    if (r.count == 0) {
                        if (producers_done.load() == producers && q.drained())
                            return;
                        std::this_thread::yield();
                    }
                }
            });
        threads.emplace_back([&] {
            std::mt19937 rng(static_cast<unsigned>(round) + 7U);
            std::this_thread::sleep_for(std::chrono::microseconds(rng() % 6000));
            q.restrict(work_lanes::access::closed);
        });
        for (auto& t : threads)
            t.join();
        std::size_t accepted_count = 0;
        for (std::size_t id = 0; id < taken.size(); ++id) {
            const bool was_accepted = accepted[id].load();
            accepted_count += was_accepted ? 1 : 0;
            ASSERT_EQ(taken[id].load(), was_accepted ? 1 : 0) << "item " << id;
        }
        EXPECT_EQ(q.pushed(), accepted_count);
        EXPECT_EQ(disorder.load(), 0);
    }
}
