#pragma once
// The pool's FIFO of work items: a bounded lock-free ring, with a mutex-protected overflow list
// for the rare moment the ring is full (a post never fails for lack of room).
//
// The ring is the classic sequence-numbered multi-producer multi-consumer array: slot i is
// free for the producer of position p when its sequence equals p, and full for the consumer of
// position p when it equals p + 1. Consumers claim several ready slots with one CAS, so a
// worker pays one shared-counter update per batch, not per item; a producer pays one CAS on
// its side's counter and one store into the slot.
//
// Closing is part of the same counter: shutdown sets flag bits in the producers' position, so
// a producer's state check and its claim of a slot are one CAS. A post is either refused or
// its slot was claimed before the close, and shutdown waits for such slots to be published
// before it drains: nothing falls in between, and no per-post counter is needed.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>

#include "work_item.hpp"

namespace iocp::detail {

class work_queue {
public:
    // Ring sizes accepted: `capacity` is clamped to [min_capacity, max_capacity], then rounded
    // up to a power of two (which cannot wrap: max_capacity is one).
    static constexpr std::size_t min_capacity = 2;
    // 2^20 slots of 16 bytes: 16 MiB. A bigger ring buys nothing; the overflow list takes
    // whatever does not fit.
    static constexpr std::size_t max_capacity = std::size_t{1} << 20;

    explicit work_queue(std::size_t capacity) : mask_(round_up(capacity) - 1) {
        slots_ = std::make_unique<slot[]>(mask_ + 1);
        for (std::size_t i = 0; i <= mask_; ++i)
            slots_[i].seq.store(i, std::memory_order_relaxed);
    }

    work_queue(const work_queue&) = delete;
    work_queue& operator=(const work_queue&) = delete;

    // Who may still push: everyone, the privileged (the pool's own workers), or nobody.
    enum class access { open, privileged_only, closed };

    // Appends `item`, unless the queue's access refuses it (returns false; the item stays the
    // caller's). Never fails for lack of room: when the ring is full the item goes to the
    // overflow list, and so do all later items until the overflow has drained (FIFO).
    bool push(work_item* item, bool privileged) {
        if (overflow_size_.load(std::memory_order_seq_cst) == 0) {
            switch (try_push_ring(item, privileged)) {
            case ring_result::pushed: return true;
            case ring_result::refused: return false;
            case ring_result::full: break;
            }
        }
        std::lock_guard lock(overflow_mutex_);
        if (refused(enqueue_pos_.load(std::memory_order_seq_cst), privileged))
            return false;
        item->next = nullptr;
        if (overflow_tail_ != nullptr)
            overflow_tail_->next = item;
        else
            overflow_head_ = item;
        overflow_tail_ = item;
        overflow_size_.fetch_add(1, std::memory_order_seq_cst);
        overflow_pushed_.fetch_add(1, std::memory_order_relaxed);
        return true;
    }

    // Restricts who may push from now on (never reopens). When it returns, every push that
    // was not refused has claimed its place: `drained()` then waits for them to be published.
    void restrict(access a) noexcept {
        enqueue_pos_.fetch_or(a == access::closed ? closed_bit : privileged_only_bit,
                              std::memory_order_seq_cst);
        // An overflow push checks the flags under this lock: wait out one in progress.
        std::lock_guard lock(overflow_mutex_);
    }

    // After restrict(closed): true once every accepted item has been popped.
    bool drained() const noexcept {
        return (enqueue_pos_.load(std::memory_order_seq_cst) & position_mask) ==
                   dequeue_pos_.load(std::memory_order_seq_cst) &&
               overflow_size_.load(std::memory_order_seq_cst) == 0;
    }

    // What pop() took: a chain linked through `next` (nullptr when empty), its length, and
    // whether more items may be waiting (it took `max`, or the overflow holds some): someone
    // else should come for them.
    struct pop_result {
        work_item* head = nullptr;
        std::size_t count = 0;
        bool more = false;
    };

    // Takes up to `max` items, oldest first. (The pool keeps the ones it has not started
    // visible to its idle workers: a batch never holds back work another worker could run.)
    pop_result pop(std::size_t max) noexcept {
        pop_result r;
        work_item** link = &r.head;
        std::size_t n = pop_ring(max, link, r.more);
        // TRICKY: the overflow holds only items posted after everything in the ring, so it is
        // taken from only when the ring is truly empty, not merely when its head slot is
        // claimed but not yet published (that item is older than the overflow's).
        if (n == 0 && overflow_size_.load(std::memory_order_acquire) != 0 && ring_empty())
            n = pop_overflow(max, link, r.more);
        *link = nullptr;
        r.count = n;
        return r;
    }

    // True when an item is visible to consumers (used by spinners and would-be sleepers).
    // (An item that pop() can take right now; the same rule as pop().)
    bool maybe_nonempty() const noexcept {
        const std::uint64_t pos = dequeue_pos_.load(std::memory_order_seq_cst);
        if (slots_[pos & mask_].seq.load(std::memory_order_seq_cst) == pos + 1)
            return true;
        return overflow_size_.load(std::memory_order_seq_cst) != 0 && ring_empty();
    }

    // Items ever accepted (ring and overflow). Monotonic; see thread_pool's idle accounting.
    std::uint64_t pushed() const noexcept {
        return (enqueue_pos_.load(std::memory_order_acquire) & position_mask) +
               overflow_pushed_.load(std::memory_order_acquire);
    }

private:
    struct slot {
        std::atomic<std::uint64_t> seq{0};
        work_item* item = nullptr;
    };

