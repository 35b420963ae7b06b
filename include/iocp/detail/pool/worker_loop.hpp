#pragma once
// The loop every worker of a thread_pool runs, apart from the pool's public face: take work
// (a held continuation, a batch from the queue, what another worker holds), run it, look at the
// port every `port_poll_interval` items, spin briefly when idle, then sleep on the port.
//
// It owns no state. Everything it touches is a part of the pool with its own header and tests:
// the queue (work_lanes), the held items, the wake protocol, the adaptive spin, the completion
// backlog, the outstanding-work accounting and the shutdown phase. This type is the order in
// which a worker uses them, and the two rules that live only here: every wake-up packet is used
// by exactly one registered worker, and every worker takes exactly one sentinel (poll_port).
// `Pool` is thread_pool, a friend: the parameter defers the member lookups until the pool is
// complete (thread_pool.hpp includes this header before defining the class), and lets
// tests/worker_loop_test.cpp run the loop on a pool made of the same parts and nothing else.
//
// Thread safety: one worker_loop per worker thread, used by that thread only.

#include <chrono>
#include <cstddef>
#include <exception>
#include <optional>
#include <system_error>
#include <thread>

#include "../../operation.hpp"
#include "../../port.hpp"
#include "../work_item.hpp"
#include "adaptive_spin.hpp"
#include "completion_backlog.hpp"
#include "constants.hpp"
#include "held_items.hpp"
#include "shutdown_phase.hpp"
#include "work_lanes.hpp"
#include "worker_sentinels.hpp"

namespace iocp::detail {

template <class Pool>
class worker_loop {
public:
    // `index`: this worker's index in [0, threads): its held range and accounting slot.
    worker_loop(Pool& pool, std::size_t index) noexcept : pool_(pool), index_(index) {}
    worker_loop(const worker_loop&) = delete;
    worker_loop& operator=(const worker_loop&) = delete;
    ~worker_loop() = default;

    // Runs until the worker must exit: it took a sentinel, saw the exiting phase, or the port is
    // gone.
    void run() noexcept {
        std::size_t since_port_check = 0;
        for (;;) {
            // Completions the port refused (rare: a relaxed look costs next to nothing).
            if (pool_.backlog_.maybe_nonempty())
                run_backlog();
            std::size_t ran = 0;
            if (work_item* item = pool_.held_.take_next(index_)) {
                // A continuation posted outside run_items (by an I/O handler, a backlog
                // entry): only its owner looks here; spinners and sleepers leave it to the owner.
                ran = run_items(&item, 1);
            } else if (const work_lanes::pop_result got = pool_.queue_.pop(pool_.options_.batch);
                       got.head != nullptr) {
                pool_.held_.reset_streak(index_); // the queue had its turn
                // A full batch hints at more queued work: make sure a worker comes for it (a
                // spinner or a busy worker will; otherwise wake a sleeper). The items of a
                // batch not started yet stay available to idle workers (run_items).
                if (got.more)
                    pool_.wake_one_if_needed();
                ran = run_chain(got.head);
            } else if ((ran = steal_held()) == 0) {
                // Nothing to run: the spin and the sleep below look at the port themselves.
                since_port_check = 0;
                switch (spin_for_work()) {
                case spin_found::queue: continue;
                case spin_found::port:
                    // A completion is queued or ready to reap (the I/O backend's hint): take it
                    // now, without sleeping first.
                    if (poll_port(std::chrono::milliseconds(0), false) == poll_outcome::exit)
                        return;
                    continue;
                case spin_found::nothing: break;
                }
                if (!sleep())
                    return;
                continue;
            }
            // I/O completions must not starve behind busy work: look at the port every
            // `port_poll_interval` items run (one cheap non-blocking call), counting the
            // continuations a worker runs from its own slot and the items it took from others.
            since_port_check += ran;
            if (since_port_check >= port_poll_interval) {
                // What a long run went past the interval counts toward the next look: on
                // average the port is looked at every port_poll_interval items.
                since_port_check %= port_poll_interval;
                pool_.port_polls_.fetch_add(1, std::memory_order_relaxed);
                if (poll_port(std::chrono::milliseconds(0), false) == poll_outcome::exit)
                    return;
                // Items claimed by a worker stuck in a long or blocking item: a busy worker
                // takes them at this look (held_items::steal_stalled), ahead of the queue. An
                // idle worker would, but while producers keep the queue from emptying there may
                // be none: the items would wait as long as the item in front of them, however
                // many newer ones ran meanwhile.
                since_port_check += steal_stalled();
            }
        }
    }

private:
    using sentinel = worker_sentinels::sentinel;

    // Runs one backlog entry; others are left for other workers (one long handler must not
    // hold back the rest).
    void run_backlog() noexcept {
        const std::optional<completion_backlog::entry> e = pool_.backlog_.pop();
        if (!e)
            return;
        if (pool_.backlog_.nonempty())
            pool_.wake_one_if_needed();
        e->op->complete(&pool_, e->result);
    }

