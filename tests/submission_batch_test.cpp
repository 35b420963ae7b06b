// detail::submission_batch alone, and the pool's use of it: a completion the pool runs from its
// port runs inside a batch, and whatever a handler deferred is flushed once, on the handler's
// thread, after the handler returned. Nothing deferred is ever left unflushed.
#include "iocp/detail/pool/submission_batch.hpp"
#include "iocp/thread_pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <future>
#include <thread>
#include <vector>

using iocp::detail::submission_batch;

namespace {

struct counter {
    int flushes = 0;
};

void count_flush(void* c) noexcept { ++static_cast<counter*>(c)->flushes; }
void other_flush(void* c) noexcept { static_cast<counter*>(c)->flushes += 100; }

} // namespace

TEST(submission_batch_test, outside_a_scope_nothing_is_deferred) {
    counter c;
    EXPECT_FALSE(submission_batch::open());
    EXPECT_FALSE(submission_batch::defer(&count_flush, &c));
    EXPECT_EQ(c.flushes, 0);
}

TEST(submission_batch_test, a_scope_runs_its_flush_once_when_it_ends) {
    counter c;
    {
        const submission_batch::scope batch;
        EXPECT_TRUE(submission_batch::open());
        for (int i = 0; i < 5; ++i)
            EXPECT_TRUE(submission_batch::defer(&count_flush, &c));
        EXPECT_EQ(c.flushes, 0) << "flushed before the batch ended";
    }
    EXPECT_EQ(c.flushes, 1);
    EXPECT_FALSE(submission_batch::open());
    EXPECT_FALSE(submission_batch::defer(&count_flush, &c)) << "the ended scope still defers";
}

TEST(submission_batch_test, a_scope_with_nothing_deferred_flushes_nothing) {
    counter c;
    { const submission_batch::scope batch; }
    EXPECT_EQ(c.flushes, 0);
}

TEST(submission_batch_test, a_second_flush_is_refused_and_the_first_kept) {
    counter first;
    counter second;
    counter same_function_other_context;
    {
        const submission_batch::scope batch;
        EXPECT_TRUE(submission_batch::defer(&count_flush, &first));
        EXPECT_FALSE(submission_batch::defer(&other_flush, &second));
        EXPECT_FALSE(submission_batch::defer(&count_flush, &same_function_other_context));
    }
    EXPECT_EQ(first.flushes, 1);
    EXPECT_EQ(second.flushes, 0);
    EXPECT_EQ(same_function_other_context.flushes, 0);
}

TEST(submission_batch_test, nested_scopes_each_flush_their_own_at_their_end) {
    counter outer;
    counter inner;
    {
        const submission_batch::scope outer_batch;
        EXPECT_TRUE(submission_batch::defer(&count_flush, &outer));
        {
            const submission_batch::scope inner_batch;
            EXPECT_TRUE(submission_batch::defer(&count_flush, &inner));
        }
        EXPECT_EQ(inner.flushes, 1);
        EXPECT_EQ(outer.flushes, 0) << "the inner scope flushed the outer one's";
        EXPECT_TRUE(submission_batch::open());
        EXPECT_TRUE(submission_batch::defer(&count_flush, &outer)); // still registered
        EXPECT_FALSE(submission_batch::defer(&count_flush, &inner));
    }
    EXPECT_EQ(outer.flushes, 1);
    EXPECT_EQ(inner.flushes, 1);
    EXPECT_FALSE(submission_batch::open());
}

TEST(submission_batch_test, a_scope_belongs_to_its_thread) {
    counter c;
    const submission_batch::scope batch;
    bool other_open = true;
    bool other_deferred = true;
    std::thread([&] {
        other_open = submission_batch::open();
        other_deferred = submission_batch::defer(&count_flush, &c);
    }).join();
    EXPECT_FALSE(other_open);
    EXPECT_FALSE(other_deferred);
}

// The pool's side: completions posted to the port from several threads; each handler defers a
// flush that moves its thread's pending count to the total. Every deferral must be flushed on
// the handler's own thread, after the handler returned (the flush sees the handler's count).
namespace {

struct per_thread_pending {
    std::size_t pending = 0;
};
thread_local per_thread_pending t_pending;

struct flush_totals {
    std::atomic<std::size_t> flushed{0};
    std::atomic<std::size_t> flush_calls{0};
};

void move_pending(void* totals) noexcept {
    auto* t = static_cast<flush_totals*>(totals);
    t->flushed.fetch_add(t_pending.pending, std::memory_order_relaxed);
    t->flush_calls.fetch_add(1, std::memory_order_relaxed);
    t_pending.pending = 0;
}

struct deferring_op : iocp::operation {
    flush_totals* totals = nullptr;
    std::atomic<std::size_t>* ran = nullptr;
    std::atomic<std::size_t>* outside_a_batch = nullptr;
    std::atomic<std::size_t>* refused = nullptr;
    deferring_op() noexcept : operation(&on_complete) {}
    static void on_complete(void* owner, iocp::operation* base, const iocp::completion&) noexcept {
        auto* self = static_cast<deferring_op*>(base);
        if (owner == nullptr)
            return; // abandoned at shutdown: counted as not run
        if (!submission_batch::open())
            self->outside_a_batch->fetch_add(1, std::memory_order_relaxed);
        if (submission_batch::defer(&move_pending, self->totals))
            ++t_pending.pending;
        else
            self->refused->fetch_add(1, std::memory_order_relaxed);
        self->ran->fetch_add(1, std::memory_order_release);
    }
};

} // namespace

TEST(submission_batch_test, the_pool_flushes_every_handler_deferral_after_the_handler) {
    constexpr std::size_t threads = 4;
    constexpr std::size_t per_thread = 5000;
    flush_totals totals;
    std::atomic<std::size_t> ran{0};
    std::atomic<std::size_t> outside{0};
    std::atomic<std::size_t> refused{0};
    std::vector<deferring_op> ops(threads * per_thread);
    for (auto& op : ops) {
        op.totals = &totals;
        op.ran = &ran;
        op.outside_a_batch = &outside;
        op.refused = &refused;
    }
    {
        iocp::thread_pool pool(3);
        std::vector<std::thread> posters;
        for (std::size_t t = 0; t < threads; ++t)
            posters.emplace_back([&, t] {
                for (std::size_t i = 0; i < per_thread; ++i) {
                    pool.post_completion(&ops[t * per_thread + i], {});
                    if (i % 64 == t)
                        std::this_thread::yield(); // vary the batches the workers take
                }
            });
        for (auto& p : posters)
            p.join();
        while (ran.load(std::memory_order_acquire) != ops.size())
            std::this_thread::yield();
        pool.join();
    }
    EXPECT_EQ(outside.load(), 0U) << "a port completion ran outside a batch";
    EXPECT_EQ(refused.load(), 0U);
    EXPECT_EQ(totals.flushed.load(), ops.size()) << "a deferral was never flushed";
    EXPECT_GE(totals.flush_calls.load(), 1U);
    EXPECT_LE(totals.flush_calls.load(), ops.size());
}
