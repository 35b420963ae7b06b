#pragma once
// Winsock start-up (counted: one reference per socket) and the Microsoft extension functions
// (AcceptEx, ConnectEx, GetAcceptExSockaddrs), which are not exported by ws2_32 and must be
// asked for through WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER).

#include <atomic>
#include <system_error>

#include "../../win32/windows.hpp"

namespace iocp::detail::win32 {

inline std::error_code wsa_error(int code) noexcept { return {code, std::system_category()}; }
inline std::error_code last_wsa_error() noexcept { return wsa_error(::WSAGetLastError()); }

// Winsock start-up is counted: every WSAStartup is paired with one WSACleanup, and Winsock
// stays up while any pair is open. The library takes one reference per socket it creates and
// gives it back only when nothing can use that socket any more: when its io_state is freed,
// after the last completion of its operations ran (an accept's completion still calls
// setsockopt and GetAcceptExSockaddrs). So no static destructor ends Winsock under a static
// pool whose socket completions are still pending (WIL's network.h warns of exactly that).
inline std::error_code winsock_acquire() noexcept {
    WSADATA data;
    if (const int error = ::WSAStartup(MAKEWORD(2, 2), &data); error != 0)
        return wsa_error(error);
    return {};
}

inline void winsock_release() noexcept { ::WSACleanup(); }

// The extension functions are cached per socket (in its io_state), not per process: a
// process-wide cache would outlive the Winsock reference that keeps the provider loaded.
// Two threads racing to load store the same pointer, so relaxed atomics suffice.
template <class Fn>
Fn load_extension(SOCKET s, GUID guid, std::atomic<Fn>& cache, std::error_code& ec) noexcept {
    Fn fn = cache.load(std::memory_order_relaxed);
    if (fn != nullptr) {
        ec.clear();
        return fn;
    }
    DWORD bytes = 0;
    if (::WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &guid, sizeof guid, &fn, sizeof fn,
                   &bytes, nullptr, nullptr) != 0) {
        ec = last_wsa_error();
        return nullptr;
    }
    cache.store(fn, std::memory_order_relaxed);
    ec.clear();
    return fn;
}

inline LPFN_ACCEPTEX load_accept_ex(SOCKET s, std::atomic<LPFN_ACCEPTEX>& cache,
                                    std::error_code& ec) noexcept {
    return load_extension(s, WSAID_ACCEPTEX, cache, ec);
}

inline LPFN_CONNECTEX load_connect_ex(SOCKET s, std::atomic<LPFN_CONNECTEX>& cache,
                                      std::error_code& ec) noexcept {
    return load_extension(s, WSAID_CONNECTEX, cache, ec);
}

inline LPFN_GETACCEPTEXSOCKADDRS
load_get_accept_ex_sockaddrs(SOCKET s, std::atomic<LPFN_GETACCEPTEXSOCKADDRS>& cache,
                             std::error_code& ec) noexcept {
    return load_extension(s, WSAID_GETACCEPTEXSOCKADDRS, cache, ec);
}

// A new overlapped TCP socket, not inheritable by child processes. It holds one Winsock
// reference: close it with close_tcp_socket, or hand it (and the reference) to an io_state.
inline SOCKET make_tcp_socket(int family, std::error_code& ec) noexcept {
    if ((ec = winsock_acquire()))
        return INVALID_SOCKET;
    SOCKET s = ::WSASocketW(family, SOCK_STREAM, IPPROTO_TCP, nullptr, 0,
                            WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
    if (s == INVALID_SOCKET) {
        ec = last_wsa_error();
        winsock_release();
    }
    return s;
}

// A new overlapped UDP socket, as make_tcp_socket (one Winsock reference; close it with
// close_tcp_socket, or hand it to an io_state).
inline SOCKET make_udp_socket(int family, std::error_code& ec) noexcept {
    if ((ec = winsock_acquire()))
        return INVALID_SOCKET;
    SOCKET s = ::WSASocketW(family, SOCK_DGRAM, IPPROTO_UDP, nullptr, 0,
                            WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
    if (s == INVALID_SOCKET) {
        ec = last_wsa_error();
        winsock_release();
    }
    return s;
}

// Closes a socket of make_tcp_socket or make_udp_socket that no io_state took, and gives back
// its reference.
inline void close_tcp_socket(SOCKET s) noexcept {
    if (s == INVALID_SOCKET)
        return;
    ::closesocket(s);
    winsock_release();
}

} // namespace iocp::detail::win32