    // Work a worker could take now: queued items, backlog entries, items another worker holds.
    bool has_work() const noexcept {
        return pool_.queue_.maybe_nonempty() || pool_.backlog_.nonempty() || pool_.held_.any();
    }

    // Runs a claimed chain (at most max_batch items, linked through `next`); returns how many
    // items this worker ran (run_items).
    std::size_t run_chain(work_item* chain) noexcept {
        work_item* items[pool_max_batch];
        std::size_t n = 0;
        for (; chain != nullptr && n < pool_max_batch; chain = chain->next)
            items[n++] = chain;
        return run_items(items, n);
    }

    // Runs `n` claimed items. The ones not started yet are published as this worker's held
    // range (detail/pool/held_items.hpp), where an idle worker can take them: a worker never
    // sits on items that another could start while it runs a long one. One publish and one
    // look for sleepers per claim suffice: they stay visible until taken. Returns how many
    // items this worker ran: those of the claim it did not lose, and the continuations that
    // they posted to its own slot.
    std::size_t run_items(work_item* const* items, std::size_t n) noexcept {
        const std::size_t me = index_;
        std::size_t done = 0;
        if (n > 1) {
            pool_.held_.publish(me, items + 1, n - 1); // our range is empty: everything was taken
            pool_.wake_one_if_needed();
        }
        work_item* item = items[0];
        while (item != nullptr) {
            run_one(item);
            ++done;
            // A continuation the item just posted comes first: its frame is hot in this cache.
            item = pool_.held_.take_next(me);
            if (item == nullptr && n > 1)
                item = pool_.held_.take_own(me);
        }
        pool_.work_.finish_items(me, done);
        return done;
    }

    void run_one(work_item* item) noexcept {
        if (pool_.phase_.abandoning()) {
            pool_.abandon(item);
            pool_.abandoned_.fetch_add(1, std::memory_order_relaxed);
            return;
        }
        std::exception_ptr destroy_error; // the callable's destructor threw after the call did
        try {
            run_work_item(item, destroy_error);
        } catch (...) {
            pool_.handle_exception(std::current_exception());
        }
        if (destroy_error)
            pool_.handle_exception(destroy_error);
    }

    // Takes what another worker holds and has not started (the rest of its batch, or a
    // continuation) and runs it; returns how many items it ran (0: found nothing).
    std::size_t steal_held() noexcept {
        work_item* items[held_items::slots];
        const std::size_t n = pool_.held_.steal(index_, items);
        return n == 0 ? 0 : run_items(items, n);
    }

    // Takes what a stalled worker holds (held_items::steal_stalled) and runs it; returns how
    // many items this worker ran (0: nothing was stalled).
    std::size_t steal_stalled() noexcept {
        work_item* items[held_items::slots];
        const std::size_t n = pool_.held_.steal_stalled(index_, items);
        return n == 0 ? 0 : run_items(items, n);
    }

    enum class spin_found { nothing, queue, port };

    // Bounded spin for new work: where some appeared. At most one worker spins at a time: more
    // would only burn the cores the producers need. Its length adapts to how busy the machine
    // is (detail/pool/adaptive_spin.hpp): a spinner whose core is taken away gives its role up.
    spin_found spin_for_work() noexcept {
        if (pool_.options_.spin.count() <= 0)
            return spin_found::nothing;
        if (!pool_.wake_.try_start_spinning())
            return spin_found::nothing;
        const std::chrono::nanoseconds window = pool_.spin_.window();
        const auto deadline = Pool::clock::now() + window;
        spin_found found = spin_found::nothing;
        bool preempted = false;
        for (unsigned i = 1; found == spin_found::nothing; ++i) {
            // Not the other workers' held items: a spinner that took those would split every
            // busy worker's batch and pull its cache lines. Held items are taken once the spin
            // ends (sleep() looks at them), so a long item's neighbours wait at most `spin`.
            if (pool_.queue_.maybe_nonempty() || pool_.backlog_.nonempty()) {
                found = spin_found::queue;
                break;
            }
            // On the user-space port, a completion an I/O handler of ours just caused (an
            // immediate send result, a CQE of the ring) is seen without a kernel call. The
            // kernel's port has no such look: its packets wait for sleep().
            if (port_may_have_packets()) {
                found = spin_found::port;
                break;
            }
            if (preempted)
                break; // the look after the core came back found nothing: give the role up
            // A short pure spin catches the next item within a fraction of a microsecond;
            // after that, yield between looks, so that a producer sharing this core (few
            // cores, or a loaded machine) gets to run and post what we wait for.
            if (i < pure_spin_rounds) {
                cpu_relax();
                continue;
            }
            const auto before = Pool::clock::now();
            if (before >= deadline)
                break;
            std::this_thread::yield();
            preempted = adaptive_spin::lost_core(Pool::clock::now() - before);
        }
        pool_.spin_.after_spin(window, found != spin_found::nothing, preempted);
        pool_.wake_.stop_spinning();
        return found;
    }

