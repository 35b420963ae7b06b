#pragma once
// The pool's wake protocol: who must post a wake-up packet, and when a worker may sleep.
//
// As libunifex's atomic_intrusive_queue gives its consumer hand-off one type (`enqueue()` says
// "you must wake the consumer", `try_mark_inactive()` before sleeping), this type holds the
// whole protocol between producers and idle workers; the pool only posts the packets.
//
// TRICKY: a Dekker pair of seq_cst operations. A producer publishes its work with a seq_cst
// store (the work queue's slot, a held range, the completion backlog), then calls
// `must_wake()`, which reads `spinning_` and `sleepers_`; a worker going to sleep calls
// `try_mark_inactive()`, which increments `sleepers_` (seq_cst) and then looks for work
// (seq_cst loads). One of the two always sees the other, so a worker never sleeps while work
// waits unnoticed. A producer wakes a sleeper only when no worker is spinning (a spinner will
// find the work) and claims it by decrementing `sleepers_`, so two producers never wake one
// sleeper twice. Each wake-up packet so claimed must be used by exactly one registered worker
// (see worker_loop::poll_port).

#include <atomic>

namespace iocp::detail {

class wake_protocol {
public:
    // Producer side, after its seq_cst publish. True: the caller claimed one sleeper and must
    // post one wake-up packet for it (then `wake_failed()` if that post fails).
    bool must_wake() noexcept {
        if (spinning_.load(std::memory_order_seq_cst) != 0)
            return false;
        int sleepers = sleepers_.load(std::memory_order_seq_cst);
        while (sleepers > 0) {
            if (sleepers_.compare_exchange_weak(sleepers, sleepers - 1, std::memory_order_seq_cst))
                return true;
        }
        return false;
    }

    // The wake-up packet of a `must_wake()` could not be posted. TRICKY: never block or retry
    // (that could hang the producer): give the claim back, so that a later producer may try
    // again. The sleeper is not lost: idle workers look for work periodically whatever happens.
    void wake_failed() noexcept { sleepers_.fetch_add(1, std::memory_order_seq_cst); }

    // Worker side, before sleeping: registers as a sleeper, then calls `has_work()` (which
    // must read with seq_cst). True: the worker may sleep (it is counted; a producer that
    // publishes from now on wakes it). False: work arrived meanwhile and the registration was
    // taken back; go and take it. When work arrived but a producer already claimed this
    // registration, it returns true: that producer's wake-up is on the way, so the wait
    // returns at once.
    template <class HasWork>
    bool try_mark_inactive(HasWork&& has_work) noexcept {
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        if (has_work() && unregister())
            return false;
        return true;
    }

    // Worker side, after waking without a wake-up (work found on a periodic look, I/O, a
    // sentinel, exit): takes back one registration, unless producers claimed them all (their
    // wake-ups are then on the way). True if one was taken back.
    bool unregister() noexcept {
        int sleepers = sleepers_.load(std::memory_order_seq_cst);
        while (sleepers > 0) {
            if (sleepers_.compare_exchange_weak(sleepers, sleepers - 1, std::memory_order_seq_cst))
                return true;
        }
        return false;
    }

    // At most one worker spins at a time: more would only burn the cores the producers need.
    // True: the caller is the spinner and must call `stop_spinning()`.
    bool try_start_spinning() noexcept {
        int expected = 0;
        return spinning_.compare_exchange_strong(expected, 1, std::memory_order_seq_cst);
    }
    void stop_spinning() noexcept { spinning_.store(0, std::memory_order_seq_cst); }

    // Registered sleepers not yet claimed (a hint: it may change at once).
    int sleepers() const noexcept { return sleepers_.load(std::memory_order_relaxed); }
    bool spinning() const noexcept { return spinning_.load(std::memory_order_relaxed) != 0; }

private:
    std::atomic<int> spinning_{0};
    std::atomic<int> sleepers_{0};
};

} // namespace iocp::detail
