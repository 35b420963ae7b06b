#pragma once
// The io_uring backend (liburing): one ring per process, a submit mutex, one reaper thread.
// Skeleton: the names select.hpp uses; the implementation follows.

#include "backend.hpp"

#if defined(IOCP_HAS_LIBURING) && IOCP_HAS_LIBURING

#include <memory>

namespace iocp::detail::io::lnx {

class uring_backend final : public backend {
public:
    /// The backend, or nullptr when io_uring cannot be set up here.
    static std::unique_ptr<backend> try_create() noexcept;
};

} // namespace iocp::detail::io::lnx

#endif // IOCP_HAS_LIBURING