    bool port_may_have_packets() const noexcept {
#if IOCP_HAS_IOCP
        return false;
#else
        return pool_.port_.native_handle() != nullptr && pool_.port_.native_handle()->maybe_ready();
#endif
    }

    static void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64) || defined(_M_IX86)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        asm volatile("yield");
#endif
    }

    // Sleeps on the port until woken; false when the worker must exit (a sentinel, or the
    // pool is stopping). The wait is bounded (thread_pool::idle_recheck): a wake-up or sentinel
    // whose post failed is made up by the next look.
    bool sleep() noexcept {
        // Work that arrived while we registered is taken instead (see try_mark_inactive).
        if (!pool_.wake_.try_mark_inactive([this] { return has_work(); }))
            return true;
        pool_.sleeps_.fetch_add(1, std::memory_order_relaxed);
        for (;;) {
            // TRICKY: the exiting phase begins before the sentinels are posted. A worker that sees
            // it leaves without its sentinel (shutdown drains what is left); one that does not sees
            // it within idle_recheck, whether or not its sentinel's post succeeded.
            if (pool_.phase_.at_least(shutdown_phase::phase::exiting)) {
                pool_.wake_.unregister();
                return false;
            }
            switch (poll_port(Pool::idle_recheck, true)) {
            case poll_outcome::exit: return false;
            case poll_outcome::ran: return true;
            case poll_outcome::timed_out: break;
            }
            // Still registered (or claimed by a producer whose wake-up failed or is late).
            if (has_work()) {
                if (pool_.wake_.unregister())
                    pool_.recoveries_.fetch_add(1, std::memory_order_relaxed);
                return true;
            }
        }
    }

    enum class poll_outcome {
        ran,       // dequeued packets (and ran them): go on
        timed_out, // nothing dequeued; a registered worker is still registered
        exit,      // a sentinel, or the port is gone: the worker must exit
    };

    // Dequeues and runs port packets. `registered`: this worker registered as a sleeper.
    poll_outcome poll_port(std::chrono::milliseconds timeout, bool registered) noexcept {
        packet<void> packets[pool_max_batch];
        // A busy worker's look takes one packet when others are idle: a batch of long
        // completions must not wait behind each other while workers sleep (the kernel hands
        // what stays queued to those sleepers).
        const std::size_t take =
            !registered && pool_.wake_.sleepers() > 0 ? 1 : pool_.options_.batch;
        std::error_code ec;
        const std::size_t n = pool_.port_.get_many(std::span(packets, take), timeout, ec);
        if (n == 0) {
            if (ec && ec != errc::timed_out)
                return poll_outcome::exit; // the port is gone: nothing more can arrive
            return poll_outcome::timed_out;
        }
        std::size_t wakeups = 0;
        sentinel* sentinels[pool_max_batch];
        std::size_t n_sentinels = 0;
        for (std::size_t i = 0; i < n; ++i) {
            overlapped* ov = packets[i].ov;
            if (ov == nullptr) {
                if (packets[i].key == &pool_.wake_tag_)
                    ++wakeups;
                // else: a packet without an operation; the pool posts none, nothing to run
            } else if (sentinel* s = pool_.sentinels_.find(ov)) {
                sentinels[n_sentinels++] = s;
            } else {
                operation::from(ov)->complete(
                    &pool_, completion{packets[i].error, packets[i].bytes, packets[i].key});
            }
        }
        // TRICKY: each wake-up was posted for one sleeper whose count a producer took, so each
        // must be used by exactly one registered worker. A registered worker uses one; the
        // rest of a batch (and any a busy worker's poll took) go back to the port, or their
        // sleepers, no longer counted as sleepers, would sleep through the work until their
        // next periodic look. (A re-post that fails is made up by that look.)
        const std::size_t used = registered && wakeups > 0 ? 1 : 0;
        for (std::size_t extra = used; extra < wakeups; ++extra)
            pool_.post_wakeup();
        if (registered && wakeups == 0) {
            // Woken by something else (I/O, a sentinel): leave the sleepers count, unless a
            // producer claimed us meanwhile (its wake-up then finds another).
            pool_.wake_.unregister();
        }
        // TRICKY: a batch may hold several sentinels, but each worker must take exactly one or
        // some other worker waits for the exiting phase to be noticed: hand the extras back to the
        // port. Each was dequeued, so none is queued twice at once.
        for (std::size_t extra = 1; extra < n_sentinels; ++extra)
            pool_.post_sentinel(*sentinels[extra]);
        return n_sentinels > 0 ? poll_outcome::exit : poll_outcome::ran;
    }

    Pool& pool_;
    const std::size_t index_;
};

} // namespace iocp::detail
