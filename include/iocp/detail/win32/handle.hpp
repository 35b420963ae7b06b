#pragma once
// Win32 handle policies for basic_unique_handle.

#include <system_error>

#include "windows.hpp"

namespace iocp::detail::win32 {

// A kernel object handle whose "empty" value is INVALID_HANDLE_VALUE (files, pipes); NULL is
// never a valid handle either, so both count as empty.
struct file_handle_traits {
    using native_type = HANDLE;
    static native_type invalid() noexcept { return INVALID_HANDLE_VALUE; }
    static bool is_valid(native_type h) noexcept {
        return h != nullptr && h != INVALID_HANDLE_VALUE;
    }
    static std::error_code close(native_type h) noexcept {
        if (::CloseHandle(h))
            return {};
        return {static_cast<int>(::GetLastError()), std::system_category()};
    }
};

// A handle whose "empty" value is NULL (completion ports, events, threads).
struct null_handle_traits : file_handle_traits {
    static native_type invalid() noexcept { return nullptr; }
};

} // namespace iocp::detail::win32
