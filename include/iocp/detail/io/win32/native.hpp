#pragma once
// The Win32 half of the per-handle work: what a handle is, how it joins a pool, is cancelled
// and closed, and how a Win32/WSA error reads. The neutral layer (io_state.hpp) reaches it as
// detail::io::native (native.hpp picks this file or linux/native.hpp).

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <system_error>

#include "../../../error.hpp"
#include "../../../thread_pool.hpp"
#include "../../win32/error_table.hpp"
#include "../../win32/windows.hpp"
#include "../op_core.hpp"
#include "winsock.hpp"

namespace iocp::detail::io::win32 {

using detail::win32::classify_error;
using detail::win32::error_kind;
using detail::win32::last_wsa_error;

// The table's numbers are the SDK's (ERROR_HANDLES_CLOSED, 676, is not in every <winerror.h>).
static_assert(classify_error(ERROR_OPERATION_ABORTED).kind == error_kind::aborted);
static_assert(classify_error(WSAECANCELLED).kind == error_kind::aborted);
static_assert(classify_error(ERROR_NETNAME_DELETED).kind == error_kind::closed_or_reset);
static_assert(classify_error(WSAECONNRESET).kind == error_kind::connection_reset);
static_assert(classify_error(WSAENETRESET).kind == error_kind::connection_reset);
static_assert(classify_error(ERROR_CONNECTION_ABORTED).kind == error_kind::connection_aborted);
static_assert(classify_error(WSAECONNABORTED).kind == error_kind::connection_aborted);
static_assert(detail::win32::is_per_connection_error(ERROR_UNEXP_NET_ERR));
static_assert(classify_error(ERROR_HANDLE_EOF).kind == error_kind::eof);
static_assert(classify_error(ERROR_BROKEN_PIPE).kind == error_kind::eof);
static_assert(classify_error(ERROR_NO_DATA).kind == error_kind::connection_reset);
static_assert(classify_error(ERROR_PIPE_NOT_CONNECTED).kind == error_kind::connection_reset);
static_assert(classify_error(ERROR_CONNECTION_REFUSED).kind == error_kind::refused);
static_assert(classify_error(WSAECONNREFUSED).kind == error_kind::refused);
static_assert(classify_error(WAIT_TIMEOUT).kind == error_kind::timed_out);
static_assert(classify_error(ERROR_SEM_TIMEOUT).kind == error_kind::timed_out);
static_assert(classify_error(WSAETIMEDOUT).kind == error_kind::timed_out);
static_assert(classify_error(ERROR_ABANDONED_WAIT_0).kind == error_kind::port_closed);
static_assert(classify_error(ERROR_INVALID_HANDLE).kind == error_kind::invalid_handle);
static_assert(classify_error(WSAENOTSOCK).kind == error_kind::invalid_handle);
static_assert(classify_error(WSAEMSGSIZE).kind == error_kind::message_size);
static_assert(classify_error(ERROR_MORE_DATA).kind == error_kind::message_size);

using handle_type = HANDLE;
using socket_type = SOCKET;

inline handle_type invalid_handle() noexcept { return INVALID_HANDLE_VALUE; }
inline bool valid(handle_type h) noexcept { return h != nullptr && h != INVALID_HANDLE_VALUE; }
inline socket_type as_socket(handle_type h) noexcept { return reinterpret_cast<SOCKET>(h); }
inline handle_type from_socket(socket_type s) noexcept { return reinterpret_cast<HANDLE>(s); }
inline constexpr socket_type invalid_socket = INVALID_SOCKET;

// What a Win32 handle's state keeps besides the neutral fields.
struct state_extra {
    // Sockets: this state holds the socket's use of Winsock (see winsock.hpp).
    bool holds_winsock = false;
    // Sockets: the provider's extension functions, loaded on first use (see winsock.hpp).
    std::atomic<LPFN_ACCEPTEX> accept_ex{nullptr};
    std::atomic<LPFN_CONNECTEX> connect_ex{nullptr};
    std::atomic<LPFN_GETACCEPTEXSOCKADDRS> get_accept_ex_sockaddrs{nullptr};
    // FILE_SKIP_COMPLETION_PORT_ON_SUCCESS is set on the handle (skip_on_success.hpp): a call
    // done at once queues no packet. Set once, before any operation is started.
    std::atomic<bool> skip_on_success{false};
    // Calls that completed at once on such a handle: each a port packet saved (tests, bench).
    std::atomic<std::uint64_t> skipped_packets{0};
    state_extra() = default;
    state_extra(const state_extra&) = delete;
    state_extra& operator=(const state_extra&) = delete;
    // The last reference is gone: no completion of this handle will run any more, so its
    // use of Winsock can go too.
    ~state_extra() {
        if (holds_winsock)
            detail::win32::winsock_release();
    }
};

// Binds `h` to the pool's port with `key` (the io_state) as its completion key.
inline std::error_code attach(thread_pool& pool, handle_type h, void* key, handle_kind kind,
                              state_extra& extra) noexcept {
    std::error_code ec;
    pool.associate(h, key, ec);
    if (!ec)
        extra.holds_winsock = kind == handle_kind::socket; // handed over by make_tcp_socket
    return ec;
}

// Asks every pending operation of `h` to complete, aborted (pool shutdown, close).
inline void cancel_all(handle_type h) noexcept { ::CancelIoEx(h, nullptr); }

// Asks the one operation started on `h` with `ov` to complete, aborted (a coroutine's stop
// request): CancelIoEx with that OVERLAPPED. ERROR_NOT_FOUND (it completed already) is not an
// error: its packet is on its way (WIN32-NOTES 4).
inline void cancel_one(handle_type h, overlapped* ov) noexcept {
    (void)::CancelIoEx(h, reinterpret_cast<OVERLAPPED*>(ov));
}

// As cancel_all, reporting errors (socket::cancel, file::cancel).
inline std::error_code cancel(handle_type h) noexcept {
    if (!::CancelIoEx(h, nullptr) && ::GetLastError() != ERROR_NOT_FOUND)
        return {static_cast<int>(::GetLastError()), std::system_category()};
    return {}; // ERROR_NOT_FOUND: nothing was pending
}

// Nothing to undo before closing: the port forgets a handle when it closes.
inline void detach(handle_type) noexcept {}

inline std::error_code close(handle_type h, handle_kind kind) noexcept {
    if (kind == handle_kind::socket) {
        if (::closesocket(as_socket(h)) != 0)
            return last_wsa_error();
        return {};
    }
    if (!::CloseHandle(h))
        return {static_cast<int>(::GetLastError()), std::system_category()};
    return {};
}

// The error an operation reports, normalised by the error table: the "aborted" family (995,
// Wine's 676, ...) is errc::operation_aborted; so are ERROR_NETNAME_DELETED and the
// connection resets and aborts when we closed the handle or the pool cancelled it (`ours`); a
// peer reset is errc::connection_reset; end of file, refused connections and bad handles get
// their errc (readable messages, same meaning on both backends). Other codes (timeouts, a
// connection aborted by the stack, ...) stay as the system reported them: they still compare
// equal to their errc through error.hpp, which reads the same table.
inline std::error_code translate(const std::error_code& e, bool ours) noexcept {
    if (!e || e.category() != std::system_category())
        return e;
    switch (classify_error(e.value()).kind) {
    case error_kind::aborted: return make_error_code(errc::operation_aborted);
    case error_kind::closed_or_reset:
    case error_kind::connection_reset:
        return make_error_code(ours ? errc::operation_aborted : errc::connection_reset);
    case error_kind::connection_aborted: return ours ? make_error_code(errc::operation_aborted) : e;
    case error_kind::eof: return make_error_code(errc::eof);
    case error_kind::refused: return make_error_code(errc::connection_refused);
    // A handle we closed under a pending or continuing operation (WSAENOTSOCK from a
    // send_all's next WSASend, say): our close. An operation the closed object refuses at its
    // start stays invalid_handle (that error is the library's own, not the kernel's).
    case error_kind::invalid_handle:
        return make_error_code(ours ? errc::operation_aborted : errc::invalid_handle);
    case error_kind::message_size: return std::make_error_code(std::errc::message_size);
    case error_kind::timed_out:
    case error_kind::port_closed:
    case error_kind::unclassified: return e;
    }
    return e;
}

// Whether an accept that failed with `ec` (as translate normalised it) lost only that one
// connection: a client that reset or aborted before we took it, Wine's ERROR_UNEXP_NET_ERR.
inline bool is_per_connection_error(const std::error_code& ec) noexcept {
    if (ec == make_error_code(errc::connection_reset))
        return true; // ERROR_NETNAME_DELETED or a reset, normalised
    return ec.category() == std::system_category() &&
           detail::win32::is_per_connection_error(ec.value());
}

// A new overlapped TCP socket counting as one user of Winsock (see winsock.hpp).
inline socket_type make_tcp_socket(int family, std::error_code& ec) noexcept {
    return detail::win32::make_tcp_socket(family, ec);
}
// A new overlapped UDP socket counting as one user of Winsock (see winsock.hpp).
inline socket_type make_udp_socket(int family, std::error_code& ec) noexcept {
    return detail::win32::make_udp_socket(family, ec);
}
// A new datagram socket: turns off SIO_UDP_CONNRESET. Without it, an ICMP "port unreachable"
// answering one of its sends makes the socket's next receive fail with WSAECONNRESET (on an
// unconnected socket, about a datagram to some other peer): "SIO_UDP_CONNRESET (opcode
// setting: I, T==3)" in Microsoft's "Winsock IOCTLs" reference, and KB 263823.
inline std::error_code prepare_datagram(socket_type s) noexcept {
    BOOL report = FALSE;
    DWORD bytes = 0;
    if (::WSAIoctl(s, SIO_UDP_CONNRESET, &report, sizeof report, nullptr, 0, &bytes, nullptr,
                   nullptr) != 0)
        return last_wsa_error();
    return {};
}
inline void close_socket(socket_type s) noexcept { detail::win32::close_tcp_socket(s); }
inline std::error_code last_socket_error() noexcept { return last_wsa_error(); }

// Opens a file for overlapped I/O; others may read, write and delete it meanwhile.
inline handle_type open_file(const std::filesystem::path& path, open_flags f,
                             std::error_code& ec) noexcept {
    DWORD access = 0;
    if (f.read)
        access |= GENERIC_READ;
    if (f.write)
        access |= GENERIC_WRITE;
    DWORD disposition = OPEN_EXISTING;
    if (f.create)
        disposition = f.exclusive ? CREATE_NEW : f.truncate ? CREATE_ALWAYS : OPEN_ALWAYS;
    else if (f.truncate)
        disposition = TRUNCATE_EXISTING;
    HANDLE h =
        ::CreateFileW(path.c_str(), access, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                      nullptr, disposition, FILE_ATTRIBUTE_NORMAL | FILE_FLAG_OVERLAPPED, nullptr);
    if (h == INVALID_HANDLE_VALUE)
        ec.assign(static_cast<int>(::GetLastError()), std::system_category());
    else
        ec.clear();
    return h;
}

// Whether `h` can be an iocp::file. Windows decides at CreateFileW (a directory needs
// FILE_FLAG_BACKUP_SEMANTICS) and at the first ReadFile/WriteFile: nothing to check here.
inline bool check_file(handle_type, std::error_code& ec) noexcept {
    ec.clear();
    return true;
}

inline std::uint64_t file_size(handle_type h, std::error_code& ec) noexcept {
    LARGE_INTEGER n{};
    if (!::GetFileSizeEx(h, &n)) {
        ec.assign(static_cast<int>(::GetLastError()), std::system_category());
        return 0;
    }
    ec.clear();
    return static_cast<std::uint64_t>(n.QuadPart);
}

// Closes a handle no state took.
inline void close_unowned(handle_type h) noexcept {
    if (valid(h))
        ::CloseHandle(h);
}

// The socket calls file::, socket:: and acceptor:: make, in one spelling for both backends.
inline constexpr int shut_receive = SD_RECEIVE, shut_send = SD_SEND, shut_both = SD_BOTH;
inline int sock_bind(socket_type s, const sockaddr* a, int len) noexcept {
    return ::bind(s, a, len);
}
inline int sock_listen(socket_type s, int backlog) noexcept { return ::listen(s, backlog); }
inline int sock_name(socket_type s, sockaddr* a, int* len) noexcept {
    return ::getsockname(s, a, len);
}
inline int sock_peer(socket_type s, sockaddr* a, int* len) noexcept {
    return ::getpeername(s, a, len);
}
inline int sock_setopt(socket_type s, int level, int name, const void* v, int len) noexcept {
    return ::setsockopt(s, level, name, static_cast<const char*>(v), len);
}
inline int sock_shutdown(socket_type s, int how) noexcept { return ::shutdown(s, how); }
// connect on a datagram socket: sets the default peer at once (no handshake, never blocks).
inline int sock_connect(socket_type s, const sockaddr* a, int len) noexcept {
    return ::connect(s, a, len);
}
inline int sock_linger(socket_type s, bool on, int seconds) noexcept {
    LINGER l{};
    l.l_onoff = on ? 1 : 0;
    l.l_linger = static_cast<u_short>(seconds);
    return ::setsockopt(s, SOL_SOCKET, SO_LINGER, reinterpret_cast<const char*>(&l), sizeof l);
}
// After ConnectEx: makes getpeername, shutdown and the like work on the connected socket.
inline std::error_code after_connect(socket_type s) noexcept {
    if (::setsockopt(s, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, nullptr, 0) != 0)
        return last_wsa_error();
    return {};
}
// ConnectEx needs a bound socket.
inline constexpr bool connect_needs_bind = true;

} // namespace iocp::detail::io::win32
