#pragma once
// A standard allocator over the pool's work-item blocks (work_item.hpp): a request that fits in
// one block takes a block from the calling thread's cache, a larger one goes to std::allocator.
// thread_pool::submit's future (future.hpp) keeps its shared state and result in it, which then
// recycle like the work item that carries them: no heap allocation per submit in steady state,
// and no malloc lock shared with the other threads that free them.
//
// Thread safety: stateless; any thread may free what another allocated (the block cache
// passes freed blocks on through the depot).

#include <cstddef>
#include <memory>

#include "work_item.hpp"

namespace iocp::detail {

template <class T>
class block_allocator {
public:
    using value_type = T;

    block_allocator() noexcept = default;
    template <class U>
    block_allocator(const block_allocator<U>&) noexcept {} // NOLINT(google-explicit-constructor)

    // Throws std::bad_alloc.
    T* allocate(std::size_t n) {
        if (fits(n))
            return static_cast<T*>(block_cache::local().allocate());
        return std::allocator<T>().allocate(n);
    }

    void deallocate(T* p, std::size_t n) noexcept {
        if (fits(n))
            free_block(p);
        else
            std::allocator<T>().deallocate(p, n);
    }

    friend bool operator==(const block_allocator&, const block_allocator&) noexcept { return true; }

private:
    // The same answer for a block's allocation and its deallocation: both see the same n.
    static constexpr bool fits(std::size_t n) noexcept {
        return alignof(T) <= alignof(std::max_align_t) && n <= work_item_block / sizeof(T);
    }
};

} // namespace iocp::detail
