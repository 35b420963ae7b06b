// A third set of programs a user might write from the README and the public headers, this time
// with the callback API and the pool's plain API only (no coroutines): submit with every kind
// of result, timers and their cancellation around shutdown, wait() racing join() and stop(),
// out-of-range options, the exception handler, endpoints, and callback I/O on sockets, files
// and datagrams (error codes, send_all over partial sends, bad buffers, shutdown with
// operations pending). Each test counts what it started and checks that every handler or
// callable ran, or was destroyed unrun, exactly once, as the documentation promises.

#include "iocp/thread_pool.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "iocp/config.hpp"
#include "iocp/error.hpp"
#include "support/platform.hpp"
#include "support/waiting.hpp"

#if IOCP_HAS_IO
#include "iocp/acceptor.hpp"
#include "iocp/buffer.hpp"
#include "iocp/datagram_socket.hpp"
#include "iocp/endpoint.hpp"
#include "iocp/file.hpp"
#include "iocp/socket.hpp"
#endif

namespace {

using namespace std::chrono_literals;
using iocp_test::await;
using iocp_test::tsan_divisor;
using iocp_test::wait_until;

// Iterations: fewer under Wine (every port call is a wineserver round trip) and under TSan.
int rounds(int native, int wine) {
    return (std::max)(1, iocp_test::scaled(native, wine) / tsan_divisor);
}

// Set around every call that starts (or cancels) an operation: a handler that sees it set ran
// inside that call, which the documentation rules out.
thread_local bool t_starting = false;

template <class F>
void starting(F&& f) {
    struct reset {
        ~reset() { t_starting = false; }
    } guard;
    t_starting = true;
    std::forward<F>(f)();
}

// Counts a callable (or handler) destroyed without having run. It travels with the callable:
// a moved-from copy counts nothing.
class unrun_tracker {
public:
    explicit unrun_tracker(std::atomic<int>& unrun) noexcept : unrun_(&unrun) {}
    unrun_tracker(unrun_tracker&& other) noexcept : unrun_(std::exchange(other.unrun_, nullptr)) {}
    unrun_tracker& operator=(unrun_tracker&&) = delete;
    unrun_tracker(const unrun_tracker&) = delete;
    unrun_tracker& operator=(const unrun_tracker&) = delete;
    ~unrun_tracker() {
        if (unrun_ != nullptr)
            ++*unrun_;
    }
    void ran() const noexcept { unrun_ = nullptr; }

private:
    mutable std::atomic<int>* unrun_;
};

// Records the exceptions the pool's exception handler receives, by message.
class exception_log {
public:
    std::function<void(std::exception_ptr)> handler() {
        return [this](std::exception_ptr e) {
            std::string what = "non-standard";
            try {
                std::rethrow_exception(std::move(e));
            } catch (const std::exception& ex) {
                what = ex.what();
            } catch (...) {
            }
            std::lock_guard lock(mutex_);
            ++by_message_[what];
            ++total_;
        };
    }
    int count(const std::string& what) {
        std::lock_guard lock(mutex_);
        auto it = by_message_.find(what);
        return it == by_message_.end() ? 0 : it->second;
    }
    int total() {
        std::lock_guard lock(mutex_);
        return total_;
    }

private:
    std::mutex mutex_;
    std::map<std::string, int> by_message_;
    int total_ = 0;
};

// --- submit ----------------------------------------------------------------------------------

std::atomic<int> g_live_results{0};
std::atomic<int> g_misaligned_results{0};

// A result larger than a work-item block (96 bytes), over-aligned, counting its instances.
struct alignas(64) big_result {
    std::array<unsigned char, 200> bytes{};
    explicit big_result(unsigned char seed) noexcept {
        for (std::size_t i = 0; i < bytes.size(); ++i)
            bytes[i] = static_cast<unsigned char>(seed + i);
        note();
    }
    big_result(const big_result& other) noexcept : bytes(other.bytes) { note(); }
    big_result(big_result&& other) noexcept : bytes(other.bytes) { note(); }
    big_result& operator=(const big_result&) = default;
    big_result& operator=(big_result&&) = default;
    ~big_result() { --g_live_results; }

private:
    void note() const noexcept {
        ++g_live_results;
        if (reinterpret_cast<std::uintptr_t>(this) % alignof(big_result) != 0)
            ++g_misaligned_results;
    }
};

// Promise: submit returns "a std::future with the result or the exception", for any result
// type: a reference refers to the very object, a move-only value arrives, a result larger than
// the pool's recycled blocks and over-aligned arrives whole and aligned, and every result
// object is destroyed exactly once (also when the future was dropped before the item ran).
TEST(user_trial3_test, submit_delivers_references_move_only_big_and_over_aligned_results) {
    {
        iocp::thread_pool pool(2);
        int target = 7;
        const std::string text = "const";
        std::future<int&> ref = pool.submit([&]() -> int& { return target; });
        std::future<const std::string&> cref =
            pool.submit([&]() -> const std::string& { return text; });
        std::future<std::unique_ptr<int>> owned =
            pool.submit([] { return std::make_unique<int>(42); });
        std::future<void> nothing = pool.submit([] {});
        EXPECT_EQ(&await(ref, "int&"), &target);
        EXPECT_EQ(&await(cref, "const string&"), &text);
        std::unique_ptr<int> p = await(owned, "unique_ptr");
        ASSERT_NE(p, nullptr);
        EXPECT_EQ(*p, 42);
        await(nothing, "void");

        const int n = rounds(200, 40);
        std::vector<std::future<big_result>> bigs;
        for (int i = 0; i < n; ++i)
            bigs.push_back(pool.submit([i] { return big_result(static_cast<unsigned char>(i)); }));
        // Dropped futures: the worker sets a value nobody reads; it must still be destroyed.
        for (int i = 0; i < n; ++i)
            (void)pool.submit([i] { return big_result(static_cast<unsigned char>(i * 3)); });
        for (int i = 0; i < n; ++i) {
            big_result r = await(bigs[static_cast<std::size_t>(i)], "a big result", i);
            for (std::size_t b = 0; b < r.bytes.size(); ++b)
                ASSERT_EQ(r.bytes[b], static_cast<unsigned char>(i + static_cast<int>(b)));
        }
        pool.wait();
    }
    EXPECT_EQ(g_misaligned_results.load(), 0);
    EXPECT_EQ(g_live_results.load(), 0) << "a result was leaked or destroyed twice";
}

// Promise: stop() abandons queued work ("destroyed unrun; futures report broken_promise") and
// pending timers, and "returns how many work items (and timers) this call abandoned"; a refused
// submit "returns an invalid future" and its callable "is destroyed, never run".
TEST(user_trial3_test, stop_breaks_every_queued_submit_and_counts_them_with_the_timers) {
    iocp::thread_pool_options o;
    o.threads = 1;
    iocp::thread_pool pool(o);
    std::atomic<bool> release{false};
    std::atomic<bool> blocking{false};
    pool.post([&] {
        blocking = true;
        while (!release)
            std::this_thread::yield();
    });
    wait_until([&] { return blocking.load(); }, "the blocker runs");

    std::atomic<int> ran{0};
    std::atomic<int> unrun{0};
    const int n = 16;
    std::vector<std::future<void>> voids;
    std::vector<std::future<int>> ints;
    std::vector<std::future<std::unique_ptr<int>>> owners;
    std::vector<std::future<big_result>> bigs;
    for (int i = 0; i < n; ++i) {
        voids.push_back(pool.submit([&, t = unrun_tracker(unrun)] {
            t.ran();
            ++ran;
        }));
        ints.push_back(pool.submit([&, t = unrun_tracker(unrun)] {
            t.ran();
            ++ran;
            return 1;
        }));
        owners.push_back(pool.submit([&, t = unrun_tracker(unrun)] {
            t.ran();
            ++ran;
            return std::make_unique<int>(1);
        }));
        bigs.push_back(pool.submit([&, t = unrun_tracker(unrun)] {
            t.ran();
            ++ran;
            return big_result(1);
        }));
    }
    const int timers = 5;
    for (int i = 0; i < timers; ++i)
        pool.post_after(1h, [&, t = unrun_tracker(unrun)] {
            t.ran();
            ++ran;
        });

    std::size_t abandoned = 0;
    std::thread stopper([&] { abandoned = pool.stop(); });
    // Release the blocker only once the pool refuses posts: then nothing queued can run.
    int probes = 0;
    std::error_code ec;
    for (;;) {
        pool.post(
            [&, t = unrun_tracker(unrun)] {
                t.ran();
                ++ran;
            },
            ec);
        if (ec)
            break;
        ++probes;
        std::this_thread::yield();
    }
    EXPECT_EQ(ec, iocp::errc::closed);
    release = true;
    stopper.join();

    EXPECT_EQ(ran.load(), 0);
    EXPECT_EQ(abandoned, static_cast<std::size_t>(4 * n + timers + probes));
    // The refused probe was destroyed too.
    EXPECT_EQ(unrun.load(), 4 * n + timers + probes + 1);
    auto broken = [](auto& f) {
        try {
            f.get();
            return false;
        } catch (const std::future_error& e) {
            return e.code() == std::future_errc::broken_promise;
        }
    };
    for (int i = 0; i < n; ++i) {
        const auto k = static_cast<std::size_t>(i);
        EXPECT_TRUE(broken(voids[k]));
        EXPECT_TRUE(broken(ints[k]));
        EXPECT_TRUE(broken(owners[k]));
        EXPECT_TRUE(broken(bigs[k]));
    }
    std::future<int> refused = pool.submit(
        [&, t = unrun_tracker(unrun)] {
            t.ran();
            return 1;
        },
        ec);
    EXPECT_EQ(ec, iocp::errc::closed);
    EXPECT_FALSE(refused.valid());
    EXPECT_EQ(unrun.load(), 4 * n + timers + probes + 2);
    EXPECT_THROW((void)pool.submit([] { return 1; }), std::system_error);
}

// Promise: every member may be called from any thread, workers included: submits from many
// threads at once, and from inside the pool's own items, each deliver their own result.
TEST(user_trial3_test, submits_from_many_threads_and_from_workers_each_deliver_their_result) {
    iocp::thread_pool pool(2);
    const int threads = 4;
    const int per_thread = rounds(400, 40);
    std::mutex nested_mutex;
    std::vector<std::pair<int, std::future<int>>> nested;
    std::atomic<long long> sum{0};
    std::vector<std::thread> producers;
    for (int t = 0; t < threads; ++t) {
        producers.emplace_back([&, t] {
            std::vector<std::future<int>> mine;
            for (int i = 0; i < per_thread; ++i) {
                const int value = t * 100000 + i;
                mine.push_back(pool.submit([&, value] {
                    // From a worker: a submit of its own, whose future another thread reads.
                    std::future<int> inner = pool.submit([value] { return -value; });
                    std::lock_guard lock(nested_mutex);
                    nested.emplace_back(value, std::move(inner));
                    return value;
                }));
            }
            for (int i = 0; i < per_thread; ++i) {
                const int got = await(mine[static_cast<std::size_t>(i)], "a submit", i);
                EXPECT_EQ(got, t * 100000 + i);
                sum += got;
            }
        });
    }
    for (auto& p : producers)
        p.join();
    pool.wait();
    std::lock_guard lock(nested_mutex);
    ASSERT_EQ(nested.size(), static_cast<std::size_t>(threads * per_thread));
    long long inner_sum = 0;
    for (auto& [value, f] : nested) {
        const int got = await(f, "a nested submit");
        EXPECT_EQ(got, -value);
        inner_sum += got;
    }
    EXPECT_EQ(inner_sum, -sum.load());
}

std::atomic<int> g_plain_calls{0};
void plain_task() { ++g_plain_calls; }
int plain_answer() { return 42; }

// Promise: post/submit/post_after take "any callable taking no arguments": a plain function
// named as such (a function reference) as well as a function pointer; a null function pointer
// is std::errc::invalid_argument.
TEST(user_trial3_test, plain_functions_are_callables_like_any_other) {
    g_plain_calls = 0;
    iocp::thread_pool pool(1);
    pool.post(plain_task);
    pool.post(&plain_task);
    std::future<int> answer = pool.submit(plain_answer);
    std::future<int> answer2 = pool.submit(&plain_answer);
    std::promise<void> timed;
    pool.post_after(0ms, plain_task);
    pool.post_after(1ms, [&] { timed.set_value(); });
    EXPECT_EQ(await(answer, "submit(function)"), 42);
    EXPECT_EQ(await(answer2, "submit(&function)"), 42);
    await(timed.get_future(), "the timer after the plain one");
    pool.wait();
    EXPECT_EQ(g_plain_calls.load(), 3);

    void (*null_fn)() = nullptr;
    std::error_code ec;
    pool.post(null_fn, ec);
    EXPECT_EQ(ec, std::errc::invalid_argument);
    (void)pool.post_after(1ms, null_fn, ec);
    EXPECT_EQ(ec, std::errc::invalid_argument);
    int (*null_answer)() = nullptr;
    std::future<int> none = pool.submit(null_answer, ec);
    EXPECT_EQ(ec, std::errc::invalid_argument);
    EXPECT_FALSE(none.valid());
}

// --- timers ----------------------------------------------------------------------------------

// Promise: cancel is "true if it will never run (its callable is destroyed), false if it
// already ran, is running, or was cancelled before"; ids are never reused; an unknown or empty
// id is not a pending timer. Infinite floating-point delays never run, negative infinite ones
// run at once; a time_point::max() of a wider duration never runs.
TEST(user_trial3_test, cancel_is_true_once_and_only_for_a_timer_that_never_ran) {
    iocp::thread_pool pool(2);
    std::atomic<int> unrun{0};
    std::atomic<int> ran{0};

    EXPECT_FALSE(pool.cancel(iocp::timer_id{}));
    EXPECT_FALSE(pool.cancel(iocp::timer_id{0xFFFFFFFFFFFFull}));

    const iocp::timer_id distant = pool.post_after(1h, [&, t = unrun_tracker(unrun)] {
        t.ran();
        ++ran;
    });
    EXPECT_NE(distant, iocp::timer_id{});
    EXPECT_TRUE(pool.cancel(distant));
    EXPECT_EQ(unrun.load(), 1) << "a cancelled timer's callable is destroyed by cancel";
    EXPECT_FALSE(pool.cancel(distant)) << "cancelled before";

    // A timer that ran: false.
    std::promise<void> done;
    const iocp::timer_id soon = pool.post_after(0ms, [&, t = unrun_tracker(unrun)] {
        t.ran();
        ++ran;
        done.set_value();
    });
    await(done.get_future(), "a timer due now");
    pool.wait();
    EXPECT_FALSE(pool.cancel(soon));

    // A timer cancelling itself while it runs: false ("is running").
    std::atomic<std::uint64_t> self_id{0};
    std::promise<bool> self_cancel;
    const iocp::timer_id self = pool.post_after(1ms, [&] {
        while (self_id.load() == 0)
            std::this_thread::yield();
        self_cancel.set_value(pool.cancel(iocp::timer_id{self_id.load()}));
    });
    self_id = self.value;
    EXPECT_FALSE(await(self_cancel.get_future(), "the self-cancelling timer"));
    EXPECT_NE(self, distant);
    EXPECT_NE(self, soon);

    // Saturation with floating-point and wide durations.
    const double inf = std::numeric_limits<double>::infinity();
    const iocp::timer_id never =
        pool.post_after(std::chrono::duration<double>(inf), [&, t = unrun_tracker(unrun)] {
            t.ran();
            ++ran;
        });
    using wide_point = std::chrono::time_point<std::chrono::steady_clock,
                                               std::chrono::duration<double, std::ratio<3600>>>;
    const iocp::timer_id never2 = pool.post_at(wide_point::max(), [&, t = unrun_tracker(unrun)] {
        t.ran();
        ++ran;
    });
    std::promise<void> minus_inf;
    pool.post_after(std::chrono::duration<double>(-inf), [&] { minus_inf.set_value(); });
    std::promise<void> past;
    pool.post_at(wide_point(std::chrono::duration<double, std::ratio<3600>>(-1e30)),
                 [&] { past.set_value(); });
    await(minus_inf.get_future(), "a timer at minus infinity");
    await(past.get_future(), "a timer long past");
    EXPECT_TRUE(pool.cancel(never));
    EXPECT_TRUE(pool.cancel(never2));
    EXPECT_EQ(ran.load(), 1);
    EXPECT_EQ(unrun.load(), 3);
}

enum class ending { join, stop, destroy };

// Promise: timers pending at join(), stop() or destruction are abandoned ("destroyed unrun,
// nothing leaks"), so each timer's callable either ran once or was destroyed unrun once; stop()
// returns how many it abandoned; afterwards no id can be cancelled any more. Timers are due at
// random moments around the shutdown.
TEST(user_trial3_test, timers_around_join_stop_or_destruction_run_or_are_destroyed_once) {
    std::mt19937 rng(20261201);
    const int iterations = rounds(60, 6);
    for (int it = 0; it < iterations; ++it) {
        const auto how = static_cast<ending>(it % 3);
        std::atomic<int> ran{0};
        std::atomic<int> unrun{0};
        const int n = 40;
        std::vector<iocp::timer_id> ids;
        std::size_t abandoned = 0;
        {
            auto pool = std::make_unique<iocp::thread_pool>(2);
            for (int i = 0; i < n; ++i) {
                const auto delay = i % 8 == 0 ? std::chrono::microseconds::max()
                                              : std::chrono::microseconds(rng() % 3000);
                ids.push_back(pool->post_after(delay, [&, t = unrun_tracker(unrun)] {
                    t.ran();
                    ++ran;
                }));
            }
            std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
            switch (how) {
            case ending::join: pool->join(); break;
            case ending::stop: abandoned = pool->stop(); break;
            case ending::destroy: pool.reset(); break;
            }
            if (pool) {
                EXPECT_EQ(ran.load() + unrun.load(), n) << "iteration " << it;
                for (const iocp::timer_id id : ids)
                    EXPECT_FALSE(pool->cancel(id)) << "iteration " << it;
                std::error_code ec;
                (void)pool->post_after(
                    0ms, [] {}, ec);
                EXPECT_EQ(ec, iocp::errc::closed);
            }
        }
        EXPECT_EQ(ran.load() + unrun.load(), n) << "iteration " << it;
        EXPECT_GE(unrun.load(), n / 8) << "the never-due timers were abandoned";
        if (how == ending::stop) {
            EXPECT_EQ(abandoned, static_cast<std::size_t>(unrun.load())) << "iteration " << it;
        }
    }
}

// --- wait ------------------------------------------------------------------------------------

// Promise: wait() "blocks until every work item posted so far has finished (run or
// abandoned)"; it may be called "any time, from any non-worker thread", and several at once.
// Waiters post an item, wait, and check their item finished, while the main thread shuts the
// pool down with join() or stop(): every wait returns, none early.
TEST(user_trial3_test, waits_on_many_threads_see_their_items_finished_through_join_and_stop) {
    const int iterations = rounds(20, 4);
    std::mt19937 rng(7);
    for (int it = 0; it < iterations; ++it) {
        const bool use_stop = it % 2 == 1;
        iocp::thread_pool pool(2);
        std::atomic<bool> shut{false};
        std::atomic<int> early{0};
        std::atomic<int> errors{0};
        std::atomic<int> waits{0};
        std::vector<std::thread> waiters;
        for (int w = 0; w < 3; ++w) {
            waiters.emplace_back([&] {
                for (;;) {
                    const bool last = shut.load();
                    auto finished = std::make_shared<std::atomic<bool>>(false);
                    struct mark {
                        std::shared_ptr<std::atomic<bool>> flag;
                        explicit mark(std::shared_ptr<std::atomic<bool>> f) : flag(std::move(f)) {}
                        mark(mark&&) noexcept = default;
                        mark& operator=(mark&&) = delete;
                        mark(const mark&) = delete;
                        mark& operator=(const mark&) = delete;
                        ~mark() {
                            if (flag)
                                *flag = true; // run or abandoned: finished either way
                        }
                        void operator()() const { std::this_thread::yield(); }
                    };
                    std::error_code ec;
                    pool.post(mark(finished), ec);
                    const bool accepted = !ec;
                    pool.wait(ec);
                    ++waits;
                    if (ec)
                        ++errors;
                    else if (accepted && !finished->load())
                        ++early;
                    if (last)
                        return;
                }
            });
        }
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
        if (use_stop)
            (void)pool.stop();
        else
            pool.join();
        shut = true;
        for (auto& t : waiters)
            t.join();
        EXPECT_EQ(early.load(), 0) << "a wait returned before its item finished";
        EXPECT_EQ(errors.load(), 0);
        EXPECT_GE(waits.load(), 3);
    }
}

// --- options and the exception handler ---------------------------------------------------------

// Promise: every option outside its range is clamped, except threads above max_threads, which
// the constructor refuses with std::errc::invalid_argument (a std::system_error, never a
// crash); exceptions from on_thread_start / on_thread_stop go to the exception handler.
TEST(user_trial3_test, options_out_of_range_are_clamped_or_refused_and_hook_exceptions_reported) {
    for (const std::size_t threads :
         {iocp::thread_pool_options::max_threads + 1, std::numeric_limits<std::size_t>::max()}) {
        iocp::thread_pool_options o;
        o.threads = threads;
        try {
            iocp::thread_pool pool(o);
            ADD_FAILURE() << "a pool of " << threads << " threads was accepted";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code(), std::errc::invalid_argument);
        }
        try {
            iocp::thread_pool pool(threads);
            ADD_FAILURE() << "a pool of " << threads << " threads was accepted";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code(), std::errc::invalid_argument);
        }
    }

    exception_log log;
    {
        iocp::thread_pool_options o;
        o.threads = 2;
        o.concurrency = std::numeric_limits<unsigned>::max();
        o.batch = std::numeric_limits<std::size_t>::max();
        o.queue_capacity = std::numeric_limits<std::size_t>::max();
        o.spin = std::chrono::microseconds::min();
        o.thread_name = std::string(300, 'n');
        o.exception_handler = log.handler();
        o.on_thread_start = [](std::size_t) { throw std::runtime_error("start hook"); };
        o.on_thread_stop = [](std::size_t) { throw std::runtime_error("stop hook"); };
        iocp::thread_pool pool(o);
        EXPECT_EQ(pool.size(), 2u);
        std::vector<std::future<int>> results;
        const int n = rounds(2000, 200);
        for (int i = 0; i < n; ++i)
            results.push_back(pool.submit([i] { return i; }));
        for (int i = 0; i < n; ++i)
            EXPECT_EQ(await(results[static_cast<std::size_t>(i)], "a result", i), i);
        pool.join();
    }
    EXPECT_EQ(log.count("start hook"), 2);
    EXPECT_EQ(log.count("stop hook"), 2);
    EXPECT_EQ(log.total(), 4) << "nothing else (a long thread name) is an error";

    iocp::thread_pool_options tiny;
    tiny.threads = 1;
    tiny.batch = 0;
    tiny.queue_capacity = 0;
    tiny.concurrency = 0;
    iocp::thread_pool pool(tiny);
    // A queue of the smallest capacity still takes a burst distant larger (overflow list).
    std::atomic<int> ran{0};
    const int burst = rounds(5000, 500);
    for (int i = 0; i < burst; ++i)
        pool.post([&] { ++ran; });
    pool.wait();
    EXPECT_EQ(ran.load(), burst);
}

