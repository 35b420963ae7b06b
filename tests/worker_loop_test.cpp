// detail::worker_loop alone, on a pool made of nothing but the parts it drives (the real queue,
// held items, wake protocol, spin, backlog, accounting, phase and port; no thread_pool): the
// order in which a worker takes work, the rules that exist only in the loop (each wake-up packet
// is used by one registered look, each worker takes one sentinel), abandonment under stop, and
// (under TSan) that two loops fed by two producers run every item exactly once.
#include "iocp/detail/pool/worker_loop.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <random>
#include <span>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#include "iocp/port.hpp"
#include "support/fake_pool.hpp"

namespace detail = iocp::detail;

namespace {

constexpr std::size_t workers = 2;

using iocp_test::drain;
using iocp_test::fake_pool;
using iocp_test::wait_for;
using loop = detail::worker_loop<fake_pool>;

// An operation that records who completed it, with what.
struct recording_op final : iocp::operation {
    recording_op() noexcept : operation(&on_complete) {}
    static void on_complete(void* owner, iocp::operation* self,
                            const iocp::completion& result) noexcept {
        auto* op = static_cast<recording_op*>(self);
        op->owner = owner;
        op->bytes = result.bytes;
        op->completions.fetch_add(1);
    }
    void* owner = nullptr;
    std::size_t bytes = 0;
    std::atomic<int> completions{0};
};

} // namespace

TEST(worker_loop_test, runs_every_queued_item_then_exits_on_its_sentinel) {
    fake_pool pool;
    std::atomic<int> ran{0};
    constexpr int n = 1000; // more than a batch and several port-poll intervals
    for (int i = 0; i < n; ++i)
        pool.enqueue(detail::make_work_item([&ran] { ran.fetch_add(1); }));
    std::thread worker([&] { loop(pool, 0).run(); });
    wait_for([&] { return pool.idle(); });
    EXPECT_EQ(ran.load(), n);
    pool.post_sentinel(pool.sentinels_[0]);
    worker.join(); // returns: the sentinel ended the loop
    EXPECT_EQ(pool.abandoned_.load(), 0u);
    EXPECT_EQ(pool.exceptions.load(), 0);
    EXPECT_TRUE(pool.idle());
}

TEST(worker_loop_test, an_item_that_throws_goes_to_the_exception_handler_and_the_loop_goes_on) {
    fake_pool pool;
    std::atomic<int> ran{0};
    pool.enqueue(detail::make_work_item([] { throw std::runtime_error("thrown by an item"); }));
    pool.enqueue(detail::make_work_item([&ran] { ran.fetch_add(1); }));
    std::thread worker([&] { loop(pool, 0).run(); });
    wait_for([&] { return pool.idle(); });
    pool.post_sentinel(pool.sentinels_[0]);
    worker.join();
    EXPECT_EQ(pool.exceptions.load(), 1);
    EXPECT_EQ(ran.load(), 1);
}

TEST(worker_loop_test, each_registered_look_uses_one_wake_up_and_leaves_the_rest_on_the_port) {
    fake_pool pool;
    constexpr std::uint64_t posted = 3;
    for (std::uint64_t i = 0; i < posted; ++i)
        ASSERT_TRUE(pool.post_wakeup());
    pool.post_sentinel(pool.sentinels_[0]);
    loop(pool, 0).run(); // nothing queued: it sleeps, dequeues the packets, exits on the sentinel
    const std::vector<iocp::packet<void>> left = drain(pool.port_);
    for (const auto& p : left) {
        EXPECT_EQ(p.ov, nullptr);
        EXPECT_EQ(p.key, &pool.wake_tag_);
    }
    // All four packets are queued before the loop's first dequeue, which takes them together
    // (every backend returns what is queued, up to the batch): that sleep uses one wake-up and
    // posts two back. Were the wake-ups split over several dequeues, each sleep would still use
    // exactly one; none may be lost or duplicated.
    EXPECT_GE(pool.sleeps_.load(), 1u);
    EXPECT_EQ(left.size() + pool.sleeps_.load(), posted);
}

TEST(worker_loop_test, a_worker_takes_one_sentinel_and_hands_the_others_back) {
    fake_pool pool;
    pool.post_sentinel(pool.sentinels_[0]);
    pool.post_sentinel(pool.sentinels_[1]);
    loop(pool, 0).run();
    const std::vector<iocp::packet<void>> left = drain(pool.port_);
    ASSERT_EQ(left.size(), 1u);
    EXPECT_NE(pool.sentinels_.find(left[0].ov), nullptr);
    // The other worker exits on it.
    pool.post_sentinel(*pool.sentinels_.find(left[0].ov));
    loop(pool, 1).run();
    EXPECT_TRUE(drain(pool.port_).empty());
}

