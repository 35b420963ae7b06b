#pragma once
// Who reaps a Linux backend's completions, written once for both backends:
// - poll_role: at most one thread of the process reaps at a time (a ring's CQ and an epoll set's
//   batch have one consumer), and a thread waiting in the kernel for them can be interrupted
//   without a kernel call when nobody waits there;
// - reaping: the role, the count of operations in flight, a worker's poll (completion_poller),
//   and the schedule of the backend's watchdog thread, which reaps only when no worker does.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>

#include "../../time.hpp"

namespace iocp::detail::io::lnx {

class poll_role {
public:
    // Takes the role; false at once if another thread holds it.
    bool try_acquire() noexcept {
        return !held_.load(std::memory_order_relaxed) &&
               !held_.exchange(true, std::memory_order_acquire);
    }
    void release() noexcept { held_.store(false, std::memory_order_release); }
    bool held() const noexcept { return held_.load(std::memory_order_relaxed); }

    // The holder is about to wait in the kernel: false when an interrupt came first (then it
    // must not wait). Pair a true with end_wait().
    bool begin_wait() noexcept {
        // TRICKY: a Dekker pair with interrupt(): either the interrupter sees `blocking_` and
        // wakes the wait (an eventfd write, which a wait that has not begun yet still sees), or
        // this sees its request and does not wait. Both sides seq_cst.
        blocking_.store(true, std::memory_order_seq_cst);
        if (requested_.exchange(false, std::memory_order_seq_cst)) {
            blocking_.store(false, std::memory_order_relaxed);
            return false;
        }
        return true;
    }
    void end_wait() noexcept {
        blocking_.store(false, std::memory_order_relaxed);
        // A request that came during the wait woke it (or its eventfd write will make the next
        // wait return at once, harmlessly): it is consumed either way.
        requested_.store(false, std::memory_order_relaxed);
    }

    // Asks the waiting (or about to wait) holder to return; true when the caller must wake it
    // (write the backend's eventfd): someone waits in the kernel.
    bool interrupt() noexcept {
        requested_.store(true, std::memory_order_seq_cst);
        return blocking_.load(std::memory_order_seq_cst);
    }

    // Someone waits in the kernel for completions now.
    bool blocking() const noexcept { return blocking_.load(std::memory_order_relaxed); }

private:
    std::atomic<bool> held_{false};
    std::atomic<bool> blocking_{false};
    std::atomic<bool> requested_{false};
};

// The reaping side of a backend. The backend supplies `reap(timeout)` (one round with the role
// held: wait up to `timeout` when nothing is ready, complete what is there) and `interrupt()`
// (wakes a round waiting in the kernel: role.interrupt() and, if it says so, an eventfd write).
class reaping {
public:
    /// The watchdog's tick: how long after a completion it reaps when no worker does.
    static constexpr std::chrono::milliseconds tick{1};
    /// The watchdog's sleep while nothing is in flight (an issue wakes it sooner).
    static constexpr std::chrono::milliseconds idle_tick{100};
    /// Ticks without a worker's poll before the watchdog waits in the kernel itself.
    static constexpr unsigned quiet_ticks_before_wait = 4;

    poll_role role; // the one reaper of the moment

    // Counts an issued operation; the first one in flight wakes an idle watchdog, so that it
    // reaps within a tick if no worker does.
    void issued() noexcept {
        if (in_flight_.fetch_add(1, std::memory_order_seq_cst) == 0 &&
            watchdog_idle_.load(std::memory_order_seq_cst)) {
            std::lock_guard lock(mutex_);
            cv_.notify_one();
        }
    }
    // Counts `n` operations whose on_complete returned.
    void completed(std::size_t n) noexcept {
        if (n != 0)
            in_flight_.fetch_sub(n, std::memory_order_release);
    }
    std::size_t in_flight() const noexcept { return in_flight_.load(std::memory_order_acquire); }

    // completion_poller::poll for a backend: one round as the reaper, or false at once when
    // another thread reaps (asking the watchdog to give the role up if it holds it).
    template <class Reap, class Interrupt>
    bool worker_poll(std::chrono::milliseconds timeout, Reap&& reap,
                     Interrupt&& interrupt) noexcept {
        if (!role.try_acquire()) {
            // TRICKY: the watchdog looks at worker_wants_ before each of its waits, and
            // interrupt() makes a wait that has not begun return at once (poll_role): the
            // request is never slept through.
            if (watchdog_holds_.load(std::memory_order_seq_cst)) {
                worker_wants_.store(true, std::memory_order_seq_cst);
                interrupt();
            }
            return false;
        }
        worker_polls_.fetch_add(1, std::memory_order_relaxed);
        reap(timeout);
        role.release();
        return true;
    }

