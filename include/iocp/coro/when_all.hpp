#pragma once
/// @file
/// `iocp::when_all`: awaits several tasks that run concurrently.
///
/// @code
/// auto [a, b] = co_await iocp::when_all(fetch(1), fetch(2)); // two task<int>
/// std::vector<iocp::task<>> jobs;
/// for (int i = 0; i < 8; ++i)
///     jobs.push_back(job(i));                                // job(int) returns task<>
/// co_await iocp::when_all(std::move(jobs));
/// @endcode
///
/// The tasks are started one after the other on the awaiting thread, each running until its
/// first suspension; the awaiter resumes once all have ended, on the thread that ended the last
/// one -- or, if every task has ended before the awaiting thread has finished starting them (a
/// task that hopped to a worker may end there first), at once on the awaiting thread.
/// Results come back in argument order (`void` ones as `std::monostate`). If tasks throw, every
/// task still runs to its end, then the exception of the first one (in argument order) is
/// rethrown and the other results are discarded.

#include <array>
#include <atomic>
#include <coroutine>
#include <cstddef>
#include <exception>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "../detail/pool/coro_resume.hpp"
#include "sync_wait.hpp"
#include "task.hpp"

namespace iocp {

namespace detail::coro {

// The tasks still running, plus one held by the awaiter while it starts them.
struct when_all_counter {
    std::atomic<std::size_t> left;
    std::coroutine_handle<> awaiter;
};

// Starts one task and, when it ends, counts it; the last one resumes the awaiter by symmetric
// transfer. The frame frees itself at its end.
struct when_all_driver {
    struct promise_type {
        when_all_counter* counter;
        template <class Task>
        explicit promise_type(Task&, when_all_counter& c) noexcept : counter(&c) {}
        when_all_driver get_return_object() noexcept {
            return when_all_driver(std::coroutine_handle<promise_type>::from_promise(*this));
        }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        struct final_awaiter {
            bool await_ready() const noexcept { return false; }
            std::coroutine_handle<>
            await_suspend(std::coroutine_handle<promise_type> h) const noexcept {
                when_all_counter* c = h.promise().counter;
                const std::coroutine_handle<> self = h;
                h.destroy(); // suspended at its end: nothing of it runs again
                if (c->left.fetch_sub(1, std::memory_order_acq_rel) == 1)
                    return detail::transfer(self, c->awaiter); // compares the address only
                return std::noop_coroutine();
            }
            void await_resume() const noexcept {}
        };
        final_awaiter final_suspend() const noexcept { return {}; }
        void return_void() const noexcept {}
        void unhandled_exception() const noexcept { std::terminate(); } // the body cannot throw
    };

    // Owns the frame until it is started (then the frame frees itself at its end): drivers
    // made before a failed allocation are freed unstarted.
    explicit when_all_driver(std::coroutine_handle<promise_type> h) noexcept : handle(h) {}
    when_all_driver(when_all_driver&& o) noexcept : handle(std::exchange(o.handle, nullptr)) {}
    when_all_driver(const when_all_driver&) = delete;
    when_all_driver& operator=(const when_all_driver&) = delete;
    when_all_driver& operator=(when_all_driver&&) = delete;
    ~when_all_driver() {
        if (handle)
            handle.destroy();
    }

    // Runs the task to its first suspension (or its end); the frame is its own from here.
    void start() noexcept { detail::resume_loop(std::exchange(handle, nullptr)); }

    std::coroutine_handle<promise_type> handle;
};

template <class T>
when_all_driver drive_when_all(task<T>& t, when_all_counter&) {
    co_await start_only<T>{t.handle()};
}

// Starts every driver; resumes when all tasks have ended.
struct when_all_awaiter {
    when_all_driver* drivers;
    std::size_t count;
    when_all_counter* counter;
    bool await_ready() const noexcept { return count == 0; }
    bool await_suspend(std::coroutine_handle<> h) const noexcept {
        counter->awaiter = h;
        counter->left.store(count + 1, std::memory_order_relaxed);
        for (std::size_t i = 0; i < count; ++i)
            drivers[i].start();
        // Our own count: if it was the last, every task has ended already: resume now.
        return counter->left.fetch_sub(1, std::memory_order_acq_rel) != 1;
    }
    void await_resume() const noexcept {}
};

template <class T>
using result_or_monostate = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

template <class T>
result_or_monostate<T> take_result(task<T>& t) {
    if constexpr (std::is_void_v<T>) {
        t.handle().promise().take();
        return {};
    } else {
        return t.handle().promise().take();
    }
}

} // namespace detail::coro

/// Runs `tasks` concurrently and returns their results as a tuple, in argument order (`void`
/// tasks give `std::monostate`). Rethrows the first exception (in argument order) after all
/// have ended. With no tasks, completes at once with an empty tuple.
/// @throws what the tasks throw; `std::bad_alloc`; `std::system_error`
/// (`std::errc::invalid_argument`), before any task starts, if one is empty or has run already.
template <class... Ts>
task<std::tuple<detail::coro::result_or_monostate<Ts>...>> when_all(task<Ts>... tasks) {
    if (!(detail::coro::startable(tasks.handle()) && ...))
        detail::coro::throw_not_awaitable("iocp::when_all: empty or finished task");
    detail::coro::when_all_counter counter{};
    // std::array: a built-in array of no tasks (when_all()) would be ill-formed.
    std::array<detail::coro::when_all_driver, sizeof...(Ts)> drivers{
        detail::coro::drive_when_all(tasks, counter)...};
    co_await detail::coro::when_all_awaiter{drivers.data(), sizeof...(Ts), &counter};
    // Braced: the results are taken in argument order, so the first exception wins.
    co_return std::tuple<detail::coro::result_or_monostate<Ts>...>{
        detail::coro::take_result(tasks)...};
}

/// Runs every task of `tasks` concurrently; the results in the same order (nothing for `void`
/// tasks). Rethrows the first exception (in vector order) after all have ended. An empty
/// vector completes at once.
/// @throws what the tasks throw; `std::bad_alloc`; `std::system_error`
/// (`std::errc::invalid_argument`), before any task starts, if one is empty or has run already.
template <class T>
task<std::conditional_t<std::is_void_v<T>, void, std::vector<T>>>
when_all(std::vector<task<T>> tasks) {
    for (const task<T>& t : tasks) {
        if (!detail::coro::startable(t.handle()))
            detail::coro::throw_not_awaitable("iocp::when_all: empty or finished task");
    }
    detail::coro::when_all_counter counter{};
    std::vector<detail::coro::when_all_driver> drivers;
    drivers.reserve(tasks.size());
    for (task<T>& t : tasks)
        drivers.push_back(detail::coro::drive_when_all(t, counter));
    co_await detail::coro::when_all_awaiter{drivers.data(), drivers.size(), &counter};
    if constexpr (std::is_void_v<T>) {
        for (task<T>& t : tasks)
            t.handle().promise().take();
    } else {
        std::vector<T> results;
        results.reserve(tasks.size());
        for (task<T>& t : tasks)
            results.push_back(t.handle().promise().take());
        co_return results;
    }
}

} // namespace iocp
