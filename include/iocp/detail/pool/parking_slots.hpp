#pragma once
// A few objects parked between threads without a lock in the common case: `Slots` slots, each
// empty or holding one object, then a locked list once every slot is full. The pool parks two
// kinds of things this way: the block depot's batches of free work-item blocks (work_item.hpp)
// and the work queue's spare segments (work_queue.hpp).
//
// put() fills an empty slot with a CAS from null, take() empties a full one with an exchange.
// No ABA: a CAS compares against null only, an exchange takes whatever is there, and nothing
// reads a parked object before it owns it. The locked list (linked through the object's `Link`
// member) only takes the excess of a burst; steady state never touches it.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>

#include "constants.hpp"

namespace iocp::detail {

template <class T, T* T::*Link, std::size_t Slots>
class parking_slots {
public:
    // Parks `p` (not null). Release: what the caller wrote to *p before is seen by the thread
    // that takes it. Thread safety: any thread.
    void put(T* p) noexcept {
        for (auto& slot : slots_) {
            T* expected = nullptr;
            if (slot.load(std::memory_order_relaxed) == nullptr &&
                slot.compare_exchange_strong(expected, p, std::memory_order_release,
                                             std::memory_order_relaxed))
                return;
        }
        std::lock_guard lock(mutex_);
        p->*Link = list_;
        list_ = p;
        list_size_.fetch_add(1, std::memory_order_relaxed);
        locked_calls_.fetch_add(1, std::memory_order_relaxed);
    }

    // Takes a parked object; nullptr when none is. An object another thread is parking at this
    // moment may be missed (the caller then makes or allocates one). Thread safety: any thread.
    T* take() noexcept {
        for (auto& slot : slots_) {
            // Acquire: pairs with put's release (the object's contents).
            if (slot.load(std::memory_order_relaxed) != nullptr)
                if (T* p = slot.exchange(nullptr, std::memory_order_acquire))
                    return p;
        }
        if (list_size_.load(std::memory_order_relaxed) == 0)
            return nullptr;
        std::lock_guard lock(mutex_);
        T* p = list_;
        if (p != nullptr) {
            list_ = p->*Link;
            list_size_.fetch_sub(1, std::memory_order_relaxed);
            locked_calls_.fetch_add(1, std::memory_order_relaxed);
        }
        return p;
    }

    // Calls that took the list's lock so far (tests: steady state takes none).
    std::uint64_t locked_calls() const noexcept {
        return locked_calls_.load(std::memory_order_relaxed);
    }

private:
    std::atomic<T*> slots_[Slots] = {};
    [[maybe_unused]] cache_line_pad pad_{};
    std::atomic<std::size_t> list_size_{0};
    std::atomic<std::uint64_t> locked_calls_{0};
    std::mutex mutex_;
    T* list_ = nullptr;
};

} // namespace iocp::detail
