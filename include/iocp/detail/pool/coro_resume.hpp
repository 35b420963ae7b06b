#pragma once
// How the library resumes coroutines, shared by the pool's awaitables (awaitables.hpp) and the
// coroutine layer (coro/): the resumption gate between await_suspend and a completion on
// another thread, and the trampoline that makes symmetric transfer use constant stack on every
// compiler.
//
// Why a trampoline. Symmetric transfer (await_suspend returning the next coroutine's handle)
// keeps the stack flat only if the compiler turns the resumption of that handle into a tail
// call. Clang does at every optimisation level; GCC 12 does only when it optimises sibling calls
// (-O2) and never with AddressSanitizer, so a million-step chain of tasks overflows the stack of
// a debug or sanitizer build. Instead, a transfer from a coroutine that this thread's loop is
// running records the next handle and returns to the loop, which resumes it: one stack frame per
// loop, whatever the chain.

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <optional>
#include <stop_token>
#include <thread>
#include <utility>

namespace iocp::detail {

// Who resumes a coroutine whose operation may complete on another thread while its
// await_suspend is still running: the second of the two to arrive.
// TRICKY: await_suspend keeps using the awaitable (registering a stop callback) after it handed
// the operation over; the completion must not resume (and so perhaps destroy) the frame under
// it. Each side sets its bit; the one that finds the other's bit set resumes.
class resume_gate {
public:
    // The completion arrived: true if it must resume the coroutine now.
    bool complete() noexcept {
        return (state_.fetch_or(completed, std::memory_order_acq_rel) & suspended) != 0;
    }
    // await_suspend is done with the awaitable: true if the coroutine stays suspended (the
    // completion will resume it), false if the completion came first (resume now).
    bool suspend() noexcept {
        return (state_.fetch_or(suspended, std::memory_order_acq_rel) & completed) == 0;
    }

private:
    static constexpr std::uint8_t suspended = 1;
    static constexpr std::uint8_t completed = 2;
    std::atomic<std::uint8_t> state_{0};
};

// This thread's trampoline: the coroutine its innermost loop is running, and the one to run
// next (set by a transfer from it).
struct trampoline_state {
    void* running = nullptr;
    std::coroutine_handle<> next;
};

inline trampoline_state& trampoline() noexcept {
    thread_local trampoline_state t;
    return t;
}

// Resumes `h`, then every coroutine it transfers to, one after the other on this stack. Nests
// (a coroutine blocked in sync_wait inside a resumed one): the outer loop's state is kept.
inline void resume_loop(std::coroutine_handle<> h) noexcept {
    trampoline_state& t = trampoline();
    void* const outer_running = t.running;
    const std::coroutine_handle<> outer_next = std::exchange(t.next, nullptr);
    while (h) {
        t.running = h.address();
        h.resume();
        h = std::exchange(t.next, nullptr);
    }
    t.running = outer_running;
    t.next = outer_next;
}

// The symmetric transfer from `current` (in its await_suspend, or final_suspend) to `next`:
// what that await_suspend returns. If this thread's loop runs `current`, the loop resumes `next`
// once `current` has suspended; otherwise (a coroutine resumed by other code) a loop starts
// here.
// TRICKY: in the second case `next` (and what it transfers to) runs before this await_suspend
// returns; it may even resume and finish `current`. That is allowed (the coroutine counts as
// suspended from the call of await_suspend on) as long as nothing here touches `current` or its
// awaiter afterwards: nothing does.
inline std::coroutine_handle<> transfer(std::coroutine_handle<> current,
                                        std::coroutine_handle<> next) noexcept {
    trampoline_state& t = trampoline();
    if (t.running == current.address()) {
        t.next = next;
        return std::noop_coroutine();
    }
    resume_loop(next);
    return std::noop_coroutine();
}

// The stop callback of one awaited operation: `cancel(context)` runs once on a stop request,
// and the completion side ends it with disarm() before the frame may go away.
//
// Why not a plain std::stop_callback member destroyed by the completion: its destructor, when the
// callback is running on the requesting thread, waits on a binary_semaphore, and libstdc++ 12
// without a futex (MinGW: Windows) can lose that wake-up (its waiter pool notifies the condition
// variable without taking the mutex, between the waiter's check and its wait), so a worker hangs
// for ever; the tests hit it under Wine in one run out of three. Here a callback that ran on
// another thread destroys its std::stop_callback itself, inside its own invocation (the standard
// says that does not block), and the completion side only waits for our own flag.
class stop_registration {
public:
    using cancel_fn = void (*)(void* context) noexcept;

