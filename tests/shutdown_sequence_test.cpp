// detail::shutdown_sequence alone, on a pool made of nothing but the parts it drives (the real
// queue, held items, accounting, phase, I/O registry, sentinels, backlog and port, with workers
// running the real worker_loop; no thread_pool): join runs what was queued, stop abandons it,
// pending I/O is cancelled and waited for before the workers leave, whatever no worker will run
// is abandoned exactly once, one call does the work while the others wait, and (under TSan)
// producers racing join() or stop() lose nothing.
#include "iocp/detail/pool/shutdown_sequence.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <random>
#include <system_error>
#include <thread>
#include <vector>

#include "iocp/operation.hpp"
#include "support/fake_pool.hpp"
#include "support/tracked.hpp"

namespace detail = iocp::detail;

namespace {

using iocp_test::fake_pool;
using iocp_test::ledger;
using iocp_test::tracked;
using iocp_test::wait_for;
using sequence = detail::shutdown_sequence<fake_pool>;
using phase = detail::shutdown_phase::phase;

// An operation that counts how it ended: completed (with the pool as owner, on a worker) or
// destroyed unrun. A started one (`in_flight`) reports itself finished either way, as the I/O
// layer's in-flight guard does.
struct counting_op final : iocp::operation {
    counting_op() noexcept : operation(&on_complete) {}
    static void on_complete(void* owner, iocp::operation* self, const iocp::completion&) noexcept {
        auto* op = static_cast<counting_op*>(self);
        if (owner == nullptr) {
            op->destroyed.fetch_add(1);
        } else {
            op->completed.fetch_add(1);
            op->phase_seen = static_cast<fake_pool*>(owner)->phase_.current();
        }
        if (op->in_flight != nullptr)
            op->in_flight->work_.operation_finished();
    }
    std::atomic<int> completed{0};
    std::atomic<int> destroyed{0};
    phase phase_seen = phase::running;
    fake_pool* in_flight = nullptr;
};

// An I/O object with one pending operation: its cancel completes the operation (with no
// bytes), as cancelling a handle's I/O makes the kernel do.
struct pending_io : detail::io_object_hook {
    explicit pending_io(fake_pool& p) : pool(p) {
        cancel = &on_cancel;
        op.in_flight = &pool;
        pool.work_.operation_started();
        pool.io_objects_.add(*this);
    }
    pending_io(const pending_io&) = delete;
    pending_io& operator=(const pending_io&) = delete;
    ~pending_io() { pool.io_objects_.remove(*this); }
    static void on_cancel(detail::io_object_hook* self) noexcept {
        auto* io = static_cast<pending_io*>(self);
        io->cancels.fetch_add(1);
        io->phase_at_cancel = io->pool.phase_.current();
        std::error_code ec;
        io->pool.port_.post(&io->op, nullptr, 0, ec);
        EXPECT_FALSE(ec);
    }
    fake_pool& pool;
    counting_op op;
    std::atomic<int> cancels{0};
    phase phase_at_cancel = phase::running;
};

bool all_joined(const fake_pool& pool) {
    return std::none_of(pool.workers_.begin(), pool.workers_.end(),
                        [](const std::thread& t) { return t.joinable(); });
}

} // namespace

TEST(shutdown_sequence_test, join_runs_every_queued_item_then_joins_the_workers) {
    fake_pool pool;
    ledger l;
    constexpr int n = 500;
    for (int i = 0; i < n; ++i)
        pool.enqueue(detail::make_work_item(tracked(l)));
    pool.timers_.pending = 2;
    pool.start_workers();
    EXPECT_EQ(sequence(pool).run(false), 2u); // the two pending timers, nothing queued
    EXPECT_EQ(l.ran.load(), n);
    EXPECT_EQ(l.abandoned.load(), 0);
    EXPECT_TRUE(all_joined(pool));
    EXPECT_TRUE(pool.phase_.at_least(phase::joined));
    EXPECT_FALSE(pool.phase_.abandoning());
    EXPECT_TRUE(pool.idle());
    // The timers were shut down once, by the thread marked as shutdown's, and the mark is gone.
    EXPECT_EQ(pool.timers_.shutdowns, 1);
    EXPECT_TRUE(pool.timers_.marked_as_owner);
    EXPECT_EQ(pool.shutdown_thread_.load(), std::thread::id());
    // The port is closed: nothing more can be posted to it.
    std::error_code ec;
    pool.port_.post(nullptr, &pool.wake_tag_, 0, ec);
    EXPECT_TRUE(ec);
    // After shutdown nothing is accepted.
    detail::work_item* late = detail::make_work_item(tracked(l));
    EXPECT_FALSE(pool.try_enqueue(late));
    EXPECT_FALSE(pool.try_enqueue(late, true));
    EXPECT_FALSE(detail::abandon_work_item(late));
    EXPECT_EQ(l.abandoned.load(), 1);
}

