#pragma once
/// @file
/// `iocp::spawn(pool, task)`: runs a task detached on a pool.
///
/// @code
/// iocp::task<> serve(iocp::socket conn);
/// iocp::spawn(pool, serve(std::move(conn)));   // starts on a worker; nobody awaits it
/// @endcode

#include <coroutine>
#include <exception>
#include <system_error>
#include <utility>

#include "../detail/pool/coro_resume.hpp"
#include "../error.hpp"
#include "../thread_pool.hpp"
#include "task.hpp"

namespace iocp {

namespace detail::coro {

// The frame that owns a spawned task: started by a work item, freed when it ends (final_suspend
// does not suspend). An exception from the task goes to the pool's exception handler.
struct detached {
    struct promise_type {
        thread_pool* pool;
        template <class... Args>
        explicit promise_type(thread_pool& p, Args&...) noexcept : pool(&p) {}
        detached get_return_object() noexcept {
            return {std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        std::suspend_never final_suspend() const noexcept { return {}; }
        void return_void() const noexcept {}
        void unhandled_exception() noexcept {
            pool_io_access::report_exception(*pool, std::current_exception());
        }
    };
    std::coroutine_handle<promise_type> handle;
};

template <class T>
detached run_detached(thread_pool&, task<T> t) {
    (void)co_await std::move(t);
}

// The work item that starts a spawned frame; a frame whose work item is abandoned (stop(), or
// a refused post) is destroyed, unstarted, with its task.
struct detached_starter {
    std::coroutine_handle<> h;
    explicit detached_starter(std::coroutine_handle<> c) noexcept : h(c) {}
    detached_starter(detached_starter&& o) noexcept : h(std::exchange(o.h, nullptr)) {}
    detached_starter(const detached_starter&) = delete;
    detached_starter& operator=(const detached_starter&) = delete;
    detached_starter& operator=(detached_starter&&) = delete;
    void operator()() noexcept { detail::resume_loop(std::exchange(h, nullptr)); }
    ~detached_starter() {
        if (h)
            h.destroy();
    }
};

} // namespace detail::coro

/// Runs `t` detached on `pool`: posted as a work item, it starts on a worker and nobody awaits
/// it. An exception that leaves it goes to the pool's exception handler (never dropped). If the
/// pool abandons the start (`stop()`), the task is destroyed without running. Once started, the
/// frame frees itself when the task ends.
/// Errors: as `thread_pool::post` (`errc::closed` once shutdown began); the task is then
/// destroyed without running. `std::errc::not_enough_memory` when the frame cannot be allocated.
/// `std::errc::invalid_argument` for an empty task or one that has run already.
/// Thread safety: as `thread_pool::post`.
template <class T>
void spawn(thread_pool& pool, task<T> t, std::error_code& ec) noexcept {
    if (!detail::coro::startable(t.handle())) {
        ec = std::make_error_code(std::errc::invalid_argument); // nothing to start
        return;
    }
    std::coroutine_handle<> h;
    try {
        h = detail::coro::run_detached(pool, std::move(t)).handle;
    } catch (const std::bad_alloc&) {
        ec = std::make_error_code(std::errc::not_enough_memory);
        return;
    }
    pool.post(detail::coro::detached_starter(h), ec); // refused: the starter destroys the frame
}

/// As above. @throws std::system_error
template <class T>
void spawn(thread_pool& pool, task<T> t) {
    std::error_code ec;
    spawn(pool, std::move(t), ec);
    detail::throw_if(ec, "iocp::spawn");
}

} // namespace iocp
