#pragma once
// Waiting in tests without hanging: a test that would wait for ever aborts instead, saying what
// it waited for (its handlers and coroutines still refer to its stack, so it cannot simply
// return and fail). The deadline is a hang detector, not a speed check.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <thread>

#include "iocp/future.hpp"

namespace iocp_test {

inline constexpr std::chrono::seconds deadline{30};

// The value of `f` (a std::future, or thread_pool::submit's iocp::future, which has its
// interface but is not one); aborts after `deadline` ("timed out waiting for <what>
// (iteration <i>)").
template <class Future>
decltype(auto) await_future(Future& f, const char* what, int iteration) {
    if (f.wait_for(deadline) != std::future_status::ready) {
        if (iteration >= 0)
            std::fprintf(stderr, "timed out waiting for %s (iteration %d)\n", what, iteration);
        else
            std::fprintf(stderr, "timed out waiting for %s\n", what);
        std::fflush(stderr);
        std::abort();
    }
    return f.get();
}

template <class T>
T await(std::future<T>& f, const char* what, int iteration = -1) {
    return await_future(f, what, iteration);
}
template <class T>
T await(std::future<T>&& f, const char* what, int iteration = -1) {
    return await_future(f, what, iteration);
}
template <class T>
T await(iocp::future<T>& f, const char* what, int iteration = -1) {
    return await_future(f, what, iteration);
}
template <class T>
T await(iocp::future<T>&& f, const char* what, int iteration = -1) {
    return await_future(f, what, iteration);
}

// Returns once `pred()` holds, looking every millisecond; aborts after `deadline`.
template <class Pred>
void wait_until(Pred pred, const char* what) {
    const auto end = std::chrono::steady_clock::now() + deadline;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > end) {
            std::fprintf(stderr, "timed out waiting until %s\n", what);
            std::fflush(stderr);
            std::abort();
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

} // namespace iocp_test
