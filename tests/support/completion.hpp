#pragma once
// One I/O handler's result, waited for with the hang detector of waiting.hpp, and how many times
// the handler ran: the library promises exactly one completion per started operation, so a
// test checks `calls() == 1` after it has its result.

#include <atomic>
#include <cstddef>
#include <future>
#include <system_error>

#include "waiting.hpp"

namespace iocp_test {

// What a handler saw.
struct outcome {
    std::error_code ec;
    std::size_t bytes = 0;
};

// A handler's destination: `handler()` gives a callable (`(error_code)` or `(error_code,
// size_t)`) that records the first call and counts every call. The completion must outlive the
// operation it is handed to.
class completion {
public:
    completion() : future_(promise_.get_future()) {}
    completion(const completion&) = delete;
    completion& operator=(const completion&) = delete;

    auto handler() {
        return [this](std::error_code ec, std::size_t n = 0) {
            if (calls_.fetch_add(1) == 0)
                promise_.set_value({ec, n});
        };
    }
    // The first call's result; aborts the test after `deadline` ("timed out waiting for what").
    outcome get(const char* what, int iteration = -1) { return await(future_, what, iteration); }
    int calls() const { return calls_.load(); }

private:
    std::promise<outcome> promise_;
    std::future<outcome> future_;
    std::atomic<int> calls_{0};
};

} // namespace iocp_test
