#pragma once
/// @file
/// Errors: `std::error_code` everywhere, OS errors in the system category (Win32 codes on
/// Windows, errno values on POSIX), and a small portable `iocp::errc` that compares equal to
/// the native codes of either backend.
///
/// @code
/// std::error_code ec = ...;                 // from any iocp call
/// if (ec == iocp::errc::operation_aborted)  // true for 995, 676 (Wine) or ECANCELED
///     return;
/// @endcode

#include <cerrno>
#include <string>
#include <system_error>

#include "config.hpp"

namespace iocp {

/// Portable error conditions. Compare any `std::error_code` against them with `==`.
/// The library also produces codes of these values itself (in `iocp::category()`), for
/// outcomes that have no OS code, such as a pool that was shut down.
enum class errc {
    operation_aborted = 1, ///< cancelled, or the handle was closed while the I/O was pending
    eof,                   ///< end of file, or the peer closed its sending side
    timed_out,             ///< a wait ran out of time
    closed,                ///< the port or pool is closed / shut down
    connection_reset,      ///< the peer reset the connection
    connection_refused,    ///< nobody listens at the address connected to
    invalid_handle,        ///< a null, invalid or already closed handle
};

namespace detail {

// Native codes that mean each condition. Written as numbers so this header needs no
// <windows.h>; the names are in the comments.
class error_category final : public std::error_category {
public:
    const char* name() const noexcept override { return "iocp"; }

    std::string message(int value) const override {
        switch (static_cast<errc>(value)) {
        case errc::operation_aborted: return "operation aborted";
        case errc::eof: return "end of file";
        case errc::timed_out: return "timed out";
        case errc::closed: return "closed (the port or pool was shut down)";
        case errc::connection_reset: return "connection reset by peer";
        case errc::connection_refused: return "connection refused";
        case errc::invalid_handle: return "invalid handle";
        }
        return "unknown iocp error " + std::to_string(value);
    }

    bool equivalent(const std::error_code& code, int condition) const noexcept override {
        if (code.category() == *this)
            return code.value() == condition;
        if (code.category() == std::system_category())
            return native_matches(code.value(), static_cast<errc>(condition));
        if (code.category() == std::generic_category())
            return errno_matches(code.value(), static_cast<errc>(condition));
        return false;
    }

private:
    static bool native_matches(int value, errc condition) noexcept {
#if IOCP_WINDOWS
        switch (condition) {
        case errc::operation_aborted:
            // ERROR_OPERATION_ABORTED, ERROR_HANDLES_CLOSED (Wine's closesocket),
            // ERROR_CONNECTION_ABORTED (a local abort of a connection), WSAECANCELLED.
            return value == 995 || value == 676 || value == 1236 || value == 10103;
        case errc::eof:
            // ERROR_HANDLE_EOF, ERROR_BROKEN_PIPE (pipe writer gone).
            return value == 38 || value == 109;
        case errc::timed_out:
            // WAIT_TIMEOUT, ERROR_TIMEOUT, ERROR_SEM_TIMEOUT, WSAETIMEDOUT.
            return value == 258 || value == 1460 || value == 121 || value == 10060;
        case errc::closed:
            // ERROR_ABANDONED_WAIT_0: the port was closed under a waiter.
            return value == 735;
        case errc::connection_reset:
            // ERROR_NETNAME_DELETED (a peer RST seen by an overlapped socket), WSAECONNRESET.
            return value == 64 || value == 10054;
        case errc::connection_refused:
            // ERROR_CONNECTION_REFUSED, WSAECONNREFUSED.
            return value == 1225 || value == 10061;
        case errc::invalid_handle:
            // ERROR_INVALID_HANDLE, WSAENOTSOCK.
            return value == 6 || value == 10038;
        }
        return false;
#else
        return errno_matches(value, condition);
#endif
    }

    static bool errno_matches(int value, errc condition) noexcept {
        switch (condition) {
        case errc::operation_aborted: return value == ECANCELED;
        case errc::eof: return false; // POSIX has no errno for end of file
        case errc::timed_out: return value == ETIMEDOUT;
        case errc::closed: return false;
        case errc::connection_reset: return value == ECONNRESET;
        case errc::connection_refused: return value == ECONNREFUSED;
        case errc::invalid_handle: return value == EBADF;
        }
        return false;
    }
};

} // namespace detail

/// The category of `iocp::errc`. One instance per program (an inline variable).
inline const std::error_category& category() noexcept {
    static const detail::error_category instance;
    return instance;
}

/// An `std::error_code` of the library's own category.
inline std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), category()};
}

/// Lets `ec == iocp::errc::eof` compare by meaning rather than by exact value.
inline std::error_condition make_error_condition(errc e) noexcept {
    return {static_cast<int>(e), category()};
}

namespace detail {

/// Throws `std::system_error` when `ec` holds an error; the throwing overloads use this.
inline void throw_if(const std::error_code& ec, const char* what) {
    if (ec)
        throw std::system_error(ec, what);
}

} // namespace detail

} // namespace iocp

template <>
struct std::is_error_condition_enum<iocp::errc> : std::true_type {};
