#include "iocp/detail/work_queue.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "support/work_items.hpp"

// The pool's FIFO alone: order through many pages and the overflow list, memory that follows the
// backlog, and exactly-once hand-off with many producers and consumers while pages turn over and
// the queue closes (run under TSan in CI).

namespace {

using iocp::detail::work_item;
using iocp::detail::work_queue;

using iocp_test::items;
using iocp_test::pop_all;

} // namespace

TEST(work_queue_test, keeps_fifo_order_through_pages_and_the_overflow) {
    // (capacity, slots per segment): one entry, several small ones, the default's shape.
    const std::pair<std::size_t, std::size_t> shapes[] = {{2, 2},  {4, 4},       {8, 2},
                                                          {64, 8}, {1024, 1024}, {4096, 1024}};
    for (const auto& shape : shapes) {
        const std::size_t capacity = shape.first;
        work_queue q(capacity, shape.second);
        const std::size_t n = 3 * capacity + 7; // more than fits: the rest overflows
        items it(n);
        for (std::size_t i = 0; i < n; ++i)
            ASSERT_TRUE(q.push(it.at(i), false));
        EXPECT_EQ(q.pushed(), n);
        std::vector<std::size_t> seen;
        pop_all(q, it, 5, seen);
        ASSERT_EQ(seen.size(), n) << "capacity " << capacity;
        for (std::size_t i = 0; i < n; ++i)
            ASSERT_EQ(seen[i], i) << "capacity " << capacity;
        EXPECT_FALSE(q.maybe_nonempty());
    }
}

TEST(work_queue_test, interleaved_pushes_and_pops_stay_in_order) {
    std::mt19937 rng(7);
    work_queue q(64); // one page of 64: turns over every 64 items
    const std::size_t n = 20000;
    items it(n);
    std::vector<std::size_t> seen;
    std::size_t pushed = 0;
    while (seen.size() < n) {
        const std::size_t burst = rng() % 150; // sometimes past the capacity: overflow
        for (std::size_t i = 0; i < burst && pushed < n; ++i)
            ASSERT_TRUE(q.push(it.at(pushed++), false));
        const std::size_t pops = rng() % 10;
        for (std::size_t i = 0; i < pops; ++i) {
            const work_queue::pop_result r = q.pop(1 + rng() % 20);
            for (work_item* w = r.head; w != nullptr; w = w->next)
                seen.push_back(it.index(w));
        }
        if (pushed == n)
            pop_all(q, it, 16, seen);
    }
    for (std::size_t i = 0; i < n; ++i)
        ASSERT_EQ(seen[i], i);
}

TEST(work_queue_test, memory_follows_the_backlog_not_the_posts) {
    work_queue q(work_queue::max_capacity);
    const std::size_t n = 200000; // ~200 pages of positions
    items it(100);
    std::vector<std::size_t> seen;
    for (std::size_t i = 0; i < n; ++i) {
        ASSERT_TRUE(q.push(it.at(i % 100), false));
        if (i % 100 == 99) { // a backlog of 100 at most
            seen.clear();
            pop_all(q, it, 16, seen);
            ASSERT_EQ(seen.size(), 100u);
        }
    }
    // The page being filled, the one being emptied, and one in hand: never one per page.
    EXPECT_LE(q.segments_allocated(), 4u);
}

TEST(work_queue_test, access_restrictions_refuse_the_right_pushers) {
    work_queue q(16);
    items it(3);
    ASSERT_TRUE(q.push(it.at(0), false));
    q.restrict(work_queue::access::privileged_only);
    EXPECT_FALSE(q.push(it.at(1), false));
    EXPECT_TRUE(q.push(it.at(1), true));
    q.restrict(work_queue::access::closed);
    EXPECT_FALSE(q.push(it.at(2), true));
    EXPECT_FALSE(q.drained());
    std::vector<std::size_t> seen;
    pop_all(q, it, 16, seen);
    EXPECT_EQ(seen, (std::vector<std::size_t>{0, 1}));
    EXPECT_TRUE(q.drained());
    EXPECT_EQ(q.pushed(), 2u);
}