// Promise (thread_pool_stats and the header's "How it works"): a busy worker looks at the port
// "at least every port_poll_interval (64) work items" (port_polls), an idle worker sleeps on
// the port (sleeps) and a post to a sleeping worker costs one wake-up packet (wakeups).
TEST(user_trial3_test, stats_count_a_busy_workers_looks_and_a_sleepers_wakeup) {
    iocp::thread_pool_options o;
    o.threads = 1;
    o.spin = std::chrono::microseconds(0);
    iocp::thread_pool pool(o);
    wait_until([&] { return pool.stats().sleeps >= 1; }, "the idle worker sleeps");
    const iocp::thread_pool_stats idle = pool.stats();
    // The only worker sleeps and nothing else runs: this post must wake it.
    std::promise<void> woke;
    pool.post([&] { woke.set_value(); });
    await(woke.get_future(), "the woken worker");
    const iocp::thread_pool_stats after_wake = pool.stats();
    EXPECT_GE(after_wake.wakeups, idle.wakeups + 1) << "a sleeping worker woken without a packet";
    EXPECT_GE(after_wake.sleeps, idle.sleeps);

    // 1,000 items queued by the worker itself run back to back on it.
    const std::uint64_t items = 1000;
    std::atomic<std::uint64_t> ran{0};
    pool.post([&] {
        for (std::uint64_t i = 0; i < items; ++i)
            pool.post([&] { ++ran; });
    });
    pool.wait();
    EXPECT_EQ(ran.load(), items);
    const iocp::thread_pool_stats busy = pool.stats();
    EXPECT_GE(busy.port_polls - after_wake.port_polls, items / 64 - 1)
        << "a busy worker must look at the port at least every 64 items";
    EXPECT_GE(busy.wakeups, after_wake.wakeups);
}

