// A fifth set of programs a user might write from the README and the public headers, each built
// from a scenario that broke another thread pool or coroutine library (the project and its
// report are named on each test). Each counts what it started and checks that every callable,
// timer or coroutine ran, or was abandoned, exactly once, and that no call hangs.
//
// Scenarios and the reports behind them:
//  1. join/stop/wait called from every context a worker runs user code in (an item, a submit, a
//     timer, both thread hooks, the exception handler, a coroutine): PhotonLibOS #1561 and #967
//     (executor destroyed from its own worker), libcoro PR #420 (thread_pool::shutdown self
//     join), openDAQ PR #1299 (scheduler shut down from one of its own workers).
//  2. join/stop called from code that join/stop itself runs on the calling thread (an abandoned
//     timer's destructor, the exception handler it triggers): the same reports, re-entered from
//     the shutting-down thread instead of a worker; ClickHouse #80066 (a delayed task torn down
//     while its pool shuts down).
//  3. a callable's captures are destroyed when it has run, before wait() returns: BS::thread_pool
//     #81 and #124 (a worker kept its last task alive), LLVM PR #167852 (destroy tasks as they
//     are run in the thread pool).
//  4. a captured object whose destructor posts to the pool, under join, stop and a plain run:
//     LLVM PR #167852, tensorflow #932 (tasks that submit tasks while the pool is destroyed).
//  5. callables whose copy or move constructor throws: progschj/ThreadPool PR #25 (an exception
//     while moving a task terminated the process), NUClear PR #133 (an exception thrown in
//     submit dereferenced a moved-from task).
//  6. a refused callable whose destructor throws: StarRocks PR #8920 (tasks destroyed while the
//     pool shuts down).
//  7. posts, submits, timers, spawns, hops and sleeps from on_thread_stop: Asio #219 (handlers
//     run on a stopped io_context), Icinga2 #870 (workers that exit without their state).
//  8. an item that re-posts itself forever while stop() runs: Asio io_context::stop threads
//     (a handler that reposts itself), libuv #4245 (a zero-timeout timer re-armed from its own
//     callback starved the loop).
//  9. a timer re-arming itself with zero delay while stop() runs: libuv #4245, bngblaster PR #361
//     (timers re-added from their own callback).
// 10. cancelling a timer from its own callback and after it fired: defold PR #12633 (timers
//     cancelling themselves from their callback), rawrbox PR #84.
// 11. a timer's callback cancels another timer due at the same moment: muduo #668 (a timer
//     cancelled in another's callback still ran).
// 12. post_at a time in the past, time_point::min/max of several durations, post_after with
//     NaN and infinities: libuv PR #779 (huge timeouts ran on the next tick), h2o PR #1911.
// 13. sleeps of the same extremes: the same libuv reports.
// 14. when_all of zero tasks: taskflow #107 (running an empty taskflow blocked), ts-task #5
//     (Task.all of an empty array never resolved), tork PR #636.
// 15. when_all where tasks throw at once while others are suspended on the pool: concurrencpp
//     #61 (when_all blocking a pool), cppcoro when_all reports.
// 16. a task destroyed unawaited, whose frame's destructor posts to the pool: BS::thread_pool
//     #81, LLVM PR #167852 (RAII objects in a task touching the pool).
// 17. spawned tasks that never finish on their own (a sleep of hours) when the pool stops,
//     joins or is destroyed: libcoro #421 (shutdown with coroutines still suspended).
// 18. a deep chain of nested tasks where the innermost throws (symmetric transfer with
//     exceptions): cppcoro's symmetric-transfer stack overflow reports.
// 19. an exception handler that posts more work that throws, under join: tensorflow #932.
// 20. thousands of timers cancelled from workers while they fall due: muduo #668, arduino-timer
//     #93 (cancel racing a timer's firing).
// 21. sync_wait of a task that completes at once, on a worker: cppcoro #164 (hang in sync_wait).
// 22. an empty (default-constructed or moved-from) task, or one awaited a second time, given to
//     co_await, sync_wait, spawn and when_all: qcoro PR #253 (awaiting a default-constructed or
//     moved-from Task crashed, then hung), ecoro #10 (a null handle resumed).
// 23. when_all() of no arguments and of tasks of mixed types: taskflow #107, ts-task #5.
// 24. a pending timer's callable whose destructor posts to the pool, abandoned by join or stop:
//     ClickHouse #80066 and PR #80069 (a delayed task's teardown touched its shutting-down
//     pool).
// 25. the pool destroyed by its own worker (the last shared_ptr released in a work item) or from
//     inside its own join: PhotonLibOS #1561 (self-join, then std::terminate from a noexcept
//     destructor): the documented message, then std::terminate, never a hang.
// 26. pools created and destroyed in a loop with timers pending, due, and being cancelled from
//     another thread: Bosma/Scheduler #2 (the timer thread used the scheduler's state after its
//     destructor ran).
// 27. a server object whose pool member's on_thread_start posts, submits, arms a timer and
//     spawns, while the pool is still being constructed, then the server is destroyed (join or
//     stop) at once: RediSearch PR #9781 and #10337 (a worker submitting to its own pool while
//     the pool was still starting deadlocked it).

#include "iocp/coroutine.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "iocp/coro/spawn.hpp"
#include "iocp/coro/sync_wait.hpp"
#include "iocp/coro/task.hpp"
#include "iocp/coro/when_all.hpp"
#include "iocp/error.hpp"
#include "iocp/thread_pool.hpp"
#include "support/coroutines.hpp"
#include "support/platform.hpp"
#include "support/tracked.hpp"
#include "support/waiting.hpp"

