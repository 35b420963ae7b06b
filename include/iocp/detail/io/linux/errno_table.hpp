#pragma once
// The one table of what an errno means to the I/O layer on Linux (the counterpart of
// detail/win32/error_table.hpp). Values measured on Linux (LINUX-IO-NOTES 5): a peer reset gives
// ECONNRESET on recv and the first send, EPIPE on the next send; a refused connect
// ECONNREFUSED; a closed descriptor EBADF; a receive on a file ENOTSOCK; a cancelled
// operation ECANCELED; a datagram over the size limit EMSGSIZE.

#include <cerrno>
#include <system_error>

#include "../../../error.hpp"

namespace iocp::detail::io::lnx {

// The error an operation reports, normalised: `ours` is whether we closed the handle or the
// pool's shutdown cancelled it (then a reset or a broken pipe is our own doing).
inline std::error_code translate_errno(const std::error_code& e, bool ours) noexcept {
    if (!e || e.category() != std::system_category())
        return e;
    switch (e.value()) {
    case ECANCELED: return make_error_code(errc::operation_aborted);
    case ECONNRESET:
    case EPIPE: return make_error_code(ours ? errc::operation_aborted : errc::connection_reset);
    case ECONNABORTED: return ours ? make_error_code(errc::operation_aborted) : e;
    case ECONNREFUSED: return make_error_code(errc::connection_refused);
    // A handle we closed under a pending or continuing operation: that is our close, as on
    // Win32 (an operation the closed object refuses at its start stays invalid_handle: that
    // error is the library's own, not the kernel's).
    case EBADF:
    case ENOTSOCK: return make_error_code(ours ? errc::operation_aborted : errc::invalid_handle);
    // A datagram too large to send (sendmsg(2)); a truncated receive is reported with the same
    // code by the datagram socket (MSG_TRUNC is a flag, not an errno). Win32: WSAEMSGSIZE.
    case EMSGSIZE: return std::make_error_code(std::errc::message_size);
    default: return e;
    }
}

// Whether an accept that failed with `value` lost only that one connection (accept(2), "Error
// handling": the pending connection's own network errors are reported by accept).
constexpr bool is_per_connection_errno(int value) noexcept {
    switch (value) {
    case ECONNABORTED:
    case EPROTO:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case ENETUNREACH: return true;
    default: return false;
    }
}

} // namespace iocp::detail::io::lnx