// Promise: an exception thrown by a posted callable, a timer's callable or an I/O handler goes
// to the pool's exception handler, once, and the worker lives on; one thrown by a submitted
// callable goes to its future, not to the handler.
TEST(user_trial3_test, exceptions_from_posts_timers_and_io_handlers_reach_the_handler_once) {
    exception_log log;
    iocp::thread_pool_options o;
    o.threads = 1; // one worker: it must survive every exception
    o.exception_handler = log.handler();
    iocp::thread_pool pool(o);
    int expected = 0;
    pool.post([] { throw std::runtime_error("from post"); });
    ++expected;
    pool.post_after(0ms, [] { throw std::runtime_error("from a timer"); });
    ++expected;
    pool.post([] { throw 7; });
    ++expected;
    std::future<int> f = pool.submit([]() -> int { throw std::runtime_error("from submit"); });
    // The item (and its promise) is destroyed before wait() returns: the exception's last owner
    // is then this thread's future. (Otherwise the worker may free the exception after this
    // thread read it, ordered only by libstdc++'s exception reference count, which TSan does not
    // see: a false report.)
    pool.wait();
    try {
        (void)await(f, "the submit");
        ADD_FAILURE() << "the submit's exception was lost";
    } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "from submit");
    }
#if IOCP_HAS_IO
    iocp::socket unconnected(pool, iocp::address_family::ipv4);
    char none[1];
    // A receive into 0 bytes completes at once: its handler throws.
    unconnected.recv(iocp::buffer(none, 0), [](std::error_code, std::size_t) {
        throw std::runtime_error("from a recv handler");
    });
    ++expected;
    iocp::socket closed(pool);
    closed.send(iocp::buffer("x", 1), [](std::error_code ec, std::size_t) {
        if (ec == iocp::errc::invalid_handle)
            throw std::runtime_error("from a send handler");
    });
    ++expected;
    const auto path = std::filesystem::temp_directory_path() /
                      ("iocp_user_trial3_exc_" + std::to_string(std::random_device{}()));
    {
        iocp::file file(pool, path,
                        iocp::file_mode::read_write | iocp::file_mode::create |
                            iocp::file_mode::truncate);
        static const char data[] = "hello";
        std::promise<void> written;
        file.write_at(0, iocp::buffer(data, 5), [&](std::error_code ec, std::size_t) {
            written.set_value();
            if (!ec)
                throw std::runtime_error("from a file handler");
        });
        await(written.get_future(), "the write");
        ++expected;
        wait_until([&] { return log.total() >= expected; }, "the handler exceptions");
    }
    std::filesystem::remove(path);
#endif
    wait_until([&] { return log.total() >= expected; }, "every exception");
    // The worker lives on.
    EXPECT_EQ(await(pool.submit([] { return 5; }), "a submit after the exceptions"), 5);
    pool.join();
    EXPECT_EQ(log.total(), expected);
    EXPECT_EQ(log.count("from post"), 1);
    EXPECT_EQ(log.count("from a timer"), 1);
    EXPECT_EQ(log.count("non-standard"), 1);
    EXPECT_EQ(log.count("from submit"), 0);
#if IOCP_HAS_IO
    EXPECT_EQ(log.count("from a recv handler"), 1);
    EXPECT_EQ(log.count("from a send handler"), 1);
    EXPECT_EQ(log.count("from a file handler"), 1);
#endif
}

#if IOCP_HAS_IO

// --- endpoints -------------------------------------------------------------------------------

