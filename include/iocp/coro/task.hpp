#pragma once
/// @file
/// `iocp::task<T>`: a lazy, move-only coroutine that produces a `T` (or nothing, `task<>`) or an
/// exception, and is awaited from another coroutine.
///
/// @code
/// iocp::task<int> answer() { co_return 42; }
/// iocp::task<> user(iocp::thread_pool& pool) {
///     co_await pool.schedule();     // now on a worker
///     int n = co_await answer();    // runs answer() to its end, then continues here
/// }
/// @endcode
///
/// - Lazy: calling the coroutine function creates the frame and runs nothing; `co_await` (or
///   `iocp::spawn`, `iocp::sync_wait`, `iocp::when_all`) starts it.
/// - Symmetric transfer: starting a task and returning to its awaiter never nest a resume (a
///   per-thread trampoline resumes the next coroutine, whatever the compiler does with tail
///   calls), so a chain of a million `co_await`s of tasks that complete at once, or a million
///   nested tasks, does not grow the stack.
/// - An exception that leaves the body is rethrown by the `co_await` in the awaiter.
/// - The task object owns the frame: destroying a task that was never started frees it; a task
///   may be awaited once. Destroying a task while it runs is a bug (as for any coroutine).
/// - Awaiting an empty task (default-constructed or moved from) or one that has already run
///   throws `std::system_error` (`std::errc::invalid_argument`) from the `co_await`; so do
///   `iocp::sync_wait` and `iocp::when_all` given one, and `iocp::spawn` reports it.
///
/// Thread safety: a task is one object; use it from one thread at a time. The body may move to
/// other threads at its `co_await`s (a worker resumes it).

#include <coroutine>
#include <exception>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

#include "../detail/pool/coro_resume.hpp"

namespace iocp {

template <class T = void>
class task;

namespace detail::coro {

// A task that holds no frame (default-constructed, moved from) or whose frame has run already
// cannot be started: every driver (co_await, sync_wait, when_all) throws this instead of
// resuming a null or finished frame (a crash, or undefined behaviour).
[[noreturn]] inline void throw_not_awaitable(const char* what) {
    throw std::system_error(std::make_error_code(std::errc::invalid_argument), what);
}

// True when `h` can be started: it holds a frame that has not run yet.
inline bool startable(std::coroutine_handle<> h) noexcept { return h && !h.done(); }

// What every task promise shares: the awaiter to return to, and the exception.
class promise_base {
public:
    std::suspend_always initial_suspend() const noexcept { return {}; }

    // Returns to the awaiter by symmetric transfer (detail::transfer: no nested resume).
    struct final_awaiter {
        bool await_ready() const noexcept { return false; }
        template <class Promise>
        std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> h) noexcept {
            return detail::transfer(h, h.promise().continuation_);
        }
        void await_resume() const noexcept {}
    };
    final_awaiter final_suspend() const noexcept { return {}; }

    void unhandled_exception() noexcept { error_ = std::current_exception(); }

    void set_continuation(std::coroutine_handle<> c) noexcept { continuation_ = c; }

protected:
    void rethrow_if_error() const {
        if (error_)
            std::rethrow_exception(error_);
    }

private:
    std::coroutine_handle<> continuation_ = std::noop_coroutine();
    std::exception_ptr error_;
};

template <class T>
class promise final : public promise_base {
public:
    task<T> get_return_object() noexcept;

    template <class U>
    requires std::is_convertible_v<U&&, T>
    void return_value(U&& v) { // T's constructor may throw: the awaiter gets the exception
        value_.template emplace<1>(std::forward<U>(v));
    }

    T take() {
        rethrow_if_error();
        return std::move(std::get<1>(value_));
    }

private:
    std::variant<std::monostate, T> value_;
};

template <>
class promise<void> final : public promise_base {
public:
    task<void> get_return_object() noexcept;
    void return_void() const noexcept {}
    void take() const { rethrow_if_error(); }
};

} // namespace detail::coro

/// A lazy coroutine producing a `T` (see the file comment). Awaiting it gives the `T` (for
/// `task<>`: nothing) or rethrows the body's exception.
template <class T>
class [[nodiscard]] task {
    static_assert(!std::is_reference_v<T>, "iocp::task<T>: T is a value type (or void)");

public:
    /// The promise type the compiler uses.
    using promise_type = detail::coro::promise<T>;
    /// The coroutine handle of the frame.
    using handle_type = std::coroutine_handle<promise_type>;

    /// An empty task (holds no frame; awaiting it throws `std::errc::invalid_argument`).
    task() noexcept = default;
    /// Takes over `other`'s frame.
    task(task&& other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
    /// Frees the frame held, then takes over `other`'s.
    task& operator=(task&& other) noexcept {
        if (this != &other) {
            if (h_)
                h_.destroy();
            h_ = std::exchange(other.h_, nullptr);
        }
        return *this;
    }
    task(const task&) = delete;
    task& operator=(const task&) = delete;
    /// Frees the frame (which must not be running).
    ~task() {
        if (h_)
            h_.destroy();
    }

    /// True while a frame is held.
    explicit operator bool() const noexcept { return static_cast<bool>(h_); }

    /// The awaiter of `co_await task`: starts the body by symmetric transfer.
    struct awaiter {
        handle_type h;        ///< the awaited frame
        bool refused = false; ///< no frame, or a frame that has run already: await_resume throws
        /// Not ready for a task that can be started (a task is lazy). Ready for an empty task
        /// or one that has run already (awaited before): there is nothing to start, and
        /// resuming a finished frame is undefined behaviour; `await_resume` then throws.
        bool await_ready() noexcept {
            refused = !h || h.done();
            return refused;
        }
        /// Records the awaiter and transfers to the task's body.
        std::coroutine_handle<> await_suspend(std::coroutine_handle<> c) noexcept {
            h.promise().set_continuation(c);
            return detail::transfer(c, h);
        }
        /// The result, or the body's exception.
        /// @throws std::system_error (`std::errc::invalid_argument`) for an empty task or a
        /// task awaited a second time.
        T await_resume() {
            if (refused)
                detail::coro::throw_not_awaitable(h ? "iocp::task: awaited twice"
                                                    : "iocp::task: empty task awaited");
            return h.promise().take();
        }
    };

    /// Starts the task; the awaiter resumes when the body has finished. The task object must
    /// outlive the `co_await` (a temporary does).
    awaiter operator co_await() const& noexcept { return awaiter{h_}; }
    /// As above, for a temporary task.
    awaiter operator co_await() const&& noexcept { return awaiter{h_}; }

    /// The frame, still owned by the task (for the library's drivers).
    handle_type handle() const noexcept { return h_; }
    /// Gives up ownership of the frame.
    handle_type release() noexcept { return std::exchange(h_, nullptr); }

private:
    friend class detail::coro::promise<T>;
    explicit task(handle_type h) noexcept : h_(h) {}
    handle_type h_;
};

namespace detail::coro {

template <class T>
task<T> promise<T>::get_return_object() noexcept {
    return task<T>(std::coroutine_handle<promise<T>>::from_promise(*this));
}

inline task<void> promise<void>::get_return_object() noexcept {
    return task<void>(std::coroutine_handle<promise<void>>::from_promise(*this));
}

} // namespace detail::coro

} // namespace iocp
