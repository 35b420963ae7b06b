#include "iocp/coroutine.hpp"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <future>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "iocp/config.hpp"
#include "iocp/coro/spawn.hpp"
#include "iocp/coro/sync_wait.hpp"
#include "iocp/coro/task.hpp"
#include "iocp/coro/when_all.hpp"
#include "iocp/error.hpp"
#include "iocp/thread_pool.hpp"
#include "support/platform.hpp"

#if IOCP_HAS_IO
#include "iocp/acceptor.hpp"
#include "iocp/coro/io.hpp"
#include "iocp/endpoint.hpp"
#include "iocp/file.hpp"
#include "iocp/socket.hpp"
#endif

// Allocation counts (the awaited I/O allocates nothing): ThreadSanitizer's runtime replaces the
// global operator new itself, so a second replacement does not link there.
#if defined(__SANITIZE_THREAD__)
#define IOCP_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define IOCP_TEST_TSAN 1
#endif
#endif
#if !defined(IOCP_TEST_TSAN)
#include "support/count_allocations.hpp"
#endif

using namespace std::chrono_literals;

namespace {

// Long enough for a slow Wine, short enough to fail well before ctest's timeout.
constexpr auto deadline = 60s;

// Spins (with sleeps) until `pred` holds; aborts after the deadline (coroutines still refer to
// the test's stack, so it cannot simply return).
template <class Pred>
void wait_until(Pred pred, const char* what) {
    const auto end = std::chrono::steady_clock::now() + deadline;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > end) {
            std::fprintf(stderr, "timed out waiting until %s\n", what);
            std::fflush(stderr);
            std::abort();
        }
        std::this_thread::sleep_for(1ms);
    }
}

// Counts coroutine frames alive: one lives in each frame of the tests' coroutines, as a local
// (counted once the body starts) or as a by-value parameter (its copy in the frame is counted
// from the call on, so a frame destroyed before it started is counted too). It dies exactly
// when the frame does, whether the body ended or the frame was destroyed.
std::atomic<long> live_frames{0};
struct frame_probe {
    frame_probe() noexcept { live_frames.fetch_add(1, std::memory_order_relaxed); }
    frame_probe(const frame_probe&) noexcept { live_frames.fetch_add(1, std::memory_order_relaxed); }
    frame_probe& operator=(const frame_probe&) = delete;
    ~frame_probe() { live_frames.fetch_sub(1, std::memory_order_relaxed); }
};

// Collects what a pool's exception handler receives.
struct exception_sink {
    std::mutex mutex;
    std::vector<std::string> messages;
    std::function<void(std::exception_ptr)> handler() {
        return [this](std::exception_ptr e) {
            std::lock_guard lock(mutex);
            try {
                std::rethrow_exception(e);
            } catch (const std::exception& ex) {
                messages.emplace_back(ex.what());
            } catch (...) {
                messages.emplace_back("?");
            }
        };
    }
    std::size_t size() {
        std::lock_guard lock(mutex);
        return messages.size();
    }
};

iocp::thread_pool_options pool_options(std::size_t threads) {
    iocp::thread_pool_options o;
    o.threads = threads;
    return o;
}

// --- tasks ---------------------------------------------------------------------------------

iocp::task<int> forty_two() {
    frame_probe probe;
    co_return 42;
}

iocp::task<int> add_one(iocp::task<int> inner) {
    frame_probe probe;
    co_return co_await inner + 1;
}

iocp::task<> throws_runtime_error() {
    frame_probe probe;
    throw std::runtime_error("from the task");
    co_return;
}

iocp::task<std::string> catches() {
    frame_probe probe;
    try {
        co_await throws_runtime_error();
    } catch (const std::runtime_error& e) {
        co_return e.what();
    }
    co_return "nothing thrown";
}

TEST(coro_task_test, is_lazy_and_runs_when_awaited) {
    bool started = false;
    auto body = [&]() -> iocp::task<int> {
        started = true;
        co_return 7;
    };
    iocp::task<int> t = body();
    EXPECT_FALSE(started);
    EXPECT_EQ(iocp::sync_wait(std::move(t)), 7);
    EXPECT_TRUE(started);
}

TEST(coro_task_test, awaits_another_task_and_returns_its_value) {
    EXPECT_EQ(iocp::sync_wait(add_one(add_one(forty_two()))), 44);
    EXPECT_EQ(live_frames.load(), 0);
}