// Promise: parse takes a numeric IPv4 or IPv6 address (no brackets) and anything else is
// std::errc::invalid_argument; to_string is "address:port" with IPv6 in brackets; address() is
// the numeric form, empty when unspecified; the unspecified endpoint reports ipv4.
TEST(user_trial3_test, endpoints_parse_and_format_as_documented_and_bad_text_is_refused) {
    using iocp::address_family;
    using iocp::endpoint;
    const endpoint v4 = endpoint::parse("127.0.0.1", 80);
    EXPECT_EQ(v4.family(), address_family::ipv4);
    EXPECT_EQ(v4.port(), 80);
    EXPECT_EQ(v4.address(), "127.0.0.1");
    EXPECT_EQ(v4.to_string(), "127.0.0.1:80");
    EXPECT_EQ(v4, endpoint::loopback(address_family::ipv4, 80));

    const endpoint v6 = endpoint::parse("::1", 443);
    EXPECT_EQ(v6.family(), address_family::ipv6);
    EXPECT_EQ(v6.to_string(), "[::1]:443");
    EXPECT_EQ(v6, endpoint::loopback(address_family::ipv6, 443));
    EXPECT_NE(v6, v4);

    EXPECT_EQ(endpoint::parse("0.0.0.0", 0), endpoint::any(address_family::ipv4, 0));
    EXPECT_EQ(endpoint::parse("::", 65535), endpoint::any(address_family::ipv6, 65535));
    EXPECT_EQ(endpoint::any(address_family::ipv6, 65535).to_string(), "[::]:65535");
    EXPECT_EQ(endpoint::parse("2001:DB8::1", 2).address(), "2001:db8::1");
    const endpoint mapped = endpoint::parse("::ffff:192.0.2.1", 9);
    EXPECT_EQ(mapped.family(), address_family::ipv6);
    EXPECT_EQ(endpoint::parse(mapped.address(), 9), mapped) << mapped.to_string();

    // A view that is not NUL-terminated: only its own characters count.
    const std::string longer = "10.1.2.34567";
    EXPECT_EQ(endpoint::parse(std::string_view(longer).substr(0, 8), 1).to_string(), "10.1.2.3:1");

    endpoint e = v4;
    e.set_port(8080);
    EXPECT_EQ(e.to_string(), "127.0.0.1:8080");

    const endpoint none;
    EXPECT_FALSE(none.is_specified());
    EXPECT_EQ(none.family(), address_family::ipv4);
    EXPECT_EQ(none.address(), "");
    EXPECT_FALSE(endpoint(nullptr, 0).is_specified());
    EXPECT_FALSE(endpoint(v6.data(), 4).is_specified()) << "a length too short for its family";
    EXPECT_EQ(endpoint(v6.data(), static_cast<std::size_t>(v6.size())), v6);

    // Equality includes the IPv6 scope id.
    sockaddr_in6 scoped{};
    std::memcpy(&scoped, v6.data(), sizeof scoped);
    scoped.sin6_scope_id = 3;
    const endpoint with_scope(reinterpret_cast<const sockaddr*>(&scoped), sizeof scoped);
    EXPECT_TRUE(with_scope.is_specified());
    EXPECT_NE(with_scope, v6);
    EXPECT_EQ(with_scope, endpoint(reinterpret_cast<const sockaddr*>(&scoped), sizeof scoped));

    using namespace std::string_view_literals;
    const std::string_view bad[] = {
        ""sv,
        " 127.0.0.1"sv,
        "127.0.0.1 "sv,
        "256.0.0.1"sv,
        "1.2.3"sv,
        "1.2.3.4.5"sv,
        "localhost"sv,
        "[::1]"sv,
        "1.2.3.4:80"sv,
        "::1::2"sv,
        "12345::"sv,
        "1:2:3:4:5:6:7:8:9"sv,
        // An embedded NUL: the text is not an address, whatever precedes the NUL.
        "127.0.0.1\0evil"sv,
        "::1\0"sv,
    };
    for (const std::string_view text : bad) {
        std::error_code ec;
        const endpoint got = endpoint::parse(text, 1, ec);
        EXPECT_EQ(ec, std::errc::invalid_argument)
            << "\"" << std::string(text.data(), text.size()) << "\" (" << text.size()
            << " chars) parsed as " << got.to_string();
        EXPECT_FALSE(got.is_specified());
    }
    const std::string huge(300, '1');
    std::error_code ec;
    EXPECT_FALSE(endpoint::parse(huge, 1, ec).is_specified());
    EXPECT_EQ(ec, std::errc::invalid_argument);
    try {
        (void)endpoint::parse("nope", 1);
        ADD_FAILURE() << "the throwing form accepted bad text";
    } catch (const std::system_error& err) {
        EXPECT_EQ(err.code(), std::errc::invalid_argument);
    }
}

// --- callback I/O helpers -----------------------------------------------------------------------

struct tcp_pair {
    iocp::socket client;
    iocp::socket server;
};

// A connected loopback pair made with the callback API. Throws std::system_error on failure.
// Checks the accept's documented peer: the client's own address.
tcp_pair connect_pair(iocp::thread_pool& pool,
                      iocp::address_family family = iocp::address_family::ipv4) {
    std::promise<std::pair<iocp::socket, iocp::endpoint>> accepted;
    std::promise<std::error_code> connected;
    auto accepted_f = accepted.get_future();
    std::future<std::error_code> connected_f = connected.get_future();
    tcp_pair p{iocp::socket(pool), iocp::socket()};
    {
        iocp::acceptor listener(pool, iocp::endpoint::loopback(family, 0));
        listener.accept([&](std::error_code ec, iocp::socket s, const iocp::endpoint& peer) {
            if (ec)
                accepted.set_exception(std::make_exception_ptr(std::system_error(ec, "accept")));
            else
                accepted.set_value({std::move(s), peer});
        });
        p.client.connect(listener.local_endpoint(),
                         [&](std::error_code ec) { connected.set_value(ec); });
        const std::error_code ec = await(connected_f, "the connect");
        if (ec) {
            listener.close();
            try {
                (void)await(accepted_f, "the accept");
            } catch (const std::system_error&) {
            }
            throw std::system_error(ec, "connect");
        }
        auto [server, peer] = await(accepted_f, "the accept");
        p.server = std::move(server);
        EXPECT_EQ(peer, p.client.local_endpoint()) << peer.to_string();
        EXPECT_EQ(p.server.remote_endpoint(), p.client.local_endpoint());
        EXPECT_EQ(p.client.remote_endpoint(), p.server.local_endpoint());
    }
    return p;
}

// Counts the handlers of one test: calls, calls inside a start (or cancel/close) call, calls
// off the pool's workers.
struct handler_audit {
    explicit handler_audit(iocp::thread_pool& p) : pool(&p) {}
    iocp::thread_pool* pool;
    std::atomic<int> calls{0};
    std::atomic<int> inline_calls{0};
    std::atomic<int> off_worker{0};
    void note() {
        if (t_starting)
            ++inline_calls;
        if (!pool->is_worker())
            ++off_worker;
        ++calls;
    }
};

// A one-shot result of a handler, waited for with a deadline.
template <class T>
struct outcome {
    std::promise<T> p;
    std::future<T> f = p.get_future();
    T get(const char* what) { return await(f, what); }
};

using ec_bytes = std::pair<std::error_code, std::size_t>;

// --- callback I/O ----------------------------------------------------------------------------

