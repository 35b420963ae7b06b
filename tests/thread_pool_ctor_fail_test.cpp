#include "iocp/thread_pool.hpp"

#include "iocp/detail/pool/work_lanes.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <system_error>
#include <thread>
#include <vector>

// Makes the constructing thread's allocations fail on demand (and, at the end, the allocation of
// a pool's work lane) (this program replaces the global
// operator new, so it is a program of its own). Only the thread that sets `armed` fails: the
// workers' own allocations are not what this test is about.

#if defined(__GNUC__) && !defined(__clang__)
// Once these are inlined, GCC 12 at -O2 takes the free() for a mismatch with operator new.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {
// Allocations of the armed thread still to succeed before one fails (-1: never fail).
thread_local long allocations_until_failure = -1;
std::atomic<long> injected_failures{0};
} // namespace

void* operator new(std::size_t n) {
    if (allocations_until_failure == 0) {
        allocations_until_failure = -1; // one failure per arming
        injected_failures.fetch_add(1, std::memory_order_relaxed);
        throw std::bad_alloc();
    }
    if (allocations_until_failure > 0)
        --allocations_until_failure;
    if (void* p = std::malloc(n == 0 ? 1 : n))
        return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

// Fails the constructor's 1st, 2nd, ... allocation in turn: the port, the arrays, the ring, the
// vector of threads, each std::thread's state. Each failure must surface as an exception, with
// every worker already started stopped and joined (a joinable std::thread destroyed by the
// unwinding would call std::terminate), and nothing leaked (LeakSanitizer in gcc-asan).
TEST(thread_pool_ctor_fail_test, a_failed_constructor_stops_every_worker_it_started) {
    long failures = 0;
    bool constructed = false;
    for (long k = 0; k < 10000 && !constructed; ++k) {
        std::atomic<int> started{0};
        std::atomic<int> stopped{0};
        iocp::thread_pool_options o;
        o.threads = 4;
        o.on_thread_start = [&](std::size_t) { ++started; };
        o.on_thread_stop = [&](std::size_t) { ++stopped; };
        try {
            allocations_until_failure = k;
            iocp::thread_pool pool(std::move(o));
            allocations_until_failure = -1;
            constructed = true;
            std::atomic<int> ran{0};
            pool.post([&] { ++ran; });
            pool.wait();
            EXPECT_EQ(ran, 1);
        } catch (const std::bad_alloc&) {
            allocations_until_failure = -1;
            ++failures;
        } catch (const std::system_error&) {
            allocations_until_failure = -1;
            ++failures;
        }
        EXPECT_EQ(started.load(), stopped.load()) << "failure at allocation " << k;
    }
    EXPECT_TRUE(constructed);
    EXPECT_GE(failures, 5) << "the port, arrays, ring and several threads each failed once";
    EXPECT_EQ(injected_failures.load(), failures);
}

// The work lane of a thread that posts first while memory is out: its items go to lane 0, and
// keep going there once memory is back (a thread's items never change queues, which would break
// their order), counted once.
TEST(work_lanes_alloc_fail, a_lane_that_cannot_be_made_is_lane_0_for_good) {
    using iocp::detail::work_item;
    using iocp::detail::work_lanes;
    work_lanes q(16);
    std::vector<work_item> items(4);
    ASSERT_TRUE(q.push(&items[0], false));
    const long failures_before = injected_failures.load();
    bool tried = false;
    const std::size_t main_lane = work_lanes::lane_of_this_thread();
    // Threads are numbered in turn: one of three new threads maps to a lane not made yet (not
    // lane 0, not this thread's).
    for (int attempt = 0; attempt < 3 && !tried; ++attempt) {
        std::thread([&] {
            const std::size_t lane = work_lanes::lane_of_this_thread();
            if (lane == 0 || lane == main_lane)
                return;
            tried = true;
            allocations_until_failure = 0; // the lane's queue is the first allocation
            EXPECT_TRUE(q.push(&items[1], false));
            allocations_until_failure = -1;
            EXPECT_TRUE(q.push(&items[2], false));
            EXPECT_TRUE(q.push(&items[3], false));
        }).join();
    }
    ASSERT_TRUE(tried);
    EXPECT_EQ(injected_failures.load(), failures_before + 1);
    EXPECT_EQ(q.pushed(), 4u);
    // The three items of the thread come out together, in order: one queue holds them.
    bool found = false;
    std::size_t popped = 0;
    for (work_lanes::pop_result r = q.pop(16); r.head != nullptr; r = q.pop(16)) {
        popped += r.count;
        for (work_item* w = r.head; w != nullptr; w = w->next) {
            if (w != &items[1])
                continue;
            found = true;
            ASSERT_EQ(w->next, &items[2]);
            ASSERT_EQ(w->next->next, &items[3]);
        }
    }
    EXPECT_TRUE(found);
    EXPECT_EQ(popped, 4u);
}
