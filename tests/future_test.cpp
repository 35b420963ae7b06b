// iocp::future (future.hpp), the result of thread_pool::submit: values of every kind, errors,
// timed waits, abandonment, the conversion to std::future, and a stress test of the hand-over
// between the work item and the waiter (run under TSan in CI).
#include "iocp/future.hpp"
#include "iocp/thread_pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "support/platform.hpp"

namespace {

using namespace std::chrono_literals;

static_assert(std::is_same_v<decltype(std::declval<iocp::thread_pool&>().submit([] { return 1; })),
                             iocp::future<int>>);
static_assert(!std::is_copy_constructible_v<iocp::future<int>>);
static_assert(std::is_nothrow_move_constructible_v<iocp::future<int>>);
// Code written for std::future keeps compiling: the conversion is implicit from an rvalue.
static_assert(std::is_convertible_v<iocp::future<int>, std::future<int>>);
static_assert(!std::is_convertible_v<iocp::future<int>&, std::future<int>>);
static_assert(std::is_convertible_v<iocp::future<int>, std::shared_future<int>>);

// A flag a work item waits on, so that a test can hold a future's result back.
struct gate {
    std::atomic<bool> open{false};
    void wait() const {
        while (!open.load(std::memory_order_acquire))
            std::this_thread::yield();
    }
    void release() { open.store(true, std::memory_order_release); }
    // A work item that waits for the gate, then returns `value`.
    auto then_return(int value) {
        return [this, value] {
            wait();
            return value;
        };
    }
};

// Counts live instances, so that a test can show that every result a pool made was destroyed.
struct counted {
    static inline std::atomic<int> live{0};
    int value;
    explicit counted(int v) : value(v) { live.fetch_add(1); }
    counted(counted&& other) noexcept : value(other.value) { live.fetch_add(1); }
    counted(const counted&) = delete;
    counted& operator=(const counted&) = delete;
    counted& operator=(counted&&) = delete;
    ~counted() { live.fetch_sub(1); }
};

void expect_future_error(const std::function<void()>& f, std::future_errc code, const char* what) {
    try {
        f();
        ADD_FAILURE() << what << ": no exception";
    } catch (const std::future_error& e) {
        EXPECT_EQ(e.code(), code) << what;
    }
}

TEST(future_test, delivers_values_of_every_kind) {
    iocp::thread_pool pool(2);
    EXPECT_EQ(pool.submit([] { return 6 * 7; }).get(), 42);
    EXPECT_EQ(pool.submit([] { return std::string(1000, 'x'); }).get(), std::string(1000, 'x'));
    auto ptr = pool.submit([] { return std::make_unique<int>(7); }).get(); // move-only
    ASSERT_NE(ptr, nullptr);
    EXPECT_EQ(*ptr, 7);
    int target = 0;
    int& ref = pool.submit([&target]() -> int& { return target; }).get();
    EXPECT_EQ(&ref, &target) << "a reference result refers to the same object";
    // A const result, as std::future takes it.
    EXPECT_EQ(pool.submit([]() -> const std::string { return "c"; }).get(), "c");
    iocp::future<void> v = pool.submit([] {});
    EXPECT_TRUE(v.valid());
    EXPECT_NO_THROW(v.get());
    EXPECT_FALSE(v.valid()) << "get() takes the result";
}

TEST(future_test, rethrows_what_the_callable_threw) {
    iocp::thread_pool pool(2);
    auto f = pool.submit([]() -> int { throw std::runtime_error("boom"); });
    // Let the worker drop its reference to the exception first (the reference count lives in
    // the uninstrumented C++ runtime, where TSan cannot see the hand-over).
    pool.wait();
    try {
        f.get();
        ADD_FAILURE() << "no exception";
    } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "boom");
    }
    EXPECT_FALSE(f.valid());
}