// Producers and consumers at random pace on small pages (so that pages are installed, retired
// and reused all the time, and bursts overflow), then a close at a random moment: every
// accepted item is popped exactly once, none that was refused, and each consumer sees each
// producer's items in the order they were pushed.
TEST(work_queue_test, many_producers_and_consumers_hand_over_each_item_once) {
    constexpr int producers = 3;
    constexpr int consumers = 3;
    constexpr std::size_t per_producer = 40000;
    // (capacity, slots per segment): one entry, several small ones, the default's shape.
    const std::pair<std::size_t, std::size_t> shapes[] = {
        {2, 2}, {4, 2}, {8, 2}, {64, 4}, {4096, 1024}};
    for (const auto& shape : shapes) {
        const std::size_t capacity = shape.first;
        work_queue q(capacity, shape.second);
        items it(producers * per_producer);
        std::vector<std::atomic<int>> taken(producers * per_producer);
        std::vector<std::atomic<bool>> accepted(producers * per_producer);
        std::atomic<int> producers_done{0};
        std::atomic<long> disorder{0};
        std::atomic<bool> close_now{false};

        std::vector<std::thread> threads;
        for (int p = 0; p < producers; ++p)
            threads.emplace_back([&, p] {
                std::mt19937 rng(static_cast<unsigned>(p) + 1U);
                for (std::size_t i = 0; i < per_producer; ++i) {
                    const std::size_t id = static_cast<std::size_t>(p) * per_producer + i;
                    if (q.push(it.at(id), false))
                        accepted[id].store(true, std::memory_order_relaxed);
                    if (rng() % 512 == 0)
                        std::this_thread::yield();
                }
                producers_done.fetch_add(1);
            });
        for (int c = 0; c < consumers; ++c)
            threads.emplace_back([&, c] {
                std::mt19937 rng(static_cast<unsigned>(c) + 100U);
                std::vector<std::size_t> last(producers, 0);
                std::vector<bool> any(producers, false);
                for (;;) {
                    const work_queue::pop_result r = q.pop(1 + rng() % 32);
                    for (work_item* w = r.head; w != nullptr; w = w->next) {
                        const std::size_t id = it.index(w);
                        taken[id].fetch_add(1, std::memory_order_relaxed);
                        const std::size_t p = id / per_producer;
                        if (any[p] && id <= last[p])
                            disorder.fetch_add(1, std::memory_order_relaxed);
                        any[p] = true;
                        last[p] = id;
                    }
                    if (r.count == 0) {
                        if (producers_done.load() == producers && q.drained())
                            return;
                        std::this_thread::yield();
                    }
                }
            });
        threads.emplace_back([&] { // the close, at a random moment of the run
            std::mt19937 rng(static_cast<unsigned>(capacity));
            std::this_thread::sleep_for(std::chrono::microseconds(rng() % 20000));
            q.restrict(work_queue::access::closed);
            close_now.store(true);
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
        EXPECT_EQ(disorder.load(), 0) << "capacity " << capacity;
        EXPECT_TRUE(close_now.load());
    }
}

// Producers that fall behind (preempted between reading the producers' position and installing
// its page) must never bring back a page that was consumed meanwhile: that would block its
// directory entry for good, and every later push would take the overflow. After a stress on tiny
// pages (2 entries of 2 slots), a quiet round that fits in the queue must not overflow.
TEST(work_queue_test, no_page_is_left_blocking_its_entry_after_a_stress) {
    constexpr std::size_t capacity = 4;
    constexpr int producers = 4;
    constexpr std::size_t per_producer = 30000;
    work_queue q(capacity, 2); // two entries of two slots
    items it(producers * per_producer);
    std::atomic<int> producers_done{0};
    std::atomic<std::size_t> popped{0};
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p)
        threads.emplace_back([&, p] {
            std::mt19937 rng(static_cast<unsigned>(p) + 7U);
            for (std::size_t i = 0; i < per_producer; ++i) {
                ASSERT_TRUE(q.push(it.at(static_cast<std::size_t>(p) * per_producer + i), false));
                if (rng() % 64 == 0)
                    std::this_thread::yield();
            }
            producers_done.fetch_add(1);
        });
    for (int c = 0; c < 2; ++c)
        threads.emplace_back([&] {
            while (producers_done.load() != producers || !q.drained())
                popped.fetch_add(q.pop(3).count);
        });
    for (auto& t : threads)
        t.join();
    ASSERT_EQ(popped.load(), producers * per_producer);
    // A page is reused only once it is empty, so the queue surely holds capacity - S + 1 items
    // (S = 2 here); rounds of that many, from every start within a page, touch both entries.
    const std::uint64_t overflowed = q.overflowed();
    constexpr std::size_t fits = capacity - 2 + 1;
    items quiet(fits);
    for (int round = 0; round < 4; ++round) {
        for (std::size_t i = 0; i < fits; ++i)
            ASSERT_TRUE(q.push(quiet.at(i), false));
        std::vector<std::size_t> seen;
        pop_all(q, quiet, 16, seen);
        EXPECT_EQ(seen.size(), fits);
    }
    EXPECT_EQ(q.overflowed(), overflowed) << "a page blocks its entry: the queue overflows early";
}
