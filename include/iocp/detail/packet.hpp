#pragma once
// The backend-neutral description of one dequeued packet and of a wait's timeout.

#include <chrono>
#include <cstddef>
#include <system_error>

#include "../overlapped.hpp"
#include "time.hpp"

namespace iocp::detail {

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
                    d.key = static_cast<decltype(d.key)>(p.key);
                    d.bytes = p.bytes;
                    d.error = p.error;
                }};
    }
};

} // namespace iocp::detail
