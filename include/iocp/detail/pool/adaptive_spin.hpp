#pragma once
// How long an idle worker spins before it sleeps: adapted between a short pure spin and the
// pool's `spin` option, as glibc's adaptive mutexes and the JVM's adaptive spinning adapt theirs.
//
// TRICKY: while a worker holds the spinner's role (wake_protocol), producers wake nobody, since
// a spinner will find the work. On a machine busy with other threads (a noisy neighbour, more
// runnable threads than cores) the spinner's yield hands its core away for a whole time slice:
// a spinner that keeps the role while it waits for its core leaves posts unnoticed for
// milliseconds, and the cycles it spins are taken from the producers. So a spin whose yield
// came back late and that then found nothing ends, and the next spin is a quarter as long; a
// spin that finds work doubles it again. On an idle machine a yield returns at once and the
// spin keeps its full length.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>

#include "constants.hpp"

namespace iocp::detail {

class adaptive_spin {
public:
    // `longest`: the pool's `spin` option (the window never exceeds it; 0: never spin).
    explicit adaptive_spin(std::chrono::nanoseconds longest) noexcept
        : longest_(longest), window_ns_(longest.count()) {}

    adaptive_spin(const adaptive_spin&) = delete;
    adaptive_spin& operator=(const adaptive_spin&) = delete;

    // The next spin's yielding part (after the pure-spin rounds). Relaxed: one spinner at a
    // time reads and writes it, and a stale value only makes one spin longer or shorter.
    std::chrono::nanoseconds window() const noexcept {
        return std::chrono::nanoseconds(window_ns_.load(std::memory_order_relaxed));
    }

    // Whether a yield that took `took` handed the core to another thread for a time slice.
    static bool lost_core(std::chrono::nanoseconds took) noexcept {
        return took >= spin_preempted_after;
    }

    // After a spin of `window` (what window() gave): it found work, or it lost its core and
    // then found nothing, or neither (it ran out its window).
    void after_spin(std::chrono::nanoseconds window, bool found, bool lost) noexcept {
        std::chrono::nanoseconds next = window;
        if (found)
            next = (std::min)(longest_,
                              (std::max)(window * 2, std::chrono::nanoseconds(spin_window_min)));
        else if (lost)
            next = window / 4;
        if (next != window)
            window_ns_.store(next.count(), std::memory_order_relaxed);
    }

private:
    const std::chrono::nanoseconds longest_;
    std::atomic<std::int64_t> window_ns_;
};

} // namespace iocp::detail
