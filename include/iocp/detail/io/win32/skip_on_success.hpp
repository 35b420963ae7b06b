#pragma once
// Skip the port on success, per handle (Win32 only): SetFileCompletionNotificationModes with
// FILE_SKIP_COMPLETION_PORT_ON_SUCCESS | FILE_SKIP_SET_EVENT_ON_HANDLE, so that a call that
// succeeds at once queues no completion packet. The start guard (issue.hpp) then delivers the
// result itself, through the pool's own queue (start.hpp, deliver): exactly once, never inside
// the start call, and without the port's post and dequeue.
//
// Where it is safe (WIN32-NOTES.md, pitfall 6):
// - files, pipes and other kernel handles: always (the I/O manager implements the mode);
// - sockets: only when every Winsock provider a TCP or UDP socket of IPv4 or IPv6 can get is an
//   IFS provider (XP1_IFS_HANDLES). A non-IFS layered service provider (an LSP) completes I/O
//   itself and may report success at once while still queueing a packet, which would then
//   arrive for an operation already completed (or started again). libuv and cppcoro check the
//   same flag; we check every provider of those families (WSAEnumProtocols), layered chains
//   included, once per process.

#include <cstdint>
#include <memory>
#include <mutex>
#include <system_error>

#include "../../win32/windows.hpp"
#include "../io_state.hpp"
#include "native.hpp"

namespace iocp::detail::io::win32 {

// Whether every provider of TCP and UDP over IPv4 and IPv6 is an IFS provider. Providers of
// other families (Wine lists a non-IFS IPX provider) never serve our sockets and are ignored;
// layered protocol entries (ChainLen 0) are only reachable through a chain, which is checked.
// Needs Winsock started (the caller holds a socket, hence a WSAStartup reference).
inline bool all_socket_providers_ifs() noexcept {
    static const bool result = [] {
        DWORD len = 0;
        if (::WSAEnumProtocolsW(nullptr, nullptr, &len) != SOCKET_ERROR ||
            ::WSAGetLastError() != WSAENOBUFS || len == 0)
            return false; // cannot tell: not safe
        const std::size_t count = len / sizeof(WSAPROTOCOL_INFOW) + 1;
        std::unique_ptr<WSAPROTOCOL_INFOW[]> info(new (std::nothrow) WSAPROTOCOL_INFOW[count]);
        if (!info)
            return false;
        len = static_cast<DWORD>(count * sizeof(WSAPROTOCOL_INFOW));
        const int n = ::WSAEnumProtocolsW(nullptr, info.get(), &len);
        if (n == SOCKET_ERROR)
            return false;
        for (int i = 0; i < n; ++i) {
            const WSAPROTOCOL_INFOW& p = info[i];
            if (p.iAddressFamily != AF_INET && p.iAddressFamily != AF_INET6)
                continue;
            if (p.iSocketType != SOCK_STREAM && p.iSocketType != SOCK_DGRAM)
                continue;
            if (p.ProtocolChain.ChainLen == LAYERED_PROTOCOL)
                continue; // not a provider a socket gets directly
            if ((p.dwServiceFlags1 & XP1_IFS_HANDLES) == 0)
                return false;
        }
        return true;
    }();
    return result;
}

// Sets the mode on `st`'s handle and tells the start guard. Errors: errc::invalid_handle when
// closed; std::errc::device_or_resource_busy while an operation of the handle is in flight (a
// call issued before the mode changed could queue a packet the guard no longer expects);
// std::errc::operation_not_supported for a socket with a non-IFS provider; the system's error
// of SetFileCompletionNotificationModes. Enabling twice does nothing the second time.
inline std::error_code enable_skip_on_success(io_state* st) noexcept {
    if (st == nullptr || !valid(st->get()))
        return make_error_code(errc::invalid_handle);
    std::lock_guard lock(st->mutex);
    if (st->extra.skip_on_success.load(std::memory_order_relaxed))
        return {};
    // The owner holds one reference; each operation in flight holds another (in_flight.hpp).
    if (st->refs.load(std::memory_order_acquire) != 1)
        return std::make_error_code(std::errc::device_or_resource_busy);
    if (st->kind == handle_kind::socket && !all_socket_providers_ifs())
        return std::make_error_code(std::errc::operation_not_supported);
    if (!::SetFileCompletionNotificationModes(st->get(), FILE_SKIP_COMPLETION_PORT_ON_SUCCESS |
                                                             FILE_SKIP_SET_EVENT_ON_HANDLE))
        return {static_cast<int>(::GetLastError()), std::system_category()};
    st->extra.skip_on_success.store(true, std::memory_order_release);
    return {};
}

// Whether `st`'s handle skips the port on success.
inline bool skips_on_success(const io_state* st) noexcept {
    return st != nullptr && st->extra.skip_on_success.load(std::memory_order_acquire);
}

// How many completions of `st`'s handle skipped the port (each a packet saved).
inline std::uint64_t skipped_packets(const io_state* st) noexcept {
    return st != nullptr ? st->extra.skipped_packets.load(std::memory_order_relaxed) : 0;
}

} // namespace iocp::detail::io::win32