    stop_registration() = default;
    stop_registration(const stop_registration&) = delete;
    stop_registration& operator=(const stop_registration&) = delete;
    ~stop_registration() { disarm(); }

    // Registers; a stop already requested runs `cancel` here, inline.
    void arm(const std::stop_token& token, cancel_fn cancel, void* context) noexcept {
        token_ = token;
        cancel_ = cancel;
        context_ = context;
        armed_ = true;
        arming_thread_.store(std::this_thread::get_id(), std::memory_order_relaxed);
        callback_.emplace(token_, invoke{this});
        arming_thread_.store(std::thread::id(), std::memory_order_relaxed);
        arm_finished_.store(true, std::memory_order_release);
    }

    // After this returns `cancel` is not running and never runs again. Waits (yielding) only for
    // a cancel that a stop request is running now, which is short.
    void disarm() noexcept {
        if (!std::exchange(armed_, false))
            return;
        if ((state_.load(std::memory_order_acquire) & ran_inline) != 0) {
            callback_.reset(); // ran in its constructor: nothing registered, nothing to wait for
            return;
        }
        const unsigned prev = state_.fetch_or(finishing, std::memory_order_acq_rel);
        if ((prev & taken) == 0) {
            if (!token_.stop_requested()) {
                // TRICKY: not requested now: the destructor unlinks the callback. A request that
                // starts in the few instructions between this look and the destructor's lock
                // can still take it; the callback then sees `own` and returns at once, and the
                // destructor waits for that return (the one wait left to libstdc++).
                state_.fetch_or(own, std::memory_order_acq_rel);
                callback_.reset();
                return;
            }
            // Requested but not taken yet: the request runs it soon (it takes every callback
            // registered before the stop); it destroys itself then.
            state_.fetch_or(defer, std::memory_order_acq_rel);
        }
        while ((state_.load(std::memory_order_acquire) & done) == 0)
            std::this_thread::yield();
    }

private:
    struct invoke {
        stop_registration* self;
        void operator()() noexcept { self->on_stop(); }
    };

    void on_stop() noexcept {
        if (arming_thread_.load(std::memory_order_relaxed) == std::this_thread::get_id()) {
            // Inside arm(): the request came first; the constructor runs us and keeps nothing.
            cancel_(context_);
            state_.fetch_or(ran_inline, std::memory_order_release);
            return;
        }
        const unsigned prev = state_.fetch_or(taken, std::memory_order_acq_rel);
        if ((prev & finishing) != 0) {
            // The completion side is ending the registration: wait for its decision (it comes
            // at once), do not cancel (the operation has completed).
            unsigned s = 0;
            while (((s = state_.load(std::memory_order_acquire)) & (own | defer)) == 0)
                std::this_thread::yield();
            if ((s & own) != 0)
                return; // its destructor is waiting for this return
        } else {
            cancel_(context_); // the completion side waits for `done` before the frame goes
        }
        // TRICKY: a request on another thread may run us as soon as the constructor has linked
        // the callback, before the constructor (and emplace) finished writing the object: it
        // must not be destroyed before arm() returned. arm() does not block: a short wait.
        while (!arm_finished_.load(std::memory_order_acquire))
            std::this_thread::yield();
        stop_registration* self = this;
        self->callback_.reset(); // destroys the std::stop_callback running us: allowed, no wait
        self->state_.fetch_or(done, std::memory_order_release); // nothing of ours after this
    }

    static constexpr unsigned taken = 1;       // a stop request runs the callback
    static constexpr unsigned finishing = 2;   // the completion side began disarm()
    static constexpr unsigned own = 4;         // disarm() destroys the std::stop_callback
    static constexpr unsigned defer = 8;       // the callback destroys it (disarm() waits)
    static constexpr unsigned done = 16;       // the callback destroyed it and returned
    static constexpr unsigned ran_inline = 32; // ran inside arm()

    std::stop_token token_;
    cancel_fn cancel_ = nullptr;
    void* context_ = nullptr;
    bool armed_ = false; // arm() was called and disarm() not yet (the completion side's)
    std::atomic<std::thread::id> arming_thread_{};
    std::atomic<bool> arm_finished_{false}; // arm() has constructed the std::stop_callback
    std::atomic<unsigned> state_{0};
    std::optional<std::stop_callback<invoke>> callback_;
};

} // namespace iocp::detail
