#pragma once
// The one place the library includes the Windows headers. <winsock2.h> must come before
// <windows.h> (or <windows.h> drags in the old <winsock.h> and the two clash), and the user
// may or may not have defined WIN32_LEAN_AND_MEAN / NOMINMAX: we work either way and always
// write (std::min)(a, b).

#ifndef NOMINMAX
#define NOMINMAX
#define IOCP_DEFINED_NOMINMAX
#endif

// clang-format off
#include <winsock2.h>
#include <ws2tcpip.h>
#include <mswsock.h>
#include <windows.h>
// clang-format on

#ifdef IOCP_DEFINED_NOMINMAX
#undef NOMINMAX
#undef IOCP_DEFINED_NOMINMAX
#endif
