// Instantiates what a user's program instantiates, so that the compiler's optimisers see the
// library's code at every level (see CMakeLists.txt). Compiled, never run: each function only
// has to be emitted, with external linkage so that no level can drop it. Only long-standing
// public calls appear here; the tests, built at -O0, -O2 and -O3 by the CI configurations,
// instantiate everything else.
//
// The thread pool, its timers and errors.
#include <iocp/error.hpp>
#include <iocp/thread_pool.hpp>

#include <chrono>
#include <future>
#include <system_error>

namespace header_check {

int use_thread_pool() {
    iocp::thread_pool pool(2);
    int runs = 0;
    pool.post([&runs] { ++runs; });
    std::error_code ec;
    pool.post([&runs] { ++runs; }, ec);
    std::future<int> f = pool.submit([] { return 42; });
    iocp::timer_id id = pool.post_after(std::chrono::milliseconds(5), [] {});
    pool.post_at(std::chrono::steady_clock::now() + std::chrono::milliseconds(5), [] {});
    static_cast<void>(pool.cancel(id));
    pool.wait();
    const int result = f.get() + runs;
    static_cast<void>(pool.stop());
    pool.join();
    return result;
}

bool use_errors() {
    const std::error_code ec = iocp::make_error_code(iocp::errc::closed);
    return ec == iocp::errc::closed && !ec.message().empty();
}

} // namespace header_check
