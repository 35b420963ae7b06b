#pragma once
/// @file
/// `basic_unique_handle<Traits>`: a move-only owner of one OS handle, closed exactly once.
/// The traits say what "no handle" is and how to close one, so that ports (NULL when empty),
/// files (INVALID_HANDLE_VALUE) and descriptors (-1) share one implementation.

#include <system_error>
#include <utility>

#include "config.hpp"
#include "error.hpp"

#if IOCP_WINDOWS
#include "detail/win32/handle.hpp"
#else
#include "detail/posix/handle.hpp"
#endif

namespace iocp {

/// Owns one handle. Move-only; the destructor closes it and ignores a close error (a
/// destructor must not throw); call `close()` to see that error.
///
/// Thread safety: like a pointer, one object must not be used from two threads at once.
template <class Traits>
class basic_unique_handle {
public:
    /// The OS handle type (`HANDLE`, `int`).
    using native_type = typename Traits::native_type;

    /// An empty handle.
    basic_unique_handle() noexcept = default;

    /// Takes ownership of `h` (which may be the invalid value).
    explicit basic_unique_handle(native_type h) noexcept : handle_(h) {}

    /// Takes `other`'s handle; `other` becomes empty.
    basic_unique_handle(basic_unique_handle&& other) noexcept : handle_(other.release()) {}

    /// Closes the handle held so far, then takes `other`'s.
    basic_unique_handle& operator=(basic_unique_handle&& other) noexcept {
        if (this != &other)
            reset(other.release());
        return *this;
    }

    basic_unique_handle(const basic_unique_handle&) = delete;
    basic_unique_handle& operator=(const basic_unique_handle&) = delete;

    ~basic_unique_handle() { reset(); }

    /// The handle, still owned by this object.
    native_type get() const noexcept { return handle_; }

    /// True when a handle is held.
    explicit operator bool() const noexcept { return Traits::is_valid(handle_); }

    /// Gives up ownership without closing; the object becomes empty.
    [[nodiscard]] native_type release() noexcept {
        return std::exchange(handle_, Traits::invalid());
    }

    /// Closes the held handle (ignoring a close error) and takes `h`.
    void reset(native_type h = Traits::invalid()) noexcept {
        native_type old = std::exchange(handle_, h);
        if (Traits::is_valid(old))
            (void)Traits::close(old);
    }

    /// Closes the held handle; the object is empty afterwards even if the OS reports an error
    /// (the handle is not retried). Closing an empty object is not an error.
    void close(std::error_code& ec) noexcept {
        ec.clear();
        native_type old = release();
        if (Traits::is_valid(old))
            ec = Traits::close(old);
    }

    /// As `close(ec)`, but throws `std::system_error` if the OS reports an error.
    void close() {
        std::error_code ec;
        close(ec);
        detail::throw_if(ec, "iocp::unique_handle::close");
    }

private:
    native_type handle_ = Traits::invalid();
};

#if IOCP_WINDOWS
/// A Win32 file-like handle (empty value INVALID_HANDLE_VALUE).
using unique_handle = basic_unique_handle<detail::win32::file_handle_traits>;
#else
/// A POSIX file descriptor (empty value -1).
using unique_handle = basic_unique_handle<detail::posix::fd_traits>;
#endif

} // namespace iocp
