#pragma once
// Skip the port on success, backend-neutral: on Win32 FILE_SKIP_COMPLETION_PORT_ON_SUCCESS per
// handle (win32/skip_on_success.hpp); on Linux nothing to skip (every completion is the I/O
// layer's own post: no kernel packet exists), so it is refused as not supported.

#include <system_error>

#include "../../config.hpp"
#include "../../error.hpp"
#include "io_state.hpp"

#if IOCP_HAS_IOCP
#include "win32/skip_on_success.hpp"
#endif

namespace iocp::detail::io {

#if IOCP_HAS_IOCP
using win32::enable_skip_on_success;
using win32::skips_on_success;
#else
inline std::error_code enable_skip_on_success(io_state* st) noexcept {
    if (st == nullptr)
        return make_error_code(errc::invalid_handle);
    return std::make_error_code(std::errc::operation_not_supported);
}
inline bool skips_on_success(const io_state*) noexcept { return false; }
#endif

} // namespace iocp::detail::io