namespace {

using namespace std::chrono_literals;
using iocp_test::ledger;
using iocp_test::tracked;

const std::error_code deadlock = std::make_error_code(std::errc::resource_deadlock_would_occur);

// The three waiting calls from the calling context: each must refuse with
// resource_deadlock_would_occur (and stop abandon nothing). Returns how many refused.
int refusals(iocp::thread_pool& pool) {
    int refused = 0;
    std::error_code ec;
    pool.join(ec);
    refused += ec == deadlock ? 1 : 0;
    ec.clear();
    refused += pool.stop(ec) == 0 && ec == deadlock ? 1 : 0;
    ec.clear();
    pool.wait(ec);
    refused += ec == deadlock ? 1 : 0;
    return refused;
}

// 1. PhotonLibOS #1561/#967, libcoro #420, openDAQ #1299.
TEST(user_trial5, join_stop_and_wait_from_every_worker_context_report_a_deadlock) {
    std::atomic<int> contexts{0};
    std::atomic<int> refused{0};
    iocp::thread_pool* self = nullptr;
    iocp::thread_pool_options o;
    o.threads = 2;
    o.on_thread_start = [&](std::size_t) {
        contexts.fetch_add(1);
        refused.fetch_add(refusals(*self));
    };
    o.on_thread_stop = [&](std::size_t) {
        contexts.fetch_add(1);
        refused.fetch_add(refusals(*self));
    };
    o.exception_handler = [&](const std::exception_ptr&) {
        contexts.fetch_add(1);
        refused.fetch_add(refusals(*self));
    };
    // The hooks read `self` only once the pool exists: hold them back until it is set.
    std::atomic<bool> ready{false};
    auto start = o.on_thread_start;
    o.on_thread_start = [&, start](std::size_t i) {
        iocp_test::wait_until([&] { return ready.load(); }, "the pool to be constructed");
        start(i);
    };
    {
        iocp::thread_pool pool(o);
        self = &pool;
        ready = true;
        pool.post([&] {
            contexts.fetch_add(1);
            refused.fetch_add(refusals(pool));
        });
        std::future<int> f = pool.submit([&] {
            contexts.fetch_add(1);
            return refusals(pool);
        });
        std::promise<void> timer_ran;
        pool.post_after(1ms, [&] {
            contexts.fetch_add(1);
            refused.fetch_add(refusals(pool));
            timer_ran.set_value();
        });
        pool.post([] { throw std::runtime_error("to the handler"); });
        std::promise<void> coro_ran;
        [](iocp::thread_pool& p, std::atomic<int>& c, std::atomic<int>& r,
           std::promise<void>& done) -> iocp_test::eager_coroutine {
            co_await p.schedule();
            c.fetch_add(1);
            r.fetch_add(refusals(p));
            done.set_value();
        }(pool, contexts, refused, coro_ran);
        refused.fetch_add(iocp_test::await(f, "the submit"));
        iocp_test::await(timer_ran.get_future(), "the timer");
        iocp_test::await(coro_ran.get_future(), "the coroutine");
        pool.wait();
        // The pool lives on after every refusal.
        EXPECT_EQ(pool.submit([] { return 7; }).get(), 7);
        pool.join();
    }
    // 2 starts + 2 stops + handler + item + submit + timer + coroutine.
    EXPECT_EQ(contexts.load(), 9);
    EXPECT_EQ(refused.load(), 3 * 9);
}

// A timer callable whose destructor (run when join/stop abandons it, on the thread that called
// join/stop) calls back into the pool: `on_destroy` runs only when the callable was not run.
struct calls_back_when_abandoned {
    std::function<void()> on_destroy;
    explicit calls_back_when_abandoned(std::function<void()> f) : on_destroy(std::move(f)) {}
    calls_back_when_abandoned(calls_back_when_abandoned&& o) noexcept
        : on_destroy(std::exchange(o.on_destroy, nullptr)) {}
    calls_back_when_abandoned& operator=(calls_back_when_abandoned&&) = delete;
    ~calls_back_when_abandoned() {
        if (on_destroy)
            on_destroy();
    }
    void operator()() { on_destroy = nullptr; }
};

// A timer callable whose destructor throws when it is abandoned.
struct throws_when_abandoned {
    bool armed = true;
    throws_when_abandoned() = default;
    throws_when_abandoned(throws_when_abandoned&& o) noexcept
        : armed(std::exchange(o.armed, false)) {}
    throws_when_abandoned& operator=(throws_when_abandoned&&) = delete;
    // NOLINTNEXTLINE(bugprone-exception-escape): throws on purpose when abandoned
    ~throws_when_abandoned() noexcept(false) {
        if (armed)
            throw std::runtime_error("abandoned");
    }
    void operator()() { armed = false; }
};

// 2. The same reports, re-entered from the thread that runs join()/stop(): an abandoned
// timer's destructor, and an exception handler that "stops the pool on a fatal error", run on
// that thread. Each must get resource_deadlock_would_occur, not wait for itself.
TEST(user_trial5, join_and_stop_from_code_that_join_or_stop_runs_report_a_deadlock) {
    for (int variant = 0; variant < 4; ++variant) {
        std::atomic<int> called{0};
        std::atomic<int> refused{0};
        iocp::thread_pool* self = nullptr;
        iocp::thread_pool_options o;
        o.threads = 2;
        o.exception_handler = [&](const std::exception_ptr&) {
            called.fetch_add(1);
            refused.fetch_add(refusals(*self));
        };
        auto pool = std::make_unique<iocp::thread_pool>(o);
        self = pool.get();
        if (variant % 2 == 0) {
            pool->post_after(1h, calls_back_when_abandoned([&] {
                                 called.fetch_add(1);
                                 refused.fetch_add(refusals(*self));
                             }));
        } else {
            pool->post_after(1h, throws_when_abandoned{});
        }
        // On another thread, so that a deadlock is reported (after the waiting deadline)
        // rather than hanging the whole run.
        auto shut = std::async(std::launch::async, [&] {
            if (variant < 2)
                pool->join();
            else
                EXPECT_EQ(pool->stop(), 1U);
        });
        iocp_test::await(shut, "join/stop re-entered from its own thread", variant);
        pool.reset();
        EXPECT_EQ(called.load(), 1) << variant;
        EXPECT_EQ(refused.load(), 3) << variant;
    }
}

// 3. BS::thread_pool #81/#124, LLVM #167852: what a callable captured is released by the time
// wait() returns, for a post, a submit and a timer, without a later item to push it out.
TEST(user_trial5, a_callables_captures_are_released_when_it_has_run) {
    iocp::thread_pool pool(2);
    for (int i = 0; i < 50; ++i) {
        auto a = std::make_shared<int>(1);
        auto b = std::make_shared<int>(2);
        auto c = std::make_shared<int>(3);
        std::weak_ptr<int> wa = a;
        std::weak_ptr<int> wb = b;
        std::weak_ptr<int> wc = c;
        pool.post([a = std::move(a)] { (void)*a; });
        std::future<int> f = pool.submit([b = std::move(b)] { return *b; });
        std::promise<void> timer_ran;
        pool.post_after(0ms, [c = std::move(c), &timer_ran] { timer_ran.set_value(); });
        EXPECT_EQ(f.get(), 2);
        iocp_test::await(timer_ran.get_future(), "the timer", i);
        pool.wait();
        EXPECT_TRUE(wa.expired()) << i;
        EXPECT_TRUE(wb.expired()) << i;
        EXPECT_TRUE(wc.expired()) << i;
    }
}

// Posts `child` to the pool from its destructor (once): what a capture (or a coroutine frame's
// parameter) holding an RAII "notify when done" object does.
struct posts_on_destruction {
    iocp::thread_pool* pool;
    ledger* children;
    std::atomic<int>* refused;
    posts_on_destruction(iocp::thread_pool& p, ledger& l, std::atomic<int>& r)
        : pool(&p), children(&l), refused(&r) {}
    posts_on_destruction(posts_on_destruction&& o) noexcept
        : pool(std::exchange(o.pool, nullptr)), children(o.children), refused(o.refused) {}
    posts_on_destruction& operator=(posts_on_destruction&&) = delete;
    ~posts_on_destruction() {
        if (pool == nullptr)
            return;
        std::error_code ec;
        pool->post(tracked(*children), ec);
        if (ec) {
            EXPECT_EQ(ec, iocp::errc::closed);
            refused->fetch_add(1);
        }
    }
};

// 4. LLVM #167852, tensorflow #932: a capture whose destructor posts. Under a plain run and
// join() every child runs; under stop() each is run, abandoned or refused, exactly once.
TEST(user_trial5, a_capture_whose_destructor_posts_runs_or_is_refused_once) {
    const int n = 2000 / iocp_test::tsan_divisor;
    for (int mode = 0; mode < 3; ++mode) {
        ledger parents;
        ledger children;
        std::atomic<int> refused{0};
        {
            iocp::thread_pool pool(3);
            for (int i = 0; i < n; ++i)
                pool.post([t = tracked(parents),
                           p = posts_on_destruction(pool, children, refused)]() mutable { t(); });
            if (mode == 0) {
                pool.wait();
                EXPECT_EQ(children.ran.load(), n);
            }
            if (mode == 2)
                (void)pool.stop();
            else
                pool.join();
        }
        EXPECT_EQ(parents.settled(), n) << mode;
        EXPECT_EQ(children.settled(), n) << mode;
        if (mode < 2) {
            EXPECT_EQ(parents.ran.load(), n) << mode;
            EXPECT_EQ(children.ran.load(), n) << mode;
            EXPECT_EQ(refused.load(), 0) << mode;
        } else {
            // A refused child was destroyed unrun inside the post.
            EXPECT_LE(refused.load(), children.abandoned.load());
        }
    }
}

// A callable whose copy or move constructor throws (when armed).
struct throwing_copy {
    bool throw_on_move;
    ledger* l;
    throwing_copy(bool on_move, ledger& led) : throw_on_move(on_move), l(&led) {}
    throwing_copy(const throwing_copy& o) : throw_on_move(o.throw_on_move), l(o.l) {
        throw std::runtime_error("copy");
    }
    // A throwing move, on purpose.
    // NOLINTNEXTLINE(bugprone-exception-escape,performance-noexcept-move-constructor)
    throwing_copy(throwing_copy&& o) : throw_on_move(o.throw_on_move), l(o.l) {
        if (throw_on_move)
            throw std::runtime_error("move");
    }
    throwing_copy& operator=(const throwing_copy&) = delete;
    throwing_copy& operator=(throwing_copy&&) = delete;
    ~throwing_copy() = default;
    void operator()() const { ++l->ran; }
};

// 5. progschj/ThreadPool #25, NUClear #133: a callable that cannot be copied or moved into the
// pool is refused with invalid_argument (never run, never a crash), by every entry point, and
// the caller's object is left as it was. The throwing forms rethrow the callable's exception
// (thread_pool_test checks each).
TEST(user_trial5, callables_whose_copy_or_move_throws_are_refused_with_invalid_argument) {
    iocp::thread_pool pool(2);
    ledger l;
    const std::error_code invalid = std::make_error_code(std::errc::invalid_argument);
    for (bool on_move : {false, true}) {
        throwing_copy f(on_move, l);
        std::error_code ec;
        pool.post(f, ec); // a copy
        EXPECT_EQ(ec, invalid);
        ec.clear();
        pool.post(std::move(f), ec); // a move (throws only when armed)
        if (on_move)
            EXPECT_EQ(ec, invalid);
        else
            EXPECT_FALSE(ec);
        ec.clear();
        std::future<void> fut = pool.submit(f, ec);
        EXPECT_EQ(ec, invalid);
        EXPECT_FALSE(fut.valid());
        ec.clear();
        const iocp::timer_id id = pool.post_after(0ms, f, ec);
        EXPECT_EQ(ec, invalid);
        EXPECT_EQ(id.value, 0U);
        // The throwing form rethrows the callable's own exception (as std::thread would).
        EXPECT_THROW(pool.post(f), std::runtime_error);
        f(); // the caller's object still works
    }
    pool.wait();
    // Only the unarmed move ran on the pool, plus the caller's two direct calls.
    EXPECT_EQ(l.ran.load(), 3);
    EXPECT_EQ(pool.submit([] { return 1; }).get(), 1);
}

// 6. StarRocks #8920: a callable refused at shutdown whose destructor throws: the exception goes
// to the handler (never out of the noexcept post, never lost), once per refused callable.
TEST(user_trial5, a_refused_callable_whose_destructor_throws_reaches_the_handler) {
    std::atomic<int> handled{0};
    iocp::thread_pool_options o;
    o.threads = 1;
    o.exception_handler = [&](const std::exception_ptr& e) {
        try {
            std::rethrow_exception(e);
        } catch (const std::runtime_error&) {
            handled.fetch_add(1);
        }
    };
    iocp::thread_pool pool(o);
    pool.join();
    std::error_code ec;
    pool.post(throws_when_abandoned{}, ec);
    EXPECT_EQ(ec, iocp::errc::closed);
    ec.clear();
    EXPECT_THROW(pool.post(throws_when_abandoned{}), std::system_error);
    EXPECT_EQ(handled.load(), 2);
}

// 7. Asio #219, Icinga2 #870: on_thread_stop runs after the worker's last item: a post, submit,
// timer or spawn from there is refused with closed and destroyed once; a hop or a sleep from
// there resumes at once with closed.
TEST(user_trial5, work_started_from_on_thread_stop_is_refused_once_with_closed) {
    constexpr std::size_t threads = 3;
    ledger l;
    std::atomic<int> refusals_seen{0};
    std::atomic<int> frames{0};
    std::atomic<int> hop_closed{0};
    std::atomic<int> sleep_closed{0};
    iocp::thread_pool* self = nullptr;
    iocp::thread_pool_options o;
    o.threads = threads;
    o.on_thread_stop = [&](std::size_t) {
        iocp::thread_pool& pool = *self;
        std::error_code ec;
        pool.post(tracked(l), ec);
        refusals_seen += ec == iocp::errc::closed ? 1 : 0;
        ec.clear();
        std::future<void> f = pool.submit(tracked(l), ec);
        refusals_seen += ec == iocp::errc::closed && !f.valid() ? 1 : 0;
        ec.clear();
        (void)pool.post_after(0ms, tracked(l), ec);
        refusals_seen += ec == iocp::errc::closed ? 1 : 0;
        ec.clear();
        iocp::spawn(
            pool,
            [](iocp_test::frame_guard) -> iocp::task<> {
                co_return;
            }(iocp_test::frame_guard(frames)),
            ec);
        refusals_seen += ec == iocp::errc::closed ? 1 : 0;
        [](iocp::thread_pool& p, std::atomic<int>& c) -> iocp_test::eager_coroutine {
            try {
                co_await p.schedule();
            } catch (const std::system_error& e) {
                c += e.code() == iocp::errc::closed ? 1 : 0;
            }
        }(pool, hop_closed);
        [](iocp::thread_pool& p, std::atomic<int>& c) -> iocp_test::eager_coroutine {
            const std::error_code e = co_await p.sleep_for(1ms);
            c += e == iocp::errc::closed ? 1 : 0;
        }(pool, sleep_closed);
    };
    {
        iocp::thread_pool pool(o);
        self = &pool;
        pool.wait();
        pool.join();
    }
    EXPECT_EQ(refusals_seen.load(), 4 * static_cast<int>(threads));
    EXPECT_EQ(l.ran.load(), 0);
    EXPECT_EQ(l.abandoned.load(), 3 * static_cast<int>(threads));
    EXPECT_EQ(frames.load(), static_cast<int>(threads));
    EXPECT_EQ(hop_closed.load(), static_cast<int>(threads));
    EXPECT_EQ(sleep_closed.load(), static_cast<int>(threads));
}

// An item that re-posts itself until the pool refuses; counts its runs and its one refusal.
struct self_reposter {
    iocp::thread_pool* pool;
    std::atomic<long>* runs;
    std::atomic<int>* ended;
    void operator()() const {
        runs->fetch_add(1);
        std::error_code ec;
        pool->post(*this, ec);
        if (ec) {
            EXPECT_EQ(ec, iocp::errc::closed);
            ended->fetch_add(1);
        }
    }
};

// 8. Asio (a handler that reposts itself during io_context::stop), libuv #4245: chains of items
// that re-post themselves forever; stop() from outside still returns, and each chain ends
// exactly once (refused, or its last link abandoned).
TEST(user_trial5, stop_ends_items_that_repost_themselves_forever) {
    const int rounds = iocp_test::scaled(20, 4);
    for (int r = 0; r < rounds; ++r) {
        constexpr int chains = 6;
        std::atomic<long> runs{0};
        std::atomic<int> ended{0};
        iocp::thread_pool pool(2);
        for (int c = 0; c < chains; ++c)
            pool.post(self_reposter{&pool, &runs, &ended});
        iocp_test::wait_until([&] { return runs.load() > 100; }, "the chains to run");
        const std::size_t abandoned = pool.stop();
        // Each chain ends once: its last run was refused, or its last link was abandoned.
        EXPECT_EQ(ended.load() + static_cast<int>(abandoned), chains) << r;
    }
}

// 9. libuv #4245, bngblaster #361: timers that re-arm themselves with zero delay from their
// own callback, while stop() runs: stop returns, each chain ends exactly once (its re-arm
// refused, or its pending timer abandoned).
TEST(user_trial5, stop_ends_timers_that_rearm_themselves_with_zero_delay) {
    const int rounds = iocp_test::scaled(20, 4);
    struct rearm {
        iocp::thread_pool* pool;
        std::atomic<long>* runs;
        std::atomic<int>* ended;
        void operator()() const {
            runs->fetch_add(1);
            std::error_code ec;
            (void)pool->post_after(0ms, *this, ec);
            if (ec) {
                EXPECT_EQ(ec, iocp::errc::closed);
                ended->fetch_add(1);
            }
        }
    };
    for (int r = 0; r < rounds; ++r) {
        constexpr int chains = 4;
        std::atomic<long> runs{0};
        std::atomic<int> ended{0};
        iocp::thread_pool pool(2);
        for (int c = 0; c < chains; ++c)
            (void)pool.post_after(0ms, rearm{&pool, &runs, &ended});
        iocp_test::wait_until([&] { return runs.load() > 50; }, "the timers to fire");
        if (r % 2 == 0) {
            const std::size_t abandoned = pool.stop();
            EXPECT_EQ(ended.load() + static_cast<int>(abandoned), chains) << r;
        } else {
            pool.join(); // abandons the pending timers without counting them
            EXPECT_LE(ended.load(), chains) << r;
        }
        // Nothing more runs once the pool has stopped.
        const long after = runs.load();
        std::this_thread::sleep_for(2ms);
        EXPECT_EQ(runs.load(), after);
    }
}

// 10. defold #12633, rawrbox #84: cancel() of a timer from inside its own callback, after it
// fired, twice, and of ids that never existed: false each time, and nothing runs twice.
TEST(user_trial5, cancelling_a_timer_from_its_own_callback_or_after_it_fired_is_false) {
    iocp::thread_pool pool(2);
    constexpr int n = 200;
    std::vector<iocp::timer_id> ids(n);
    std::mutex m;
    std::atomic<int> ran{0};
    std::atomic<int> cancelled_inside{0};
    std::promise<void> ids_set;
    std::shared_future<void> ready = ids_set.get_future().share();
    for (int i = 0; i < n; ++i) {
        const iocp::timer_id id = pool.post_after(std::chrono::microseconds(i * 10), [&, i, ready] {
            ready.wait();
            iocp::timer_id mine;
            {
                std::lock_guard lock(m);
                mine = ids[static_cast<std::size_t>(i)];
            }
            cancelled_inside += pool.cancel(mine) ? 1 : 0;
            ran.fetch_add(1);
        });
        std::lock_guard lock(m);
        ids[static_cast<std::size_t>(i)] = id;
    }
    ids_set.set_value();
    iocp_test::wait_until([&] { return ran.load() == n; }, "every timer to run");
    pool.wait();
    EXPECT_EQ(cancelled_inside.load(), 0);
    for (const iocp::timer_id id : ids) {
        EXPECT_NE(id.value, 0U);
        EXPECT_FALSE(pool.cancel(id));
        EXPECT_FALSE(pool.cancel(id));
    }
    EXPECT_FALSE(pool.cancel(iocp::timer_id{}));
    EXPECT_FALSE(pool.cancel(iocp::timer_id{std::numeric_limits<std::uint64_t>::max()}));
    EXPECT_EQ(ran.load(), n);
}

// 11. muduo #668: a timer's callback cancels its twin, due at the same moment: when cancel says
// true the twin never runs; when false it ran (or runs) exactly once.
TEST(user_trial5, a_timer_cancelling_its_twin_due_at_the_same_moment_is_believed) {
    const int pairs = iocp_test::scaled(500, 100) / iocp_test::tsan_divisor;
    iocp::thread_pool pool(3);
    std::vector<std::atomic<int>> twin_runs(static_cast<std::size_t>(pairs));
    std::vector<std::atomic<int>> cancel_result(static_cast<std::size_t>(pairs));
    std::vector<iocp::timer_id> twins(static_cast<std::size_t>(pairs));
    std::promise<void> all_set;
    std::shared_future<void> ready = all_set.get_future().share();
    std::atomic<int> first_ran{0};
    const auto when = iocp::thread_pool::clock::now() + 5ms;
    for (int i = 0; i < pairs; ++i) {
        const auto k = static_cast<std::size_t>(i);
        (void)pool.post_at(when, [&, k, ready] {
            ready.wait();
            cancel_result[k] = pool.cancel(twins[k]) ? 1 : 2;
            first_ran.fetch_add(1);
        });
        twins[k] = pool.post_at(when, [&, k] { twin_runs[k].fetch_add(1); });
    }
    all_set.set_value();
    iocp_test::wait_until([&] { return first_ran.load() == pairs; }, "every first timer");
    pool.join();
    for (std::size_t k = 0; k < twins.size(); ++k) {
        if (cancel_result[k] == 1)
            EXPECT_EQ(twin_runs[k].load(), 0) << k;
        else
            EXPECT_EQ(twin_runs[k].load(), 1) << k;
    }
}

// 12. libuv #779, h2o #1911: timers at the extremes. A time in the past, min() of any duration
// and NaN or -inf delays run soon; max() of any duration and +inf never run and are abandoned
// (and cancellable).
TEST(user_trial5, timers_at_extreme_time_points_and_delays_saturate) {
    using clock = iocp::thread_pool::clock;
    ledger soon;
    ledger never;
    std::vector<iocp::timer_id> never_ids;
    {
        iocp::thread_pool pool(2);
        const double nan = std::numeric_limits<double>::quiet_NaN();
        const double inf = std::numeric_limits<double>::infinity();
        (void)pool.post_at(clock::now() - 1h, tracked(soon));
        (void)pool.post_at(clock::time_point::min(), tracked(soon));
        (void)pool.post_at(std::chrono::time_point<clock, std::chrono::hours>::min(),
                           tracked(soon));
        (void)pool.post_at(std::chrono::time_point<clock, std::chrono::duration<double>>(
                               std::chrono::duration<double>(-inf)),
                           tracked(soon));
        (void)pool.post_at(std::chrono::time_point<clock, std::chrono::duration<double>>(
                               std::chrono::duration<double>(nan)),
                           tracked(soon));
        (void)pool.post_after(std::chrono::duration<double>(nan), tracked(soon));
        (void)pool.post_after(std::chrono::duration<double>(-inf), tracked(soon));
        (void)pool.post_after(std::chrono::hours::min(), tracked(soon));
        (void)pool.post_after(std::chrono::nanoseconds::min(), tracked(soon));
        constexpr int soon_count = 9;

        never_ids.push_back(pool.post_at(clock::time_point::max(), tracked(never)));
        never_ids.push_back(pool.post_at(std::chrono::time_point<clock, std::chrono::hours>::max(),
                                         tracked(never)));
        never_ids.push_back(
            pool.post_at(std::chrono::time_point<clock, std::chrono::duration<double>>(
                             std::chrono::duration<double>(inf)),
                         tracked(never)));
        never_ids.push_back(pool.post_after(std::chrono::duration<double>(inf), tracked(never)));
        never_ids.push_back(pool.post_after(std::chrono::hours::max(), tracked(never)));
        never_ids.push_back(pool.post_after(
            std::chrono::duration<long double, std::ratio<1000000000>>(1e30L), tracked(never)));
        iocp_test::wait_until([&] { return soon.ran.load() == soon_count; }, "the due timers");
        EXPECT_TRUE(pool.cancel(never_ids[0]));
        EXPECT_FALSE(pool.cancel(never_ids[0]));
        EXPECT_EQ(pool.stop(), never_ids.size() - 1);
        EXPECT_EQ(soon.ran.load(), soon_count);
        EXPECT_EQ(soon.abandoned.load(), 0);
    }
    EXPECT_EQ(never.ran.load(), 0);
    EXPECT_EQ(never.abandoned.load(), static_cast<int>(never_ids.size()));
}

// What one extreme sleep saw: resumed with no error, or with closed, and on which thread.
struct sleep_outcomes {
    std::atomic<int> due{0};
    std::atomic<int> closed{0};
    std::atomic<int> off_worker{0};
};

iocp::task<> extreme_sleep(iocp::thread_pool& p, int which, sleep_outcomes& out,
                           iocp_test::frame_guard) {
    using clock = iocp::thread_pool::clock;
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const double inf = std::numeric_limits<double>::infinity();
    std::error_code ec;
    switch (which) {
    case 0: ec = co_await p.sleep_until(clock::time_point::min()); break;
    case 1: ec = co_await p.sleep_until(clock::now() - 24h); break;
    case 2: ec = co_await p.sleep_for(std::chrono::duration<double>(nan)); break;
    case 3: ec = co_await p.sleep_for(std::chrono::duration<double>(-inf)); break;
    case 4: ec = co_await p.sleep_for(std::chrono::seconds::min()); break;
    case 5: ec = co_await p.sleep_until(clock::time_point::max()); break;
    case 6: ec = co_await p.sleep_for(std::chrono::duration<double>(inf)); break;
    default: ec = co_await p.sleep_for(std::chrono::hours::max()); break;
    }
    out.off_worker += p.is_worker() ? 0 : 1;
    if (!ec)
        out.due.fetch_add(1);
    else if (ec == iocp::errc::closed)
        out.closed.fetch_add(1);
}

// 13. The same reports, through co_await: sleeps at the extremes resume at once with no error,
// or stay suspended until join resumes them with closed, each on a worker, each once.
TEST(user_trial5, sleeps_at_extreme_time_points_and_delays_saturate) {
    sleep_outcomes out;
    std::atomic<int> frames{0};
    {
        iocp::thread_pool pool(2);
        for (int which = 0; which < 8; ++which)
            iocp::spawn(pool, extreme_sleep(pool, which, out, iocp_test::frame_guard(frames)));
        iocp_test::wait_until([&] { return out.due.load() == 5; }, "the due sleeps");
        pool.join();
    }
    EXPECT_EQ(out.due.load(), 5);
    EXPECT_EQ(out.closed.load(), 3);
    EXPECT_EQ(out.off_worker.load(), 0);
    EXPECT_EQ(frames.load(), 8);
}

iocp::task<int> value_after_hop(iocp::thread_pool& pool, int v) {
    co_await pool.schedule();
    co_return v;
}

// 14. taskflow #107, ts-task #5, tork #636: when_all of no tasks completes at once with an
// empty result, from a worker and from sync_wait.
TEST(user_trial5, when_all_of_no_tasks_completes_at_once) {
    iocp::thread_pool pool(2);
    std::vector<int> r = iocp::sync_wait(iocp::when_all(std::vector<iocp::task<int>>{}));
    EXPECT_TRUE(r.empty());
    iocp::sync_wait(iocp::when_all(std::vector<iocp::task<>>{}));
    auto on_worker = [](iocp::thread_pool& p) -> iocp::task<std::size_t> {
        co_await p.schedule();
        std::vector<int> none = co_await iocp::when_all(std::vector<iocp::task<int>>{});
        co_await iocp::when_all(std::vector<iocp::task<>>{});
        std::vector<iocp::task<int>> one;
        one.push_back(value_after_hop(p, 5));
        std::vector<int> five = co_await iocp::when_all(std::move(one));
        co_return none.size() + static_cast<std::size_t>(five.at(0));
    };
    EXPECT_EQ(iocp::sync_wait(on_worker(pool)), 5U);
}

// 15. concurrencpp #61, cppcoro when_all: tasks that throw before their first suspension while
// the others are suspended on the pool's timers and hops: when_all waits for every task, then
// rethrows the first exception in vector order; every frame is destroyed exactly once.
TEST(user_trial5, when_all_waits_for_suspended_tasks_when_others_throw_at_once) {
    iocp::thread_pool pool(3);
    const int rounds = iocp_test::scaled(20, 5);
    for (int r = 0; r < rounds; ++r) {
        std::atomic<int> frames{0};
        std::atomic<int> finished{0};
        constexpr int n = 40;
        {
            std::vector<iocp::task<int>> tasks;
            for (int i = 0; i < n; ++i) {
                tasks.push_back([](iocp::thread_pool& p, int k, std::atomic<int>& done,
                                   iocp_test::frame_guard) -> iocp::task<int> {
                    if (k % 3 == 1)
                        throw std::runtime_error(std::to_string(k));
                    if (k % 3 == 0)
                        (void)co_await p.sleep_for(std::chrono::microseconds(k * 20));
                    else
                        co_await p.schedule();
                    done.fetch_add(1);
                    co_return k;
                }(pool, i, finished, iocp_test::frame_guard(frames)));
            }
            try {
                (void)iocp::sync_wait(iocp::when_all(std::move(tasks)));
                ADD_FAILURE() << "no exception";
            } catch (const std::runtime_error& e) {
                EXPECT_STREQ(e.what(), "1");
            }
            // Every non-throwing task ran to its end before when_all rethrew.
            EXPECT_EQ(finished.load(), n - n / 3) << r;
        }
        EXPECT_EQ(frames.load(), n) << r;
    }
}

iocp::task<> hops_then_returns(iocp::thread_pool& pool, posts_on_destruction,
                               std::atomic<int>& ran) {
    co_await pool.schedule();
    ran.fetch_add(1);
}

// 16. BS::thread_pool #81, LLVM #167852: tasks destroyed unawaited (on the main thread, on a
// worker), spawned and run, or spawned and abandoned by stop(): each frame's destructor posts
// to the pool once; the post runs, or is refused after shutdown began (destroyed unrun).
TEST(user_trial5, frames_whose_destructor_posts_are_counted_once_however_they_end) {
    const int n = 300 / iocp_test::tsan_divisor;
    for (int mode = 0; mode < 2; ++mode) {
        ledger posted;
        std::atomic<int> refused{0};
        std::atomic<int> ran{0};
        int frames = 0;
        std::atomic<int> handled{0};
        iocp::thread_pool_options o;
        o.threads = 2;
        o.exception_handler = [&](const std::exception_ptr&) { handled.fetch_add(1); };
        {
            iocp::thread_pool pool(o);
            // Never awaited, destroyed here.
            for (int i = 0; i < n; ++i, ++frames)
                (void)hops_then_returns(pool, posts_on_destruction(pool, posted, refused), ran);
            // Never awaited, destroyed on a worker.
            for (int i = 0; i < n; ++i, ++frames)
                pool.post([t = hops_then_returns(pool, posts_on_destruction(pool, posted, refused),
                                                 ran)] {});
            // Spawned: run (join) or maybe abandoned unstarted (stop).
            for (int i = 0; i < n; ++i, ++frames)
                iocp::spawn(pool, hops_then_returns(
                                      pool, posts_on_destruction(pool, posted, refused), ran));
            if (mode == 0)
                pool.join();
            else
                (void)pool.stop();
        }
        EXPECT_EQ(posted.settled(), frames) << mode;
        if (mode == 0) {
            EXPECT_EQ(ran.load(), n);
            EXPECT_EQ(posted.ran.load(), frames);
            EXPECT_EQ(refused.load(), 0);
        } else {
            // A hop that stop() abandoned throws closed out of the spawned task: to the handler.
            // (the rest were abandoned unstarted).
            EXPECT_LE(ran.load() + handled.load(), n) << mode;
        }
    }
}

// 17. libcoro #421: spawned tasks that would sleep for hours (and sleep again when woken with
// an error) when the pool stops, joins or is destroyed: every one resumes once with closed, its
// next sleep is refused, and its frame is freed.
TEST(user_trial5, spawned_tasks_that_never_finish_on_their_own_end_at_shutdown) {
    const int n = iocp_test::scaled(200, 40);
    for (int mode = 0; mode < 3; ++mode) {
        std::atomic<int> frames{0};
        std::atomic<int> first_closed{0};
        std::atomic<int> second_closed{0};
        std::atomic<int> started{0};
        {
            auto pool = std::make_unique<iocp::thread_pool>(2);
            for (int i = 0; i < n; ++i) {
                iocp::spawn(
                    *pool,
                    [](iocp::thread_pool& p, std::atomic<int>& s, std::atomic<int>& c1,
                       std::atomic<int>& c2, iocp_test::frame_guard) -> iocp::task<> {
                        s.fetch_add(1);
                        std::error_code ec = co_await p.sleep_for(3h);
                        c1 += ec == iocp::errc::closed ? 1 : 0;
                        ec = co_await p.sleep_for(3h);
                        c2 += ec == iocp::errc::closed ? 1 : 0;
                    }(*pool, started, first_closed, second_closed, iocp_test::frame_guard(frames)));
            }
            iocp_test::wait_until([&] { return started.load() == n; }, "every task to start");
            if (mode == 0) // the sleeps' timers (a task that started may not have armed its own)
                EXPECT_LE(pool->stop(), static_cast<std::size_t>(n));
            else if (mode == 1)
                pool->join();
            pool.reset();
        }
        EXPECT_EQ(first_closed.load(), n) << mode;
        EXPECT_EQ(second_closed.load(), n) << mode;
        EXPECT_EQ(frames.load(), n) << mode;
    }
}

iocp::task<int> nested_throw(int depth) {
    if (depth == 0)
        throw std::out_of_range("bottom");
    co_return co_await nested_throw(depth - 1) + 1;
}

iocp::task<int> nested_catch_and_rethrow(iocp::thread_pool& pool, int depth,
                                         std::atomic<int>& caught) {
    if (depth == 0) {
        co_await pool.schedule(); // the innermost suspends: the unwinding starts on a worker
        throw std::out_of_range("bottom");
    }
    try {
        co_return co_await nested_catch_and_rethrow(pool, depth - 1, caught) + 1;
    } catch (const std::out_of_range&) {
        caught.fetch_add(1);
        throw;
    }
}

// 18. cppcoro symmetric transfer: an exception thrown at the bottom of a deep chain of nested
// tasks travels up every level (no stack overflow, each level sees it once), on the awaiting
// thread and after a hop to a worker.
TEST(user_trial5, an_exception_climbs_a_deep_chain_of_nested_tasks) {
    const int depth = iocp_test::scaled(20000, 5000) / iocp_test::tsan_divisor;
    EXPECT_THROW((void)iocp::sync_wait(nested_throw(depth)), std::out_of_range);
    iocp::thread_pool pool(2);
    std::atomic<int> caught{0};
    EXPECT_THROW((void)iocp::sync_wait(nested_catch_and_rethrow(pool, depth, caught)),
                 std::out_of_range);
    EXPECT_EQ(caught.load(), depth);
}

// 19. tensorflow #932: an exception handler that posts more work, some of which throws again,
// while join() runs: join runs it all, and every throw reaches the handler once.
TEST(user_trial5, an_exception_handler_that_posts_throwing_work_during_join) {
    std::atomic<int> handled{0};
    std::atomic<int> generations{0};
    iocp::thread_pool* self = nullptr;
    iocp::thread_pool_options o;
    o.threads = 3;
    o.exception_handler = [&](const std::exception_ptr& e) {
        handled.fetch_add(1);
        int left = 0;
        try {
            std::rethrow_exception(e);
        } catch (int v) {
            left = v;
        }
        if (left > 0) {
            self->post([&, left] {
                generations.fetch_add(1);
                throw left - 1;
            });
        }
    };
    constexpr int roots = 50;
    constexpr int depth = 10;
    {
        iocp::thread_pool pool(o);
        self = &pool;
        for (int i = 0; i < roots; ++i)
            pool.post([] { throw depth; });
        pool.join();
    }
    // Each root throws depth, depth-1, ..., 0: depth + 1 throws, depth follow-up items.
    EXPECT_EQ(handled.load(), roots * (depth + 1));
    EXPECT_EQ(generations.load(), roots * depth);
}

// 20. muduo #668, arduino-timer #93: thousands of timers due at once, each cancelled by an item
// on another worker while they fire: true means never ran, false means ran exactly once.
TEST(user_trial5, thousands_of_due_timers_cancelled_from_workers_while_they_fire) {
    const int n = iocp_test::scaled(5000, 500) / iocp_test::tsan_divisor;
    iocp::thread_pool pool(4);
    std::vector<std::atomic<int>> runs(static_cast<std::size_t>(n));
    std::vector<iocp::timer_id> ids(static_cast<std::size_t>(n));
    std::vector<std::atomic<int>> cancelled(static_cast<std::size_t>(n));
    const auto when = iocp::thread_pool::clock::now() + 2ms;
    std::atomic<int> settled{0};
    for (std::size_t k = 0; k < ids.size(); ++k) {
        ids[k] = pool.post_at(when, [&runs, &settled, k] {
            runs[k].fetch_add(1);
            settled.fetch_add(1);
        });
    }
    std::this_thread::sleep_until(when);
    for (std::size_t k = 0; k < ids.size(); ++k) {
        pool.post([&, k] {
            cancelled[k] = pool.cancel(ids[k]) ? 1 : 0;
            settled += cancelled[k].load();
        });
    }
    // Every timer is past due: each one not cancelled runs (join would abandon the late ones).
    iocp_test::wait_until([&] { return settled.load() == n; },
                          "every timer to run or be cancelled");
    pool.join();
    for (std::size_t k = 0; k < ids.size(); ++k)
        EXPECT_EQ(runs[k].load(), cancelled[k].load() == 1 ? 0 : 1) << k;
}

// 21. cppcoro #164: sync_wait on a worker of a task that never suspends returns its value (the
// documented limit is only a task that needs the blocked worker's pool).
TEST(user_trial5, sync_wait_on_a_worker_of_a_task_that_never_suspends) {
    iocp::thread_pool pool(1);
    std::future<int> f = pool.submit(
        [] { return iocp::sync_wait([]() -> iocp::task<int> { co_return 41; }()) + 1; });
    EXPECT_EQ(iocp_test::await(f, "sync_wait on a worker"), 42);
}

iocp::task<int> answer() { co_return 42; }

// 27. RediSearch #9781/#10337: the pool is a member of the user's object and its
// on_thread_start hook uses it before the pool's constructor has returned. Every callable the
// hooks hand over runs or is destroyed unrun exactly once, whether the owner joins or stops.
class warm_server {
public:
    warm_server(ledger& l, std::atomic<int>& frames, bool stop_at_once, std::error_code& shut)
        : ledger_(l), frames_(frames), stop_(stop_at_once), shutdown_error_(shut),
          pool_(options(this)) {}
    warm_server(const warm_server&) = delete;
    warm_server& operator=(const warm_server&) = delete;
    // NOLINTNEXTLINE(bugprone-exception-escape): only ~thread_pool's mutex, as it says itself
    ~warm_server() {
        // The non-throwing forms, in a destructor; the test checks the code.
        if (stop_)
            (void)pool_.stop(shutdown_error_);
        else
            pool_.join(shutdown_error_);
    }

private:
    static iocp::thread_pool_options options(warm_server* self) {
        iocp::thread_pool_options o;
        o.threads = 4;
        o.exception_handler = [](const std::exception_ptr&) {};
        o.on_thread_start = [self](std::size_t) { self->warm_up(); };
        return o;
    }

