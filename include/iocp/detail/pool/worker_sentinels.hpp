#pragma once
// The workers' stop signals: one preallocated operation per worker (shutdown never allocates),
// posted once each to the port and recognised by the OVERLAPPED a dequeued packet carries. A
// sentinel is never completed nor destroyed through its function: the pool knows its sentinels
// by address, so a packet is a sentinel exactly when find() says so.

#include <cstddef>
#include <cstdint>
#include <memory>

#include "../../operation.hpp"

namespace iocp::detail {

class worker_sentinels {
public:
    struct sentinel final : operation {
        sentinel() noexcept : operation(&ignore) {}
        static void ignore(void*, operation*, const completion&) noexcept {}
    };

    // `n` sentinels, made now. @throws std::bad_alloc
    explicit worker_sentinels(std::size_t n) : items_(std::make_unique<sentinel[]>(n)), n_(n) {}

    std::size_t size() const noexcept { return n_; }
    sentinel& operator[](std::size_t i) noexcept { return items_[i]; }

    // The sentinel whose OVERLAPPED `ov` is, or nullptr (any other operation, or null).
    // Integer arithmetic: comparing pointers into different objects with < is unspecified, and
    // the packets' OVERLAPPEDs are mostly other objects. Thread safety: any thread.
    sentinel* find(const overlapped* ov) const noexcept {
        const auto base = reinterpret_cast<std::uintptr_t>(items_.get());
        const auto addr = reinterpret_cast<std::uintptr_t>(ov);
        if (addr < base)
            return nullptr;
        const std::size_t i = (addr - base) / sizeof(sentinel);
        if (i >= n_)
            return nullptr;
        sentinel* s = &items_[i];
        // An address inside a sentinel but not its OVERLAPPED is not one.
        return static_cast<const overlapped*>(s) == ov ? s : nullptr;
    }

private:
    std::unique_ptr<sentinel[]> items_;
    std::size_t n_;
};

} // namespace iocp::detail
