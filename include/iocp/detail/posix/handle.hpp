#pragma once
// POSIX file descriptor policy for basic_unique_handle.

#include <cerrno>
#include <system_error>

#include <fcntl.h>
#include <unistd.h>

namespace iocp::detail::posix {

struct fd_traits {
    using native_type = int;
    static native_type invalid() noexcept { return -1; }
    static bool is_valid(native_type fd) noexcept { return fd >= 0; }
    static std::error_code close(native_type fd) noexcept {
        // TRICKY: on Linux the descriptor is released even when close() reports EINTR, so
        // retrying could close a descriptor another thread has just been given. Report
        // success for EINTR and never retry.
        if (::close(fd) == 0 || errno == EINTR)
            return {};
        return {errno, std::system_category()};
    }
};

// Is `fd` an open descriptor? (EBADF otherwise.)
inline std::error_code check_fd(int fd) noexcept {
    if (fd < 0 || ::fcntl(fd, F_GETFD) == -1)
        return {EBADF, std::system_category()};
    return {};
}

} // namespace iocp::detail::posix