TEST(future_test, an_invalid_future_reports_no_state) {
    iocp::future<int> f;
    EXPECT_FALSE(f.valid());
    expect_future_error([&] { f.get(); }, std::future_errc::no_state, "get");
    expect_future_error([&] { f.wait(); }, std::future_errc::no_state, "wait");
    expect_future_error([&] { (void)f.wait_for(1ms); }, std::future_errc::no_state, "wait_for");
    std::future<int> converted = std::move(f);
    EXPECT_FALSE(converted.valid()) << "an invalid future converts to an invalid std::future";
    iocp::future<int> g;
    EXPECT_FALSE(g.share().valid()) << "and shares as an invalid std::shared_future";

    iocp::thread_pool pool(1);
    auto once = pool.submit([] { return 1; });
    EXPECT_EQ(once.get(), 1);
    expect_future_error([&] { once.get(); }, std::future_errc::no_state, "second get");
    auto moved = pool.submit([] { return 2; });
    iocp::future<int> to(std::move(moved));
    EXPECT_FALSE(moved.valid()); // NOLINT(bugprone-use-after-move): what a move leaves
    EXPECT_EQ(to.get(), 2);
}

TEST(future_test, timed_waits_time_out_until_the_result_is_there) {
    iocp::thread_pool pool(1);
    gate g;
    auto f = pool.submit(g.then_return(5));
    // The work item cannot have finished: it waits for the gate, which only this thread opens.
    EXPECT_EQ(f.wait_for(0ms), std::future_status::timeout);
    EXPECT_EQ(f.wait_for(2ms), std::future_status::timeout);
    EXPECT_EQ(f.wait_until(std::chrono::system_clock::now() + 1ms), std::future_status::timeout);
    EXPECT_EQ(f.wait_until(std::chrono::steady_clock::now() - 1h), std::future_status::timeout);
    g.release();
    f.wait();
    EXPECT_EQ(f.wait_for(0ms), std::future_status::ready);
    EXPECT_EQ(f.wait_until(std::chrono::steady_clock::now() - 1h), std::future_status::ready);
    EXPECT_TRUE(f.valid()) << "waiting does not take the result";
    EXPECT_EQ(f.get(), 5);
}

// Waits longer than the clock can count wait for the result: `now() + hours::max()` used to
// overflow to a deadline in the past, and the wait returned `timeout` at once (as
// std::future::wait_for does).
TEST(future_test, waits_too_long_for_the_clock_still_wait_for_the_result) {
    iocp::thread_pool pool(1);
    using namespace std::chrono;
    using steady_hours = time_point<steady_clock, hours>;
    using system_hours = time_point<system_clock, hours>;
    const std::function<std::future_status(const iocp::future<int>&)> waits[] = {
        [](const iocp::future<int>& f) { return f.wait_for(hours::max()); },
        [](const iocp::future<int>& f) { return f.wait_for(nanoseconds::max()); },
        [](const iocp::future<int>& f) { return f.wait_for(duration<double>(1e300)); },
        [](const iocp::future<int>& f) { return f.wait_until(steady_hours::max()); },
        [](const iocp::future<int>& f) { return f.wait_until(system_hours::max()); },
        [](const iocp::future<int>& f) { return f.wait_until(steady_clock::time_point::max()); },
    };
    for (const auto& wait : waits) {
        gate g;
        auto f = pool.submit(g.then_return(3));
        // Opened a little later, from another thread: the wait must still be waiting then.
        std::thread opener([&g] {
            std::this_thread::sleep_for(20ms);
            g.release();
        });
        EXPECT_EQ(wait(f), std::future_status::ready);
        opener.join();
        EXPECT_EQ(f.get(), 3);
    }
}

TEST(future_test, a_blocked_get_is_woken_by_the_result) {
    iocp::thread_pool pool(1);
    gate g;
    auto f = pool.submit(g.then_return(9));
    std::thread opener([&g] {
        std::this_thread::sleep_for(5ms); // let get() spin out and sleep
        g.release();
    });
    EXPECT_EQ(f.get(), 9);
    opener.join();
}

