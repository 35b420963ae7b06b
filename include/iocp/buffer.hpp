#pragma once
/// @file
/// Buffer descriptors for overlapped I/O: a pointer and a size, nothing owned.
///
/// The I/O calls take one buffer or a span of up to `iocp::max_buffers` of them (a socket
/// gathers or scatters them in one `WSASend` / `WSARecv`). The bytes must stay valid, and
/// untouched by anyone else, until the operation's completion has run; the descriptors
/// themselves are copied when the operation starts.
///
/// @code
/// char header[16];
/// std::vector<char> body(4096);
/// std::array<iocp::mutable_buffer, 2> parts{iocp::buffer(header), iocp::buffer(body)};
/// sock.recv(parts, [](std::error_code ec, std::size_t n) { /* ... */ });
/// @endcode

#include <array>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace iocp {

/// The most buffers one socket operation takes (a classic IOCP server's `SP_IOCP_MAX_IOV`). Eight
/// covers header + body + trailer layouts without making every operation object large.
inline constexpr std::size_t max_buffers = 8;

/// A writable region of memory that an operation fills (a receive, a file read).
struct mutable_buffer {
    void* data = nullptr; ///< first byte
    std::size_t size = 0; ///< length in bytes
};

/// A readable region of memory that an operation sends or writes.
struct const_buffer {
    const void* data = nullptr; ///< first byte
    std::size_t size = 0;       ///< length in bytes

    /// Every mutable buffer is also a constant one.
    constexpr const_buffer() noexcept = default;
    /// A region of `n` bytes at `p`.
    constexpr const_buffer(const void* p, std::size_t n) noexcept : data(p), size(n) {}
    /// Views a mutable buffer as a constant one.
    constexpr const_buffer(mutable_buffer b) noexcept : data(b.data), size(b.size) {}
};

/// `n` bytes at `p`.
inline mutable_buffer buffer(void* p, std::size_t n) noexcept { return {p, n}; }
/// `n` bytes at `p`.
inline const_buffer buffer(const void* p, std::size_t n) noexcept { return {p, n}; }

/// The bytes of a contiguous range of trivially copyable elements (an array, a
/// `std::vector`, a `std::span`, a `std::string`...).
template <class Range>
requires requires(Range& r) {
    std::data(r);
    std::size(r);
} &&
    std::is_trivially_copyable_v<std::remove_pointer_t<decltype(std::data(std::declval<Range&>()))>>
auto buffer(Range&& r) noexcept {
    using element = std::remove_pointer_t<decltype(std::data(r))>;
    const std::size_t bytes = std::size(r) * sizeof(element);
    if constexpr (std::is_const_v<element>)
        return const_buffer{std::data(r), bytes};
    else
        return mutable_buffer{std::data(r), bytes};
}

/// Total size of a sequence of buffers.
template <class Buffer>
std::size_t buffer_size(std::span<const Buffer> buffers) noexcept {
    std::size_t n = 0;
    for (const Buffer& b : buffers)
        n += b.size;
    return n;
}

} // namespace iocp