TEST(coro_task_test, exception_reaches_the_awaiter) {
    EXPECT_EQ(iocp::sync_wait(catches()), "from the task");
    EXPECT_THROW(iocp::sync_wait(throws_runtime_error()), std::runtime_error);
    EXPECT_EQ(live_frames.load(), 0);
}

TEST(coro_task_test, destroying_an_unstarted_task_frees_its_frame) {
    {
        iocp::task<int> t = forty_two();
        EXPECT_TRUE(static_cast<bool>(t));
        iocp::task<int> moved = std::move(t);
        EXPECT_FALSE(static_cast<bool>(t)); // NOLINT(bugprone-use-after-move): what we test
        EXPECT_TRUE(static_cast<bool>(moved));
        moved = forty_two(); // move assignment frees the frame held before
    }
    EXPECT_EQ(live_frames.load(), 0);
}

TEST(coro_task_test, move_only_results) {
    auto body = []() -> iocp::task<std::unique_ptr<int>> { co_return std::make_unique<int>(5); };
    std::unique_ptr<int> p = iocp::sync_wait(body());
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(*p, 5);
}

// Symmetric transfer: each level awaits the next, and the deepest completes at once, so every
// resumption is a tail call. Without it a million nested resumes overflow any thread's stack.
iocp::task<std::uint64_t> chain(std::uint64_t depth) {
    if (depth == 0)
        co_return 0;
    co_return co_await chain(depth - 1) + 1;
}

// A loop of a million co_awaits of tasks that complete at once (no nesting of frames: this is
// the "long co_await chain" of a loop body).
iocp::task<std::uint64_t> loop_of_awaits(std::uint64_t n) {
    std::uint64_t sum = 0;
    for (std::uint64_t i = 0; i < n; ++i)
        sum += static_cast<std::uint64_t>(co_await forty_two() - 41);
    co_return sum;
}

TEST(coro_task_test, a_million_step_await_loop_does_not_grow_the_stack) {
    EXPECT_EQ(iocp::sync_wait(loop_of_awaits(1'000'000)), 1'000'000u);
}

TEST(coro_task_test, a_million_deep_await_chain_does_not_overflow_the_stack) {
    // A million nested frames on the heap; the stack only ever holds the trampoline's loop. (GCC
    // 12 makes no tail call of a returned handle at -O0 or with AddressSanitizer: without the
    // trampoline this overflows there, in both directions of the chain.)
    constexpr std::uint64_t depth = 1'000'000;
    EXPECT_EQ(iocp::sync_wait(chain(depth)), depth);
}

// --- when_all ------------------------------------------------------------------------------

TEST(coro_when_all_test, returns_every_result_in_order) {
    iocp::thread_pool pool(2);
    auto on_pool = [&](int v) -> iocp::task<int> {
        frame_probe probe;
        co_await pool.schedule();
        co_return v;
    };
    auto nothing = [&]() -> iocp::task<> { co_await pool.schedule(); };
    auto [a, b, c] = iocp::sync_wait(iocp::when_all(on_pool(1), on_pool(2), nothing()));
    EXPECT_EQ(a, 1);
    EXPECT_EQ(b, 2);
    EXPECT_EQ(c, std::monostate{});
    std::vector<iocp::task<int>> many;
    for (int i = 0; i < 1000; ++i)
        many.push_back(on_pool(i));
    std::vector<int> results = iocp::sync_wait(iocp::when_all(std::move(many)));
    ASSERT_EQ(results.size(), 1000u);
    for (int i = 0; i < 1000; ++i)
        EXPECT_EQ(results[static_cast<std::size_t>(i)], i);
    EXPECT_EQ(live_frames.load(), 0);
}

