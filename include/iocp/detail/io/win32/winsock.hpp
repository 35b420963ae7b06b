#pragma once
// Winsock start-up (counted: the library holds one WSAStartup while any socket of its own is
// open) and the Microsoft extension functions (AcceptEx, ConnectEx, GetAcceptExSockaddrs),
// which are not exported by ws2_32 and must be asked for through
// WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER).

#include <atomic>
#include <cstddef>
#include <system_error>

#include "../../win32/windows.hpp"

namespace iocp::detail::win32 {

inline std::error_code wsa_error(int code) noexcept { return {code, std::system_category()}; }
inline std::error_code last_wsa_error() noexcept { return wsa_error(::WSAGetLastError()); }

// Winsock start-up is counted: every WSAStartup is paired with one WSACleanup, and Winsock
// stays up while any pair is open. The library counts its own users (each socket it creates,
// each endpoint::parse call) and holds one WSAStartup while that count is above 0. A socket
// gives its use back only when nothing can use that socket any more: when its io_state is
// freed, after the last completion of its operations ran (an accept's completion still calls
// setsockopt and GetAcceptExSockaddrs). So no static destructor ends Winsock under a static
// pool whose socket completions are still pending (WIL's network.h warns of exactly that).
//
// TRICKY: one WSAStartup for all the library's users, taken and given back under a lock, not one
// per socket. Microsoft's WSACleanup reference: the final call resets and deallocates every socket
// still open ("as if closesocket were called") for all threads of the process. Wine's ws2_32 (8.0,
// read from its WSAStartup/WSACleanup) keeps that count in a plain int, and its final WSACleanup
// closes every handle of its socket table and then clears the table, neither under a lock. A socket
// another thread creates (WSAStartup, WSASocketW) while a final WSACleanup runs is then closed
// under its owner, or stays open but leaves the table: its closesocket fails with WSAENOTSOCK and
// it is never closed (seen as a listener left listening after acceptor::close, its clients never
// answered). With one reference, given back under the same lock new users wait on, the library
// never calls WSAStartup and WSACleanup on two threads at once and never creates a socket while its
// own final WSACleanup runs. Users beyond the first take a lock-free path: Winsock is known to be
// up while the count is above 0. (A program that calls WSAStartup/WSACleanup itself on other
// threads still meets Wine's race: not ours.)
struct winsock_users {
    // The library's users of Winsock; the library holds one WSAStartup while this is above 0.
    static inline std::atomic<std::size_t> count{0};
    // Orders the 0 -> 1 (WSAStartup) and 1 -> 0 (WSACleanup) steps. An SRWLOCK: constant-
    // initialised and without a destructor, so it stays usable from a static pool's
    // destructor, whatever the order of static destruction.
    static inline SRWLOCK lock = SRWLOCK_INIT;
};

// One more user of Winsock: starts Winsock (WSAStartup) if the library did not hold it.
// Errors: WSAStartup's (WSASYSNOTREADY, WSAEPROCLIM...); the count is then unchanged.
inline std::error_code winsock_acquire() noexcept {
    std::atomic<std::size_t>& n = winsock_users::count;
    for (std::size_t c = n.load(std::memory_order_relaxed); c != 0;)
        if (n.compare_exchange_weak(c, c + 1, std::memory_order_acquire, std::memory_order_relaxed))
            return {}; // the library's reference is held, and cannot go while we count
    std::error_code ec;
    ::AcquireSRWLockExclusive(&winsock_users::lock);
    if (n.load(std::memory_order_relaxed) == 0) {
        WSADATA data;
        if (const int error = ::WSAStartup(MAKEWORD(2, 2), &data); error != 0)
            ec = wsa_error(error);
    }
    if (!ec)
        n.fetch_add(1, std::memory_order_release);
    ::ReleaseSRWLockExclusive(&winsock_users::lock);
    return ec;
}

// One user less: the last one gives the library's reference back (WSACleanup).
inline void winsock_release() noexcept {
    std::atomic<std::size_t>& n = winsock_users::count;
    for (std::size_t c = n.load(std::memory_order_relaxed); c > 1;)
        if (n.compare_exchange_weak(c, c - 1, std::memory_order_acq_rel, std::memory_order_relaxed))
            return;
    // Perhaps the last: 1 -> 0 only under the lock, so that no acquire starts Winsock while
    // this WSACleanup runs (an acquire that sees 0 waits for the lock).
    ::AcquireSRWLockExclusive(&winsock_users::lock);
    if (n.fetch_sub(1, std::memory_order_acq_rel) == 1)
        ::WSACleanup();
    ::ReleaseSRWLockExclusive(&winsock_users::lock);
}

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

// A new overlapped TCP socket, not inheritable by child processes. It counts as one user of
// Winsock: close it with close_tcp_socket, or hand it (and that use) to an io_state.
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

// A new overlapped UDP socket, as make_tcp_socket (one user of Winsock; close it with
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
// its use of Winsock.
inline void close_tcp_socket(SOCKET s) noexcept {
    if (s == INVALID_SOCKET)
        return;
    ::closesocket(s);
    winsock_release();
}

} // namespace iocp::detail::win32