    // Flag bits in enqueue_pos_ above any position a program reaches (2^61 posts).
    static constexpr std::uint64_t closed_bit = std::uint64_t{1} << 63;
    static constexpr std::uint64_t privileged_only_bit = std::uint64_t{1} << 62;
    static constexpr std::uint64_t position_mask = privileged_only_bit - 1;

    enum class ring_result { pushed, full, refused };

    // No slot claimed and not yet popped (published or not).
    bool ring_empty() const noexcept {
        return (enqueue_pos_.load(std::memory_order_seq_cst) & position_mask) ==
               dequeue_pos_.load(std::memory_order_seq_cst);
    }

    static bool refused(std::uint64_t pos, bool privileged) noexcept {
        return (pos & closed_bit) != 0 || ((pos & privileged_only_bit) != 0 && !privileged);
    }

    static std::size_t round_up(std::size_t n) noexcept {
        if (n > max_capacity)
            n = max_capacity;
        std::size_t p = min_capacity;
        while (p < n)
            p *= 2;
        return p;
    }

    ring_result try_push_ring(work_item* item, bool privileged) noexcept {
        // Acquire: a refusal read here makes what shutdown did before restrict() visible.
        std::uint64_t pos = enqueue_pos_.load(std::memory_order_acquire);
        for (;;) {
            if (refused(pos, privileged))
                return ring_result::refused;
            const std::uint64_t position = pos & position_mask;
            slot& s = slots_[position & mask_];
            const std::uint64_t seq = s.seq.load(std::memory_order_acquire);
            const auto diff = static_cast<std::int64_t>(seq - position);
            if (diff == 0) {
                // TRICKY: the CAS fails if restrict() set a flag since the load above, so the
                // access check and the claim are one atomic step.
                if (enqueue_pos_.compare_exchange_weak(pos, pos + 1, std::memory_order_seq_cst,
                                                       std::memory_order_acquire)) {
                    s.item = item;
                    // seq_cst, not just release: this store is the producer's half of the
                    // pool's wake-up protocol (see thread_pool::wake_one_if_needed).
                    s.seq.store(position + 1, std::memory_order_seq_cst); // publish
                    return ring_result::pushed;
                }
            } else if (diff < 0) {
                return ring_result::full; // the slot still holds an item from a lap ago
            } else {
                pos = enqueue_pos_.load(std::memory_order_acquire);
            }
        }
    }

    std::size_t pop_ring(std::size_t max, work_item**& link, bool& more) noexcept {
        std::uint64_t pos = dequeue_pos_.load(std::memory_order_relaxed);
        for (;;) {
            // Count the consecutive published slots from `pos`, up to `max`. (Not the producers'
            // counter: reading it on every claim would pull their cache line away from them.)
            std::size_t ready = 0;
            while (ready < max && slots_[(pos + ready) & mask_].seq.load(
                                      std::memory_order_acquire) == pos + ready + 1)
                ++ready;
            if (ready == 0) {
                const std::uint64_t seq = slots_[pos & mask_].seq.load(std::memory_order_acquire);
                if (static_cast<std::int64_t>(seq - (pos + 1)) < 0)
                    return 0; // empty (or the producer of `pos` has not published yet)
                pos = dequeue_pos_.load(std::memory_order_relaxed); // another consumer won
                continue;
            }
            more = ready == max || overflow_size_.load(std::memory_order_relaxed) != 0;
            // TRICKY: the slots are ours only once the CAS succeeds; before it, another
            // consumer may take them (the CAS then fails, since positions never repeat).
            if (dequeue_pos_.compare_exchange_weak(pos, pos + ready, std::memory_order_relaxed)) {
                for (std::size_t i = 0; i < ready; ++i) {
                    slot& s = slots_[(pos + i) & mask_];
                    work_item* item = s.item;
                    s.seq.store(pos + i + mask_ + 1, std::memory_order_release); // free it
                    *link = item;
                    link = &item->next;
                }
                return ready;
            }
        }
    }

    std::size_t pop_overflow(std::size_t max, work_item**& link, bool& more) noexcept {
        std::lock_guard lock(overflow_mutex_);
        std::size_t n = 0;
        while (overflow_head_ != nullptr && n < max) {
            work_item* item = overflow_head_;
            overflow_head_ = item->next;
            *link = item;
            link = &item->next;
            ++n;
        }
        more = overflow_head_ != nullptr;
        if (overflow_head_ == nullptr)
            overflow_tail_ = nullptr;
        overflow_size_.fetch_sub(n, std::memory_order_release);
        return n;
    }

    // Producers' and consumers' counters on separate cache lines: each side writes only its
    // own, and the slots carry the hand-off.
    [[maybe_unused]] cache_line_pad pad0_{};
    std::atomic<std::uint64_t> enqueue_pos_{0};
    [[maybe_unused]] cache_line_pad pad1_{};
    std::atomic<std::uint64_t> dequeue_pos_{0};
    [[maybe_unused]] cache_line_pad pad2_{};
    std::unique_ptr<slot[]> slots_;
    const std::size_t mask_;

    [[maybe_unused]] cache_line_pad pad3_{};
    std::atomic<std::size_t> overflow_size_{0};
    std::atomic<std::uint64_t> overflow_pushed_{0};
    std::mutex overflow_mutex_;
    work_item* overflow_head_ = nullptr;
    work_item* overflow_tail_ = nullptr;
};

} // namespace iocp::detail