TEST(future_test, an_abandoned_work_item_breaks_its_promise) {
    iocp::thread_pool pool(1);
    gate blocker;
    std::atomic<bool> started{false};
    pool.post([&] {
        started = true;
        blocker.wait();
    });
    while (!started)
        std::this_thread::yield();
    iocp::future<int> native = pool.submit([] { return 1; });
    std::future<int> converted = pool.submit([] { return 2; }); // converted while queued
    iocp::future<int> shared_source = pool.submit([] { return 3; });
    std::shared_future<int> shared = shared_source.share(); // as std::future::share()
    std::size_t abandoned = 0;
    std::thread stopper([&] { abandoned = pool.stop(); });
    // stop() refuses posts before it abandons the queue: wait for that, then let the blocker go.
    std::error_code ec;
    while (!ec) {
        auto probe = pool.submit([] { return 0; }, ec);
        if (!ec)
            std::this_thread::yield();
    }
    EXPECT_EQ(ec, iocp::errc::closed);
    blocker.release();
    stopper.join();
    EXPECT_GE(abandoned, 3u);
    expect_future_error([&] { native.get(); }, std::future_errc::broken_promise, "native");
    expect_future_error([&] { converted.get(); }, std::future_errc::broken_promise, "converted");
    expect_future_error([&] { shared.get(); }, std::future_errc::broken_promise, "shared");
}

TEST(future_test, converts_to_std_future_before_and_after_the_result) {
    iocp::thread_pool pool(1);
    gate g;
    std::future<int> early = pool.submit(g.then_return(1));
    EXPECT_EQ(early.wait_for(0ms), std::future_status::timeout);
    g.release();
    EXPECT_EQ(early.get(), 1);

    auto ready = pool.submit([] { return 2; });
    ready.wait();
    std::future<int> late = std::move(ready);
    EXPECT_FALSE(ready.valid()); // NOLINT(bugprone-use-after-move): what a conversion leaves
    EXPECT_EQ(late.wait_for(0ms), std::future_status::ready);
    EXPECT_EQ(late.get(), 2);

    std::future<void> error = pool.submit([] { throw std::logic_error("late"); });
    pool.wait();
    EXPECT_THROW(error.get(), std::logic_error);

    std::vector<std::future<int>> as_before; // code written when submit returned std::future
    for (int i = 0; i < 10; ++i)
        as_before.push_back(pool.submit([i] { return i; }));
    int sum = 0;
    for (auto& f : as_before)
        sum += f.get();
    EXPECT_EQ(sum, 45);

    std::shared_future<int> shared = pool.submit([] { return 4; }).share();
    EXPECT_EQ(shared.get(), 4);
    EXPECT_EQ(shared.get(), 4);
    std::shared_future<int> converted_shared = pool.submit([] { return 5; }); // as from std::future
    EXPECT_EQ(converted_shared.get(), 5);
    converted_shared = pool.submit([] { return 6; });
    EXPECT_EQ(converted_shared.get(), 6);
}

TEST(future_test, a_future_dropped_unread_still_runs_and_frees_its_result) {
    ASSERT_EQ(counted::live.load(), 0);
    std::atomic<int> ran{0};
    {
        iocp::thread_pool pool(2);
        gate g;
        for (int i = 0; i < 100; ++i)
            (void)pool.submit([&g, &ran, i] {
                g.wait();
                ran.fetch_add(1);
                return counted(i);
            });
        g.release();
        pool.wait();
    }
    EXPECT_EQ(ran.load(), 100);
    EXPECT_EQ(counted::live.load(), 0) << "results nobody read were destroyed with their state";
}

// A pool used from the destructor of a static object, after the main thread's block cache (a
// thread_local) was destroyed: that cache used to hand out again the blocks it had given back,
// and a second submit got a block still in use (a wrong value, or a crash under ASan). The
// check runs after main returns, so a failure there exits the process with status 1.
struct static_pool_user {
    iocp::thread_pool& pool;
    ~static_pool_user() {
        long wrong = 0;
        try {
            for (int round = 0; round < 20; ++round) {
                std::vector<iocp::future<long>> results;
                for (int i = 0; i < 300; ++i)
                    results.push_back(pool.submit([i] { return long{i} * 3; }));
                for (int i = 0; i < 300; ++i)
                    wrong += results[static_cast<std::size_t>(i)].get() != long{i} * 3 ? 1 : 0;
            }
        } catch (const std::exception& e) {
            std::fprintf(stderr, "static destruction: %s\n", e.what());
            std::_Exit(1);
        }
        if (wrong != 0) {
            std::fprintf(stderr, "static destruction: %ld wrong results\n", wrong);
            std::_Exit(1);
        }
    }
};