// Promise: each handler "runs once, on a pool worker, never inside the call that started the
// operation", including operations that complete at once (a receive into 0 bytes, a closed
// socket, a send with room, a receive with data waiting, a cached file read, a datagram), and
// the aborted ones of cancel()/close() called from a thread outside the pool. Started once from
// a thread outside the pool and once from the pool's only worker.
TEST(user_trial3_test, handlers_run_once_on_a_worker_never_inside_their_start_or_cancel_call) {
    iocp::thread_pool pool(1);
    handler_audit audit(pool);
    tcp_pair pair = connect_pair(pool);
    const auto path = std::filesystem::temp_directory_path() /
                      ("iocp_user_trial3_inline_" + std::to_string(std::random_device{}()));
    iocp::file file(pool, path,
                    iocp::file_mode::read_write | iocp::file_mode::create |
                        iocp::file_mode::truncate);
    iocp::datagram_socket udp_server(pool, iocp::endpoint::loopback(iocp::address_family::ipv4, 0));
    iocp::datagram_socket udp_client(pool, iocp::endpoint::loopback(iocp::address_family::ipv4, 0));
    const iocp::endpoint udp_to = udp_server.local_endpoint();

    for (int from_worker = 0; from_worker < 2; ++from_worker) {
        const int before = audit.calls.load();
        iocp::socket never_opened(pool);
        iocp::socket unconnected(pool, iocp::address_family::ipv4);
        char zero[1];
        char buf[64];
        char file_buf[16];
        char udp_buf[16];
        outcome<ec_bytes> sent, received, empty, closed_recv, written, read, dsent, drecv;
        auto first_wave = [&] {
            starting([&] {
                never_opened.recv(iocp::buffer(buf), [&](std::error_code ec, std::size_t n) {
                    audit.note();
                    closed_recv.p.set_value({ec, n});
                });
            });
            starting([&] {
                unconnected.recv(iocp::buffer(zero, 0), [&](std::error_code ec, std::size_t n) {
                    audit.note();
                    empty.p.set_value({ec, n});
                });
            });
            starting([&] {
                pair.client.send(iocp::buffer("abc", 3), [&](std::error_code ec, std::size_t n) {
                    audit.note();
                    sent.p.set_value({ec, n});
                });
            });
            starting([&] {
                file.write_at(0, iocp::buffer("0123456789", 10),
                              [&](std::error_code ec, std::size_t n) {
                                  audit.note();
                                  written.p.set_value({ec, n});
                              });
            });
            starting([&] {
                udp_client.send_to(iocp::buffer("dgram", 5), udp_to,
                                   [&](std::error_code ec, std::size_t n) {
                                       audit.note();
                                       dsent.p.set_value({ec, n});
                                   });
            });
        };
        if (from_worker)
            pool.post(first_wave);
        else
            first_wave();
        EXPECT_EQ(sent.get("the send"), ec_bytes({}, 3));
        EXPECT_EQ(written.get("the write"), ec_bytes({}, 10));
        EXPECT_EQ(dsent.get("the datagram send"), ec_bytes({}, 5));
        const ec_bytes cr = closed_recv.get("the receive on a closed socket");
        EXPECT_EQ(cr.first, iocp::errc::invalid_handle);
        EXPECT_EQ(empty.get("the 0-byte receive"), ec_bytes({}, 0));

        // Data is waiting now (the sends completed): these may complete at once.
        auto second_wave = [&] {
            starting([&] {
                pair.server.recv(iocp::buffer(buf), [&](std::error_code ec, std::size_t n) {
                    audit.note();
                    received.p.set_value({ec, n});
                });
            });
            starting([&] {
                file.read_at(0, iocp::buffer(file_buf), [&](std::error_code ec, std::size_t n) {
                    audit.note();
                    read.p.set_value({ec, n});
                });
            });
            starting([&] {
                udp_server.recv_from(iocp::buffer(udp_buf),
                                     [&](std::error_code ec, std::size_t n, const iocp::endpoint&) {
                                         audit.note();
                                         drecv.p.set_value({ec, n});
                                     });
            });
        };
        if (from_worker)
            pool.post(second_wave);
        else
            second_wave();
        const ec_bytes r = received.get("the receive");
        EXPECT_FALSE(r.first);
        EXPECT_GE(r.second, 1u);
        if (r.second < 3) { // the rest of "abc"
            outcome<ec_bytes> rest;
            pair.server.recv(iocp::buffer(buf + r.second, 3 - r.second),
                             [&](std::error_code ec, std::size_t n) {
                                 audit.note();
                                 rest.p.set_value({ec, n});
                             });
            EXPECT_EQ(rest.get("the rest").second, 3 - r.second);
        }
        EXPECT_EQ(std::string(buf, 3), "abc");
        EXPECT_EQ(read.get("the read"), ec_bytes({}, 10));
        EXPECT_EQ(std::string(file_buf, 10), "0123456789");
        EXPECT_EQ(drecv.get("the datagram receive"), ec_bytes({}, 5));

        // Pending operations aborted by cancel() and close() from outside the pool.
        outcome<ec_bytes> cancelled, closed, udp_cancelled;
        starting([&] {
            pair.client.recv(iocp::buffer(buf), [&](std::error_code ec, std::size_t n) {
                audit.note();
                cancelled.p.set_value({ec, n});
            });
        });
        starting([&] {
            udp_server.recv_from(iocp::buffer(udp_buf), [&](std::error_code ec, std::size_t n) {
                audit.note();
                udp_cancelled.p.set_value({ec, n});
            });
        });
        starting([&] { pair.client.cancel(); });
        starting([&] { udp_server.cancel(); });
        EXPECT_EQ(cancelled.get("the cancelled receive").first, iocp::errc::operation_aborted);
        EXPECT_EQ(udp_cancelled.get("the cancelled datagram receive").first,
                  iocp::errc::operation_aborted);
        starting([&] {
            pair.server.recv(iocp::buffer(buf), [&](std::error_code ec, std::size_t n) {
                audit.note();
                closed.p.set_value({ec, n});
            });
        });
        // The receive is pending: close its socket from this thread.
        iocp::socket server = std::move(pair.server);
        starting([&] { server.close(); });
        EXPECT_EQ(closed.get("the receive closed under").first, iocp::errc::operation_aborted);
        // A new pair for the next round.
        pair = connect_pair(pool);
        EXPECT_EQ(audit.calls.load() - before, r.second < 3 ? 12 : 11);
    }
    EXPECT_EQ(audit.inline_calls.load(), 0) << "a handler ran inside the call that started it";
    EXPECT_EQ(audit.off_worker.load(), 0) << "a handler ran off the pool's workers";
    file.close();
    std::filesystem::remove(path);
}

// Promise: the documented error codes reach the callbacks: a connect nobody listens for is
// errc::connection_refused; the peer's close is errc::eof once its data has been read; a
// reset (SO_LINGER 0) is errc::connection_reset for a pending receive and for a later send;
// cancel() is errc::operation_aborted and the socket stays usable; close() with a receive and
// a send_all pending aborts both once (send_all reporting what it sent before: less than all);
// an operation on the closed socket is errc::invalid_handle, through the handler.
TEST(user_trial3_test, refused_eof_reset_cancel_and_close_reach_callbacks_with_their_codes) {
    iocp::thread_pool pool(2);
    handler_audit audit(pool);

    // Refused: a port that was just listened on, now closed. TRICKY: the port is free for
    // anyone once closed, and the tests run in parallel: a connect that succeeds found another
    // program's listener there (seen once in CI under Wine), so that attempt says nothing about
    // refusals and another port is tried. A connect that wrongly succeeded would do so on every
    // attempt, and fail the expectation below.
    {
        iocp::socket s(pool);
        std::error_code refused_ec;
        for (int attempt = 0; attempt < 3; ++attempt) {
            std::uint16_t free_port = 0;
            {
                iocp::acceptor probe(pool, iocp::endpoint::loopback(iocp::address_family::ipv4, 0));
                free_port = probe.local_endpoint().port();
            }
            outcome<std::error_code> refused;
            starting([&] {
                s.connect(iocp::endpoint::loopback(iocp::address_family::ipv4, free_port),
                          [&](std::error_code ec) {
                              audit.note();
                              refused.p.set_value(ec);
                          });
            });
            refused_ec = refused.get("the refused connect");
            if (refused_ec)
                break;
            s.close(); // connected to whoever listens there now: try another port
            s = iocp::socket(pool);
        }
        EXPECT_EQ(refused_ec, iocp::errc::connection_refused);
        // "After a failed connect close the socket before connecting again": it then works.
        s.close();
        iocp::acceptor live(pool, iocp::endpoint::loopback(iocp::address_family::ipv4, 0));
        outcome<std::error_code> accepted;
        live.accept([&](std::error_code ec, iocp::socket) {
            audit.note();
            accepted.p.set_value(ec);
        });
        outcome<std::error_code> connected;
        s.connect(live.local_endpoint(), [&](std::error_code ec) {
            audit.note();
            connected.p.set_value(ec);
        });
        EXPECT_FALSE(connected.get("the connect after the refused one"));
        EXPECT_FALSE(accepted.get("its accept"));
    }

    // Eof after the data (over IPv6).
    {
        tcp_pair p = connect_pair(pool, iocp::address_family::ipv6);
        outcome<ec_bytes> sent;
        p.server.send_all(iocp::buffer("hello", 5), [&](std::error_code ec, std::size_t n) {
            audit.note();
            sent.p.set_value({ec, n});
        });
        EXPECT_EQ(sent.get("the send_all"), ec_bytes({}, 5));
        p.server.shutdown(iocp::shutdown_type::send);
        std::string got;
        std::error_code last;
        char buf[3];
        for (int i = 0; i < 10 && !last; ++i) {
            outcome<ec_bytes> r;
            p.client.recv(iocp::buffer(buf), [&](std::error_code ec, std::size_t n) {
                audit.note();
                r.p.set_value({ec, n});
            });
            const ec_bytes res = r.get("a receive");
            last = res.first;
            if (!last)
                got.append(buf, res.second);
        }
        EXPECT_EQ(got, "hello");
        EXPECT_EQ(last, iocp::errc::eof);
    }

    // Reset: a pending receive, then a send.
    {
        tcp_pair p = connect_pair(pool);
        char buf[16];
        outcome<ec_bytes> pending;
        p.client.recv(iocp::buffer(buf), [&](std::error_code ec, std::size_t n) {
            audit.note();
            pending.p.set_value({ec, n});
        });
        p.server.set_linger(true, 0);
        p.server.close();
        EXPECT_EQ(pending.get("the receive of a reset connection").first,
                  iocp::errc::connection_reset);
        outcome<ec_bytes> after;
        p.client.send(iocp::buffer("x", 1), [&](std::error_code ec, std::size_t n) {
            audit.note();
            after.p.set_value({ec, n});
        });
        EXPECT_EQ(after.get("a send after the reset").first, iocp::errc::connection_reset);
    }

    // Cancel, then the socket goes on.
    {
        tcp_pair p = connect_pair(pool);
        char buf[16];
        outcome<ec_bytes> cancelled;
        p.client.recv(iocp::buffer(buf), [&](std::error_code ec, std::size_t n) {
            audit.note();
            cancelled.p.set_value({ec, n});
        });
        p.client.cancel();
        EXPECT_EQ(cancelled.get("the cancelled receive").first, iocp::errc::operation_aborted);
        outcome<ec_bytes> sent;
        p.server.send(iocp::buffer("y", 1), [&](std::error_code ec, std::size_t n) {
            audit.note();
            sent.p.set_value({ec, n});
        });
        EXPECT_EQ(sent.get("the send"), ec_bytes({}, 1));
        outcome<ec_bytes> again;
        p.client.recv(iocp::buffer(buf), [&](std::error_code ec, std::size_t n) {
            audit.note();
            again.p.set_value({ec, n});
        });
        EXPECT_EQ(again.get("the receive after the cancel"), ec_bytes({}, 1));
        EXPECT_EQ(buf[0], 'y');
    }

    // Close with a receive and a stuck send_all pending (the peer never reads).
    {
        tcp_pair p = connect_pair(pool);
        p.client.set_send_buffer_size(4096);
        p.server.set_receive_buffer_size(4096);
        const std::size_t total = std::size_t{16} << 20;
        std::vector<char> big(total, 'z');
        char buf[16];
        outcome<ec_bytes> recv_aborted;
        outcome<ec_bytes> send_aborted;
        p.client.recv(iocp::buffer(buf), [&](std::error_code ec, std::size_t n) {
            audit.note();
            recv_aborted.p.set_value({ec, n});
        });
        p.client.send_all(iocp::buffer(big), [&](std::error_code ec, std::size_t n) {
            audit.note();
            send_aborted.p.set_value({ec, n});
        });
        std::this_thread::sleep_for(1ms); // let some of it go out
        p.client.close();
        EXPECT_EQ(recv_aborted.get("the receive closed under").first,
                  iocp::errc::operation_aborted);
        const ec_bytes s = send_aborted.get("the send_all closed under");
        EXPECT_EQ(s.first, iocp::errc::operation_aborted);
        EXPECT_LT(s.second, total);

        // The closed socket: errc::invalid_handle, through the handler.
        outcome<ec_bytes> on_closed;
        p.client.recv(iocp::buffer(buf), [&](std::error_code ec, std::size_t n) {
            audit.note();
            on_closed.p.set_value({ec, n});
        });
        EXPECT_EQ(on_closed.get("a receive on the closed socket").first,
                  iocp::errc::invalid_handle);
    }
    EXPECT_EQ(audit.inline_calls.load(), 0);
    EXPECT_EQ(audit.off_worker.load(), 0);
}

