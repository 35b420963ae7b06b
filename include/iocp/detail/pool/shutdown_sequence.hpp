#pragma once
// The pool's one shutdown path, apart from its public face: the steps that take a pool through
// the phases of shutdown_phase.hpp, for join() (queued work runs) and stop() (it is abandoned),
// the destructor and a failed constructor alike.
//
//   1. close_timers       pending timers are abandoned; no new ones are taken
//   2. refuse_new_work    draining (join: only workers may post) or abandoning (stop: nobody)
//   3. finish_work_and_io the queued work ends, pending I/O is cancelled (cancelling_io) and
//                         every started operation completes; then the queue closes for all
//   4. stop_workers       exiting: one sentinel per worker, then every worker is joined
//   5. abandon_leftovers  closed: what no worker will dequeue (port packets, the backlog, a
//                         held continuation, a claimed but unpublished item) is abandoned
//                         exactly once; then the port closes (joined)
//
// It owns no state: the phase, the queue, the accounting, the registry of I/O objects, the
// sentinels and the port are the pool's parts, each with its own header and tests. This type is
// the order in which shutdown uses them, which is where the guarantees come from: every item
// accepted before step 2 is run (join) or abandoned (stop) exactly once, every operation started
// before step 3's cancel pass completes before any worker leaves, and nothing is left on the
// port when it closes. `Pool` is thread_pool, a friend (as for worker_loop.hpp: the parameter
// defers the member lookups until the pool is complete, and lets
// tests/shutdown_sequence_test.cpp run the steps on a pool made of the same parts).
//
// Thread safety: run() may be called from any number of threads, any number of times; the
// pool's shutdown mutex lets one run the steps, and the others wait for it, then return 0.
// Called from a worker of the pool, or from user code that run() itself calls (a timer
// callable's destructor, the exception handler), it would wait for itself: the pool refuses
// those calls first (thread_pool::in_own_shutdown).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>

#include "../../operation.hpp"
#include "../../port.hpp"
#include "../work_item.hpp"
#include "completion_backlog.hpp"
#include "constants.hpp"
#include "shutdown_phase.hpp"
#include "work_lanes.hpp"

namespace iocp::detail {

template <class Pool>
class shutdown_sequence {
public:
    explicit shutdown_sequence(Pool& pool) noexcept : pool_(pool) {}
    shutdown_sequence(const shutdown_sequence&) = delete;
    shutdown_sequence& operator=(const shutdown_sequence&) = delete;
    ~shutdown_sequence() = default;

    // Runs the five steps once per pool; `abandon_queued` is stop() (true) or join() (false).
    // Returns how many work items (and timers) this call abandoned: 0 when the pool had already
    // been shut down, or another call was under way (this one waited for it).
    // Only std::mutex/condition_variable can throw in here, on OS resource exhaustion, where
    // terminating is all a noexcept call can do.
    // NOLINTNEXTLINE(bugprone-exception-escape)
    std::size_t run(bool abandon_queued) noexcept {
        std::lock_guard shutdown_lock(pool_.shutdown_mutex_);
        if (pool_.phase_.at_least(phase::joined))
            return 0;
        // This thread runs user code from here on (timer callables' destructors, the exception
        // handler): the mark lets join()/stop()/wait() called there refuse instead of waiting
        // for themselves.
        const owner_mark mark(pool_.shutdown_thread_);
        const std::size_t abandoned_before = pool_.abandoned_.load();
        close_timers();
        refuse_new_work(abandon_queued);
        finish_work_and_io();
        stop_workers();
        abandon_leftovers();
        pool_.port_.close();
        pool_.phase_.advance(phase::joined);
        return pool_.abandoned_.load() - abandoned_before;
    }

private:
    using phase = shutdown_phase::phase;

    // Marks the thread that runs the steps, for the pool's in_own_shutdown().
    struct owner_mark {
        std::atomic<std::thread::id>& owner;
        explicit owner_mark(std::atomic<std::thread::id>& o) noexcept : owner(o) {
            owner.store(std::this_thread::get_id(), std::memory_order_relaxed);
        }
        owner_mark(const owner_mark&) = delete;
        owner_mark& operator=(const owner_mark&) = delete;
        ~owner_mark() { owner.store(std::thread::id(), std::memory_order_relaxed); }
    };

    // 1. No more timers; pending ones are abandoned (their callables destroyed here).
    void close_timers() noexcept { pool_.abandoned_.fetch_add(pool_.timers_.shutdown()); }

    // 2. Refuse new work (join: except from the workers), and for stop() make the workers
    //    abandon what they pop instead of running it. The phase moves first: a post the queue
    //    refuses then finds the pool shutting down.
    void refuse_new_work(bool abandon_queued) noexcept {
        if (abandon_queued) {
            pool_.phase_.advance(phase::abandoning, true);
            pool_.queue_.restrict(work_lanes::access::closed);
        } else {
            pool_.phase_.advance(phase::draining);
            pool_.queue_.restrict(work_lanes::access::privileged_only);
        }
    }

