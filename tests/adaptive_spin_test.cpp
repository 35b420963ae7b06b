// detail::adaptive_spin alone: the idle spin shortens when the spinner loses its core and finds
// nothing (a busy machine), grows back when spinning finds work, and stays within the pool's
// `spin` option. The policy only: no clock is read here.
#include "iocp/detail/pool/adaptive_spin.hpp"

#include <gtest/gtest.h>

#include <chrono>

using iocp::detail::adaptive_spin;
using std::chrono::microseconds;
using std::chrono::nanoseconds;

namespace {

TEST(adaptive_spin_test, starts_at_the_longest_spin) {
    adaptive_spin spin(microseconds(50));
    EXPECT_EQ(spin.window(), microseconds(50));
}

TEST(adaptive_spin_test, a_spin_that_lost_its_core_and_found_nothing_shortens_the_next) {
    adaptive_spin spin(microseconds(50));
    spin.after_spin(spin.window(), false, true);
    EXPECT_EQ(spin.window(), nanoseconds(12500));
    // A few such spins in a row and the spinner no longer yields at all (pure spin only).
    for (int i = 0; i < 10; ++i)
        spin.after_spin(spin.window(), false, true);
    EXPECT_EQ(spin.window(), nanoseconds(0));
}

TEST(adaptive_spin_test, a_spin_that_ran_out_its_window_keeps_it) {
    adaptive_spin spin(microseconds(50));
    spin.after_spin(spin.window(), false, true);
    const nanoseconds w = spin.window();
    spin.after_spin(w, false, false);
    EXPECT_EQ(spin.window(), w);
}

TEST(adaptive_spin_test, finding_work_grows_it_back_to_the_longest_and_no_further) {
    adaptive_spin spin(microseconds(50));
    for (int i = 0; i < 20; ++i)
        spin.after_spin(spin.window(), false, true);
    ASSERT_EQ(spin.window(), nanoseconds(0));
    // From nothing, work found in the pure-spin rounds restarts it at the minimum.
    spin.after_spin(spin.window(), true, false);
    EXPECT_EQ(spin.window(), iocp::detail::spin_window_min);
    spin.after_spin(spin.window(), true, false);
    EXPECT_EQ(spin.window(), 2 * nanoseconds(iocp::detail::spin_window_min));
    for (int i = 0; i < 20; ++i)
        spin.after_spin(spin.window(), true, false);
    EXPECT_EQ(spin.window(), microseconds(50));
    // Found work also when the core was lost meanwhile: the work decides.
    spin.after_spin(spin.window(), true, true);
    EXPECT_EQ(spin.window(), microseconds(50));
}

TEST(adaptive_spin_test, a_pool_without_spin_never_gets_one) {
    adaptive_spin spin(nanoseconds(0));
    spin.after_spin(spin.window(), true, false);
    EXPECT_EQ(spin.window(), nanoseconds(0));
}

TEST(adaptive_spin_test, a_yield_is_a_lost_core_only_when_it_took_a_time_slice) {
    EXPECT_FALSE(adaptive_spin::lost_core(microseconds(1)));
    EXPECT_FALSE(adaptive_spin::lost_core(iocp::detail::spin_preempted_after - nanoseconds(1)));
    EXPECT_TRUE(adaptive_spin::lost_core(iocp::detail::spin_preempted_after));
    EXPECT_TRUE(adaptive_spin::lost_core(std::chrono::milliseconds(3)));
}

} // namespace
