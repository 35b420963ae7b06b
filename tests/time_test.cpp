#include "iocp/detail/time.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <limits>

// Unit tests of the saturating time helpers every user duration goes through (issue 8 item 1).
// Each conversion that overflowed `<chrono>` (UBSan: signed overflow) is here with its bound.

using namespace std::chrono;
using namespace std::chrono_literals;
using iocp::detail::deadline_after;
using iocp::detail::max_finite_wait;
using iocp::detail::saturating_ceil;
using iocp::detail::saturating_time_point;
using iocp::detail::wait_timeout;

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();
constexpr double nan = std::numeric_limits<double>::quiet_NaN();

} // namespace

TEST(time_test, saturating_ceil_clamps_instead_of_overflowing) {
    EXPECT_EQ(saturating_ceil<milliseconds>(hours::max()), milliseconds::max());
    EXPECT_EQ(saturating_ceil<milliseconds>(hours::min()), milliseconds::min());
    EXPECT_EQ(saturating_ceil<nanoseconds>(hours(24 * 365 * 1000)), nanoseconds::max());
    EXPECT_EQ(saturating_ceil<nanoseconds>(milliseconds::max()), nanoseconds::max());
    EXPECT_EQ(saturating_ceil<nanoseconds>(-milliseconds::max()), nanoseconds::min());
    EXPECT_EQ(saturating_ceil<milliseconds>(duration<double>(1e300)), milliseconds::max());
    EXPECT_EQ(saturating_ceil<milliseconds>(duration<double>(inf)), milliseconds::max());
    EXPECT_EQ(saturating_ceil<milliseconds>(duration<double>(-inf)), milliseconds::min());
    EXPECT_EQ(saturating_ceil<milliseconds>(duration<std::uint64_t, std::nano>(~0ull)),
              milliseconds(18446744073710)); // 2^64 - 1 ns, rounded up
}

TEST(time_test, saturating_ceil_rounds_up_in_range_values) {
    EXPECT_EQ(saturating_ceil<milliseconds>(1ns), 1ms);
    EXPECT_EQ(saturating_ceil<milliseconds>(1000us), 1ms);
    EXPECT_EQ(saturating_ceil<milliseconds>(1001us), 2ms);
    EXPECT_EQ(saturating_ceil<milliseconds>(-1500us), -1ms); // towards +infinity
    EXPECT_EQ(saturating_ceil<milliseconds>(duration<double, std::milli>(0.25)), 1ms);
    EXPECT_EQ(saturating_ceil<milliseconds>(0s), 0ms);
    EXPECT_EQ(saturating_ceil<nanoseconds>(3s), 3'000'000'000ns);
    EXPECT_EQ(saturating_ceil<milliseconds>(duration<double>(nan)), 0ms) << "NaN is now";
}

TEST(time_test, wait_timeout_polls_for_negatives_and_waits_forever_for_huge_values) {
    EXPECT_EQ(wait_timeout(-1ms), 0ms);
    EXPECT_EQ(wait_timeout(hours::min()), 0ms);
    EXPECT_EQ(wait_timeout(nanoseconds::min()), 0ms);
    EXPECT_EQ(wait_timeout(duration<double>(-inf)), 0ms);
    EXPECT_EQ(wait_timeout(duration<double>(nan)), 0ms);
    EXPECT_EQ(wait_timeout(0ms), 0ms);

    EXPECT_EQ(wait_timeout(1ns), 1ms);
    EXPECT_EQ(wait_timeout(max_finite_wait - 1ms), max_finite_wait - 1ms);
    EXPECT_EQ(wait_timeout(max_finite_wait), iocp::infinite);
    EXPECT_EQ(wait_timeout(hours::max()), iocp::infinite);
    EXPECT_EQ(wait_timeout(steady_clock::duration::max()), iocp::infinite);
    EXPECT_EQ(wait_timeout(milliseconds::max()), iocp::infinite);
    EXPECT_EQ(wait_timeout(iocp::infinite), iocp::infinite);
    EXPECT_EQ(wait_timeout(duration<double>(1e300)), iocp::infinite);
    EXPECT_EQ(wait_timeout(duration<double>(inf)), iocp::infinite);
    // Idempotent: a backend may normalise again what port already normalised.
    EXPECT_EQ(wait_timeout(wait_timeout(hours(1))), hours(1));
}

TEST(time_test, max_finite_wait_is_the_longest_win32_wait_below_infinite) {
    EXPECT_EQ(max_finite_wait.count(), 0xFFFFFFFEll);
    EXPECT_LT(max_finite_wait, iocp::infinite);
}

TEST(time_test, deadline_after_saturates_at_the_clocks_end_and_never_goes_back) {
    const auto now = steady_clock::now();
    EXPECT_EQ(deadline_after<steady_clock>(now, hours::max()), steady_clock::time_point::max());
    EXPECT_EQ(deadline_after<steady_clock>(now, steady_clock::duration::max()),
              steady_clock::time_point::max());
    EXPECT_EQ(deadline_after<steady_clock>(now, duration<double>(inf)),
              steady_clock::time_point::max());
    EXPECT_EQ(deadline_after<steady_clock>(now, -1h), now);
    EXPECT_EQ(deadline_after<steady_clock>(now, hours::min()), now);
    EXPECT_EQ(deadline_after<steady_clock>(now, 0s), now);
    EXPECT_EQ(deadline_after<steady_clock>(now, 5ms), now + 5ms);
    EXPECT_EQ(deadline_after<steady_clock>(now, 1ns), now + 1ns);

    const auto near_end = steady_clock::time_point::max() - 1s;
    EXPECT_EQ(deadline_after<steady_clock>(near_end, 2s), steady_clock::time_point::max());
    EXPECT_EQ(deadline_after<steady_clock>(near_end, 1s), steady_clock::time_point::max());
}

TEST(time_test, saturating_time_point_converts_between_precisions_without_overflow) {
    using coarse = time_point<steady_clock, hours>;
    EXPECT_EQ(saturating_time_point(coarse(hours::max())), steady_clock::time_point::max());
    EXPECT_EQ(saturating_time_point(coarse(hours::min())), steady_clock::time_point::min());
    EXPECT_EQ(saturating_time_point(coarse(hours(2))), steady_clock::time_point(hours(2)));
    using fine = time_point<steady_clock, duration<double>>;
    EXPECT_EQ(saturating_time_point(fine(duration<double>(inf))), steady_clock::time_point::max());
}
