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

} // namespace iocp::detail
