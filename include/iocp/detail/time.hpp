#pragma once
// Saturating time arithmetic. Every duration or time point a user passes (timers, every wait
// with a timeout) goes through these helpers, so that no value can overflow `<chrono>`'s
// arithmetic: a huge finite value means "never" / "wait forever", a negative one "now" / "poll".
// (Asio's chrono_time_traits::add clamps the same way.)

#include <chrono>
#include <cstdint>
#include <type_traits>

namespace iocp {

/// Waits without a time limit (Win32's INFINITE). Every wait treats a timeout of
/// `detail::max_finite_wait` or more as this.
inline constexpr std::chrono::milliseconds infinite = std::chrono::milliseconds::max();

namespace detail {

// The longest finite wait: 0xFFFFFFFE ms (about 49.7 days), the largest a Win32 wait takes
// before INFINITE. Longer timeouts wait forever on every backend, so both behave alike.
inline constexpr std::chrono::milliseconds max_finite_wait{0xFFFFFFFEll};

// `d` converted to `To`, rounded up (a wait or a timer never ends early), clamped to
// [To::min(), To::max()] instead of overflowing. Works for integral and floating-point reps.
template <class To, class Rep, class Period>
constexpr To saturating_ceil(std::chrono::duration<Rep, Period> d) noexcept {
    using wide = std::chrono::duration<long double, typename To::period>;
    const long double v = std::chrono::duration_cast<wide>(d).count();
    // NaN compares false with everything: treat it as "now".
    if (!(v == v))
        return To::zero();
    if (v >= static_cast<long double>(To::max().count()))
        return To::max();
    if (v <= static_cast<long double>(To::min().count()))
        return To::min();
    if constexpr (std::is_floating_point_v<typename To::rep>) {
        return std::chrono::duration_cast<To>(d);
    } else {
        // In range: the exact conversion cannot overflow (the comparison above left at least
        // the rounding slack of long double below To::max()).
        return std::chrono::ceil<To>(std::chrono::duration_cast<wide>(d));
    }
}

// A wait's timeout in milliseconds: negatives become 0 (poll), anything at or above
// `max_finite_wait` becomes `infinite`.
template <class Rep, class Period>
constexpr std::chrono::milliseconds wait_timeout(std::chrono::duration<Rep, Period> d) noexcept {
    const auto ms = saturating_ceil<std::chrono::milliseconds>(d);
    if (ms.count() <= 0)
        return std::chrono::milliseconds::zero();
    if (ms >= max_finite_wait)
        return infinite;
    return ms;
}

// `t` converted to `Clock::time_point`, rounded up and clamped to [min(), max()].
template <class Clock, class Duration>
constexpr typename Clock::time_point
saturating_time_point(std::chrono::time_point<Clock, Duration> t) noexcept {
    return
        typename Clock::time_point(saturating_ceil<typename Clock::duration>(t.time_since_epoch()));
}

// `now + d`, clamped: `now` for d <= 0, `time_point::max()` when the sum would pass it.
template <class Clock, class Rep, class Period>
constexpr typename Clock::time_point deadline_after(typename Clock::time_point now,
                                                    std::chrono::duration<Rep, Period> d) noexcept {
    using dur = typename Clock::duration;
    const dur step = saturating_ceil<dur>(d);
    if (step <= dur::zero())
        return now;
    if (now.time_since_epoch() > dur::max() - step)
        return Clock::time_point::max();
    return now + step;
}

} // namespace detail
} // namespace iocp
