#pragma once
// Coroutine helpers of the tests: a coroutine that starts at once inside its caller, and a
// counter of frames destroyed.

#include <atomic>
#include <coroutine>
#include <exception>
#include <utility>

namespace iocp_test {

// Starts at once, on the calling thread (inside a work item, a hook, a handler), and frees its
// own frame at the end: what a user writes to start a hop from a callback that cannot co_await.
struct eager_coroutine {
    struct promise_type {
        eager_coroutine get_return_object() noexcept { return {}; }
        std::suspend_never initial_suspend() noexcept { return {}; }
        std::suspend_never final_suspend() noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept { std::terminate(); }
    };
};

// Passed by value into a coroutine: its copy lives in the frame and counts the frame's
// destruction exactly once, whether the body ended or the frame was destroyed unstarted.
struct frame_guard {
    std::atomic<int>* destroyed;
    explicit frame_guard(std::atomic<int>& d) noexcept : destroyed(&d) {}
    frame_guard(frame_guard&& o) noexcept : destroyed(std::exchange(o.destroyed, nullptr)) {}
    frame_guard(const frame_guard&) = delete;
    frame_guard& operator=(const frame_guard&) = delete;
    frame_guard& operator=(frame_guard&&) = delete;
    ~frame_guard() {
        if (destroyed != nullptr)
            destroyed->fetch_add(1);
    }
};

} // namespace iocp_test
