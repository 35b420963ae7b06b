#pragma once
// The one place that picks the Linux I/O backend, once per process (see backend.hpp):
//   IOCP_IO_BACKEND=epoll     epoll
//   IOCP_IO_BACKEND=io_uring  io_uring, or epoll when it cannot be set up
//   unset (or anything else)  io_uring when liburing was compiled in (IOCP_HAS_LIBURING) and
//                             io_uring_queue_init works here, else epoll
// io_uring_queue_init fails with ENOSYS without CONFIG_IO_URING, with EPERM under Docker's
// default seccomp profile or kernel.io_uring_disabled (LINUX-IO-NOTES 2): the choice is made
// on that call, never per operation.

#include <cstdlib>
#include <cstring>
#include <memory>

#include "backend.hpp"
#include "epoll_backend.hpp"
#include "uring_backend.hpp"

#include <cstdio>

namespace iocp::detail::io::lnx {

inline backend* choose_backend() noexcept {
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
    std::error_code ec;
    if (std::unique_ptr<backend> b = epoll_backend::create(ec))
        return b.release();
    // Not even epoll (no descriptors or threads left at the first I/O object): there is no
    // way to run I/O, and instance() has no error to return. Say why before stopping.
    std::fprintf(stderr, "iocp: cannot start the epoll I/O backend: %s\n", ec.message().c_str());
    std::abort();
}

// TRICKY: a function-local static is initialised once even when several threads make their
// first I/O object at the same time (C++11 "magic statics"). Never destroyed: the backend's
// threads may still be completing operations while static destructors run.
inline backend& instance() noexcept {
    static backend* const chosen = choose_backend();
    return *chosen;
}

} // namespace iocp::detail::io::lnx

namespace iocp {

/// The I/O backend files and sockets use in this process: "io_uring" or "epoll" on Linux
/// (chosen at first use; `IOCP_IO_BACKEND=epoll|io_uring` in the environment picks one, and
/// io_uring falls back to epoll where the kernel refuses it). Thread safety: any thread.
inline const char* io_backend_name() noexcept { return detail::io::lnx::instance().name(); }

} // namespace iocp
