#pragma once
// The one place that picks the Linux I/O backend, once per process (see backend.hpp):
//   IOCP_IO_BACKEND=epoll     epoll
//   IOCP_IO_BACKEND=io_uring  io_uring, or epoll when it cannot be set up
//   unset (or anything else)  io_uring when liburing was compiled in (IOCP_HAS_LIBURING) and
//                             io_uring_queue_init works here, else epoll
// io_uring_queue_init fails with ENOSYS without CONFIG_IO_URING, with EPERM under Docker's
// default seccomp profile or kernel.io_uring_disabled (LINUX-IO-NOTES 2): the choice is made
// on that call, never per operation.

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <system_error>

#include "backend.hpp"
#include "epoll_backend.hpp"
#include "uring_backend.hpp"

namespace iocp::detail::io::lnx {

// The backend this process can run, or nullptr with `ec` saying why not even epoll could be
// started (no descriptors or threads left, say).
inline backend* choose_backend(std::error_code& ec) noexcept {
    const char* forced = std::getenv("IOCP_IO_BACKEND");
    const bool want_epoll = forced != nullptr && std::strcmp(forced, "epoll") == 0;
#if defined(IOCP_HAS_LIBURING) && IOCP_HAS_LIBURING
    if (!want_epoll) {
        if (std::unique_ptr<backend> b = uring_backend::try_create())
            return b.release();
    }
#else
    (void)want_epoll;
#endif
    if (std::unique_ptr<backend> b = epoll_backend::create(ec))
        return b.release();
    return nullptr;
}

// The chosen backend; null until a choice succeeded. Never destroyed: the backend's threads may
// still be completing operations while static destructors run.
inline std::atomic<backend*> chosen_backend{nullptr};

// The process's backend, chosen at the first call that succeeds; nullptr with `ec` when none
// can be started now (EMFILE at the process's first I/O object, say). A failure is not
// remembered: the next I/O object tries again. (A shortage that lets epoll start but not
// io_uring leaves the process on epoll: the choice, once made, is for good.)
// Thread safety: any thread; concurrent first calls make one backend.
inline backend* try_instance(std::error_code& ec) noexcept {
    if (backend* b = chosen_backend.load(std::memory_order_acquire)) {
        ec.clear();
        return b;
    }
    static std::mutex choosing;
    std::lock_guard lock(choosing);
    backend* b = chosen_backend.load(std::memory_order_acquire);
    if (b == nullptr && (b = choose_backend(ec)) != nullptr)
        chosen_backend.store(b, std::memory_order_release);
    if (b != nullptr)
        ec.clear();
    return b;
}

// The backend of a handle already attached (attach() went through try_instance): it exists.
inline backend& instance() noexcept {
    backend* b = chosen_backend.load(std::memory_order_acquire);
    if (b == nullptr) {
        // Only a caller that skipped attach() can get here: a bug of the library's own.
        std::fputs("iocp: the Linux I/O backend was used before any handle was attached\n", stderr);
        std::abort();
    }
    return *b;
}

} // namespace iocp::detail::io::lnx

namespace iocp {

/// The I/O backend files and sockets use in this process: "io_uring" or "epoll" on Linux
/// (chosen at first use; `IOCP_IO_BACKEND=epoll|io_uring` in the environment picks one, and
/// io_uring falls back to epoll where the kernel refuses it). Thread safety: any thread.
/// "none" when no backend can be started now (see `file::open` / `socket::open` for the error).
inline const char* io_backend_name() noexcept {
    std::error_code ec;
    const detail::io::lnx::backend* b = detail::io::lnx::try_instance(ec);
    return b != nullptr ? b->name() : "none";
}

} // namespace iocp
