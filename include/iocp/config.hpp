#pragma once
/// @file
/// Platform and backend selection. Everything else asks these macros, never `_WIN32` directly.
///
/// - `IOCP_WINDOWS` is 1 when compiling for Windows (the platform: handles, `OVERLAPPED`).
/// - `IOCP_HAS_LIBURING`, defined to 1 by the CMake package when liburing is found (and linked
///   through `iocp::iocp`): compiles in the io_uring backend of files and sockets on Linux. Using
///   the headers without CMake, define it yourself and link `-luring`; without it, Linux I/O
///   runs on epoll.
/// - `IOCP_HAS_IOCP` is 1 when the completion port is the kernel's IOCP. Define
///   `IOCP_FORCE_POSIX_BACKEND` before including any iocp header to use the user-space port on
///   Windows too (that is how the tests run both backends there).

#if defined(_WIN32)
/// 1 when compiling for Windows, else 0.
#define IOCP_WINDOWS 1
#else
/// 1 when compiling for Windows, else 0.
#define IOCP_WINDOWS 0
#endif

#if IOCP_WINDOWS && !defined(IOCP_FORCE_POSIX_BACKEND)
/// 1 when the completion port is the kernel's IOCP, 0 for the user-space port.
#define IOCP_HAS_IOCP 1
#else
/// 1 when the completion port is the kernel's IOCP, 0 for the user-space port.
#define IOCP_HAS_IOCP 0
#endif

#if IOCP_HAS_IOCP || !IOCP_WINDOWS
/// 1 where files and sockets exist: the Win32 backend (overlapped calls on the kernel's IOCP)
/// and Linux (io_uring or epoll). 0 on Windows with IOCP_FORCE_POSIX_BACKEND.
#define IOCP_HAS_IO 1
#else
/// 1 where files and sockets exist (see above).
#define IOCP_HAS_IO 0
#endif

namespace iocp {

#if IOCP_WINDOWS
/// The platform's I/O handle: a Win32 `HANDLE` (or a `SOCKET` cast to one).
using native_handle_type = void*;
#else
/// The platform's I/O handle: a file descriptor.
using native_handle_type = int;
#endif

} // namespace iocp
