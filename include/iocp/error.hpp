#pragma once
/// @file
/// Errors: `std::error_code` everywhere, OS errors in the system category (Win32 codes on
/// Windows, errno values on POSIX), and a small portable `iocp::errc` that compares equal to
/// the native codes of either backend.
///
/// @code
/// // ec: from any iocp call or handler
/// if (ec == iocp::errc::operation_aborted)  // true for 995, 676 (Wine), 1235, or ECANCELED
///     return;
/// @endcode

#include <cerrno>
#include <new>
#include <string>
#include <system_error>

#include "config.hpp"

#if IOCP_WINDOWS
#include "detail/win32/error_table.hpp"
#endif

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
    connection_aborted,    ///< the local network stack gave the connection up
};

namespace detail {

// Compares native codes with the portable conditions: Win32/WSA codes through the error table
// (detail/win32/error_table.hpp), errno values directly.
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
        case errc::connection_aborted: return "connection aborted by the local network stack";
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
        // Which codes mean which condition is decided in one place, the error table.
        using win32::error_kind;
        switch (win32::classify_error(value).kind) {
        case error_kind::aborted: return condition == errc::operation_aborted;
        // Without knowing who closed the handle, ERROR_NETNAME_DELETED reads as a peer reset;
        // the I/O objects, which know, report our own close as operation_aborted.
        case error_kind::closed_or_reset:
        case error_kind::connection_reset: return condition == errc::connection_reset;
        case error_kind::connection_aborted: return condition == errc::connection_aborted;
        case error_kind::eof: return condition == errc::eof;
        case error_kind::refused: return condition == errc::connection_refused;
        case error_kind::timed_out: return condition == errc::timed_out;
        case error_kind::port_closed: return condition == errc::closed;
        case error_kind::invalid_handle: return condition == errc::invalid_handle;
        case error_kind::message_size: // std::errc::message_size, no iocp::errc
        case error_kind::unclassified: return false;
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
        // EPIPE: a send after the peer reset (Linux gives ECONNRESET once, then EPIPE).
        case errc::connection_reset: return value == ECONNRESET || value == EPIPE;
        case errc::connection_refused: return value == ECONNREFUSED;
        case errc::invalid_handle: return value == EBADF;
        case errc::connection_aborted: return value == ECONNABORTED;
        }
        return false;
    }
};

} // namespace detail

/// The category of `iocp::errc`. One instance per program, never destroyed: error codes made
/// during static destruction (a static pool's workers shutting down) still compare and print.
inline const std::error_category& category() noexcept {
    alignas(detail::error_category) static unsigned char storage[sizeof(detail::error_category)];
    static const detail::error_category* const instance =
        ::new (static_cast<void*>(storage)) detail::error_category();
    return *instance;
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
