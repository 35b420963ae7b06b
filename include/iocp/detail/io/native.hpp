#pragma once
// The one place that picks the I/O layer's backend half: win32/ with the kernel's IOCP,
// linux/ on Linux. Everything above reaches it as detail::io::native.

#include "../../config.hpp"

#if IOCP_HAS_IOCP
#include "win32/native.hpp"
namespace iocp::detail::io {
namespace native = win32;
}
namespace iocp {
/// The I/O backend files and sockets use: "iocp" with the Win32 backend.
inline const char* io_backend_name() noexcept { return "iocp"; }
} // namespace iocp
#elif !IOCP_WINDOWS
#include "linux/native.hpp"
namespace iocp::detail::io {
namespace native = lnx;
}
#endif
