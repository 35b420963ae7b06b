#pragma once
// The backend-neutral description of one dequeued packet, how a typed completion key travels
// through the untyped backends, and the limits every backend applies alike.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <system_error>
#include <type_traits>

#include "../overlapped.hpp"
#include "time.hpp"

namespace iocp::detail {

// The most packets one get_many call dequeues, on every backend: GetQueuedCompletionStatusEx
// is given an array of this many entries on the caller's stack (64 bounds that stack use), and
// the user-space port takes no more, so that a program behaves the same on both.
inline constexpr std::size_t max_dequeue_batch = 64;

// The largest byte count a packet carries: the kernel's is a DWORD. Larger counts are refused
// on every backend rather than truncated on one.
inline constexpr std::size_t max_packet_bytes = std::numeric_limits<std::uint32_t>::max();

// The largest concurrency limit a port takes (Win32's NumberOfConcurrentThreads is a DWORD).
// Larger requests are clamped to it: a limit above the number of threads that dequeue never
// binds, so the clamp changes nothing observable.
inline constexpr std::size_t max_port_concurrency = std::numeric_limits<std::uint32_t>::max();

// A completion key as port<Key> hands it out: a `Key*` for a class (the per-handle data), or
// the value itself for an integral or enumeration Key (a WPARAM, a ULONG_PTR request code).
template <class Key>
inline constexpr bool is_value_key = std::is_integral_v<Key> || std::is_enum_v<Key>;

template <class Key>
using completion_key_t = std::conditional_t<is_value_key<Key>, Key, Key*>;

// A typed key as the pointer-sized value the backends carry, bit for bit.
template <class K>
void* erase_key(K key) noexcept {
    if constexpr (std::is_pointer_v<K>) {
        return const_cast<void*>(static_cast<const volatile void*>(key));
    } else {
        static_assert(sizeof(K) <= sizeof(void*), "a value key must fit in a pointer");
        // An integral key (Win32's WPARAM / ULONG_PTR) travels as the pointer-sized value
        // the kernel carries; it is never dereferenced.
        return reinterpret_cast<void*>( // NOLINT(performance-no-int-to-ptr)
            static_cast<std::uintptr_t>(key));
    }
}

// The inverse of erase_key. For a signed value key the round trip is exact: C++20 defines the
// conversion back from uintptr_t modulo 2^N.
template <class K>
K restore_key(void* key) noexcept {
    if constexpr (std::is_pointer_v<K>)
        return static_cast<K>(key);
    else
        return static_cast<K>(reinterpret_cast<std::uintptr_t>(key));
}

// post_failure must carry a result that the kernel's post has no field for (the error's
// category and value), without reading or writing anything else the caller handed over. It
// writes exactly two fields of the OVERLAPPED it completes (legitimately: an OVERLAPPED whose
// failure is posted is not in flight, and these are the fields the kernel fills for a
// completed I/O):
//   Internal     = the address of the error's category
//   InternalHigh = the caller's completion key
// On the kernel port the packet itself then carries reserved_key_value as its key and the
// error's value, bit for bit, as its byte count (Asio likewise marks its own packets with a
// reserved key). The user-space port carries the result in its own packet but writes the same
// two fields, so that a program behaves the same on both backends.
inline void stamp_posted_failure(overlapped& ov, void* key,
                                 const std::error_category& category) noexcept {
    ov.Internal = reinterpret_cast<std::uintptr_t>(&category);
    ov.InternalHigh = reinterpret_cast<std::uintptr_t>(key);
}

// The one completion key value the port keeps for itself: the key of the packets post_failure
// queues on the kernel port. A fixed value, not the address of a variable, because a header-only
// library may be compiled into several modules (an exe and its DLLs) that share one port, and
// each would see its own copy of a variable. The value is no pointer a program can hold (on
// 64-bit targets it is not even a canonical address), and port refuses it as a user's key with
// invalid_argument, so no user packet can be taken for one of ours.
inline constexpr std::uintptr_t reserved_key_value =
    sizeof(std::uintptr_t) >= 8 ? static_cast<std::uintptr_t>(0xFA11ED00'0000'0001ull)
                                : static_cast<std::uintptr_t>(0xFA11ED01u);

// One dequeued packet, untyped; port<Key> hands out the typed `iocp::packet<Key>`.
struct raw_packet {
    overlapped* ov = nullptr;
    void* key = nullptr;
    std::size_t bytes = 0;
    std::error_code error;
};

// Where a backend stores the packets it dequeues: the caller's array of typed packets,
// seen through one function pointer so that the backends need not be templates.
struct packet_sink {
    void* base;
    void (*store)(void* base, std::size_t index, const raw_packet& p) noexcept;

    void put(std::size_t index, const raw_packet& p) const noexcept { store(base, index, p); }

    template <class Packet>
    static packet_sink to(Packet* out) noexcept {
        return {out, [](void* base, std::size_t index, const raw_packet& p) noexcept {
                    Packet& d = static_cast<Packet*>(base)[index];
                    d.ov = p.ov;
                    d.key = restore_key<decltype(d.key)>(p.key);
                    d.bytes = p.bytes;
                    d.error = p.error;
                }};
    }
};

} // namespace iocp::detail