    // 3. Let the queued work finish, then cancel I/O and wait for every operation to complete
    //    (their handlers may post more work, from a worker: that runs too). Without workers (a
    //    failed constructor) there is nothing to wait for.
    void finish_work_and_io() {
        const bool have_workers = !pool_.workers_.empty();
        if (have_workers) {
            // TRICKY: first every worker's on_thread_start hook must have returned. A hook runs
            // on a worker, outside any counted item, so what it posts (or a coroutine it starts
            // hops to) is counted only when posted: an idle wait that ended before would let it
            // run after the pool was found idle, or be refused half way.
            {
                std::unique_lock lock(pool_.start_mutex_);
                pool_.start_cv_.wait(
                    lock, [&] { return pool_.workers_started_ == pool_.workers_.size(); });
            }
            wait_until_idle(false);
        }
        // The phase first: an operation started after an object's cancel is then refused
        // (the pool's operation_started). An object registered after the pass is cancelled at
        // once by the registry itself (io_registry::add).
        pool_.phase_.advance(phase::cancelling_io);
        pool_.io_objects_.cancel_all();
        if (have_workers)
            wait_until_idle(true);
        pool_.queue_.restrict(work_lanes::access::closed);
    }

    void wait_until_idle(bool with_io) {
        pool_.work_.wait_until_idle(with_io, [this] { return pool_.accepted(); });
    }

    // 4. One sentinel per worker; any worker may take any sentinel. A worker whose sentinel
    //    could not be posted leaves at its next periodic look (it sees the exiting phase).
    void stop_workers() {
        pool_.phase_.advance(phase::exiting);
        for (std::size_t i = 0; i < pool_.workers_.size(); ++i)
            pool_.post_sentinel(pool_.sentinels_[i]);
        for (auto& t : pool_.workers_)
            t.join();
    }

    // 5. Whatever is left (no worker will run it) is abandoned exactly once. First shut the
    //    gate of the pool's completion posts and wait out the posts already through it.
    void abandon_leftovers() noexcept {
        pool_.phase_.advance(phase::closed);
        // TRICKY: the other half of the Dekker pair in the pool's gated_post (a seq_cst count,
        // then a seq_cst look at the phase): a post either sees `closed` and refuses, or is
        // counted here and this waits until its packet is on the port, where the drain finds it.
        while (pool_.completions_posting_.load(std::memory_order_seq_cst) != 0)
            std::this_thread::yield();
        drain_port();
        // A continuation left in a worker's `next` slot: none is expected (every context a
        // worker posts from is a counted item or operation, or a hook shutdown waited for), but
        // a slot must never keep an item, so it is abandoned like a queued one.
        for (std::size_t i = 0; i < pool_.options_.threads; ++i) {
            if (work_item* item = pool_.held_.release_next(i)) {
                pool_.abandon(item);
                pool_.abandoned_.fetch_add(1);
                pool_.work_.finish_items(pool_.options_.threads, 1);
            }
        }
        // Usually nothing is left: the idle waits above covered every accepted item, claimed
        // or published. They are skipped when no worker ever started (a failed constructor);
        // then an item may still be between its claim and its publication: wait for it.
        while (!pool_.queue_.drained()) {
            const work_lanes::pop_result got = pool_.queue_.pop(SIZE_MAX);
            if (got.head == nullptr) {
                std::this_thread::yield();
                continue;
            }
            for (work_item* chain = got.head; chain != nullptr;) {
                work_item* next = chain->next;
                pool_.abandon(chain);
                chain = next;
            }
            pool_.abandoned_.fetch_add(got.count);
            // The accounting slot after the workers' is shutdown's.
            pool_.work_.finish_items(pool_.options_.threads, got.count);
        }
    }

    // Abandons what no worker will dequeue: port packets and backlog entries. Each operation is
    // destroyed exactly once (a packet is dequeued once; a backlog entry popped once). Sentinels
    // and wake-ups (no OVERLAPPED) are the pool's own and are left alone.
    void drain_port() noexcept {
        packet<void> packets[pool_max_batch];
        std::error_code ec;
        while (std::size_t n = pool_.port_.get_many(packets, std::chrono::milliseconds(0), ec)) {
            for (std::size_t i = 0; i < n; ++i) {
                overlapped* ov = packets[i].ov;
                if (ov != nullptr && pool_.sentinels_.find(ov) == nullptr)
                    operation::from(ov)->destroy();
            }
        }
        while (const std::optional<completion_backlog::entry> e = pool_.backlog_.pop())
            e->op->destroy();
    }

    Pool& pool_;
};

} // namespace iocp::detail