TEST(shutdown_sequence_test, stop_abandons_what_no_worker_started_and_counts_it) {
    fake_pool pool;
    std::atomic<int> inside{0};
    std::atomic<bool> release{false};
    for (int i = 0; i < 2; ++i) // one gate per worker: both are busy until released
        pool.enqueue(detail::make_work_item([&] {
            inside.fetch_add(1);
            wait_for([&] { return release.load(); });
        }));
    pool.start_workers();
    wait_for([&] { return inside.load() == 2; });
    ledger l;
    constexpr int n = 300;
    for (int i = 0; i < n; ++i)
        pool.enqueue(detail::make_work_item(tracked(l)));
    std::size_t returned = 0;
    std::thread stopper([&] { returned = sequence(pool).run(true); });
    wait_for([&] { return pool.phase_.abandoning(); });
    release.store(true);
    stopper.join();
    // The items were queued behind the gates, and stop() began before a gate returned: the
    // workers popped every one of them under stop, and abandoned each once.
    EXPECT_EQ(l.ran.load(), 0);
    EXPECT_EQ(l.abandoned.load(), n);
    EXPECT_EQ(returned, static_cast<std::size_t>(n));
    EXPECT_TRUE(all_joined(pool));
    EXPECT_TRUE(pool.idle());
}

TEST(shutdown_sequence_test, without_workers_everything_left_is_abandoned_exactly_once) {
    // A failed constructor's shutdown: no worker ever ran.
    fake_pool pool;
    ledger l;
    constexpr int n = 40;
    for (int i = 0; i < n; ++i)
        pool.enqueue(detail::make_work_item(tracked(l)));
    pool.held_.put_next(1, detail::make_work_item(tracked(l))); // a continuation left in a slot
    counting_op on_port[2];
    counting_op in_backlog;
    for (auto& op : on_port)
        pool.port_.post(&op, nullptr, 0);
    ASSERT_TRUE(pool.backlog_.push(&in_backlog, iocp::completion{}));
    ASSERT_TRUE(pool.post_wakeup());
    pool.post_sentinel(pool.sentinels_[0]); // the pool's own packets: left alone, not destroyed
    EXPECT_EQ(sequence(pool).run(false), static_cast<std::size_t>(n + 1));
    EXPECT_EQ(l.ran.load(), 0);
    EXPECT_EQ(l.abandoned.load(), n + 1);
    for (auto& op : on_port) {
        EXPECT_EQ(op.destroyed.load(), 1);
        EXPECT_EQ(op.completed.load(), 0);
    }
    EXPECT_EQ(in_backlog.destroyed.load(), 1);
    EXPECT_FALSE(pool.backlog_.nonempty());
    EXPECT_EQ(pool.held_.release_next(1), nullptr);
    EXPECT_TRUE(pool.queue_.drained());
    EXPECT_TRUE(pool.idle());
}

TEST(shutdown_sequence_test, pending_io_is_cancelled_and_completes_on_a_worker_before_it_leaves) {
    for (const bool abandon : {false, true}) {
        fake_pool pool;
        pending_io io(pool);
        pool.start_workers();
        sequence(pool).run(abandon);
        EXPECT_EQ(io.cancels.load(), 1);
        EXPECT_EQ(io.phase_at_cancel, phase::cancelling_io);
        // Completed, not destroyed: a worker ran it during the cancelling_io phase, so its
        // handler could still post (from the worker) and its owner waited for it.
        EXPECT_EQ(io.op.completed.load(), 1);
        EXPECT_EQ(io.op.destroyed.load(), 0);
        EXPECT_EQ(io.op.phase_seen, phase::cancelling_io);
        EXPECT_TRUE(pool.idle());
    }
}

