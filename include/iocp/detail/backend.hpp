#pragma once
// The one place that picks the completion port backend (see config.hpp).

#include "../config.hpp"

#if IOCP_HAS_IOCP
#include "win32/port_impl.hpp"
namespace iocp::detail {
using port_impl = win32::port_impl;
}
#else
#include "posix/port_impl.hpp"
namespace iocp::detail {
using port_impl = posix::port_impl;
}
#endif