    // The watchdog's loop, until stop(): it looks every tick while operations are in flight (or
    // `busy()` says there is work) and nobody waits in the kernel for them (every idle_tick
    // while a worker does), and once no worker has polled for a few ticks (no pool polls this
    // backend: tests, or a program's last pool is gone) it waits in the kernel itself until a
    // worker asks for the role.
    template <class Reap, class Busy>
    void run_watchdog(Reap&& reap, Busy&& busy) noexcept {
        std::uint64_t polls_seen = worker_polls_.load(std::memory_order_relaxed);
        unsigned quiet_ticks = 0;
        while (!stopping()) {
            if (role.blocking()) {
                // A worker waits in the kernel for the completions: it reaps them, and it is a
                // poll that never looks "quiet". Look again after idle_tick (an idle server with
                // a pending accept wakes this thread 10 times a second, not 1,000).
                sleep_tick(idle_tick, false);
                quiet_ticks = 0;
                polls_seen = worker_polls_.load(std::memory_order_relaxed);
                continue;
            }
            const bool busy_now = in_flight_.load(std::memory_order_seq_cst) != 0 || busy();
            sleep_tick(busy_now ? tick : idle_tick, !busy_now);
            if (stopping())
                break;
            const std::uint64_t polls = worker_polls_.load(std::memory_order_relaxed);
            quiet_ticks = polls == polls_seen ? quiet_ticks + 1 : 0;
            polls_seen = polls;
            if (role.blocking() || !role.try_acquire())
                continue; // a worker waits for the completions (or reaps them now)
            if (quiet_ticks <= quiet_ticks_before_wait) {
                reap(std::chrono::milliseconds(0));
                role.release();
                continue;
            }
            watchdog_holds_.store(true, std::memory_order_seq_cst);
            while (!stopping() && !worker_wants_.exchange(false, std::memory_order_seq_cst))
                reap(infinite);
            watchdog_holds_.store(false, std::memory_order_relaxed);
            role.release();
            quiet_ticks = 0;
            polls_seen = worker_polls_.load(std::memory_order_relaxed);
        }
    }

    // Ends run_watchdog (the caller also interrupts a round waiting in the kernel).
    void stop() noexcept {
        {
            std::lock_guard lock(mutex_);
            stopping_.store(true, std::memory_order_release);
        }
        cv_.notify_one();
    }
    bool stopping() const noexcept { return stopping_.load(std::memory_order_acquire); }

private:
    // Sleeps `d`, or until stop(); with `until_issued`, also until an operation is issued.
    void sleep_tick(std::chrono::milliseconds d, bool until_issued) noexcept {
        std::unique_lock lock(mutex_);
        // TRICKY: a Dekker pair with issued(): the watchdog says it idles, then looks at
        // in_flight_ (under the mutex, in the predicate); an issuer counts, then looks at
        // watchdog_idle_ and notifies under the mutex. Either this sees the operation or it is
        // notified. Both sides seq_cst.
        watchdog_idle_.store(until_issued, std::memory_order_seq_cst);
        cv_.wait_for(lock, d, [this, until_issued] {
            return stopping_.load(std::memory_order_relaxed) ||
                   (until_issued && in_flight_.load(std::memory_order_seq_cst) != 0);
        });
        watchdog_idle_.store(false, std::memory_order_relaxed);
    }

    std::atomic<std::size_t> in_flight_{0};      // issued, on_complete not yet returned
    std::atomic<std::uint64_t> worker_polls_{0}; // worker polls that took the role
    std::atomic<bool> watchdog_holds_{false};    // the watchdog waits as the reaper
    std::atomic<bool> worker_wants_{false};      // ... and a worker asked for the role
    std::atomic<bool> watchdog_idle_{false};     // sleeps until an operation is issued
    std::atomic<bool> stopping_{false};
    std::mutex mutex_; // the watchdog's sleep
    std::condition_variable cv_;
};

} // namespace iocp::detail::io::lnx