TEST(coro_when_all_test, first_exception_after_every_task_has_ended) {
    iocp::thread_pool pool(2);
    std::atomic<int> finished{0};
    auto ok = [&](int v) -> iocp::task<int> {
        frame_probe probe;
        co_await pool.sleep_for(2ms);
        finished.fetch_add(1);
        co_return v;
    };
    auto bad = [&](const char* what) -> iocp::task<int> {
        frame_probe probe;
        co_await pool.schedule();
        finished.fetch_add(1);
        throw std::runtime_error(what);
    };
    try {
        (void)iocp::sync_wait(iocp::when_all(ok(1), bad("first"), ok(3), bad("second")));
        ADD_FAILURE() << "when_all did not throw";
    } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "first");
    }
    EXPECT_EQ(finished.load(), 4); // every task ran to its end before the rethrow
    std::vector<iocp::task<void>> tasks;
    for (int i = 0; i < 100; ++i) {
        tasks.push_back([](iocp::thread_pool& p, int i) -> iocp::task<> {
            frame_probe probe;
            co_await p.schedule();
            if (i == 57)
                throw std::logic_error("57");
        }(pool, i));
    }
    EXPECT_THROW(iocp::sync_wait(iocp::when_all(std::move(tasks))), std::logic_error);
    EXPECT_EQ(live_frames.load(), 0);
}

// --- schedule, sleep, spawn ----------------------------------------------------------------

TEST(coro_pool_test, schedule_resumes_on_a_worker) {
    iocp::thread_pool pool(2);
    auto body = [&]() -> iocp::task<bool> {
        const bool before = pool.is_worker();
        co_await pool.schedule();
        co_return !before && pool.is_worker();
    };
    EXPECT_TRUE(iocp::sync_wait(body()));
}

TEST(coro_pool_test, schedule_on_a_joined_pool_throws_closed) {
    iocp::thread_pool pool(1);
    pool.join();
    auto body = [&]() -> iocp::task<std::error_code> {
        try {
            co_await pool.schedule();
        } catch (const std::system_error& e) {
            co_return e.code();
        }
        co_return std::error_code{};
    };
    EXPECT_EQ(iocp::sync_wait(body()), iocp::errc::closed);
}

TEST(coro_pool_test, sleep_for_resumes_after_the_delay) {
    iocp::thread_pool pool(2);
    auto body = [&]() -> iocp::task<std::error_code> {
        co_return co_await pool.sleep_for(5ms);
    };
    const auto start = std::chrono::steady_clock::now();
    EXPECT_FALSE(iocp::sync_wait(body()));
    EXPECT_GE(std::chrono::steady_clock::now() - start, 5ms); // never early (not a speed check)
    auto until = [&]() -> iocp::task<std::error_code> {
        co_return co_await pool.sleep_until(std::chrono::steady_clock::now() - 1s);
    };
    EXPECT_FALSE(iocp::sync_wait(until()));
}

TEST(coro_pool_test, sleep_stopped_resumes_once_with_operation_aborted) {
    iocp::thread_pool pool(2);
    std::stop_source stop;
    std::atomic<int> resumed{0};
    std::atomic<bool> inline_in_request_stop{false};
    thread_local bool in_request_stop = false;
    auto body = [&]() -> iocp::task<std::error_code> {
        std::error_code ec = co_await pool.sleep_for(1h, stop.get_token());
        if (in_request_stop)
            inline_in_request_stop = true;
        resumed.fetch_add(1);
        co_return ec;
    };
    std::promise<std::error_code> result;
    auto driver = [&]() -> iocp::task<> { result.set_value(co_await body()); };
    iocp::spawn(pool, driver());
    std::this_thread::sleep_for(10ms); // usually suspended by now; either way one resume
    in_request_stop = true;
    stop.request_stop();
    in_request_stop = false;
    EXPECT_EQ(result.get_future().get(), iocp::errc::operation_aborted);
    EXPECT_EQ(resumed.load(), 1);
    EXPECT_FALSE(inline_in_request_stop.load());
    // Already stopped: resumes at once, nothing scheduled.
    EXPECT_EQ(iocp::sync_wait(body()), iocp::errc::operation_aborted);
}

TEST(coro_pool_test, spawn_runs_detached_and_reports_exceptions_to_the_pool) {
    exception_sink sink;
    iocp::thread_pool_options o = pool_options(2);
    o.exception_handler = sink.handler();
    iocp::thread_pool pool(o);
    std::atomic<int> ran{0};
    for (int i = 0; i < 100; ++i) {
        iocp::spawn(pool, [](iocp::thread_pool& p, std::atomic<int>& r, int i) -> iocp::task<> {
            frame_probe probe;
            co_await p.schedule();
            r.fetch_add(1);
            if (i % 10 == 0)
                throw std::runtime_error("spawned " + std::to_string(i));
        }(pool, ran, i));
    }
    wait_until([&] { return ran.load() == 100 && sink.size() == 10; }, "spawned tasks ran");
    pool.join();
    EXPECT_EQ(sink.size(), 10u);
    EXPECT_EQ(live_frames.load(), 0);
    // Refused after shutdown: the task is destroyed unstarted, the error thrown.
    EXPECT_THROW(iocp::spawn(pool, forty_two()), std::system_error);
    std::error_code ec;
    iocp::spawn(pool, forty_two(), ec);
    EXPECT_EQ(ec, iocp::errc::closed);
    EXPECT_EQ(live_frames.load(), 0);
}