TEST(worker_loop_test, completions_from_the_port_and_the_backlog_run_with_the_pool_as_owner) {
    fake_pool pool;
    recording_op from_port;
    recording_op from_backlog;
    pool.port_.post(&from_port, nullptr, 42);
    ASSERT_TRUE(pool.backlog_.push(&from_backlog, iocp::completion{{}, 7, nullptr}));
    pool.post_sentinel(pool.sentinels_[0]);
    loop(pool, 0).run();
    EXPECT_EQ(from_port.completions.load(), 1);
    EXPECT_EQ(from_port.owner, &pool);
    EXPECT_EQ(from_port.bytes, 42u);
    EXPECT_EQ(from_backlog.completions.load(), 1);
    EXPECT_EQ(from_backlog.owner, &pool);
    EXPECT_EQ(from_backlog.bytes, 7u);
    EXPECT_FALSE(pool.backlog_.nonempty());
}

TEST(worker_loop_test, under_stop_it_abandons_what_it_pops_instead_of_running_it) {
    fake_pool pool;
    std::atomic<int> ran{0};
    std::atomic<int> destroyed{0};
    struct counted {
        std::atomic<int>* ran;
        std::atomic<int>* destroyed;
        counted(std::atomic<int>* r, std::atomic<int>* d) : ran(r), destroyed(d) {}
        counted(counted&& o) noexcept : ran(o.ran), destroyed(o.destroyed) { o.ran = nullptr; }
        counted(const counted&) = delete;
        counted& operator=(const counted&) = delete;
        counted& operator=(counted&&) = delete;
        ~counted() {
            if (ran != nullptr)
                destroyed->fetch_add(1);
        }
        void operator()() const { ran->fetch_add(1); }
    };
    constexpr int n = 200;
    for (int i = 0; i < n; ++i)
        pool.enqueue(detail::make_work_item(counted(&ran, &destroyed)));
    pool.phase_.advance(detail::shutdown_phase::phase::abandoning, true);
    std::thread worker([&] { loop(pool, 0).run(); });
    wait_for([&] { return pool.idle(); });
    pool.post_sentinel(pool.sentinels_[0]);
    worker.join();
    EXPECT_EQ(ran.load(), 0);
    EXPECT_EQ(destroyed.load(), n); // each callable destroyed exactly once, none run
    EXPECT_EQ(pool.abandoned_.load(), static_cast<std::size_t>(n));
}

TEST(worker_loop_test, an_idle_worker_runs_what_another_worker_holds) {
    fake_pool pool;
    std::atomic<int> ran{0};
    std::vector<std::size_t> order; // written by the loop's thread only, read after join
    detail::work_item* items[3];
    for (std::size_t i = 0; i < 3; ++i)
        items[i] = detail::make_work_item([&ran, &order, i] {
            order.push_back(i);
            ran.fetch_add(1);
        });
    pool.held_.publish(1, items, 3); // worker 1 claimed them and is busy elsewhere
    std::thread worker([&] { loop(pool, 0).run(); });
    wait_for([&] { return ran.load() == 3; });
    pool.post_sentinel(pool.sentinels_[0]);
    worker.join();
    // The thief runs the stolen range in the order it was claimed.
    EXPECT_EQ(order, (std::vector<std::size_t>{0, 1, 2}));
    EXPECT_EQ(pool.held_.take_own(1), nullptr); // nothing left to the busy owner
    EXPECT_FALSE(pool.held_.any());
}

// Two loops (spinning enabled) fed by two producers with random pauses: every item runs
// exactly once, the accounting ends idle, and both loops exit on their sentinels. Run under
// TSan in CI.
TEST(worker_loop_test, stress_two_loops_two_producers_every_item_runs_once) {
    for (int round = 0; round < 20; ++round) {
        fake_pool pool(workers, std::chrono::microseconds(50));
        constexpr std::size_t per_producer = 5000;
        auto runs = std::make_unique<std::atomic<int>[]>(2 * per_producer);
        std::thread loops[workers];
        for (std::size_t w = 0; w < workers; ++w)
            loops[w] = std::thread([&pool, w] { loop(pool, w).run(); });
        std::thread producers[2];
        for (std::size_t p = 0; p < 2; ++p) {
            producers[p] = std::thread([&, p] {
                std::minstd_rand rng(static_cast<unsigned>(round) * 2U + static_cast<unsigned>(p) +
                                     1U);
                for (std::size_t i = 0; i < per_producer; ++i) {
                    std::atomic<int>* slot = &runs[p * per_producer + i];
                    pool.enqueue(detail::make_work_item([slot] { slot->fetch_add(1); }));
                    if (rng() % 512 == 0) // let the workers go idle, spin out and sleep
                        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
                }
            });
        }
        for (auto& t : producers)
            t.join();
        wait_for([&] { return pool.idle(); });
        for (std::size_t w = 0; w < workers; ++w)
            pool.post_sentinel(pool.sentinels_[w]);
        for (auto& t : loops)
            t.join();
        for (std::size_t i = 0; i < 2 * per_producer; ++i)
            ASSERT_EQ(runs[i].load(), 1) << "item " << i << " in round " << round;
        EXPECT_EQ(pool.exceptions.load(), 0);
        EXPECT_EQ(pool.abandoned_.load(), 0u);
    }
}