// Promise: send_all "continues after partial sends" and reports the total once; up to
// max_buffers buffers, gathered in order. Eight buffers (two empty, one larger than the 1 MiB
// that one send offers) to a reader that takes random tiny amounts at random moments through
// a socket with a tiny send buffer: every byte arrives, in order.
TEST(user_trial3_test, send_all_of_eight_buffers_reaches_a_slow_reader_whole_and_in_order) {
    iocp::thread_pool pool(2);
    tcp_pair p = connect_pair(pool);
    p.client.set_send_buffer_size(16384);
    std::mt19937 rng(99);
    // The third buffer is larger than the 1 MiB one send offers: the bound falls inside it.
    const std::size_t sizes[iocp::max_buffers] = {
        1000, 0, (std::size_t{1} << 20) + 4321, 1, 0, 77777, 4096, 9999};
    std::vector<std::vector<unsigned char>> parts;
    std::vector<unsigned char> expected;
    std::array<iocp::const_buffer, iocp::max_buffers> bufs;
    for (const std::size_t size : sizes) {
        std::vector<unsigned char> part(size);
        for (auto& b : part)
            b = static_cast<unsigned char>(rng());
        expected.insert(expected.end(), part.begin(), part.end());
        parts.push_back(std::move(part));
    }
    for (std::size_t i = 0; i < iocp::max_buffers; ++i)
        bufs[i] = iocp::buffer(parts[i].data(), parts[i].size());

    struct slow_reader {
        slow_reader(iocp::socket* sock, std::size_t bytes) : s(sock), want(bytes) {}
        iocp::socket* s;
        std::size_t want;
        std::mt19937 rng{5};
        std::vector<unsigned char> got;
        std::vector<unsigned char> buf = std::vector<unsigned char>(65536);
        std::promise<std::error_code> done;
        std::atomic<int> calls{0};
        void next() {
            const std::size_t n = 1 + rng() % 20000;
            s->recv(iocp::buffer(buf.data(), n), [this](std::error_code ec, std::size_t k) {
                ++calls;
                if (ec) {
                    done.set_value(ec);
                    return;
                }
                got.insert(got.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(k));
                if (got.size() >= want) {
                    done.set_value({});
                    return;
                }
                if (rng() % 8 == 0)
                    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
                next();
            });
        }
    } reader(&p.server, expected.size());
    std::future<std::error_code> read_done = reader.done.get_future();
    outcome<ec_bytes> sent;
    std::atomic<int> send_calls{0};
    p.client.send_all(bufs, [&](std::error_code ec, std::size_t n) {
        ++send_calls;
        sent.p.set_value({ec, n});
    });
    reader.next();
    EXPECT_EQ(sent.get("the send_all"), ec_bytes({}, expected.size()));
    EXPECT_FALSE(await(read_done, "the reader"));
    EXPECT_EQ(send_calls.load(), 1);
    ASSERT_EQ(reader.got.size(), expected.size());
    EXPECT_TRUE(reader.got == expected) << "bytes lost, repeated or reordered";

    // Nothing to send at all (three empty buffers): the handler still runs once, with 0.
    const std::array<iocp::const_buffer, 3> empties{};
    outcome<ec_bytes> nothing;
    p.client.send_all(empties, [&](std::error_code ec, std::size_t n) {
        ++send_calls;
        nothing.p.set_value({ec, n});
    });
    EXPECT_EQ(nothing.get("the empty send_all"), ec_bytes({}, 0));
    EXPECT_EQ(send_calls.load(), 2);
}

// Promise (acceptor::open): "An IPv6 acceptor accepts IPv6 only." One listening on the IPv6
// wildcard address takes an IPv6 client, and an IPv4 client at the same port is refused
// (nobody listens for IPv4 there), whatever the system's default for dual-stack sockets
// (Linux: net.ipv6.bindv6only, 0 by default; Windows: IPv6-only by default).
TEST(user_trial3_test, an_ipv6_acceptor_accepts_ipv6_only) {
    iocp::thread_pool pool(2);
    handler_audit audit(pool);
    using iocp::address_family;
    iocp::acceptor listener(pool, iocp::endpoint::any(address_family::ipv6, 0));
    const std::uint16_t port = listener.local_endpoint().port();
    std::mutex m;
    std::vector<std::pair<std::error_code, iocp::endpoint>> accepted;
    std::function<void()> accept_next = [&] {
        listener.accept([&](std::error_code ec, iocp::socket, const iocp::endpoint& peer) {
            audit.note();
            {
                std::lock_guard lock(m);
                accepted.emplace_back(ec, peer);
            }
            if (!ec)
                accept_next();
        });
    };
    accept_next();

    iocp::socket v6(pool);
    outcome<std::error_code> v6_connected;
    v6.connect(iocp::endpoint::loopback(address_family::ipv6, port), [&](std::error_code ec) {
        audit.note();
        v6_connected.p.set_value(ec);
    });
    EXPECT_FALSE(v6_connected.get("the IPv6 client"));
    wait_until(
        [&] {
            std::lock_guard lock(m);
            return !accepted.empty();
        },
        "the IPv6 client's accept");

    iocp::socket v4(pool);
    outcome<std::error_code> v4_connected;
    v4.connect(iocp::endpoint::loopback(address_family::ipv4, port), [&](std::error_code ec) {
        audit.note();
        v4_connected.p.set_value(ec);
    });
    const std::error_code v4_result = v4_connected.get("the IPv4 client");
    EXPECT_EQ(v4_result, iocp::errc::connection_refused)
        << "an IPv4 client reached the IPv6 acceptor: " << v4_result.message();
    if (!v4_result)
        wait_until(
            [&] {
                std::lock_guard lock(m);
                return accepted.size() >= 2;
            },
            "the IPv4 client's accept");
    {
        std::lock_guard lock(m);
        ASSERT_GE(accepted.size(), 1u);
        EXPECT_FALSE(accepted[0].first);
        EXPECT_EQ(accepted[0].second, v6.local_endpoint());
        for (std::size_t i = 1; i < accepted.size(); ++i)
            ADD_FAILURE() << "accepted " << accepted[i].second.to_string();
    }
    listener.close(); // the pending accept: aborted
    wait_until(
        [&] {
            std::lock_guard lock(m);
            return accepted.back().first == iocp::errc::operation_aborted;
        },
        "the last accept's abort");
    EXPECT_EQ(audit.inline_calls.load(), 0);
    EXPECT_EQ(audit.off_worker.load(), 0);
}

// Promise (README, "Which backend does the I/O": the backends "keep the order of sends and of
// receives"; socket: receives may be pending at once, only pending sends may interleave):
// eight 1-byte receives pending on one socket, started one after the other, take the bytes of
// one 8-byte send in the order they were started, each exactly once.
// This test found that on io_uring (Linux 6.18) the receives took the bytes in reverse order
// ("hgfedcba"): the kernel completes receives pending on one socket last-started first. The
// backend now keeps one receive per TCP socket in the ring and the others in order behind it
// (uring_backend.hpp, start_queued_recv_locked); Win32 (under Wine) and epoll kept the order.
TEST(user_trial3_test, pending_receives_take_the_bytes_in_the_order_they_were_started) {
    iocp::thread_pool pool(2);
    handler_audit audit(pool);
    tcp_pair p = connect_pair(pool);
    const int iterations = rounds(100, 20);
    int out_of_order = 0;
    for (int it = 0; it < iterations; ++it) {
        std::array<char, 8> got{};
        std::array<std::atomic<int>, 8> calls{};
        std::atomic<int> done{0};
        std::atomic<int> failed{0};
        for (std::size_t i = 0; i < got.size(); ++i)
            p.client.recv(iocp::buffer(&got[i], 1), [&, i](std::error_code ec, std::size_t n) {
                audit.note();
                ++calls[i];
                if (ec || n != 1)
                    ++failed;
                ++done;
            });
        char out[8];
        for (int i = 0; i < 8; ++i)
            out[i] = static_cast<char>('a' + (it + i) % 26);
        outcome<ec_bytes> sent;
        p.server.send(iocp::buffer(out), [&](std::error_code ec, std::size_t n) {
            audit.note();
            sent.p.set_value({ec, n});
        });
        EXPECT_EQ(sent.get("the send"), ec_bytes({}, 8));
        wait_until([&] { return done.load() == 8; }, "the eight receives");
        EXPECT_EQ(failed.load(), 0);
        for (const auto& c : calls)
            EXPECT_EQ(c.load(), 1);
        std::array<char, 8> sorted_got = got;
        std::array<char, 8> sorted_out{};
        std::copy(std::begin(out), std::end(out), sorted_out.begin());
        std::sort(sorted_got.begin(), sorted_got.end());
        std::sort(sorted_out.begin(), sorted_out.end());
        EXPECT_EQ(sorted_got, sorted_out) << "bytes lost or repeated, iteration " << it;
        if (!std::equal(got.begin(), got.end(), std::begin(out))) {
            if (out_of_order++ == 0)
                ADD_FAILURE() << "sent \"" << std::string(out, 8)
                              << "\", the receives in the order "
                              << "started got \"" << std::string(got.data(), 8) << "\"";
        }
    }
    EXPECT_EQ(out_of_order, 0) << "receives took the bytes out of the order they were started in";
    EXPECT_EQ(audit.inline_calls.load(), 0);
    EXPECT_EQ(audit.off_worker.load(), 0);
}

