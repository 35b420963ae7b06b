#pragma once
// Counts every allocation of the test program that includes this header (in exactly one of its
// source files: it replaces the global operator new and delete). The allocations themselves are
// plain malloc/free; only the count is added.

#include <atomic>
#include <cstdlib>
#include <new>

#if defined(__GNUC__) && !defined(__clang__)
// Once these are inlined, GCC 12 at -O2 takes the free() for a mismatch with operator new.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace iocp_test {
inline std::atomic<long long> allocations{0};
} // namespace iocp_test

void* operator new(std::size_t n) {
    iocp_test::allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n == 0 ? 1 : n))
        return p;
    throw std::bad_alloc();
}
// The nothrow form too (the library allocates its per-handle states with it): left to the
// runtime, its memory would come from the runtime's operator new and reach the free() above,
// which AddressSanitizer reports as a mismatch.
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    iocp_test::allocations.fetch_add(1, std::memory_order_relaxed);
    return std::malloc(n == 0 ? 1 : n);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
