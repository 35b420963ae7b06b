#pragma once
/// @file
/// `iocp::future<T>`: the result of `thread_pool::submit`, a one-shot channel from the work
/// item that computes a value (or throws) to the thread that waits for it.
///
/// @code
/// iocp::thread_pool pool(2);
/// iocp::future<int> answer = pool.submit([] { return 6 * 7; });
/// int v = answer.get();                               // 42, or rethrows what the callable threw
/// std::future<int> f = pool.submit([] { return 1; }); // converts, for code that wants std::future
/// @endcode
///
/// Why not `std::future`. Making a `std::future` ready goes through `std::call_once`, and
/// glibc's `pthread_once` ends with a `FUTEX_WAKE` system call whether or not anyone waits (see
/// bench/README.md, "Why W3 ..."): one system call per submit. This future is made ready by one
/// atomic read-modify-write and makes a system call only when a thread is blocked in
/// `wait`/`get` at that moment. Its shared state lives in the pool's recycled work-item blocks,
/// so a submit with a small result allocates nothing in steady state.
///
/// It has `std::future`'s interface (`get`, `valid`, `wait`, `wait_for`, `wait_until`,
/// `share`) and its errors: `get` on an invalid future throws `std::future_error` with
/// `std::future_errc::no_state`; a work item the pool abandons makes `get` throw
/// `std::future_error` with `std::future_errc::broken_promise`. `wait_for`/`wait_until` never
/// return `std::future_status::deferred`: the work item is always queued.
///
/// Conversion to `std::future<T>` (implicit, from an rvalue) keeps code written against
/// `std::future` compiling: `std::future<int> f = pool.submit(...)`, a `std::vector` of them,
/// an argument of type `std::future<int>`. It allocates a `std::promise` that the pool then makes
/// ready (or broken) as it would this future; the converted future costs what a `std::future`
/// costs. A function template that deduces `T` from `std::future<T>` does not take this type
/// (deduction does not consider conversions): overload it, or convert explicitly.
///
/// Thread safety: as `std::future`: one future object is used by one thread at a time; the
/// future and the work item that makes it ready may be on any threads.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <future>
#include <memory>
#include <mutex>
#include <new>
#include <type_traits>
#include <utility>

#include "detail/block_allocator.hpp"
#include "detail/time.hpp"

namespace iocp {

template <class T>
class future;

namespace detail {

// A future's status word. `ready` is set exactly once, by the promise, after the result is
// stored; the other bits tell the promise what else it owes at that moment.
inline constexpr std::uint32_t future_ready = 1;     // the result (value or exception) is stored
inline constexpr std::uint32_t future_waiting = 2;   // a thread is (or was) blocked in a wait
inline constexpr std::uint32_t future_forwarded = 4; // converted: deliver to `forward_` too

// Where blocked waiters sleep: a small table of mutexes and condition variables shared by all
// futures (picked by the state's address), so that a state carries no mutex of its own and fits
// a work-item block. A waiter woken for another future of its stripe checks and sleeps again.
struct future_parking {
    std::mutex mutex;
    std::condition_variable ready;
};

inline constexpr std::size_t future_parking_stripes = 16;

inline future_parking& parking_for(const void* state) noexcept {
    // Built in place on first use and never destroyed: a pool destroyed during static
    // destruction (a static pool, or one a static object owns) still publishes the results of
    // what it runs or abandons then, after a destructible table would be gone.
    alignas(future_parking) static unsigned char
        storage[sizeof(future_parking) * future_parking_stripes];
    static future_parking* const table = [] {
        auto* t = reinterpret_cast<future_parking*>(storage);
        for (std::size_t i = 0; i < future_parking_stripes; ++i)
            ::new (static_cast<void*>(t + i)) future_parking();
        return t;
    }();
    // States sit in 96-byte blocks: drop the low bits, mix the rest.
    const auto h = reinterpret_cast<std::uintptr_t>(state) >> 5;
    return table[(h ^ (h >> 4) ^ (h >> 8)) % future_parking_stripes];
}

// The shared state of one future: the result, the status word and two owners (the future and
// its promise); whichever lets go last destroys it.
template <class T>
class future_state {
public:
    // What a reference result is stored as; `void` stores nothing.
    struct nothing {};
    using stored =
        std::conditional_t<std::is_void_v<T>, nothing,
                           std::conditional_t<std::is_reference_v<T>, std::remove_reference_t<T>*,
                                              std::remove_cv_t<T>>>; // a `const T` result is stored
                                                                     // as a T

