// detail::held_items alone: the items a worker claimed but has not started (its range) and its
// coroutine continuation (`next`), taken by the owner or by idle workers; and (under TSan) that
// every item has exactly one taker when owners and thieves race.
#include "iocp/detail/pool/held_items.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <thread>
#include <vector>

using iocp::detail::held_items;
using iocp::detail::work_item;

namespace {

// Items are only markers here: nothing runs them.
std::vector<work_item> make_items(std::size_t n) { return std::vector<work_item>(n); }

TEST(held_items_test, the_owner_takes_its_range_in_order_then_nothing) {
    held_items held(2);
    auto items = make_items(5);
    work_item* ptrs[5] = {&items[0], &items[1], &items[2], &items[3], &items[4]};
    EXPECT_FALSE(held.any());
    held.publish(0, ptrs, 5);
    EXPECT_TRUE(held.any());
    for (std::size_t i = 0; i < 5; ++i)
        EXPECT_EQ(held.take_own(0), &items[i]);
    EXPECT_EQ(held.take_own(0), nullptr);
    EXPECT_FALSE(held.any());
    // Positions only grow: a second range after the first is empty works the same.
    held.publish(0, ptrs, 2);
    EXPECT_EQ(held.take_own(0), &items[0]);
    EXPECT_EQ(held.take_own(0), &items[1]);
    EXPECT_EQ(held.take_own(0), nullptr);
}

TEST(held_items_test, a_thief_takes_the_whole_rest_and_the_owner_then_nothing) {
    held_items held(3);
    auto items = make_items(4);
    work_item* ptrs[4] = {&items[0], &items[1], &items[2], &items[3]};
    held.publish(1, ptrs, 4);
    EXPECT_EQ(held.take_own(1), &items[0]);
    work_item* out[held_items::slots];
    // Worker 0 looks at worker 1 first.
    ASSERT_EQ(held.steal(0, out), 3u);
    EXPECT_EQ(out[0], &items[1]);
    EXPECT_EQ(out[1], &items[2]);
    EXPECT_EQ(out[2], &items[3]);
    EXPECT_EQ(held.take_own(1), nullptr);
    EXPECT_EQ(held.steal(2, out), 0u);
    EXPECT_FALSE(held.any());
}

TEST(held_items_test, a_thief_never_takes_its_own_items) {
    held_items held(2);
    auto items = make_items(2);
    work_item* ptrs[2] = {&items[0], &items[1]};
    held.publish(0, ptrs, 2);
    work_item* out[held_items::slots];
    EXPECT_EQ(held.steal(0, out), 0u);
    EXPECT_EQ(held.steal(1, out), 2u);
}

TEST(held_items_test, one_worker_has_nobody_to_steal_from) {
    held_items held(1);
    auto items = make_items(1);
    work_item* ptrs[1] = {&items[0]};
    held.publish(0, ptrs, 1);
    work_item* out[held_items::slots];
    EXPECT_EQ(held.steal(0, out), 0u);
    EXPECT_EQ(held.take_own(0), &items[0]);
}

TEST(held_items_test, next_is_taken_once_and_counted_as_accepted) {
    held_items held(2);
    auto items = make_items(2);
    EXPECT_TRUE(held.next_available(0));
    EXPECT_EQ(held.next_accepted(), 0u);
    held.put_next(0, &items[0]);
    EXPECT_EQ(held.next_accepted(), 1u);
    EXPECT_TRUE(held.any());
    EXPECT_FALSE(held.next_available(0)); // occupied
    EXPECT_TRUE(held.next_available(1));  // another worker's slot is its own
    EXPECT_EQ(held.take_next(0), &items[0]);
    EXPECT_EQ(held.take_next(0), nullptr);
    EXPECT_FALSE(held.any());
    // A thief takes a continuation its owner has not come back for (after any range).
    held.put_next(0, &items[1]);
    work_item* out[held_items::slots];
    ASSERT_EQ(held.steal(1, out), 1u);
    EXPECT_EQ(out[0], &items[1]);
    EXPECT_EQ(held.take_next(0), nullptr);
    EXPECT_EQ(held.next_accepted(), 2u);
}

TEST(held_items_test, the_streak_bounds_continuations_until_reset) {
    held_items held(1);
    auto items = make_items(1);
    for (unsigned i = 0; i < iocp::detail::continuation_streak; ++i) {
        ASSERT_TRUE(held.next_available(0)) << i;
        held.put_next(0, &items[0]);
        ASSERT_EQ(held.take_next(0), &items[0]);
    }
    EXPECT_FALSE(held.next_available(0)); // the queue's turn
    held.reset_streak(0);
    EXPECT_TRUE(held.next_available(0));
}

TEST(held_items_test, release_next_empties_a_slot_for_shutdown) {
    held_items held(2);
    auto items = make_items(1);
    held.put_next(1, &items[0]);
    EXPECT_EQ(held.release_next(0), nullptr);
    EXPECT_EQ(held.release_next(1), &items[0]);
    EXPECT_FALSE(held.any());
}

// steal_stalled, a busy worker's look: it takes a range only when a previous look saw the same
// `begin` (its owner started none of its items since), and then the whole rest.
TEST(held_items_test, a_busy_look_takes_a_range_only_once_its_owner_has_stalled) {
    held_items held(2);
    auto items = make_items(4);
    work_item* ptrs[4] = {&items[0], &items[1], &items[2], &items[3]};
    held.publish(1, ptrs, 4);
    work_item* out[held_items::slots];
    EXPECT_EQ(held.steal_stalled(0, out), 0u); // the first look only marks
    ASSERT_EQ(held.steal_stalled(0, out), 4u); // no progress since: all of it
    for (std::size_t i = 0; i < 4; ++i)
        EXPECT_EQ(out[i], &items[i]);
    EXPECT_EQ(held.take_own(1), nullptr);
    EXPECT_FALSE(held.any());
    EXPECT_EQ(held.steal_stalled(0, out), 0u);
}

TEST(held_items_test, a_busy_look_leaves_an_owner_that_makes_progress_alone) {
    held_items held(3);
    auto items = make_items(4);
    work_item* ptrs[4] = {&items[0], &items[1], &items[2], &items[3]};
    held.publish(1, ptrs, 4);
    work_item* out[held_items::slots];
    for (std::size_t i = 0; i < 3; ++i) {
        // Looks from either other worker: each marks a `begin` the owner then moves on from.
        EXPECT_EQ(held.steal_stalled(i % 2 == 0 ? 0 : 2, out), 0u) << i;
        EXPECT_EQ(held.take_own(1), &items[i]);
    }
    // Stalled on its last item: the look after the one that marked it, by any worker, takes it.
    EXPECT_EQ(held.steal_stalled(2, out), 0u);
    ASSERT_EQ(held.steal_stalled(0, out), 1u);
    EXPECT_EQ(out[0], &items[3]);
    EXPECT_EQ(held.take_own(1), nullptr);
}

TEST(held_items_test, a_new_range_at_a_marked_position_is_not_taken_as_stalled) {
    held_items held(2);
    auto items = make_items(3);
    work_item* ptrs[3] = {&items[0], &items[1], &items[2]};
    work_item* out[held_items::slots];
    held.publish(1, ptrs, 1);
    EXPECT_EQ(held.steal_stalled(0, out), 0u); // marks position 0
    EXPECT_EQ(held.take_own(1), &items[0]);
    // The next range begins at position 1, which no look has seen yet.
    held.publish(1, ptrs + 1, 2);
    EXPECT_EQ(held.steal_stalled(0, out), 0u);
    EXPECT_EQ(held.take_own(1), &items[1]);
    EXPECT_EQ(held.take_own(1), &items[2]);
}

TEST(held_items_test, a_busy_look_takes_a_continuation_its_owner_left_since_the_last_look) {
    held_items held(2);
    auto items = make_items(2);
    work_item* out[held_items::slots];
    held.put_next(1, &items[0]);
    EXPECT_EQ(held.steal_stalled(0, out), 0u);
    EXPECT_EQ(held.take_next(1), &items[0]); // the owner came back for it
    held.put_next(1, &items[1]);
    EXPECT_EQ(held.steal_stalled(0, out), 0u); // another continuation: marked afresh
    ASSERT_EQ(held.steal_stalled(0, out), 1u);
    EXPECT_EQ(out[0], &items[1]);
    EXPECT_EQ(held.take_next(1), nullptr);
    EXPECT_FALSE(held.any());
}

// Owners publish batches of random size and put continuations while thieves steal at random
// moments: every item is taken exactly once (counted per item), none is lost or doubled. Run
// under TSan in CI.
TEST(held_items_test, stress_every_item_has_exactly_one_taker) {
    constexpr std::size_t workers = 3;
    constexpr std::size_t rounds = 4000;
    held_items held(workers);
    // Each owner's items: a fresh block per round, so that a double take shows as a count of 2.
    constexpr std::size_t per_round = held_items::slots + 1; // a full range and a continuation
    std::vector<work_item> items(workers * rounds * per_round);
    std::unique_ptr<std::atomic<int>[]> taken(new std::atomic<int>[items.size()]);
    for (std::size_t i = 0; i < items.size(); ++i)
        taken[i].store(0);
    auto take = [&](work_item* item) {
        const auto index = static_cast<std::size_t>(item - items.data());
        taken[index].fetch_add(1, std::memory_order_relaxed);
    };
    std::atomic<std::size_t> owners_left{workers};
    std::vector<std::thread> threads;
    for (std::size_t w = 0; w < workers; ++w) {
        threads.emplace_back([&, w] {
            std::mt19937 rng(static_cast<unsigned>(w) + 1);
            work_item* out[held_items::slots];
            for (std::size_t r = 0; r < rounds; ++r) {
                work_item* base = &items[(w * rounds + r) * per_round];
                const std::size_t n = 1 + rng() % held_items::slots;
                work_item* batch[held_items::slots];
                for (std::size_t i = 0; i < n; ++i)
                    batch[i] = base + i;
                held.publish(w, batch, n);
                if (rng() % 2 == 0 && held.next_available(w))
                    held.put_next(w, base + held_items::slots);
                else
                    take(base + held_items::slots); // not put: counted here, once
                // The owner takes what is left, as run_items does, and steals now and then as
                // an idle worker does.
                for (;;) {
                    work_item* item = held.take_next(w);
                    if (item == nullptr)
                        item = held.take_own(w);
                    if (item == nullptr)
                        break;
                    take(item);
                    if (rng() % 8 == 0)
                        std::this_thread::yield();
                }
                if (rng() % 4 == 0)
                    for (std::size_t i = 0, got = held.steal(w, out); i < got; ++i)
                        take(out[i]);
                if (rng() % 4 == 0) // a busy worker's look
                    for (std::size_t i = 0, got = held.steal_stalled(w, out); i < got; ++i)
                        take(out[i]);
                if (r % 64 == 0)
                    held.reset_streak(w);
                for (std::size_t i = n; i < held_items::slots; ++i)
                    take(base + i); // never published: counted here, once
            }
            owners_left.fetch_sub(1);
        });
    }
    // A pure thief, as an idle worker with no range of its own would be (index 0's view), that
    // also looks as a busy worker does.
    threads.emplace_back([&] {
        work_item* out[held_items::slots];
        for (unsigned look = 0; owners_left.load() != 0; ++look) {
            const std::size_t got = look % 2 == 0 ? held.steal(0, out) : held.steal_stalled(0, out);
            for (std::size_t i = 0; i < got; ++i)
                take(out[i]);
        }
    });
    for (auto& t : threads)
        t.join();
    // What the last rounds left (a continuation put after the owner's last look, or a range
    // published and then stolen meanwhile is already counted): take the rest.
    work_item* out[held_items::slots];
    for (std::size_t w = 0; w < workers; ++w) {
        while (work_item* item = held.take_own(w))
            take(item);
        if (work_item* item = held.release_next(w))
            take(item);
        for (std::size_t i = 0, got = held.steal(w, out); i < got; ++i)
            take(out[i]);
    }
    EXPECT_FALSE(held.any());
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < items.size(); ++i)
        if (taken[i].load() != 1)
            ++wrong;
    EXPECT_EQ(wrong, 0u) << "items taken other than exactly once";
}

} // namespace