    void warm_up() {
        std::error_code ec;
        pool_.post(tracked(ledger_), ec);
        std::future<void> f = pool_.submit(tracked(ledger_), ec);
        (void)pool_.post_after(0ms, tracked(ledger_), ec);
        iocp::spawn(
            pool_,
            [](iocp::thread_pool& p, iocp_test::frame_guard) -> iocp::task<> {
                co_await p.schedule();
            }(pool_, iocp_test::frame_guard(frames_)),
            ec);
    }

    ledger& ledger_;
    std::atomic<int>& frames_;
    bool stop_;
    std::error_code& shutdown_error_;
    iocp::thread_pool pool_; // last: its hooks use the members above
};

TEST(user_trial5, hooks_that_use_the_pool_while_it_is_constructed_hand_over_everything_once) {
    const int rounds = iocp_test::scaled(60, 10) / iocp_test::tsan_divisor;
    for (int r = 0; r < rounds; ++r) {
        ledger l;
        std::atomic<int> frames{0};
        const bool stop_at_once = r % 2 == 1;
        std::error_code shut = std::make_error_code(std::errc::interrupted); // overwritten
        { warm_server server(l, frames, stop_at_once, shut); }
        EXPECT_FALSE(shut) << r;
        // 4 workers x (post, submit, timer): each ran or was destroyed unrun once.
        EXPECT_EQ(l.settled(), 12) << r;
        if (!stop_at_once) {
            // join waits for the hooks, then runs what they posted (a timer may be abandoned).
            EXPECT_GE(l.ran.load(), 8) << r;
        }
        EXPECT_EQ(frames.load(), 4) << r;
    }
}

// 26. Bosma/Scheduler #2: short-lived pools whose timers are pending, falling due and being
// cancelled from another thread as the pool is destroyed: each timer runs or is destroyed unrun
// exactly once, cancel() is believed, and nothing outlives the pool.
TEST(user_trial5, short_lived_pools_with_timers_due_and_cancelled_as_they_are_destroyed) {
    const int rounds = iocp_test::scaled(150, 30) / iocp_test::tsan_divisor;
    ledger l;
    int timers = 0;
    int cancelled_true = 0;
    for (int r = 0; r < rounds; ++r) {
        std::vector<iocp::timer_id> ids;
        std::future<int> canceller;
        {
            iocp::thread_pool pool(1);
            for (int i = 0; i < 8; ++i, ++timers)
                ids.push_back(
                    pool.post_after(std::chrono::microseconds((r % 4) * 100 * i), tracked(l)));
            ids.push_back(pool.post_after(1h, tracked(l)));
            ++timers;
            canceller = std::async(std::launch::async, [&pool, &ids] {
                int n = 0;
                for (const iocp::timer_id id : ids)
                    n += pool.cancel(id) ? 1 : 0;
                return n;
            });
            cancelled_true += iocp_test::await(canceller, "the canceller", r);
        } // destroyed: joins, abandons what is still pending
    }
    EXPECT_EQ(l.settled(), timers);
    EXPECT_GE(l.abandoned.load(), cancelled_true);
}

// 24. ClickHouse #80066/#80069: pending timers whose callables post from their destructor when
// join() or stop() abandons them: the posts are taken (join runs them, stop runs or abandons
// them) or refused, each exactly once.
TEST(user_trial5, abandoned_timers_whose_destructor_posts_are_counted_once) {
    const int n = 500 / iocp_test::tsan_divisor;
    for (int mode = 0; mode < 2; ++mode) {
        ledger timers;
        ledger children;
        std::atomic<int> refused{0};
        {
            iocp::thread_pool pool(2);
            for (int i = 0; i < n; ++i)
                (void)pool.post_after(
                    1h, [t = tracked(timers),
                         p = posts_on_destruction(pool, children, refused)]() mutable { t(); });
            if (mode == 0) {
                pool.join();
                EXPECT_EQ(children.ran.load() + refused.load(), n);
            } else {
                (void)pool.stop();
            }
        }
        EXPECT_EQ(timers.ran.load(), 0) << mode;
        EXPECT_EQ(timers.abandoned.load(), n) << mode;
        EXPECT_EQ(children.settled(), n) << mode;
    }
}

// 25. PhotonLibOS #1561: a pool destroyed by its own worker, or by code its own join() runs,
// cannot wait for itself: the destructor says so on stderr and calls std::terminate.
TEST(user_trial5, destroying_the_pool_from_its_worker_or_its_own_join_terminates_with_a_message) {
    if (iocp_test::running_under_wine())
        GTEST_SKIP() << "death tests re-run the whole test binary under Wine: minutes per case";
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_DEATH(
        {
            auto pool = std::make_shared<iocp::thread_pool>(1);
            std::promise<void> released;
            std::shared_future<void> ready = released.get_future().share();
            // The item holds a reference; once it has run, the worker frees it with the last.
            pool->post([keep = pool, ready] { ready.wait(); });
            pool.reset();
            released.set_value();
            std::this_thread::sleep_for(10s);
        },
        "destroyed from one of its own workers");
    EXPECT_DEATH(
        {
            auto* pool = new iocp::thread_pool(1);
            (void)pool->post_after(1h, calls_back_when_abandoned([pool] { delete pool; }));
            pool->join();
        },
        "destroyed from one of its own workers or from inside its own join");
}

// 22. qcoro #253, ecoro #10: every driver refuses an empty task, or one that has run already,
// with std::errc::invalid_argument instead of resuming a null or finished frame (a crash); the
// other tasks given with it are destroyed unstarted, and the pool lives on.
TEST(user_trial5, empty_or_finished_tasks_are_refused_with_invalid_argument) {
    const std::error_code invalid = std::make_error_code(std::errc::invalid_argument);
    auto code_of = [](auto&& f) {
        try {
            f();
        } catch (const std::system_error& e) {
            return e.code();
        }
        return std::error_code{};
    };
    iocp::thread_pool pool(2);
    // sync_wait
    EXPECT_EQ(code_of([] { iocp::sync_wait(iocp::task<>{}); }), invalid);
    EXPECT_EQ(code_of([] { (void)iocp::sync_wait(iocp::task<int>{}); }), invalid);
    iocp::task<int> moved = answer();
    iocp::task<int> taken = std::move(moved);
    // NOLINTNEXTLINE(bugprone-use-after-move): a moved-from task, on purpose
    EXPECT_EQ(code_of([&] { (void)iocp::sync_wait(std::move(moved)); }), invalid);
    EXPECT_EQ(iocp::sync_wait(std::move(taken)), 42);
    // co_await: empty, and the same task a second time.
    auto awaits = [](iocp::thread_pool& p) -> iocp::task<int> {
        co_await p.schedule();
        int codes = 0;
        try {
            co_await iocp::task<>{};
        } catch (const std::system_error& e) {
            codes += e.code() == std::errc::invalid_argument ? 1 : 0;
        }
        iocp::task<int> t = answer();
        const int first = co_await t;
        try {
            (void)co_await t;
        } catch (const std::system_error& e) {
            codes += e.code() == std::errc::invalid_argument ? 1 : 0;
        }
        co_return first + codes;
    };
    EXPECT_EQ(iocp::sync_wait(awaits(pool)), 44);
    // spawn
    std::error_code ec;
    iocp::spawn(pool, iocp::task<>{}, ec);
    EXPECT_EQ(ec, invalid);
    EXPECT_THROW(iocp::spawn(pool, iocp::task<int>{}), std::system_error);
    // when_all: the valid tasks given with an empty one never start and are freed.
    std::atomic<int> frames{0};
    std::atomic<int> started{0};
    auto counted = [](std::atomic<int>& s, iocp_test::frame_guard) -> iocp::task<int> {
        s.fetch_add(1);
        co_return 1;
    };
    {
        std::vector<iocp::task<int>> v;
        v.push_back(counted(started, iocp_test::frame_guard(frames)));
        v.emplace_back();
        v.push_back(counted(started, iocp_test::frame_guard(frames)));
        EXPECT_EQ(code_of([&] { (void)iocp::sync_wait(iocp::when_all(std::move(v))); }), invalid);
        EXPECT_EQ(code_of([&] {
                      (void)iocp::sync_wait(iocp::when_all(
                          counted(started, iocp_test::frame_guard(frames)), iocp::task<>{}));
                  }),
                  invalid);
    }
    EXPECT_EQ(started.load(), 0);
    EXPECT_EQ(frames.load(), 3);
    EXPECT_EQ(pool.submit([] { return 1; }).get(), 1);
}

// 23. taskflow #107, ts-task #5: when_all() of no arguments completes at once with an empty
// tuple; of mixed types, each result comes back in argument order.
TEST(user_trial5, when_all_of_no_arguments_and_of_mixed_types) {
    iocp::thread_pool pool(2);
    std::tuple<> none = iocp::sync_wait(iocp::when_all());
    (void)none;
    auto mixed = [](iocp::thread_pool& p) -> iocp::task<int> {
        co_await p.schedule();
        std::tuple<> nothing = co_await iocp::when_all();
        (void)nothing;
        auto [a, b, c] = co_await iocp::when_all(
            value_after_hop(p, 3), []() -> iocp::task<> { co_return; }(), answer());
        (void)b;
        co_return a + c;
    };
    EXPECT_EQ(iocp::sync_wait(mixed(pool)), 45);
}

} // namespace
