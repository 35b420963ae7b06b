#pragma once
/// @file
/// The portable `iocp::overlapped` and `iocp::containing_record`.
///
/// On Windows `iocp::overlapped` *is* `OVERLAPPED`. Elsewhere it is a struct with the same
/// fields at the same offsets, so that code written against the Win32 field names compiles on
/// both (the fields are named as Windows names them, on purpose).

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "config.hpp"

#if IOCP_WINDOWS
#include "detail/win32/windows.hpp"
#endif

namespace iocp {

#if IOCP_WINDOWS
/// The Win32 `OVERLAPPED` itself.
using overlapped = ::OVERLAPPED;
#else
/// Mirrors Win32's `OVERLAPPED` (without its anonymous union, which is not standard C++:
/// `Offset`/`OffsetHigh` are the file position, as on Windows).
///
/// Trivial, as `OVERLAPPED` is: `iocp::overlapped ov;` leaves the fields indeterminate, so
/// zero it as on Windows (`iocp::overlapped ov{};`, or `memset(&ov, 0, sizeof ov)`, which
/// compiles warning-free because the type is trivial). `iocp::operation` zeroes its own.
struct overlapped {
    std::uintptr_t Internal;     ///< status of the operation (set by the backend)
    std::uintptr_t InternalHigh; ///< bytes transferred (set by the backend)
    std::uint32_t Offset;        ///< low 32 bits of the file position
    std::uint32_t OffsetHigh;    ///< high 32 bits of the file position
    void* hEvent;                ///< unused by the POSIX backend
};
#endif

// Code written the Win32 way (memset, memcpy, aggregate zeroing) must behave alike on both.
static_assert(std::is_trivial_v<overlapped>, "iocp::overlapped must be trivial, as OVERLAPPED is");
static_assert(sizeof(overlapped) == 2 * sizeof(void*) + 8 + sizeof(void*),
              "iocp::overlapped must have OVERLAPPED's size");
static_assert(offsetof(overlapped, Offset) == 2 * sizeof(void*));
static_assert(offsetof(overlapped, hEvent) == 2 * sizeof(void*) + 8);

/// Sets the 64-bit file position of an overlapped file operation.
inline void set_offset(overlapped& ov, std::uint64_t offset) noexcept {
    ov.Offset = static_cast<std::uint32_t>(offset);
    ov.OffsetHigh = static_cast<std::uint32_t>(offset >> 32);
}

/// The 64-bit file position of an overlapped file operation.
inline std::uint64_t get_offset(const overlapped& ov) noexcept {
    return (static_cast<std::uint64_t>(ov.OffsetHigh) << 32) | ov.Offset;
}

namespace detail {

template <class M>
struct member_pointer_traits;

template <class T, class C>
struct member_pointer_traits<T C::*> {
    using member_type = T;
    using class_type = C;
};

// The byte offset of a data member, computed on suitably aligned storage that holds no object.
// This is what Win32's CONTAINING_RECORD macro does with a null pointer; here the address is a
// real one, so no null pointer is ever dereferenced.
template <auto Member>
std::ptrdiff_t member_offset() noexcept {
    using C = typename member_pointer_traits<decltype(Member)>::class_type;
    alignas(C) static unsigned char storage[sizeof(C)];
    auto* object = reinterpret_cast<C*>(storage);
    return reinterpret_cast<unsigned char*>(&(object->*Member)) - storage;
}

} // namespace detail

/// Recovers the struct that holds an `overlapped` member from a pointer to that member: the
/// typed form of Win32's `CONTAINING_RECORD`.
///
/// @code
/// struct per_io { int op; iocp::overlapped ov{}; char buffer[4096]; };
/// per_io* io = iocp::containing_record<&per_io::ov>(dequeued_overlapped);
/// @endcode
///
/// @pre `p` points at the `Member` subobject of a live object of the member's class
/// (standard-layout, as the static assertion checks). Returns nullptr for nullptr.
template <auto Member>
auto* containing_record(
    typename detail::member_pointer_traits<decltype(Member)>::member_type* p) noexcept {
    using C = typename detail::member_pointer_traits<decltype(Member)>::class_type;
    static_assert(std::is_standard_layout_v<C>,
                  "containing_record needs a standard-layout class; for a class derived from "
                  "iocp::operation use static_cast (operation::from) instead");
    if (p == nullptr)
        return static_cast<C*>(nullptr);
    return reinterpret_cast<C*>(reinterpret_cast<unsigned char*>(p) -
                                detail::member_offset<Member>());
}

} // namespace iocp