    static future_state* make() {
        block_allocator<future_state> alloc;
        future_state* s = alloc.allocate(1);
        return ::new (static_cast<void*>(s)) future_state();
    }

    // One owner lets go. acq_rel: the last one sees everything the other wrote.
    void release() noexcept {
        if (owners_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            this->~future_state();
            block_allocator<future_state>().deallocate(this, 1);
        }
    }

    bool is_ready() const noexcept {
        return (status_.load(std::memory_order_acquire) & future_ready) != 0;
    }

    // The promise's side: store, then publish with one read-modify-write, then do what the
    // bits it saw ask for. Called once.
    template <class... Args>
    void set_value(Args&&... args) {
        ::new (static_cast<void*>(std::addressof(value_))) stored(std::forward<Args>(args)...);
        holds_ = holds::value;
        publish();
    }
    void set_exception(std::exception_ptr e) noexcept {
        ::new (static_cast<void*>(std::addressof(error_))) std::exception_ptr(std::move(e));
        holds_ = holds::error;
        publish();
    }
    // For a work item abandoned unrun: what a destroyed std::promise reports.
    void set_broken_promise() noexcept {
        std::exception_ptr e;
        try {
            e = std::make_exception_ptr(std::future_error(std::future_errc::broken_promise));
        } catch (...) {
            e = std::current_exception(); // the error's message could not be allocated
        }
        set_exception(std::move(e));
    }

    // Blocks until ready or until `deadline`; true when ready.
    template <class Clock, class Duration>
    bool wait_until(const std::chrono::time_point<Clock, Duration>* deadline) {
        // A short look first: a result that is a few hundred nanoseconds away is not worth a
        // sleep and a wake-up.
        for (int i = 0; i < spin_checks; ++i) {
            if (is_ready())
                return true;
        }
        future_parking& parking = parking_for(this);
        std::unique_lock<std::mutex> lock(parking.mutex);
        // TRICKY: the waiter announces itself with a read-modify-write while it holds the
        // stripe's mutex, and the promise sets `ready` with one on the same word. If the
        // promise's came first, this one sees `ready`; if this one came first, the promise sees
        // `future_waiting` and takes the mutex before notifying, which it can only get once
        // this thread sleeps in the condition variable (or has left): no lost wake-up.
        if ((status_.fetch_or(future_waiting, std::memory_order_acq_rel) & future_ready) != 0)
            return true;
        while (!is_ready()) {
            if (deadline == nullptr)
                parking.ready.wait(lock);
            else if (parking.ready.wait_until(lock, *deadline) == std::cv_status::timeout)
                return is_ready();
        }
        return true;
    }

    // Moves the result out: the value, or rethrows the exception. After `is_ready()`.
    decltype(auto) take() {
        if (holds_ == holds::error)
            std::rethrow_exception(error_);
        if constexpr (std::is_void_v<T>)
            return;
        else if constexpr (std::is_reference_v<T>)
            return static_cast<T>(*value_);
        else
            return T(std::move(value_));
    }

    // Converted to std::future: hands `promise` the result now if it is there, else leaves it
    // for the promise's side to do when it publishes. Called once, by the future's owner.
    void forward_to(std::promise<T>* promise) noexcept {
        forward_ = promise;
        // TRICKY: exactly one side delivers. The read-modify-writes on the status word are
        // ordered: if `ready` was set first, this thread delivers; otherwise the promise's
        // publish sees `future_forwarded` (and, acquiring it, `forward_`) and delivers.
        if ((status_.fetch_or(future_forwarded, std::memory_order_acq_rel) & future_ready) != 0)
            deliver();
    }

private:
    future_state() noexcept {} // NOLINT(modernize-use-equals-default): the union stays empty
    ~future_state() {
        if (holds_ == holds::value)
            value_.~stored();
        else if (holds_ == holds::error)
            error_.~exception_ptr();
        delete forward_;
    }