// Promise: more than max_buffers buffers, or none, are std::errc::invalid_argument "before
// anything starts", a datagram larger than max_datagram_size is std::errc::message_size, an
// unspecified destination is invalid_argument, an object without a pool is invalid_argument,
// and after the pool has joined a start is errc::closed; each time the handler-based call
// throws std::system_error and "the handler is then destroyed without running".
TEST(user_trial3_test, refused_starts_throw_and_destroy_the_handler_unrun) {
    iocp::thread_pool pool(2);
    std::atomic<int> unrun{0};
    std::atomic<int> ran{0};
    auto expect_refused = [&](std::errc code, auto&& start, const char* what) {
        const int before = unrun.load();
        try {
            start();
            ADD_FAILURE() << what << ": accepted";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code(), code) << what;
        }
        EXPECT_EQ(unrun.load(), before + 1) << what << ": the handler was not destroyed once";
    };
    auto handler = [&] {
        return [&, t = unrun_tracker(unrun)](std::error_code, std::size_t) {
            t.ran();
            ++ran;
        };
    };
    tcp_pair p = connect_pair(pool);
    iocp::datagram_socket udp(pool, iocp::endpoint::loopback(iocp::address_family::ipv4, 0));
    const iocp::endpoint to = udp.local_endpoint();
    char bytes[16];
    std::array<iocp::mutable_buffer, iocp::max_buffers + 1> nine_in;
    std::array<iocp::const_buffer, iocp::max_buffers + 1> nine_out;
    for (std::size_t i = 0; i < nine_in.size(); ++i) {
        nine_in[i] = iocp::buffer(bytes + i, 1);
        nine_out[i] = iocp::buffer(static_cast<const char*>(bytes) + i, 1);
    }
    const std::span<const iocp::mutable_buffer> no_in;
    const std::span<const iocp::const_buffer> no_out;
    using std::errc;
    expect_refused(
        errc::invalid_argument, [&] { p.client.recv(nine_in, handler()); }, "recv 9");
    expect_refused(
        errc::invalid_argument, [&] { p.client.recv(no_in, handler()); }, "recv 0");
    expect_refused(
        errc::invalid_argument, [&] { p.client.send(nine_out, handler()); }, "send 9");
    expect_refused(
        errc::invalid_argument, [&] { p.client.send(no_out, handler()); }, "send 0");
    expect_refused(
        errc::invalid_argument, [&] { p.client.send_all(nine_out, handler()); }, "send_all 9");
    expect_refused(
        errc::invalid_argument, [&] { p.client.send_all(no_out, handler()); }, "send_all 0");
    expect_refused(
        errc::invalid_argument, [&] { udp.recv_from(nine_in, handler()); }, "recv_from 9");
    expect_refused(
        errc::invalid_argument, [&] { udp.send_to(nine_out, to, handler()); }, "send_to 9");
    std::vector<char> too_big(iocp::max_datagram_size(iocp::address_family::ipv4) + 1);
    expect_refused(
        errc::message_size, [&] { udp.send_to(iocp::buffer(too_big), to, handler()); },
        "send_to of a datagram too large");
    expect_refused(
        errc::invalid_argument,
        [&] { udp.send_to(iocp::buffer(bytes), iocp::endpoint{}, handler()); },
        "send_to an unspecified endpoint");
    iocp::socket no_pool;
    expect_refused(
        errc::invalid_argument, [&] { no_pool.recv(iocp::buffer(bytes), handler()); },
        "recv without a pool");
    iocp::file no_pool_file;
    expect_refused(
        errc::invalid_argument, [&] { no_pool_file.read_at(0, iocp::buffer(bytes), handler()); },
        "read_at without a pool");
    iocp::acceptor no_pool_acceptor;
    {
        const int before = unrun.load();
        try {
            no_pool_acceptor.accept([&, t = unrun_tracker(unrun)](std::error_code, iocp::socket) {
                t.ran();
                ++ran;
            });
            ADD_FAILURE() << "accept without a pool: accepted";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code(), errc::invalid_argument);
        }
        EXPECT_EQ(unrun.load(), before + 1);
    }

    pool.join();
    auto expect_closed = [&](auto&& start, const char* what) {
        const int before = unrun.load();
        try {
            start();
            ADD_FAILURE() << what << ": accepted after join";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code(), iocp::errc::closed) << what;
        }
        EXPECT_EQ(unrun.load(), before + 1) << what << ": the handler was not destroyed once";
    };
    expect_closed([&] { p.client.recv(iocp::buffer(bytes), handler()); }, "recv after join");
    expect_closed([&] { p.client.send(iocp::buffer("a", 1), handler()); }, "send after join");
    expect_closed([&] { udp.recv_from(iocp::buffer(bytes), handler()); }, "recv_from after join");
    EXPECT_EQ(ran.load(), 0);
}

// Promise (files): a read at or past the end is errc::eof, one that straddles it returns fewer
// bytes, a read of 0 bytes is never eof (0 bytes, no error) wherever it is; a write past the
// end extends the file (the gap reads as zeros); a range above INT64_MAX is refused with
// std::errc::invalid_argument, while the largest valid offsets are read as past the end.
TEST(user_trial3_test, file_reads_past_the_end_and_writes_that_extend_it) {
    iocp::thread_pool pool(2);
    handler_audit audit(pool);
    const auto path = std::filesystem::temp_directory_path() /
                      ("iocp_user_trial3_file_" + std::to_string(std::random_device{}()));
    {
        iocp::file f(pool, path,
                     iocp::file_mode::read_write | iocp::file_mode::create |
                         iocp::file_mode::truncate);
        auto io = [&](bool write, std::uint64_t offset, void* data, std::size_t n) {
            outcome<ec_bytes> r;
            starting([&] {
                auto h = [&](std::error_code ec, std::size_t k) {
                    audit.note();
                    r.p.set_value({ec, k});
                };
                if (write)
                    f.write_at(offset, iocp::buffer(static_cast<const void*>(data), n), h);
                else
                    f.read_at(offset, iocp::buffer(data, n), h);
            });
            return r.get(write ? "a write" : "a read");
        };
        std::vector<char> head(100);
        for (std::size_t i = 0; i < head.size(); ++i)
            head[i] = static_cast<char>('a' + i % 26);
        EXPECT_EQ(io(true, 0, head.data(), head.size()), ec_bytes({}, 100));
        char tail[10] = {'0', '1', '2', '3', '4', '5', '6', '7', '8', '9'};
        EXPECT_EQ(io(true, 5000, tail, sizeof tail), ec_bytes({}, 10));
        EXPECT_EQ(f.size(), 5010u);

        std::vector<char> buf(8192, 'x');
        EXPECT_EQ(io(false, 0, buf.data(), 200), ec_bytes({}, 200));
        EXPECT_TRUE(std::equal(head.begin(), head.end(), buf.begin()));
        EXPECT_TRUE(std::all_of(buf.begin() + 100, buf.begin() + 200, [](char c) {
            return c == 0;
        })) << "the gap reads as zeros";
        EXPECT_EQ(io(false, 4990, buf.data(), 4096), ec_bytes({}, 20)) << "a read that straddles";
        EXPECT_EQ(std::string(buf.data() + 10, 10), "0123456789");
        EXPECT_EQ(io(false, 5010, buf.data(), 16).first, iocp::errc::eof);
        EXPECT_EQ(io(false, 1ull << 40, buf.data(), 16).first, iocp::errc::eof);
        EXPECT_EQ(io(false, 5010, buf.data(), 0), ec_bytes({}, 0)) << "0 bytes at the end";
        EXPECT_EQ(io(false, 1ull << 40, buf.data(), 0), ec_bytes({}, 0)) << "0 bytes past it";
        EXPECT_EQ(io(false, 0, buf.data(), 0), ec_bytes({}, 0)) << "0 bytes at 0";

        const std::uint64_t max_offset = 0x7FFFFFFFFFFFFFFFull;
        EXPECT_EQ(io(false, max_offset - 16, buf.data(), 16).first, iocp::errc::eof)
            << "the last valid range";
        EXPECT_EQ(io(false, max_offset, buf.data(), 0), ec_bytes({}, 0))
            << "0 bytes at INT64_MAX is a valid range";
        const std::array<std::pair<std::uint64_t, std::size_t>, 4> out_of_range = {{
            {max_offset, 1},       // reaches INT64_MAX + 1
            {max_offset - 15, 16}, // likewise
            {~0ull, 1},            // Windows' "write at the end"
            {~0ull - 1, 0},        // Windows' "at the current position", even for 0 bytes
        }};
        for (const auto& [offset, n] : out_of_range) {
            try {
                f.read_at(offset, iocp::buffer(buf.data(), n),
                          [&](std::error_code, std::size_t) { audit.note(); });
                ADD_FAILURE() << "a read at " << offset << " of " << n << " bytes was started";
            } catch (const std::system_error& e) {
                EXPECT_EQ(e.code(), std::errc::invalid_argument);
            }
        }

        // Concurrent writes that extend the file, each to its own range.
        const int writers = rounds(32, 8);
        std::vector<std::array<char, 64>> blocks(static_cast<std::size_t>(writers));
        std::atomic<int> done{0};
        std::atomic<int> failed{0};
        for (int i = 0; i < writers; ++i) {
            auto& b = blocks[static_cast<std::size_t>(i)];
            b.fill(static_cast<char>('A' + i % 26));
            f.write_at(10000 + static_cast<std::uint64_t>(i) * 1000, iocp::buffer(b),
                       [&](std::error_code ec, std::size_t n) {
                           audit.note();
                           if (ec || n != 64)
                               ++failed;
                           ++done;
                       });
        }
        wait_until([&] { return done.load() == writers; }, "the extending writes");
        EXPECT_EQ(failed.load(), 0);
        EXPECT_EQ(f.size(), 10000 + static_cast<std::uint64_t>(writers - 1) * 1000 + 64);
        EXPECT_EQ(
            io(false, 10000 + static_cast<std::uint64_t>(writers - 1) * 1000, buf.data(), 100),
            ec_bytes({}, 64));
        EXPECT_EQ(buf[0], static_cast<char>('A' + (writers - 1) % 26));
    }
    std::filesystem::remove(path);
    EXPECT_EQ(audit.inline_calls.load(), 0);
    EXPECT_EQ(audit.off_worker.load(), 0);
}

