#pragma once
// Winsock start-up (once per process, thread-safe) and the Microsoft extension functions
// (AcceptEx, ConnectEx, GetAcceptExSockaddrs), which are not exported by ws2_32 and must be
// asked for through WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER).

#include <atomic>
#include <system_error>

#include "windows.hpp"

namespace iocp::detail::win32 {

inline std::error_code wsa_error(int code) noexcept { return {code, std::system_category()}; }
inline std::error_code last_wsa_error() noexcept { return wsa_error(::WSAGetLastError()); }

// Calls WSAStartup once (a function-local static: C++ makes its initialisation thread-safe)
// and WSACleanup when the program ends. Every object that creates a socket calls this first,
// so the static is constructed before those objects finish construction and is therefore
// destroyed after them, even when they are statics themselves.
inline std::error_code winsock_init() noexcept {
    struct startup {
        int error = 0;
        startup() noexcept {
            WSADATA data;
            error = ::WSAStartup(MAKEWORD(2, 2), &data);
        }
        ~startup() {
            if (error == 0)
                ::WSACleanup();
        }
        startup(const startup&) = delete;
        startup& operator=(const startup&) = delete;
    };
    static const startup instance;
    return instance.error == 0 ? std::error_code{} : wsa_error(instance.error);
}

// The extension functions of one address family's provider. Loaded from the first socket of
// that family that needs them and cached: every TCP socket of a family is served by the same
// provider. Two threads racing to load store the same pointer, so relaxed atomics suffice.
struct extension_table {
    std::atomic<LPFN_ACCEPTEX> accept_ex{nullptr};
    std::atomic<LPFN_CONNECTEX> connect_ex{nullptr};
    std::atomic<LPFN_GETACCEPTEXSOCKADDRS> get_accept_ex_sockaddrs{nullptr};
};

inline extension_table& extensions(int family) noexcept {
    static extension_table v4;
    static extension_table v6;
    return family == AF_INET6 ? v6 : v4;
}

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

inline LPFN_ACCEPTEX accept_ex(SOCKET s, int family, std::error_code& ec) noexcept {
    const GUID guid = WSAID_ACCEPTEX;
    return load_extension(s, guid, extensions(family).accept_ex, ec);
}

inline LPFN_CONNECTEX connect_ex(SOCKET s, int family, std::error_code& ec) noexcept {
    const GUID guid = WSAID_CONNECTEX;
    return load_extension(s, guid, extensions(family).connect_ex, ec);
}

inline LPFN_GETACCEPTEXSOCKADDRS get_accept_ex_sockaddrs(SOCKET s, int family,
                                                         std::error_code& ec) noexcept {
    const GUID guid = WSAID_GETACCEPTEXSOCKADDRS;
    return load_extension(s, guid, extensions(family).get_accept_ex_sockaddrs, ec);
}

// A new overlapped TCP socket, not inheritable by child processes.
inline SOCKET make_tcp_socket(int family, std::error_code& ec) noexcept {
    if ((ec = winsock_init()))
        return INVALID_SOCKET;
    SOCKET s = ::WSASocketW(family, SOCK_STREAM, IPPROTO_TCP, nullptr, 0,
                            WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
    if (s == INVALID_SOCKET)
        ec = last_wsa_error();
    return s;
}

} // namespace iocp::detail::win32
