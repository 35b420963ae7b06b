#pragma once
// Test-only fault injection: makes the port's post fail on demand, as PostQueuedCompletionStatus
// does when the system runs out of non-paged pool. Compiled in only when the including program
// defines IOCP_FAULT_INJECTION (the tests' fault programs do); otherwise every check is a
// constant `false` that the compiler removes.

#if defined(IOCP_FAULT_INJECTION)
#include <atomic>
#endif

namespace iocp::detail::fault_injection {

#if defined(IOCP_FAULT_INJECTION)

// How many of the next port posts fail (any thread). A test sets it; each failed post takes one.
inline std::atomic<long> port_post_failures{0};

// True if this post must fail (and consumes one injected failure).
inline bool fail_port_post() noexcept {
    long n = port_post_failures.load(std::memory_order_relaxed);
    while (n > 0) {
        if (port_post_failures.compare_exchange_weak(n, n - 1, std::memory_order_relaxed))
            return true;
    }
    return false;
}

#else

constexpr bool fail_port_post() noexcept { return false; }

#endif

} // namespace iocp::detail::fault_injection