TEST(future_test, a_pool_still_works_during_static_destruction) {
    static iocp::thread_pool pool(1);   // destroyed after the user below
    static static_pool_user user{pool}; // destroyed after main's thread_locals
    // A pool joined on this thread binds it to that pool's port (its drain dequeues here): the
    // static pool's own drain, after main, then finds this thread's binding destroyed.
    { iocp::thread_pool other(1); }
    std::vector<iocp::future<long>> results;
    for (int i = 0; i < 100; ++i)
        results.push_back(user.pool.submit([i] { return long{i}; }));
    pool.wait();
    long sum = 0;
    for (auto& r : results)
        sum += r.get();
    EXPECT_EQ(sum, 4950);
    results.clear(); // this thread frees the last blocks: they go to its cache
}

// Many producers and waiters, with random timing, each future used one of the ways a user
// can: get, poll with wait_for, convert (before or after the result), share, or drop. Every
// submitted item is counted once as run or abandoned, every value read is the one computed,
// and no result outlives the test.
TEST(future_test, stress_many_threads_every_way_of_waiting) {
    ASSERT_EQ(counted::live.load(), 0);
    const int threads = 4;
    const int per_thread = iocp_test::scaled(3000, 300);
    std::atomic<int> ran{0};
    std::atomic<long long> read_sum{0};
    std::atomic<long long> expected_sum{0};
    {
        iocp::thread_pool pool(2);
        std::vector<std::thread> users;
        for (int t = 0; t < threads; ++t) {
            users.emplace_back([&, t] {
                std::minstd_rand rng(static_cast<unsigned>(t) * 7919u + 1u);
                for (int i = 0; i < per_thread; ++i) {
                    const int value = t * per_thread + i;
                    const unsigned spin = rng() % 200;
                    auto f = pool.submit([&ran, value, spin] {
                        for (unsigned k = 0; k < spin; ++k)
                            std::atomic_signal_fence(std::memory_order_seq_cst);
                        ran.fetch_add(1, std::memory_order_relaxed);
                        return counted(value);
                    });
                    if (rng() % 4 == 0)
                        std::this_thread::yield();
                    switch (rng() % 5) {
                    case 0:
                        read_sum += f.get().value;
                        expected_sum += value;
                        break;
                    case 1:
                        while (f.wait_for(std::chrono::microseconds(rng() % 50)) !=
                               std::future_status::ready) {
                        }
                        read_sum += f.get().value;
                        expected_sum += value;
                        break;
                    case 2: {
                        std::future<counted> converted = std::move(f);
                        read_sum += converted.get().value;
                        expected_sum += value;
                        break;
                    }
                    case 3: {
                        std::shared_future<counted> shared = f.share();
                        read_sum += shared.get().value;
                        expected_sum += value;
                        break;
                    }
                    default: break; // dropped unread
                    }
                }
            });
        }
        for (auto& u : users)
            u.join();
        pool.join();
    }
    EXPECT_EQ(ran.load(), threads * per_thread);
    EXPECT_EQ(read_sum.load(), expected_sum.load());
    EXPECT_EQ(counted::live.load(), 0);
}

// Several threads blocked at once on futures that may share a parking stripe: each is woken by
// its own result, none is lost (a lost wake-up would hang the test at its timeout).
TEST(future_test, many_blocked_waiters_are_all_woken) {
    iocp::thread_pool pool(1);
    const int waiters = 32;
    gate g;
    std::vector<iocp::future<int>> futures;
    for (int i = 0; i < waiters; ++i)
        futures.push_back(pool.submit(g.then_return(i)));
    std::atomic<int> sum{0};
    std::atomic<int> blocked{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < waiters; ++i)
        threads.emplace_back([&, i] {
            blocked.fetch_add(1);
            sum += futures[static_cast<std::size_t>(i)].get();
        });
    while (blocked.load() < waiters)
        std::this_thread::yield();
    g.release();
    for (auto& t : threads)
        t.join();
    EXPECT_EQ(sum.load(), waiters * (waiters - 1) / 2);
}

} // namespace
