// detail::shutdown_phase alone: the pool's shutdown as one forward-only state machine, and
// (under TSan) what concurrent readers may see while shutdown moves it.
#include "iocp/detail/pool/shutdown_phase.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

using iocp::detail::shutdown_phase;
using phase = shutdown_phase::phase;

TEST(shutdown_phase_test, starts_running_and_not_abandoning) {
    shutdown_phase s;
    EXPECT_EQ(s.current(), phase::running);
    EXPECT_FALSE(s.abandoning());
    EXPECT_TRUE(s.at_least(phase::running));
    EXPECT_FALSE(s.at_least(phase::draining));
}

TEST(shutdown_phase_test, join_path_moves_forward_and_never_abandons) {
    shutdown_phase s;
    for (phase p :
         {phase::draining, phase::cancelling_io, phase::exiting, phase::closed, phase::joined}) {
        EXPECT_TRUE(s.advance(p));
        EXPECT_EQ(s.current(), p);
        EXPECT_FALSE(s.abandoning());
    }
}

TEST(shutdown_phase_test, stop_path_keeps_abandoning_in_every_later_phase) {
    shutdown_phase s;
    EXPECT_TRUE(s.advance(phase::abandoning, true));
    EXPECT_TRUE(s.abandoning());
    for (phase p : {phase::cancelling_io, phase::exiting, phase::closed, phase::joined}) {
        EXPECT_TRUE(s.advance(p));
        EXPECT_EQ(s.current(), p);
        EXPECT_TRUE(s.abandoning()) << "abandoning must survive the move to a later phase";
    }
}

TEST(shutdown_phase_test, never_moves_back_nor_repeats) {
    shutdown_phase s;
    ASSERT_TRUE(s.advance(phase::exiting));
    EXPECT_FALSE(s.advance(phase::exiting));
    EXPECT_FALSE(s.advance(phase::draining));
    EXPECT_FALSE(s.advance(phase::abandoning, true)) << "a refused move records nothing";
    EXPECT_FALSE(s.abandoning());
    EXPECT_EQ(s.current(), phase::exiting);
}

TEST(shutdown_phase_test, phases_may_be_skipped) {
    shutdown_phase s; // a constructor that failed before any worker started
    EXPECT_TRUE(s.advance(phase::closed));
    EXPECT_TRUE(s.at_least(phase::cancelling_io));
    EXPECT_TRUE(s.at_least(phase::exiting));
    EXPECT_FALSE(s.at_least(phase::joined));
}

// One thread shuts down (join or stop, alternately, on fresh machines) while readers watch:
// each reader sees the phase only grow, abandoning only on the stop path and, once seen, on
// every later read; and what the shutdown thread wrote before a move is visible to a reader
// that sees the move (the seq_cst/acquire pairs the pool relies on).
TEST(shutdown_phase_test, stress_readers_see_a_monotonic_consistent_machine) {
    constexpr int rounds = 2000;
    constexpr int readers = 3;
    for (int round = 0; round < rounds; round += 100) {
        std::vector<shutdown_phase> machines(100);
        std::vector<int> written(100, 0); // plain data published by the moves
        std::atomic<int> violations{0};
        std::vector<std::thread> threads;
        for (int r = 0; r < readers; ++r) {
            threads.emplace_back([&] {
                for (std::size_t m = 0; m < machines.size(); ++m) {
                    const bool stop_path = (m % 2) == 1;
                    phase last = phase::running;
                    bool saw_abandon = false;
                    while (last != phase::joined) {
                        const bool abandon = machines[m].abandoning();
                        const phase now = machines[m].current();
                        if (now < last || (abandon && !stop_path) || (saw_abandon && !abandon))
                            violations.fetch_add(1);
                        if (now != phase::running && written[m] != 1)
                            violations.fetch_add(1); // the write before the move is seen
                        saw_abandon = saw_abandon || abandon;
                        last = now;
                    }
                }
            });
        }
        threads.emplace_back([&] {
            for (std::size_t m = 0; m < machines.size(); ++m) {
                written[m] = 1;
                if ((m % 2) == 1)
                    machines[m].advance(phase::abandoning, true);
                else
                    machines[m].advance(phase::draining);
                for (phase p : {phase::cancelling_io, phase::exiting, phase::closed, phase::joined})
                    machines[m].advance(p);
            }
        });
        for (auto& t : threads)
            t.join();
        EXPECT_EQ(violations.load(), 0);
    }
}
