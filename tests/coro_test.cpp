#include "iocp/coroutine.hpp"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
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
#include "support/coroutines.hpp"
#include "support/platform.hpp"
#include "support/temp_path.hpp"
#include "support/waiting.hpp"

#if IOCP_WINDOWS
#include "iocp/detail/win32/windows.hpp"
#else
#include <unistd.h>
#endif

#if IOCP_HAS_IO
#include "iocp/acceptor.hpp"
#include "iocp/coro/io.hpp"
#include "iocp/endpoint.hpp"
#include "iocp/file.hpp"
#include "iocp/socket.hpp"
#endif

// Allocation counts (the awaited I/O allocates nothing): ThreadSanitizer's runtime replaces the
// global operator new itself, so a second replacement does not link there.
#if !defined(IOCP_TEST_TSAN)
#include "support/count_allocations.hpp"
#endif

using namespace std::chrono_literals;

namespace {

using iocp_test::await;
using iocp_test::wait_until;

// Long enough for a slow Wine, short enough to fail well before ctest's timeout.

// Counts coroutine frames alive: one lives in each frame of the tests' coroutines, as a local
// (counted once the body starts) or as a by-value parameter (its copy in the frame is counted
// from the call on, so a frame destroyed before it started is counted too). It dies exactly
// when the frame does, whether the body ended or the frame was destroyed.
std::atomic<long> live_frames{0};
struct frame_probe {
    frame_probe() noexcept { live_frames.fetch_add(1, std::memory_order_relaxed); }
    frame_probe(const frame_probe&) noexcept {
        live_frames.fetch_add(1, std::memory_order_relaxed);
    }
    frame_probe& operator=(const frame_probe&) = delete;
    ~frame_probe() { live_frames.fetch_sub(1, std::memory_order_relaxed); }
};

// Collects what a pool's exception handler receives.
struct exception_sink {
    std::mutex mutex;
    std::vector<std::string> messages;
    std::function<void(std::exception_ptr)> handler() {
        return [this](const std::exception_ptr& e) {
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

// TRICKY: a worker may run the resumption before await_suspend has returned on the awaiting
// thread (the work item is queued first). The coroutine must still go on on that worker, never
// on the thread that awaited: thousands of rounds from a thread that is not a worker, with
// sleeps that are due at once (their timer fires while the co_await is still arming).
TEST(coro_pool_test, schedule_and_sleep_from_another_thread_always_resume_on_a_worker) {
    iocp::thread_pool pool(2);
    const int rounds = iocp_test::scaled(20000, 2000);
    auto hop = [&]() -> iocp::task<bool> {
        co_await pool.schedule();
        co_return pool.is_worker();
    };
    auto sleep = [&]() -> iocp::task<bool> {
        const std::error_code ec = co_await pool.sleep_until(std::chrono::steady_clock::now());
        co_return !ec && pool.is_worker();
    };
    int hops_elsewhere = 0;
    int sleeps_elsewhere = 0;
    for (int i = 0; i < rounds; ++i) { // each round awaits from this thread, not a worker
        hops_elsewhere += iocp::sync_wait(hop()) ? 0 : 1;
        sleeps_elsewhere += iocp::sync_wait(sleep()) ? 0 : 1;
    }
    EXPECT_EQ(hops_elsewhere, 0);
    EXPECT_EQ(sleeps_elsewhere, 0);
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
    auto body = [&]() -> iocp::task<std::error_code> { co_return co_await pool.sleep_for(5ms); };
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
        std::atomic<int> started{0};
        std::atomic<int> resumed{0};
        std::atomic<int> closed{0};
        {
            iocp::thread_pool pool(2);
            for (int i = 0; i < 200; ++i) {
                iocp::spawn(pool,
                            [](iocp::thread_pool& p, std::atomic<int>& s, std::atomic<int>& r,
                               std::atomic<int>& c, int i, frame_probe) -> iocp::task<> {
                                s.fetch_add(1);
                                std::error_code ec = co_await p.sleep_for(i % 2 == 0 ? 1h : 1ms);
                                r.fetch_add(1);
                                if (ec == iocp::errc::closed)
                                    c.fetch_add(1);
                                // Anything after shutdown began is refused, and still resumes once.
                                std::error_code again = co_await p.sleep_for(1ms);
                                if (!again)
                                    co_return; // the pool was still running for this one
                                EXPECT_EQ(again, iocp::errc::closed);
                            }(pool, started, resumed, closed, i, frame_probe{}));
            }
            // Every task must be asleep before shutdown: one whose start is still queued is
            // abandoned unstarted by stop() (its frame destroyed, never resumed).
            wait_until([&] { return started.load() == 200; }, "every task to start");
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
        std::atomic<int> hops{0};
        {
            iocp::thread_pool pool(2);
            // Many coroutines rescheduling themselves: stop() catches some in the queue.
            for (int i = 0; i < 100; ++i) {
                iocp::spawn(pool,
                            [](iocp::thread_pool& p, std::atomic<int>& r, std::atomic<int>& f,
                               std::atomic<int>& h, frame_probe) -> iocp::task<> {
                                for (;;) {
                                    try {
                                        co_await p.schedule();
                                        h.fetch_add(1);
                                    } catch (const std::system_error& e) {
                                        EXPECT_EQ(e.code(), iocp::errc::closed);
                                        f.fetch_add(1);
                                        break;
                                    }
                                }
                                r.fetch_add(1);
                            }(pool, resumed, refused, hops, frame_probe{}));
            }
            // Some coroutines are running (however loaded the machine), then stop.
            while (hops.load() < 200)
                std::this_thread::yield();
            (void)pool.stop();
            // Spawned frames not started yet were destroyed unstarted by stop(); each started
            // one ended after exactly one refusal (a schedule abandoned in the queue or refused).
            EXPECT_EQ(resumed.load(), refused.load());
            EXPECT_GT(refused.load(), 0);
        }
        EXPECT_EQ(live_frames.load(), 0);
    }
}

// --- schedule from a worker: the continuation slot ---------------------------------------
// On a worker, `co_await schedule()` puts the continuation in that worker's own slot (Go's
// runnext, Asio's private queue for continuations): it runs when the current item returns.
// These tests prove it is never stuck there, never starves the queue, and is counted.

TEST(coro_pool_test, a_continuation_is_taken_by_an_idle_worker_while_its_worker_is_busy) {
    // The item that resumed the coroutine goes on running after the coroutine suspended, and
    // waits for the continuation: the continuation must not wait for that item (it would wait
    // for ever), an idle worker takes it. (It may also resume inside the item, in the co_await,
    // when that worker took it before the suspension ended: the resume gate's rule.)
    iocp::thread_pool pool(2);
    for (int round = 0; round < 20; ++round) {
        std::atomic<bool> resumed{false};
        std::promise<void> item_done;
        auto hop = [&]() -> iocp_test::eager_coroutine {
            co_await pool.schedule();
            resumed.store(true);
        };
        pool.post([&] {
            hop(); // suspends in schedule(): the continuation is in this worker's slot
            iocp_test::wait_until([&] { return resumed.load(); }, "the continuation to run");
            item_done.set_value();
        });
        iocp_test::await(item_done.get_future(), "the item", round);
        EXPECT_TRUE(resumed.load());
        pool.wait();
    }
}

TEST(coro_pool_test, continuations_in_a_row_let_queued_work_and_timers_run) {
    // One worker: a coroutine hopping without end must not starve what was queued before it,
    // nor a timer that comes due while it hops. Continuations jump the queue at most
    // continuation_streak times in a row, so the queued item runs within that many hops; the
    // timer's item is queued by the timer thread whenever it wakes, and then runs as soon.
    iocp::thread_pool pool(1);
    std::atomic<int> hop_now{0};
    std::atomic<int> item_ran_at{-1};
    std::atomic<bool> timer_ran{false};
    std::atomic<bool> done{false};
    auto body = [&]() -> iocp::task<> {
        co_await pool.schedule();
        pool.post([&] { item_ran_at.store(hop_now.load()); });
        pool.post_after(std::chrono::milliseconds(1), [&] { timer_ran.store(true); });
        // Hops until both ran: if either starved, this never ends (the wait below says so).
        for (int i = 1; item_ran_at.load() < 0 || !timer_ran.load(); ++i) {
            hop_now.store(i);
            co_await pool.schedule();
        }
        done.store(true);
    };
    iocp::spawn(pool, body());
    iocp_test::wait_until([&] { return done.load(); }, "the queued item and the timer to run");
    pool.wait();
    EXPECT_GE(item_ran_at.load(), 1);
    EXPECT_LE(item_ran_at.load(), static_cast<int>(iocp::detail::continuation_streak) + 1);
}

TEST(coro_pool_test, a_worker_hopping_from_its_slot_still_looks_at_the_port) {
    // A worker looks for I/O completions every port_poll_interval items it runs: continuations
    // run from its own slot count too (else a hopping coroutine would hold back completions for
    // continuation_streak times longer). One worker, one coroutine, nothing else queued: every
    // look is one of those periodic ones (stats().port_polls).
    iocp::thread_pool pool(1);
    constexpr int hops = 6400;
    auto body = [&]() -> iocp::task<std::uint64_t> {
        co_await pool.schedule();
        const std::uint64_t before = pool.stats().port_polls;
        for (int i = 0; i < hops; ++i)
            co_await pool.schedule();
        co_return pool.stats().port_polls - before;
    };
    const std::uint64_t polls = iocp::sync_wait(body());
    EXPECT_GE(polls, static_cast<std::uint64_t>(hops / iocp::detail::port_poll_interval) - 1);
}

TEST(coro_pool_test, wait_counts_a_continuation_waiting_in_a_worker_slot) {
    // wait() returns only when everything posted has run: a continuation in a worker's slot
    // is outstanding work like a queued item.
    iocp::thread_pool pool(2);
    for (int round = 0; round < 50; ++round) {
        std::atomic<int> hopped{0};
        auto body = [&]() -> iocp::task<> {
            for (int i = 0; i < 200; ++i) {
                co_await pool.schedule();
                hopped.fetch_add(1);
            }
        };
        iocp::spawn(pool, body());
        pool.wait();
        EXPECT_EQ(hopped.load(), 200) << "round " << round;
    }
}

TEST(coro_pool_test, a_continuation_posted_by_a_completion_runs_on_a_single_worker) {
    // The coroutine resumes from a port completion (a cancelled sleep), outside any work item,
    // and then hops: its only worker must take the continuation from its own slot (an idle look
    // that sees it but leaves it to its owner would spin for ever).
    iocp::thread_pool pool(1);
    for (int round = 0; round < 50; ++round) {
        std::stop_source stop;
        std::atomic<bool> sleeping{false};
        std::promise<int> done;
        auto body = [&]() -> iocp::task<> {
            sleeping.store(true);
            try {
                co_await pool.sleep_for(std::chrono::hours(1), stop.get_token());
            } catch (const std::system_error&) {
            }
            int n = 0;
            for (; n < 100; ++n)
                co_await pool.schedule();
            done.set_value(n);
        };
        iocp::spawn(pool, body());
        iocp_test::wait_until([&] { return sleeping.load(); }, "the coroutine to sleep");
        stop.request_stop();
        EXPECT_EQ(iocp_test::await(done.get_future(), "the hops", round), 100);
        pool.wait();
    }
}

TEST(coro_pool_test, shutdown_while_coroutines_hop_resumes_each_once) {
    // stop() racing many coroutines that hop between workers without end, and join() racing
    // ones that hop a while: every frame is destroyed exactly once; under stop() each
    // coroutine that started ends with errc::closed, under join() each runs to its end.
    for (int round = 0; round < 40; ++round) {
        const bool stopping = round % 2 == 0;
        constexpr int n = 64;
        constexpr int join_hops = 300;
        std::atomic<int> destroyed{0};
        std::atomic<int> started{0};
        std::atomic<int> ended{0};
        std::atomic<int> closed{0};
        {
            std::optional<iocp::thread_pool> pool;
            // The lambda outlives the pool: its frames refer to it until they end.
            auto body = [&](iocp_test::frame_guard) -> iocp::task<> {
                started.fetch_add(1);
                try {
                    for (int i = 0; stopping || i < join_hops; ++i)
                        co_await pool->schedule();
                } catch (const std::system_error& e) {
                    if (e.code() == iocp::errc::closed)
                        closed.fetch_add(1);
                }
                ended.fetch_add(1);
            };
            pool.emplace(round % 4 < 2 ? 2 : 3);
            std::mt19937 rng(static_cast<unsigned>(round));
            for (int c = 0; c < n; ++c)
                iocp::spawn(*pool, body(iocp_test::frame_guard(destroyed)));
            std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
            if (stopping)
                pool->stop();
            else
                pool->join();
            pool.reset();
        }
        EXPECT_EQ(destroyed.load(), n) << "round " << round;
        EXPECT_EQ(ended.load(), started.load()) << "round " << round;
        if (stopping) {
            EXPECT_EQ(closed.load(), started.load()) << "round " << round;
        } else {
            EXPECT_EQ(started.load(), n) << "round " << round;
            EXPECT_EQ(closed.load(), 0) << "round " << round;
        }
    }
}

// No allocation per awaited schedule in steady state (counted as the pool's allocation test
// counts posts): the work item of each hop is a recycled block. Blocks move between threads in
// batches of 64 (detail/work_item.hpp), so, as in thread_pool_alloc_test, a few fresh blocks may
// still be made while those batches settle between the threads: bounded, never one per hop.
#if !defined(IOCP_TEST_TSAN)
TEST(coro_pool_test, schedule_allocates_nothing_per_hop_in_steady_state) {
    iocp::thread_pool pool(2);
    const int n = 20000;
    auto body = [&]() -> iocp::task<long long> {
        for (int i = 0; i < 5000; ++i) // warm the recycled work-item blocks on every thread
            co_await pool.schedule();
        const long long before = iocp_test::allocations.load();
        for (int i = 0; i < n; ++i)
            co_await pool.schedule();
        co_return iocp_test::allocations.load() - before;
    };
    const long long allocated = iocp::sync_wait(body());
    std::printf("[ allocs   ] %lld allocations in %d awaited schedules\n", allocated, n);
    // Typically 0-15 here; how many blocks are still settling between the threads depends on how
    // the scheduler interleaves them (a loaded machine: more). One per hop would be 20,000.
    EXPECT_LE(allocated, n / 100);
}
#endif

#if IOCP_HAS_IO

// --- I/O -----------------------------------------------------------------------------------

using iocp::address_family;

// A connected pair, made with the awaitables themselves.
struct socket_pair {
    iocp::socket client;
    iocp::socket server;
};

iocp::task<socket_pair> connect_pair(iocp::thread_pool& pool, iocp::acceptor& listener) {
    socket_pair p{iocp::socket(pool), iocp::socket()};
    auto accept = [&]() -> iocp::task<iocp::socket> {
        auto [conn, peer] = co_await iocp::async_accept(listener).or_throw();
        EXPECT_EQ(peer.family(), address_family::ipv4);
        co_return std::move(conn);
    };
    auto connect = [&]() -> iocp::task<> {
        co_await iocp::async_connect(p.client, listener.local_endpoint()).or_throw();
    };
    auto [server, unused] = co_await iocp::when_all(accept(), connect());
    p.server = std::move(server);
    co_return p;
}

socket_pair make_pair(iocp::thread_pool& pool) {
    iocp::acceptor listener(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    return iocp::sync_wait(connect_pair(pool, listener));
}

TEST(coro_io_test, accept_connect_send_recv_and_their_errors) {
    iocp::thread_pool pool(2);
    socket_pair p = make_pair(pool);
    auto body = [&]() -> iocp::task<> {
        const char msg[] = "hello, coroutine";
        iocp::io_result sent = co_await iocp::async_send(p.client, iocp::buffer(msg, sizeof msg));
        EXPECT_FALSE(sent.ec) << sent.ec.message();
        EXPECT_EQ(sent.bytes, sizeof msg);
        char got[sizeof msg] = {};
        std::size_t n = 0;
        while (n < sizeof msg) {
            const std::thread::id awaiting = std::this_thread::get_id();
            auto [ec, bytes] =
                co_await iocp::async_recv(p.server, iocp::buffer(got + n, sizeof got - n));
            EXPECT_FALSE(ec) << ec.message();
            if (ec)
                co_return;
            // Resumed on the worker that ran the completion, or (a completion faster than the
            // suspension) still on the thread that awaited: this one starts on main.
            EXPECT_TRUE(pool.is_worker() || std::this_thread::get_id() == awaiting);
            n += bytes;
        }
        EXPECT_STREQ(got, msg);
        // Vectored send_all, throwing variant: the total.
        std::vector<char> big(3 << 20, 'x');
        const iocp::const_buffer parts[] = {iocp::buffer(big.data(), 1 << 20),
                                            iocp::buffer(big.data() + (1 << 20), 2 << 20)};
        auto reader = [&]() -> iocp::task<std::size_t> {
            std::vector<char> in(1 << 16);
            std::size_t total = 0;
            while (total < big.size())
                total += co_await iocp::async_recv(p.server, iocp::buffer(in)).or_throw();
            co_return total;
        };
        auto writer = [&]() -> iocp::task<std::size_t> {
            co_return co_await iocp::async_send_all(p.client,
                                                    std::span<const iocp::const_buffer>(parts))
                .or_throw();
        };
        auto [received, total] = co_await iocp::when_all(reader(), writer());
        EXPECT_EQ(total, big.size());
        EXPECT_EQ(received, big.size());
        // eof after the peer's shutdown; the throwing variant throws it.
        p.client.shutdown(iocp::shutdown_type::send);
        char c = 0;
        iocp::io_result eof = co_await iocp::async_recv(p.server, iocp::buffer(&c, 1));
        EXPECT_EQ(eof.ec, iocp::errc::eof);
        try {
            (void)co_await iocp::async_recv(p.server, iocp::buffer(&c, 1)).or_throw();
            ADD_FAILURE() << "no exception";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code(), iocp::errc::eof);
        }
        // Refused before anything starts: a socket that is not open, no buffer.
        iocp::socket closed(pool);
        iocp::io_result bad = co_await iocp::async_recv(closed, iocp::buffer(&c, 1));
        EXPECT_EQ(bad.ec, iocp::errc::invalid_handle);
        iocp::io_result none =
            co_await iocp::async_recv(p.server, std::span<const iocp::mutable_buffer>());
        EXPECT_EQ(none.ec, std::errc::invalid_argument);
    };
    iocp::sync_wait(body());
}

TEST(coro_io_test, connect_refused_and_accept_on_a_closed_acceptor) {
    iocp::thread_pool pool(2);
    std::uint16_t port = 0;
    {
        iocp::acceptor a(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
        port = a.local_endpoint().port();
    }
    auto body = [&]() -> iocp::task<> {
        iocp::socket s(pool);
        std::error_code ec =
            co_await iocp::async_connect(s, iocp::endpoint::loopback(address_family::ipv4, port));
        EXPECT_EQ(ec, iocp::errc::connection_refused) << ec.message();
        iocp::acceptor closed(pool);
        iocp::accept_result r = co_await iocp::async_accept(closed);
        EXPECT_TRUE(r.ec);
        EXPECT_FALSE(r.conn.is_open());
    };
    iocp::sync_wait(body());
}

class temp_file {
public:
    explicit temp_file(const std::string& name) : path_(iocp_test::temp_path("coro_test", name)) {
        std::error_code ec;
        std::filesystem::remove(path_, ec);
    }
    temp_file(const temp_file&) = delete;
    temp_file& operator=(const temp_file&) = delete;
    ~temp_file() {
        std::error_code ec;
        std::filesystem::remove(path_, ec);
    }
    const std::filesystem::path& get() const { return path_; }

private:
    std::filesystem::path path_;
};

TEST(coro_io_test, file_write_at_then_read_at_and_eof) {
    iocp::thread_pool pool(2);
    temp_file tmp("rw.bin");
    iocp::file f(pool, tmp.get(), iocp::file_mode::read_write | iocp::file_mode::create);
    auto body = [&]() -> iocp::task<> {
        std::vector<unsigned char> out(100000);
        for (std::size_t i = 0; i < out.size(); ++i)
            out[i] = static_cast<unsigned char>(i * 7);
        std::size_t written = 0;
        while (written < out.size())
            written +=
                co_await iocp::async_write_at(
                    f, 4096 + written, iocp::buffer(out.data() + written, out.size() - written))
                    .or_throw();
        std::vector<unsigned char> in(out.size());
        std::size_t read = 0;
        while (read < in.size()) {
            iocp::io_result r = co_await iocp::async_read_at(
                f, 4096 + read, iocp::buffer(in.data() + read, in.size() - read));
            EXPECT_FALSE(r.ec) << r.ec.message();
            if (r.ec)
                co_return;
            read += r.bytes;
        }
        EXPECT_EQ(in, out);
        unsigned char c = 0;
        iocp::io_result eof =
            co_await iocp::async_read_at(f, 4096 + out.size(), iocp::buffer(&c, 1));
        EXPECT_EQ(eof.ec, iocp::errc::eof);
    };
    iocp::sync_wait(body());
}

// Thousands of coroutines: pairs ping-pong a counter over loopback; every byte is checked.
TEST(coro_io_test, thousands_of_coroutines_ping_pong) {
    iocp::thread_pool pool(4);
    const int pairs = iocp_test::scaled(1000, 100);
    const int rounds = iocp_test::scaled(20, 5);
    iocp::acceptor listener(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    std::vector<socket_pair> sockets;
    sockets.reserve(static_cast<std::size_t>(pairs));
    for (int i = 0; i < pairs; ++i)
        sockets.push_back(iocp::sync_wait(connect_pair(pool, listener)));
    auto pinger = [&](iocp::socket& s, std::uint32_t id) -> iocp::task<int> {
        frame_probe probe;
        int ok = 0;
        for (int r = 0; r < rounds; ++r) {
            const std::uint32_t out[2] = {id, static_cast<std::uint32_t>(r)};
            co_await iocp::async_send_all(s, iocp::buffer(out, sizeof out)).or_throw();
            std::uint32_t in[2] = {};
            std::size_t got = 0;
            while (got < sizeof in)
                got += co_await iocp::async_recv(
                           s, iocp::buffer(reinterpret_cast<char*>(in) + got, sizeof in - got))
                           .or_throw();
            if (in[0] == id && in[1] == static_cast<std::uint32_t>(r) + 1)
                ++ok;
        }
        co_return ok;
    };
    auto ponger = [&](iocp::socket& s) -> iocp::task<int> {
        frame_probe probe;
        for (int r = 0; r < rounds; ++r) {
            std::uint32_t in[2] = {};
            std::size_t got = 0;
            while (got < sizeof in)
                got += co_await iocp::async_recv(
                           s, iocp::buffer(reinterpret_cast<char*>(in) + got, sizeof in - got))
                           .or_throw();
            ++in[1];
            co_await iocp::async_send_all(s, iocp::buffer(in, sizeof in)).or_throw();
        }
        co_return 0;
    };
    std::vector<iocp::task<int>> all;
    for (int i = 0; i < pairs; ++i) {
        auto& p = sockets[static_cast<std::size_t>(i)];
        all.push_back(pinger(p.client, static_cast<std::uint32_t>(i)));
        all.push_back(ponger(p.server));
    }
    std::vector<int> results = iocp::sync_wait(iocp::when_all(std::move(all)));
    int ok = 0;
    for (int r : results)
        ok += r;
    EXPECT_EQ(ok, pairs * rounds);
    EXPECT_EQ(live_frames.load(), 0);
}

// A stop request cancels that one operation: a second receive on the same socket goes on.
TEST(coro_io_test, stop_cancels_one_operation_only) {
    iocp::thread_pool pool(2);
    socket_pair p = make_pair(pool);
    std::stop_source stop;
    char a = 0;
    char b = 0;
    auto cancelled = [&]() -> iocp::task<iocp::io_result> {
        co_return co_await iocp::async_recv(p.server, iocp::buffer(&a, 1), stop.get_token());
    };
    auto other = [&]() -> iocp::task<iocp::io_result> {
        co_return co_await iocp::async_recv(p.server, iocp::buffer(&b, 1));
    };
    std::promise<iocp::io_result> first;
    std::promise<iocp::io_result> second;
    // Named: a coroutine lambda's captures live in the closure, which must outlive the frame.
    auto run_first = [&]() -> iocp::task<> { first.set_value(co_await cancelled()); };
    auto run_second = [&]() -> iocp::task<> { second.set_value(co_await other()); };
    iocp::spawn(pool, run_first());
    iocp::spawn(pool, run_second());
    std::this_thread::sleep_for(20ms); // both pending by now (else the first may take the byte)
    stop.request_stop();
    const iocp::io_result r1 = first.get_future().get();
    EXPECT_EQ(r1.ec, iocp::errc::operation_aborted) << r1.ec.message();
    auto second_result = second.get_future();
    EXPECT_EQ(second_result.wait_for(50ms), std::future_status::timeout); // still pending
    const char x = 'x';
    iocp::sync_wait([&]() -> iocp::task<> {
        co_await iocp::async_send(p.client, iocp::buffer(&x, 1)).or_throw();
    }());
    const iocp::io_result r2 = second_result.get();
    EXPECT_FALSE(r2.ec) << r2.ec.message();
    EXPECT_EQ(b, 'x');
    // A token already stopped starts nothing.
    const iocp::io_result r3 = iocp::sync_wait(cancelled());
    EXPECT_EQ(r3.ec, iocp::errc::operation_aborted);
}

// A timeout composes from sleep_for and a stop: the receive that gets nothing in time resumes
// aborted; the timer of one that completes first is stopped in turn.
TEST(coro_io_test, timeout_is_sleep_for_plus_stop) {
    iocp::thread_pool pool(2);
    socket_pair p = make_pair(pool);
    auto recv_with_timeout = [&](std::chrono::milliseconds timeout) -> iocp::task<iocp::io_result> {
        std::stop_source io_stop;
        std::stop_source timer_stop;
        char c = 0;
        auto io = [&]() -> iocp::task<iocp::io_result> {
            iocp::io_result r =
                co_await iocp::async_recv(p.server, iocp::buffer(&c, 1), io_stop.get_token());
            timer_stop.request_stop();
            co_return r;
        };
        auto timer = [&]() -> iocp::task<std::error_code> {
            std::error_code ec = co_await pool.sleep_for(timeout, timer_stop.get_token());
            io_stop.request_stop();
            co_return ec;
        };
        auto [r, timer_ec] = co_await iocp::when_all(io(), timer());
        if (r.ec) // timed out: the timer ran out
            EXPECT_FALSE(timer_ec);
        else // received first: the timer was stopped
            EXPECT_EQ(timer_ec, iocp::errc::operation_aborted);
        co_return r;
    };
    const iocp::io_result timed_out = iocp::sync_wait(recv_with_timeout(20ms));
    EXPECT_EQ(timed_out.ec, iocp::errc::operation_aborted);
    const char x = 'x';
    iocp::sync_wait([&]() -> iocp::task<> {
        co_await iocp::async_send(p.client, iocp::buffer(&x, 1)).or_throw();
    }());
    const iocp::io_result got = iocp::sync_wait(recv_with_timeout(1h));
    EXPECT_FALSE(got.ec) << got.ec.message();
    EXPECT_EQ(got.bytes, 1u);
}

// Busy-waits `n` steps: a random moment, finer than a sleep.
void spin(int n) {
    std::atomic<int> k{0};
    while (k.fetch_add(1, std::memory_order_relaxed) < n) {
    }
}

// Cancel racing completion: the peer sends and another thread requests stop at random moments;
// each operation resumes exactly once, aborted or with the byte, and no byte is lost unless its
// receive was aborted after the data arrived (then the next receive still gets it on Linux, or
// it is lost as Windows documents: we count, not compare, what came).
TEST(coro_io_test, stop_racing_completion_resumes_exactly_once) {
    iocp::thread_pool pool(2);
    socket_pair p = make_pair(pool);
    const int iterations = iocp_test::scaled(2000, 200);
    std::mt19937 rng(12345);
    std::atomic<int> resumptions{0};
    int aborted = 0;
    int completed = 0;
    for (int i = 0; i < iterations; ++i) {
        std::stop_source stop;
        char c = 0;
        std::promise<iocp::io_result> done;
        auto body = [&]() -> iocp::task<> {
            frame_probe probe;
            iocp::io_result r =
                co_await iocp::async_recv(p.server, iocp::buffer(&c, 1), stop.get_token());
            resumptions.fetch_add(1);
            done.set_value(r);
        };
        iocp::spawn(pool, body());
        const auto spin_a = std::uniform_int_distribution<int>(0, 200)(rng);
        const auto spin_b = std::uniform_int_distribution<int>(0, 200)(rng);
        std::thread stopper([&] {
            spin(spin_a);
            stop.request_stop();
        });
        spin(spin_b);
        const char x = 'y';
        iocp::sync_wait([&]() -> iocp::task<> {
            co_await iocp::async_send(p.client, iocp::buffer(&x, 1)).or_throw();
        }());
        stopper.join();
        const iocp::io_result r = await(done.get_future(), "the raced receive", i);
        if (r.ec) {
            EXPECT_EQ(r.ec, iocp::errc::operation_aborted) << r.ec.message();
            ++aborted;
        } else {
            EXPECT_EQ(r.bytes, 1u);
            EXPECT_EQ(c, 'y');
            ++completed;
        }
        // Drain what an aborted receive left in the socket, so that the next round starts clean.
        if (r.ec) {
            std::stop_source drain_stop;
            std::promise<iocp::io_result> drained;
            auto drain = [&]() -> iocp::task<> {
                drained.set_value(co_await iocp::async_recv(p.server, iocp::buffer(&c, 1),
                                                            drain_stop.get_token()));
            };
            iocp::spawn(pool, drain());
            auto f = drained.get_future();
            if (f.wait_for(100ms) != std::future_status::ready)
                drain_stop.request_stop(); // the byte was taken by the aborted receive
            (void)await(std::move(f), "the draining receive", i);
        }
    }
    EXPECT_EQ(resumptions.load(), iterations);
    EXPECT_EQ(aborted + completed, iterations);
    // Which side won is timing (not asserted); shown so that a run that never races is seen.
    std::printf("[ race     ] %d receives aborted by the stop, %d completed first\n", aborted,
                completed);
    pool.join();
    EXPECT_EQ(live_frames.load(), 0);
}

// Three connections, each read by a coroutine that gives every receive its own stop_source,
// three threads requesting stops at random moments, and the peers sending a numbered stream in
// random pieces, then closing. Every receive resumes exactly once (aborted, or with bytes), and
// on Linux a stopped receive never takes bytes: each stream arrives whole and in order. (On
// Windows an aborted receive may lose what it had taken, as CancelIoEx documents: counted only.)
TEST(coro_io_test, stops_from_many_threads_while_data_arrives_resume_each_receive_once) {
    iocp::thread_pool pool(2);
    constexpr std::size_t connections = 3;
    const auto bytes_each = static_cast<std::size_t>(iocp_test::scaled(6000, 600));
    auto byte_at = [](std::size_t i) {
        return static_cast<unsigned char>((i * 7 + i / 251) & 0xFF);
    };
    struct lane {
        socket_pair p;
        std::mutex mutex;
        std::stop_source* current = nullptr; // the pending receive's, under `mutex`
        // Written by the reading coroutine only; read after `ended` is set.
        std::size_t received = 0;
        bool in_order = true;
        int started = 0;
        int resumed = 0;
        int aborted = 0;
        std::promise<std::error_code> ended; // the error that ended the stream (eof)
    };
    std::vector<std::unique_ptr<lane>> lanes;
    for (std::size_t i = 0; i < connections; ++i) {
        lanes.push_back(std::make_unique<lane>());
        lanes.back()->p = make_pair(pool);
    }
    // Captureless: a coroutine lambda's captures would live in the closure, not the frame.
    auto reader = [](lane& l, unsigned char (*expected)(std::size_t)) -> iocp::task<> {
        frame_probe probe;
        std::array<unsigned char, 16> buf{};
        for (;;) {
            std::stop_source stop;
            {
                std::lock_guard lock(l.mutex);
                l.current = &stop;
            }
            ++l.started;
            const iocp::io_result r = co_await iocp::async_recv(
                l.p.server, iocp::buffer(buf.data(), buf.size()), stop.get_token());
            {
                std::lock_guard lock(l.mutex);
                l.current = nullptr;
            }
            ++l.resumed;
            if (r.ec == iocp::errc::operation_aborted) {
                ++l.aborted;
                continue;
            }
            if (r.ec) {
                l.ended.set_value(r.ec);
                co_return;
            }
            for (std::size_t k = 0; k < r.bytes; ++k)
                l.in_order = l.in_order && buf[k] == expected(l.received + k);
            l.received += r.bytes;
        }
    };
    unsigned char (*expected)(std::size_t) = byte_at;
    for (auto& l : lanes)
        iocp::spawn(pool, reader(*l, expected));
    std::atomic<bool> sending{true};
    std::vector<std::thread> stoppers;
    for (unsigned t = 0; t < 3; ++t) {
        stoppers.emplace_back([&, t] {
            std::mt19937 rng(t + 1);
            while (sending.load()) {
                lane& l = *lanes[rng() % connections];
                {
                    std::lock_guard lock(l.mutex);
                    if (l.current != nullptr)
                        l.current->request_stop();
                }
                spin(static_cast<int>(rng() % 3000));
            }
        });
    }
    std::mt19937 rng(77);
    std::vector<std::size_t> sent(connections, 0);
    std::vector<unsigned char> piece;
    for (bool more = true; more;) {
        more = false;
        for (std::size_t i = 0; i < connections; ++i) {
            const std::size_t n = (std::min)(bytes_each - sent[i], std::size_t{1} + rng() % 64);
            if (n == 0)
                continue;
            piece.resize(n);
            for (std::size_t k = 0; k < n; ++k)
                piece[k] = byte_at(sent[i] + k);
            iocp::sync_wait([&]() -> iocp::task<> {
                co_await iocp::async_send_all(lanes[i]->p.client,
                                              iocp::buffer(piece.data(), piece.size()))
                    .or_throw();
            }());
            sent[i] += n;
            more = more || sent[i] < bytes_each;
            spin(static_cast<int>(rng() % 2000));
        }
    }
    for (auto& l : lanes)
        l->p.client.close(); // the reader's last receive: eof
    int aborted = 0;
    for (auto& l : lanes) {
        EXPECT_EQ(await(l->ended.get_future(), "the end of a stream"), iocp::errc::eof);
        EXPECT_EQ(l->started, l->resumed); // exactly once each
        aborted += l->aborted;
#if IOCP_WINDOWS
        EXPECT_LE(l->received, bytes_each);
#else
        EXPECT_EQ(l->received, bytes_each);
        EXPECT_TRUE(l->in_order);
#endif
    }
    sending.store(false);
    for (auto& t : stoppers)
        t.join();
    std::printf("[ stops    ] %d receives aborted\n", aborted);
    EXPECT_GT(aborted, 0); // not vacuous: stops hit pending receives
    pool.join();
    EXPECT_EQ(live_frames.load(), 0);
}

// Shutdown while coroutines wait in accept, recv and sleep: each resumes exactly once (aborted
// or closed), every frame ends, nothing is left (ASan checks the leaks).
TEST(coro_io_test, join_and_stop_resume_every_suspended_coroutine_once) {
    for (bool use_stop : {false, true}) {
        std::atomic<int> resumed{0};
        std::atomic<int> errors{0};
        {
            iocp::thread_pool pool(2);
            iocp::acceptor listener(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
            std::vector<socket_pair> pairs;
            for (int i = 0; i < 20; ++i)
                pairs.push_back(iocp::sync_wait(connect_pair(pool, listener)));
            std::atomic<int> started{0};
            auto recv_one = [](iocp::socket& s, std::atomic<int>& st, std::atomic<int>& r,
                               std::atomic<int>& e, frame_probe) -> iocp::task<> {
                st.fetch_add(1);
                char c = 0;
                iocp::io_result res = co_await iocp::async_recv(s, iocp::buffer(&c, 1));
                r.fetch_add(1);
                if (res.ec == iocp::errc::operation_aborted || res.ec == iocp::errc::closed)
                    e.fetch_add(1);
                // A new operation after the cancel pass is refused, and still resumes once.
                res = co_await iocp::async_recv(s, iocp::buffer(&c, 1));
                EXPECT_TRUE(res.ec);
            };
            auto accept_one = [](iocp::acceptor& a, std::atomic<int>& st, std::atomic<int>& r,
                                 std::atomic<int>& e, frame_probe) -> iocp::task<> {
                st.fetch_add(1);
                iocp::accept_result res = co_await iocp::async_accept(a);
                r.fetch_add(1);
                if (res.ec == iocp::errc::operation_aborted || res.ec == iocp::errc::closed)
                    e.fetch_add(1);
            };
            for (auto& p : pairs) {
                iocp::spawn(pool, recv_one(p.server, started, resumed, errors, frame_probe{}));
                iocp::spawn(pool, recv_one(p.client, started, resumed, errors, frame_probe{}));
            }
            for (int i = 0; i < 5; ++i)
                iocp::spawn(pool, accept_one(listener, started, resumed, errors, frame_probe{}));
            // Every task must have started: stop() abandons a start still queued (its frame is
            // destroyed unresumed), which is right but not what this test counts. A frame exists
            // from the call, before spawn, so live_frames cannot tell.
            wait_until([&] { return started.load() == 45; }, "all started");
            std::this_thread::sleep_for(20ms); // suspended in the kernel (or not yet: either way)
            if (use_stop)
                (void)pool.stop();
            else
                pool.join();
            EXPECT_EQ(resumed.load(), 45);
            EXPECT_EQ(errors.load(), 45);
            EXPECT_EQ(live_frames.load(), 0);
        }
        EXPECT_EQ(live_frames.load(), 0);
    }
}

#if !defined(IOCP_TEST_TSAN)
// The awaitable is the operation, in the frame: nothing is allocated per awaited I/O.
TEST(coro_io_test, awaited_io_allocates_nothing_in_steady_state) {
    iocp::thread_pool pool(2);
    socket_pair p = make_pair(pool);
    auto echo = [&](int n) -> iocp::task<> {
        char c = 0;
        for (int i = 0; i < n; ++i) {
            co_await iocp::async_recv(p.server, iocp::buffer(&c, 1)).or_throw();
            co_await iocp::async_send_all(p.server, iocp::buffer(&c, 1)).or_throw();
        }
    };
    auto ping = [&](int n, bool measure) -> iocp::task<long long> {
        char c = 'p';
        long long before = 0;
        for (int i = 0; i < n; ++i) {
            if (measure && i == 100) // after warming the pool's and backend's recycled storage
                before = iocp_test::allocations.load();
            co_await iocp::async_send(p.client, iocp::buffer(&c, 1)).or_throw();
            co_await iocp::async_recv(p.client, iocp::buffer(&c, 1)).or_throw();
        }
        co_return measure ? iocp_test::allocations.load() - before : 0;
    };
    const int n = iocp_test::scaled(2000, 300);
    // The two tasks and when_all's frames are allocated before the count starts.
    auto [unused, allocated] = iocp::sync_wait(iocp::when_all(echo(n), ping(n, true)));
    std::printf("[ allocs   ] %lld allocations in %d awaited receives and sends\n", allocated,
                4 * (n - 100));
    EXPECT_EQ(allocated, 0) << "allocations during " << (n - 100) << " round trips";
}
#endif

#endif // IOCP_HAS_IO

} // namespace
