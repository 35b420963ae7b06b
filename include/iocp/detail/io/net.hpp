#pragma once
// The socket API's headers, and the reference some calls need (Winsock must be started before
// inet_pton on Windows; nothing on Linux).

#include <system_error>

#include "../../config.hpp"

#if IOCP_WINDOWS
#include "../win32/windows.hpp"
#include "win32/winsock.hpp"
namespace iocp::detail::io {
inline std::error_code net_acquire() noexcept { return detail::win32::winsock_acquire(); }
inline void net_release() noexcept { detail::win32::winsock_release(); }
} // namespace iocp::detail::io
#else
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
namespace iocp::detail::io {
inline std::error_code net_acquire() noexcept { return {}; }
inline void net_release() noexcept {}
} // namespace iocp::detail::io
#endif