TEST(shutdown_sequence_test, join_runs_the_queued_work_before_it_cancels_io) {
    fake_pool pool;
    pending_io io(pool);
    std::atomic<int> ran{0};
    std::atomic<int> ran_after_cancel{0};
    constexpr int n = 100;
    for (int i = 0; i < n; ++i)
        pool.enqueue(detail::make_work_item([&] {
            // Long enough that the queue is still busy when join() begins.
            std::this_thread::sleep_for(std::chrono::microseconds(20));
            if (io.cancels.load() != 0)
                ran_after_cancel.fetch_add(1);
            ran.fetch_add(1);
        }));
    pool.start_workers();
    sequence(pool).run(false);
    // Work queued before join() could still start I/O of its own: it all ran first.
    EXPECT_EQ(ran.load(), n);
    EXPECT_EQ(ran_after_cancel.load(), 0);
    EXPECT_EQ(io.cancels.load(), 1);
}

TEST(shutdown_sequence_test, one_call_does_the_work_and_the_others_wait_then_return_zero) {
    for (int round = 0; round < 20; ++round) {
        fake_pool pool;
        ledger l;
        for (int i = 0; i < 100; ++i)
            pool.enqueue(detail::make_work_item(tracked(l)));
        pool.timers_.pending = 3;
        pool.start_workers();
        std::size_t returned[3] = {};
        bool joined_on_return[3] = {};
        std::thread callers[3];
        for (int c = 0; c < 3; ++c)
            callers[c] = std::thread([&, c] {
                returned[c] = sequence(pool).run(c == 1);
                joined_on_return[c] = pool.phase_.at_least(phase::joined);
            });
        for (auto& t : callers)
            t.join();
        // Whichever came first decided what ran; the others waited for it to end.
        for (const bool joined : joined_on_return)
            EXPECT_TRUE(joined);
        EXPECT_EQ(pool.timers_.shutdowns, 1);
        EXPECT_EQ(std::count(std::begin(returned), std::end(returned), 0u), 2);
        EXPECT_EQ(returned[0] + returned[1] + returned[2],
                  3u + static_cast<std::size_t>(l.abandoned.load()));
        EXPECT_EQ(l.settled(), 100);
        EXPECT_EQ(sequence(pool).run(true), 0u); // and again, once joined
    }
}

// Two producers post (some items post a child from the worker) until shutdown refuses them,
// while join() or stop() begins at a random moment: every item created ran, or was abandoned by
// shutdown, or was refused and abandoned by its poster, exactly once; a join ran everything
// accepted. Each producer ends on a refusal, so every round races shutdown. Run under TSan in CI.
TEST(shutdown_sequence_test, stress_producers_racing_join_or_stop_lose_nothing) {
    for (int round = 0; round < 40; ++round) {
        const bool abandon = round % 2 == 1;
        fake_pool pool(2, std::chrono::microseconds(round % 4 < 2 ? 0 : 50));
        ledger l;
        std::atomic<int> created{0};
        std::atomic<int> refused{0};
        // Posts `item`; a refused one is abandoned by its poster. True if accepted.
        auto post = [&](detail::work_item* item, bool from_worker) {
            created.fetch_add(1);
            if (pool.try_enqueue(item, from_worker))
                return true;
            refused.fetch_add(1);
            EXPECT_FALSE(detail::abandon_work_item(item));
            return false;
        };
        pool.start_workers();
        std::thread producers[2];
        for (unsigned p = 0; p < 2; ++p) {
            producers[p] = std::thread([&, p] {
                std::minstd_rand rng(static_cast<unsigned>(round) * 2U + p + 1U);
                for (unsigned i = 0;; ++i) {
                    detail::work_item* item =
                        i % 8 == 0 ? detail::make_work_item([&post, &l, t = tracked(l)]() mutable {
                            t();
                            post(detail::make_work_item(tracked(l)), true);
                        })
                                   : detail::make_work_item(tracked(l));
                    if (!post(item, false))
                        return;
                    if (rng() % 256 == 0)
                        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 200));
                }
            });
        }
        std::minstd_rand rng(static_cast<unsigned>(round) + 100U);
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
        const std::size_t returned = sequence(pool).run(abandon);
        for (auto& t : producers)
            t.join();
        EXPECT_GE(refused.load(), 2) << "round " << round;
        EXPECT_EQ(l.settled(), created.load()) << "round " << round;
        EXPECT_EQ(static_cast<std::size_t>(l.abandoned.load()),
                  returned + static_cast<std::size_t>(refused.load()))
            << "round " << round;
        if (!abandon) {
            EXPECT_EQ(returned, 0u) << "round " << round;
        }
        EXPECT_EQ(pool.exceptions.load(), 0);
        EXPECT_TRUE(all_joined(pool));
    }
}