    static constexpr int spin_checks = 256;

    // noexcept: std::mutex::lock throws only for a mutex it cannot lock at all (EINVAL,
    // EDEADLK), which a stripe's never is; were it to, terminating beats a waiter never woken.
    // NOLINTNEXTLINE(bugprone-exception-escape)
    void publish() noexcept {
        const std::uint32_t seen = status_.fetch_or(future_ready, std::memory_order_acq_rel);
        if ((seen & future_forwarded) != 0)
            deliver();
        if ((seen & future_waiting) != 0) {
            future_parking& parking = parking_for(this);
            { std::lock_guard<std::mutex> lock(parking.mutex); } // see wait_until
            parking.ready.notify_all();
        }
    }

    // The result into the converted std::future's promise. std::promise's setters throw
    // future_error only for a promise already satisfied, which this one cannot be (delivered
    // exactly once), so what reaches the catch is the value's move throwing, and the promise
    // is then still unsatisfied.
    // NOLINTNEXTLINE(bugprone-exception-escape)
    void deliver() noexcept {
        if (holds_ == holds::error) {
            forward_->set_exception(error_);
            return;
        }
        try {
            if constexpr (std::is_void_v<T>)
                forward_->set_value();
            else if constexpr (std::is_reference_v<T>)
                forward_->set_value(*value_);
            else
                forward_->set_value(std::move(value_));
        } catch (...) {
            forward_->set_exception(std::current_exception()); // the converted future reports it
        }
    }

    std::atomic<std::uint32_t> status_{0};
    std::atomic<std::uint32_t> owners_{2}; // the future and the promise
    std::promise<T>* forward_ = nullptr;   // set once, before `future_forwarded`
    // The result: written once by the promise before `ready`, read after it. A value's
    // constructor that throws leaves `holds_` at `nothing`, and the exception is stored instead.
    enum class holds : std::uint8_t { nothing, value, error };
    holds holds_ = holds::nothing;
    union {
        stored value_;
        std::exception_ptr error_;
    };
};

// The work item's side of a future: makes it ready exactly once. Destroyed without a result
// (the pool abandoned the work item), it makes the future report broken_promise, as a
// destroyed std::promise does.
template <class T>
class future_promise {
public:
    explicit future_promise(future_state<T>* state) noexcept : state_(state) {}
    future_promise(future_promise&& other) noexcept
        : state_(std::exchange(other.state_, nullptr)) {}
    future_promise& operator=(future_promise&&) = delete;
    future_promise(const future_promise&) = delete;
    future_promise& operator=(const future_promise&) = delete;
    ~future_promise() {
        if (state_ != nullptr) {
            state_->set_broken_promise();
            state_->release();
        }
    }

    // Runs `fn` and stores what it returns or throws.
    template <class F>
    void run(F& fn) noexcept {
        try {
            if constexpr (std::is_void_v<T>) {
                fn();
                state_->set_value();
            } else if constexpr (std::is_reference_v<T>) {
                T r = fn();
                state_->set_value(std::addressof(r));
            } else {
                state_->set_value(fn());
            }
        } catch (...) {
            state_->set_exception(std::current_exception());
        }
        std::exchange(state_, nullptr)->release();
    }

private:
    future_state<T>* state_;
};

} // namespace detail

/// The result of `thread_pool::submit`: see the file comment. Move-only.
template <class T>
class future {
public:
    /// An invalid future (`valid() == false`), as a refused submit returns.
    future() noexcept = default;
    /// Takes `other`'s result; `other` becomes invalid.
    future(future&& other) noexcept : state_(std::exchange(other.state_, nullptr)) {}
    /// Lets go of this future's result (without waiting) and takes `other`'s.
    future& operator=(future&& other) noexcept {
        if (this != &other) {
            reset();
            state_ = std::exchange(other.state_, nullptr);
        }
        return *this;
    }
    future(const future&) = delete;            ///< Move-only, as `std::future`.
    future& operator=(const future&) = delete; ///< Move-only, as `std::future`.
    /// Lets go of the result without waiting for it (unlike a future of `std::async`).
    ~future() { reset(); }

