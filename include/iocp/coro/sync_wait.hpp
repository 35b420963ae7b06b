#pragma once
/// @file
/// `iocp::sync_wait(task)`: runs a task and blocks the calling thread until it ends (for `main`
/// and tests).
///
/// @code
/// int main() {
///     iocp::thread_pool pool(4);
///     return iocp::sync_wait(serve(pool));   // serve() returns iocp::task<int>
/// }
/// @endcode

#include <condition_variable>
#include <coroutine>
#include <exception>
#include <mutex>
#include <utility>

#include "../detail/pool/coro_resume.hpp"
#include "task.hpp"

namespace iocp {

namespace detail::coro {

// Wakes the thread in sync_wait. Lives on that thread's stack.
struct sync_signal {
    std::mutex mutex;
    std::condition_variable cv;
    bool done = false;
};

// Starts the task and signals when it ended. Its frame is freed by sync_wait.
struct sync_driver {
    struct promise_type {
        sync_signal* signal;
        template <class Task>
        explicit promise_type(Task&, sync_signal& s) noexcept : signal(&s) {}
        sync_driver get_return_object() noexcept {
            return {std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        struct final_awaiter {
            bool await_ready() const noexcept { return false; }
            void await_suspend(std::coroutine_handle<promise_type> h) const noexcept {
                sync_signal* s = h.promise().signal;
                // TRICKY: notified under the lock, so that sync_wait (which needs the lock to
                // return) cannot destroy the signal before this is done with it.
                std::lock_guard lock(s->mutex);
                s->done = true;
                s->cv.notify_one();
            }
            void await_resume() const noexcept {}
        };
        final_awaiter final_suspend() const noexcept { return {}; }
        void return_void() const noexcept {}
        void unhandled_exception() const noexcept { std::terminate(); } // the body cannot throw
    };
    std::coroutine_handle<promise_type> handle;
};

// Starts a task without taking its result (which stays in its promise).
template <class T>
struct start_only {
    std::coroutine_handle<promise<T>> h;
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> c) const noexcept {
        h.promise().set_continuation(c);
        return detail::transfer(c, h);
    }
    void await_resume() const noexcept {}
};

template <class T>
sync_driver drive_sync(task<T>& t, sync_signal&) {
    co_await start_only<T>{t.handle()};
}

} // namespace detail::coro

/// Runs `t` on the calling thread until its first suspension, then blocks until it has ended
/// (wherever it ends: usually on a pool worker). Returns its result, or rethrows its exception.
/// Must not be called from a pool worker whose pool the task needs (it would block that worker).
/// @throws whatever the task throws; `std::bad_alloc`; `std::system_error`
/// (`std::errc::invalid_argument`) for an empty task or one that has run already.
template <class T>
T sync_wait(task<T> t) {
    if (!detail::coro::startable(t.handle()))
        detail::coro::throw_not_awaitable("iocp::sync_wait: empty or finished task");
    detail::coro::sync_signal signal;
    detail::coro::sync_driver d = detail::coro::drive_sync(t, signal);
    detail::resume_loop(d.handle); // its own loop: this thread may be inside a coroutine
    {
        std::unique_lock lock(signal.mutex);
        signal.cv.wait(lock, [&] { return signal.done; });
    }
    d.handle.destroy();
    return t.handle().promise().take();
}

} // namespace iocp