// Shutdown while coroutines sleep or wait in schedule(): every frame ends exactly once.
TEST(coro_pool_test, shutdown_resumes_every_sleeping_coroutine_once) {
    for (bool use_stop : {false, true}) {
        std::atomic<int> resumed{0};
        std::atomic<int> closed{0};
        {
            iocp::thread_pool pool(2);
            for (int i = 0; i < 200; ++i) {
                iocp::spawn(pool, [](iocp::thread_pool& p, std::atomic<int>& r,
                                     std::atomic<int>& c, int i, frame_probe) -> iocp::task<> {
                    std::error_code ec = co_await p.sleep_for(i % 2 == 0 ? 1h : 1ms);
                    r.fetch_add(1);
                    if (ec == iocp::errc::closed)
                        c.fetch_add(1);
                    // Anything after shutdown began is refused, and still resumes once.
                    std::error_code again = co_await p.sleep_for(1ms);
                    if (!again)
                        co_return; // the pool was still running for this one
                    EXPECT_EQ(again, iocp::errc::closed);
                }(pool, resumed, closed, i, frame_probe{}));
            }
            wait_until([&] { return live_frames.load() == 200 || resumed.load() > 0; },
                       "spawned");
            std::this_thread::sleep_for(20ms);
            if (use_stop)
                (void)pool.stop();
            else
                pool.join();
            EXPECT_EQ(resumed.load(), 200);
            EXPECT_GE(closed.load(), 100); // the hour-long sleeps at least
        }
        EXPECT_EQ(live_frames.load(), 0);
    }
}

TEST(coro_pool_test, stop_abandons_queued_schedules_and_resumes_each_once) {
    for (int round = 0; round < iocp_test::scaled(20, 4); ++round) {
        std::atomic<int> resumed{0};
        std::atomic<int> refused{0};
        {
            iocp::thread_pool pool(2);
            // Many coroutines rescheduling themselves: stop() catches some in the queue.
            for (int i = 0; i < 100; ++i) {
                iocp::spawn(pool, [](iocp::thread_pool& p, std::atomic<int>& r, std::atomic<int>& f,
                                     frame_probe) -> iocp::task<> {
                    for (;;) {
                        try {
                            co_await p.schedule();
                        } catch (const std::system_error& e) {
                            EXPECT_EQ(e.code(), iocp::errc::closed);
                            f.fetch_add(1);
                            break;
                        }
                    }
                    r.fetch_add(1);
                }(pool, resumed, refused, frame_probe{}));
            }
            std::this_thread::sleep_for(5ms);
            (void)pool.stop();
            // Spawned frames not started yet were destroyed unstarted by stop(); each started
            // one ended after exactly one refusal (a schedule abandoned in the queue or refused).
            EXPECT_EQ(resumed.load(), refused.load());
            EXPECT_GT(refused.load(), 0);
        }
        EXPECT_EQ(live_frames.load(), 0);
    }
}

// Zero allocations per awaited schedule/sleep in steady state (as the pool's allocation test
// counts them).
#if !defined(IOCP_TEST_TSAN)
TEST(coro_pool_test, schedule_allocates_nothing_in_steady_state) {
    iocp::thread_pool pool(2);
    auto body = [&](int n) -> iocp::task<long long> {
        for (int i = 0; i < 1000; ++i) // warm the recycled work-item blocks on every thread
            co_await pool.schedule();
        const long long before = iocp_test::allocations.load();
        for (int i = 0; i < n; ++i)
            co_await pool.schedule();
        co_return iocp_test::allocations.load() - before;
    };
    EXPECT_EQ(iocp::sync_wait(body(10000)), 0);
}
#endif

} // namespace
