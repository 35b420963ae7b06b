#pragma once
// The pool's outstanding-work accounting: how many work items and I/O operations are not
// finished yet, without a shared counter per item, and the waits until there are none
// (thread_pool::wait, and join's two idle waits).
//
// Work items: the work queue counts what it accepted (`pushed`, passed in by the caller), each
// worker counts what it finished (run or abandoned) in its own slot on its own cache line, and
// only someone waiting adds them up. Operations: a started and a finished count.

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>

#include "constants.hpp"

namespace iocp::detail {

class outstanding_work {
public:
    // `slots` finished counts: one per worker, plus any the owner uses alone (shutdown's).
    explicit outstanding_work(std::size_t slots)
        : slots_(slots), finished_(std::make_unique<finished_counter[]>(slots)) {}

    outstanding_work(const outstanding_work&) = delete;
    outstanding_work& operator=(const outstanding_work&) = delete;

    // `n` work items finished (run or abandoned), counted in `slot` (one writer per slot).
    void finish_items(std::size_t slot, std::size_t n) noexcept {
        finished_[slot].value.fetch_add(n, std::memory_order_release);
        notify();
    }

    // Counts an operation as started. TRICKY: seq_cst, with the caller's seq_cst look at
    // whether I/O is closed right after it, against shutdown's seq_cst close and its later
    // idle wait: either the start sees the close coming (and refuses), or shutdown counts it
    // and waits for it.
    void operation_started() noexcept { io_started_.fetch_add(1, std::memory_order_seq_cst); }

    // Counts a started operation as finished (after its handler ran or it was destroyed).
    void operation_finished() noexcept {
        io_finished_.fetch_add(1, std::memory_order_seq_cst);
        notify();
    }

    // No work item outstanding, given `pushed()`, the items ever accepted (monotonic).
    // TRICKY: read the finished counts first, then the accepted count. Both only grow and
    // finished <= accepted at every instant, so equality means that at the moment the last
    // finished count was read, nothing was queued or running.
    template <class Pushed>
    bool idle(Pushed&& pushed) const noexcept {
        std::uint64_t finished = 0;
        for (std::size_t i = 0; i < slots_; ++i)
            finished += finished_[i].value.load(std::memory_order_acquire);
        return finished == pushed();
    }

    // No work item and no operation outstanding. TRICKY: the same argument as idle(), over
    // both pairs of counters: every "finished" count is read before every "started" count. A
    // handler that posts an item and then finishes its operation, or an item that starts an
    // operation and then finishes, is then always seen as outstanding on one side or the other.
    template <class Pushed>
    bool idle_with_io(Pushed&& pushed) const noexcept {
        const std::uint64_t io_done = io_finished_.load(std::memory_order_seq_cst);
        if (!idle(pushed))
            return false;
        return io_started_.load(std::memory_order_seq_cst) == io_done;
    }

    // Blocks until no work item is outstanding (and, with `with_io`, no operation either).
    // Throws std::system_error only if the OS refuses the mutex or condition variable.
    template <class Pushed>
    void wait_until_idle(bool with_io, Pushed&& pushed) {
        // TRICKY: announce the waiter, then read the counters (under the lock); a finisher
        // counts, then reads the waiters (notify): seq_cst fences on both sides, so one of
        // them sees the other and a last finish never goes unnoticed.
        waiters_.fetch_add(1, std::memory_order_seq_cst);
        std::atomic_thread_fence(std::memory_order_seq_cst);
        {
            std::unique_lock lock(mutex_);
            cv_.wait(lock, [&] { return with_io ? idle_with_io(pushed) : idle(pushed); });
        }
        waiters_.fetch_sub(1, std::memory_order_seq_cst);
    }

    // Operations ever started / finished (for tests and shutdown's checks).
    std::uint64_t operations_started() const noexcept {
        return io_started_.load(std::memory_order_seq_cst);
    }
    std::uint64_t operations_finished() const noexcept {
        return io_finished_.load(std::memory_order_seq_cst);
    }

private:
    // Called after a finished count grew.
    void notify() noexcept {
        std::atomic_thread_fence(std::memory_order_seq_cst); // pairs with wait_until_idle
        if (waiters_.load(std::memory_order_relaxed) == 0)
            return;
        std::lock_guard lock(mutex_);
        cv_.notify_all();
    }

    struct finished_counter {
        std::atomic<std::uint64_t> value{0};
        [[maybe_unused]] cache_line_pad pad{}; // one counter per cache line
    };

    const std::size_t slots_;
    std::unique_ptr<finished_counter[]> finished_;
    [[maybe_unused]] cache_line_pad pad0_{};
    std::atomic<std::uint64_t> io_started_{0};  // operations ever started (monotonic)
    std::atomic<std::uint64_t> io_finished_{0}; // operations ever finished (monotonic)
    std::atomic<int> waiters_{0};
    std::mutex mutex_;
    std::condition_variable cv_;
};

} // namespace iocp::detail