// Promise (datagrams): one send is one datagram and one receive takes exactly one (a 0-byte
// datagram is a datagram, not eof); recv_from reports the sender; a datagram longer than the
// buffer is std::errc::message_size with bytes = the buffer's size, its first bytes, and the
// sender. Two clients, one datagram in flight at a time (UDP may drop what overflows).
TEST(user_trial3_test, datagrams_through_callbacks_keep_their_boundaries_and_senders) {
    iocp::thread_pool pool(2);
    handler_audit audit(pool);
    using iocp::address_family;
    for (const address_family family : {address_family::ipv4, address_family::ipv6}) {
        iocp::datagram_socket server(pool, iocp::endpoint::loopback(family, 0));
        iocp::datagram_socket a(pool, iocp::endpoint::loopback(family, 0));
        iocp::datagram_socket b(pool, iocp::endpoint::loopback(family, 0));
        const iocp::endpoint to = server.local_endpoint();
        std::mt19937 rng(3);
        const int n = rounds(200, 30);
        for (int i = 0; i < n; ++i) {
            iocp::datagram_socket& from = i % 2 == 0 ? a : b;
            const std::size_t size = i % 10 == 0 ? 0 : rng() % 100; // some longer than 64
            std::vector<unsigned char> out(size);
            for (std::size_t k = 0; k < size; ++k)
                out[k] = static_cast<unsigned char>(i + k);
            unsigned char in[64];
            struct got {
                std::error_code ec;
                std::size_t n;
                iocp::endpoint sender;
            };
            outcome<got> received;
            outcome<ec_bytes> sent;
            starting([&] {
                server.recv_from(iocp::buffer(in), [&](std::error_code ec, std::size_t k,
                                                       const iocp::endpoint& sender) {
                    audit.note();
                    received.p.set_value({ec, k, sender});
                });
            });
            starting([&] {
                from.send_to(iocp::buffer(out), to, [&](std::error_code ec, std::size_t k) {
                    audit.note();
                    sent.p.set_value({ec, k});
                });
            });
            EXPECT_EQ(sent.get("a send_to"), ec_bytes({}, size));
            const got g = received.get("a recv_from");
            EXPECT_EQ(g.sender, from.local_endpoint()) << "datagram " << i;
            if (size > sizeof in) {
                EXPECT_EQ(g.ec, std::errc::message_size) << "datagram " << i;
                EXPECT_EQ(g.n, sizeof in) << "datagram " << i;
            } else {
                EXPECT_FALSE(g.ec) << "datagram " << i << ": " << g.ec.message();
                EXPECT_EQ(g.n, size) << "datagram " << i;
            }
            const std::size_t kept = (std::min)(size, sizeof in);
            EXPECT_TRUE(std::equal(in, in + kept, out.begin())) << "datagram " << i;
        }
    }
    EXPECT_EQ(audit.inline_calls.load(), 0);
    EXPECT_EQ(audit.off_worker.load(), 0);
}

// Promise (shutdown with callback I/O pending): join() and stop() cancel pending I/O and wait
// for it: each pending receive, accept and datagram receive completes exactly once, on a
// worker, with errc::operation_aborted; an operation a handler starts while the pool shuts
// down completes with errc::closed; once the pool has joined a start throws errc::closed
// and destroys the handler unrun; nothing leaks (ASan).
TEST(user_trial3_test, pool_shutdown_completes_pending_callback_io_once_with_its_code) {
    const int iterations = rounds(12, 4);
    for (int it = 0; it < iterations; ++it) {
        const bool use_stop = it % 2 == 1;
        auto pool = std::make_unique<iocp::thread_pool>(2);
        handler_audit audit(*pool);
        std::mutex m;
        std::map<std::string, int> first_codes; // "aborted", "closed", other messages
        std::map<std::string, int> second_codes;
        auto name = [](const std::error_code& ec) -> std::string {
            if (ec == iocp::errc::operation_aborted)
                return "aborted";
            if (ec == iocp::errc::closed)
                return "closed";
            return ec ? ec.message() : "success";
        };
        auto note_second = [&](const std::error_code& ec) {
            audit.note();
            std::lock_guard lock(m);
            ++second_codes[name(ec)];
        };
        std::atomic<int> restart_refused{0};
        auto note_first = [&](const std::error_code& ec, auto&& restart) {
            audit.note();
            {
                std::lock_guard lock(m);
                ++first_codes[name(ec)];
            }
            // A handler that tries again after an abort, as a careless server would.
            try {
                restart();
            } catch (const std::system_error&) {
                ++restart_refused;
            }
        };
        std::vector<tcp_pair> pairs;
        for (int i = 0; i < 2; ++i)
            pairs.push_back(connect_pair(*pool));
        iocp::acceptor listener(*pool, iocp::endpoint::loopback(iocp::address_family::ipv4, 0));
        iocp::datagram_socket udp(*pool, iocp::endpoint::loopback(iocp::address_family::ipv4, 0));
        std::vector<std::array<char, 32>> bufs(16);
        int started = 0;
        for (auto& pr : pairs) {
            for (iocp::socket* s : {&pr.client, &pr.server}) {
                char* b = bufs[static_cast<std::size_t>(started)].data();
                ++started;
                s->recv(iocp::buffer(b, 32), [&, s, b](std::error_code ec, std::size_t) {
                    note_first(ec, [&, s, b] {
                        s->recv(iocp::buffer(b, 32),
                                [&](std::error_code ec2, std::size_t) { note_second(ec2); });
                    });
                });
            }
        }
        for (int i = 0; i < 2; ++i, ++started)
            listener.accept([&](std::error_code ec, iocp::socket) {
                note_first(ec, [&] {
                    listener.accept([&](std::error_code ec2, iocp::socket) { note_second(ec2); });
                });
            });
        for (int i = 0; i < 2; ++i, ++started) {
            char* b = bufs[static_cast<std::size_t>(started)].data();
            udp.recv_from(iocp::buffer(b, 32), [&, b](std::error_code ec, std::size_t) {
                note_first(ec, [&, b] {
                    udp.recv_from(iocp::buffer(b, 32),
                                  [&](std::error_code ec2, std::size_t) { note_second(ec2); });
                });
            });
        }
        std::this_thread::sleep_for(std::chrono::microseconds(it * 137 % 2000));
        if (use_stop)
            (void)pool->stop();
        else
            pool->join();
        // Every operation has completed once the shutdown call returns.
        {
            std::lock_guard lock(m);
            EXPECT_EQ(first_codes["aborted"], started) << "iteration " << it;
            EXPECT_EQ(first_codes.size(), 1u) << "iteration " << it;
            const int restarted = started - restart_refused.load();
            EXPECT_EQ(second_codes["closed"], restarted) << "iteration " << it;
            EXPECT_EQ(second_codes.size(), restarted > 0 ? 1u : 0u) << "iteration " << it;
        }
        EXPECT_EQ(restart_refused.load(), 0)
            << "a handler run during shutdown could not even start an operation";
        EXPECT_EQ(audit.inline_calls.load(), 0);
        EXPECT_EQ(audit.off_worker.load(), 0);

        // After the pool has joined: a start throws errc::closed, the handler destroyed unrun.
        std::atomic<int> unrun{0};
        char b[4];
        try {
            pairs[0].client.recv(iocp::buffer(b), [t = unrun_tracker(unrun)](
                                                      std::error_code, std::size_t) { t.ran(); });
            ADD_FAILURE() << "a receive started after the pool joined";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code(), iocp::errc::closed);
        }
        EXPECT_EQ(unrun.load(), 1);
        // The I/O objects go first, then the pool.
        pairs.clear();
        listener.close();
        udp.close();
    }
}

#endif // IOCP_HAS_IO

} // namespace
