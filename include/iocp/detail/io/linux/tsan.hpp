#pragma once
// ThreadSanitizer cannot see the ordering the kernel gives between threads through io_uring (an
// SQE submitted by one thread, its CQE reaped by another) or epoll (a registration made by one
// thread, its event returned to another). The backends tell it, as Asio does [asio commit
// bdd3d69]: tsan_release before handing something to the kernel, tsan_acquire after taking it
// back. Without ThreadSanitizer both compile to nothing.

#if defined(__SANITIZE_THREAD__)
#define IOCP_DETAIL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define IOCP_DETAIL_TSAN 1
#endif
#endif

#if defined(IOCP_DETAIL_TSAN)
// NOLINTNEXTLINE(bugprone-reserved-identifier,readability-identifier-naming): TSan's own API
extern "C" void __tsan_acquire(void* addr);
// NOLINTNEXTLINE(bugprone-reserved-identifier,readability-identifier-naming): TSan's own API
extern "C" void __tsan_release(void* addr);
#endif

namespace iocp::detail::io::lnx {

inline void tsan_release([[maybe_unused]] void* addr) noexcept {
#if defined(IOCP_DETAIL_TSAN)
    __tsan_release(addr);
#endif
}

inline void tsan_acquire([[maybe_unused]] void* addr) noexcept {
#if defined(IOCP_DETAIL_TSAN)
    __tsan_acquire(addr);
#endif
}

} // namespace iocp::detail::io::lnx