    /// True until `get()` (or a move, or a conversion) took the result.
    bool valid() const noexcept { return state_ != nullptr; }

    /// Blocks until the result is there (a short spin first, then a sleep).
    /// @throws std::future_error (`no_state`) when `!valid()`; std::system_error if the
    /// condition variable fails.
    void wait() const {
        check();
        if (!state_->is_ready())
            state_->wait_until(static_cast<const std::chrono::steady_clock::time_point*>(nullptr));
    }

    /// Blocks until the result is there or `timeout` has passed (measured on the steady clock).
    /// Any duration is accepted: one too long for the clock (`hours::max()`, say) waits as long
    /// as the clock can count, where `std::future::wait_for` overflows and returns at once.
    /// @returns `ready` or `timeout`, never `deferred`. @throws as `wait()`.
    template <class Rep, class Period>
    std::future_status wait_for(const std::chrono::duration<Rep, Period>& timeout) const {
        using clock = std::chrono::steady_clock;
        return wait_until(detail::deadline_after<clock>(clock::now(), timeout));
    }

    /// Blocks until the result is there or `deadline` (on `Clock`) has passed; a deadline past
    /// what `Clock::time_point` holds is clamped to its max().
    /// @returns `ready` or `timeout`. @throws as `wait()`.
    template <class Clock, class Duration>
    std::future_status wait_until(const std::chrono::time_point<Clock, Duration>& deadline) const {
        check();
        const typename Clock::time_point clamped = detail::saturating_time_point(deadline);
        if (state_->is_ready() || state_->wait_until(&clamped))
            return std::future_status::ready;
        return std::future_status::timeout;
    }

    /// Waits, then returns the result (moved out) or rethrows the callable's exception;
    /// afterwards `valid() == false`. @throws std::future_error (`no_state`) when `!valid()`,
    /// (`broken_promise`) when the pool abandoned the work item (`thread_pool::stop`).
    T get() {
        wait();
        owner holder{std::exchange(state_, nullptr)};
        return holder.state->take();
    }

    /// A `std::shared_future` for the same result (through the conversion below); this future
    /// becomes invalid. An invalid future gives an invalid `std::shared_future`, as
    /// `std::future::share` does. @throws std::bad_alloc.
    std::shared_future<T> share() { return std::future<T>(std::move(*this)).share(); }

    /// Converts to a `std::shared_future` (`std::shared_future<int> s = pool.submit(...)`), as
    /// `share()` does; a second user-defined conversion would not be found through
    /// `std::future`. @throws std::bad_alloc.
    operator std::shared_future<T>() && { // NOLINT(google-explicit-constructor): as std::future
        return share();
    }

    /// Converts to a `std::future` with the same result; this future becomes invalid. An
    /// invalid future converts to an invalid `std::future`. @throws std::bad_alloc.
    operator std::future<T>() && { // NOLINT(google-explicit-constructor): drop-in for std::future
        if (state_ == nullptr)
            return {};
        auto promise = std::make_unique<std::promise<T>>();
        std::future<T> converted = promise->get_future();
        owner holder{std::exchange(state_, nullptr)};
        holder.state->forward_to(promise.release());
        return converted;
    }

private:
    friend class thread_pool;

    struct owner { // lets go of the state on every way out of get()
        detail::future_state<T>* state;
        ~owner() { state->release(); }
    };

    explicit future(detail::future_state<T>* state) noexcept : state_(state) {}

    void check() const {
        if (state_ == nullptr)
            throw std::future_error(std::future_errc::no_state);
    }
    void reset() noexcept {
        if (state_ != nullptr)
            std::exchange(state_, nullptr)->release();
    }

    detail::future_state<T>* state_ = nullptr;
};

} // namespace iocp
