#pragma once
// The pool's FIFO of work items: a lock-free queue of slots, in segments allocated as the backlog
// grows, with a mutex-protected overflow list for the rare moment it holds its whole capacity
// (a post never fails for lack of room).
//
// Positions and slots. A push claims the next producer position with one CAS; position p lives
// in slot p % S of the segment of page p / S. A slot is the classic sequence-numbered one: free
// for the producer of p when its sequence equals p, published for the consumer when it equals
// p + 1. Consumers claim several published slots of a page with one CAS, so a worker pays one
// shared-counter update per batch, not per item; a producer pays one CAS on its side's counter
// and one store into the slot.
//
// Segments. A directory of D entries holds page k's segment in entry k % D: the first producer
// that reaches the page installs it (a segment recycled from a retired page, or a new one)
// before any position of it is claimed, and the consumer that releases the page's last slot
// retires it. So memory follows the backlog, up to `capacity` = S * D slots, not the number of
// posts ever made. Why not one ring of
// `capacity` slots: a ring's every slot is touched once per lap, so its memory is the capacity
// from the first lap on, and a ring small enough to be cheap fills in a burst (posts outrunning
// the workers), after which every post took the locked overflow: measured in a two-producer
// burst, 91 % of the posts, and the throughput of a plain mutex queue or worse.
// TRICKY: a thread may read a segment after its page was retired and the segment reused for
// another page (it loaded the directory entry, then was preempted). Segments are therefore never
// freed while the queue lives (they are reused; the destructor frees them), everything such a
// thread reads is atomic, and it acts only after its CAS on a position succeeds, which proves the
// segment still holds that position's page: a page is retired only once every one of its
// positions was claimed by a consumer and released, and the CAS shows that this one was not.
//
// Closing is part of the producers' counter: shutdown sets flag bits in it, so a producer's
// state check and its claim of a slot are one CAS. A post is either refused or its slot was
// claimed before the close, and shutdown waits for such slots to be published before it drains:
// nothing falls in between, and no per-post counter is needed.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <utility>

#include "pool/parking_slots.hpp"
#include "work_item.hpp"

namespace iocp::detail {

class work_queue {
public:
    // Capacities accepted: `capacity` is clamped to [min_capacity, max_capacity], then rounded
    // up to a power of two (which cannot wrap: max_capacity is one).
    static constexpr std::size_t min_capacity = 2;
    // 2^24 slots of 16 bytes: 256 MiB of segments at most, allocated only as a backlog that
    // large builds up. A bigger queue buys nothing; the overflow list takes whatever does not fit.
    static constexpr std::size_t max_capacity = std::size_t{1} << 24;
    // Slots per segment (16 KiB), or the capacity if smaller.
    static constexpr std::size_t max_segment_slots = 1024;

    // Allocates the directory and the first page's segment (throws std::bad_alloc). Segments
    // hold `segment_slots` (rounded up to a power of two, at most the capacity; tests make them
    // small to turn pages over often).
    explicit work_queue(std::size_t capacity, std::size_t segment_slots = max_segment_slots)
        : slots_per_segment_((std::min)(round_up(capacity), round_up(segment_slots))),
          page_shift_(log2(slots_per_segment_)),
          directory_mask_(round_up(capacity) / slots_per_segment_ - 1),
          directory_(std::make_unique<directory_entry[]>(directory_mask_ + 1)) {
        segment* first = new_segment();
        if (first == nullptr)
            throw std::bad_alloc();
        start_page(*first, 0);
        directory_[0].current.store(first, std::memory_order_relaxed);
    }

    ~work_queue() {
        for (segment* s = owned_; s != nullptr;)
            delete std::exchange(s, s->owned_next);
    }

    work_queue(const work_queue&) = delete;
    work_queue& operator=(const work_queue&) = delete;

    // Who may still push: everyone, the privileged (the pool's own workers), or nobody.
    enum class access { open, privileged_only, closed };

    // Appends `item`, unless the queue's access refuses it (returns false; the item stays the
    // caller's). Never fails for lack of room: when the queue is full (or a segment cannot be
    // allocated) the item goes to the overflow list, and so do all later items until the
    // overflow has drained (FIFO).
    bool push(work_item* item, bool privileged) {
        if (overflow_size_.load(std::memory_order_seq_cst) == 0) {
            switch (try_push_slots(item, privileged)) {
            case push_result::pushed: return true;
            case push_result::refused: return false;
            case push_result::full: break;
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
        std::size_t n = pop_slots(max, link, r.more);
        // TRICKY: the overflow holds only items posted after everything in the slots, so it is
        // taken from only when the slots are truly empty, not merely when the oldest one is
        // claimed but not yet published (that item is older than the overflow's).
        if (n == 0 && overflow_size_.load(std::memory_order_acquire) != 0 && slots_empty())
            n = pop_overflow(max, link, r.more);
        *link = nullptr;
        r.count = n;
        return r;
    }

    // True when an item is visible to consumers (used by spinners and would-be sleepers).
    // (An item that pop() can take right now; the same rule as pop().)
    // TRICKY: every load here is seq_cst, and so are the producer's install of a segment and
    // its publication of a slot: the pool's wake-up protocol needs this check to see an item
    // published before the checker announced it would sleep (see wake_one_if_needed).
    bool maybe_nonempty() const noexcept {
        const std::uint64_t pos = dequeue_pos_.load(std::memory_order_seq_cst);
        const segment* s =
            directory_[page_of(pos) & directory_mask_].current.load(std::memory_order_seq_cst);
        if (s != nullptr && s->base.load(std::memory_order_seq_cst) == page_base(pos) &&
            s->slots[index_of(pos)].seq.load(std::memory_order_seq_cst) == pos + 1)
            return true;
        return overflow_size_.load(std::memory_order_seq_cst) != 0 && slots_empty();
    }

    // Items ever accepted (slots and overflow). Monotonic; see thread_pool's idle accounting.
    std::uint64_t pushed() const noexcept {
        return (enqueue_pos_.load(std::memory_order_acquire) & position_mask) +
               overflow_pushed_.load(std::memory_order_acquire);
    }

    // Items that went to the overflow list so far (tests).
    std::uint64_t overflowed() const noexcept {
        return overflow_pushed_.load(std::memory_order_relaxed);
    }

    // Segments allocated so far (tests: memory follows the backlog).
    std::size_t segments_allocated() const noexcept {
        return segments_allocated_.load(std::memory_order_relaxed);
    }

private:
    struct slot {
        std::atomic<std::uint64_t> seq{0};
        work_item* item = nullptr;
    };

    struct segment {
        // The first position of the page it holds (a multiple of the segment size).
        std::atomic<std::uint64_t> base{0};
        std::unique_ptr<slot[]> slots;
        segment* owned_next = nullptr; // every segment of the queue (the destructor frees them)
        segment* spare_next = nullptr; // spares_'s locked list
        [[maybe_unused]] cache_line_pad pad{};
        // Slots whose items consumers have taken out; the one that completes the page retires
        // the segment.
        std::atomic<std::size_t> released{0};
    };

    // Page k's place: entry k % D holds pages k % D, k % D + D, ... one after the other.
    struct directory_entry {
        std::atomic<segment*> current{nullptr}; // the page installed here, if any
        std::atomic<std::uint64_t> retired{0};  // pages of this entry retired so far
    };

    // Flag bits in enqueue_pos_ above any position a program reaches (2^61 posts).
    static constexpr std::uint64_t closed_bit = std::uint64_t{1} << 63;
    static constexpr std::uint64_t privileged_only_bit = std::uint64_t{1} << 62;
    static constexpr std::uint64_t position_mask = privileged_only_bit - 1;

    // Retired segments parked for reuse without a lock (more go to a locked list).
    static constexpr std::size_t spare_slots = 8;

    enum class push_result { pushed, full, refused };

    std::uint64_t page_of(std::uint64_t pos) const noexcept { return pos >> page_shift_; }
    std::uint64_t page_base(std::uint64_t pos) const noexcept {
        return page_of(pos) << page_shift_;
    }
    // Which of its entry's pages `page` is (0 for the first).
    std::uint64_t round_of(std::uint64_t page) const noexcept {
        return page / (directory_mask_ + 1);
    }
    std::size_t index_of(std::uint64_t pos) const noexcept {
        return static_cast<std::size_t>(pos & (slots_per_segment_ - 1));
    }

    // No slot claimed and not yet popped (published or not).
    bool slots_empty() const noexcept {
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

    static unsigned log2(std::size_t power_of_two) noexcept {
        unsigned n = 0;
        while ((std::size_t{1} << n) < power_of_two)
            ++n;
        return n;
    }

    push_result try_push_slots(work_item* item, bool privileged) noexcept {
        segment* fresh = nullptr; // a segment in hand for a page this push may have to start
        const push_result r = claim_and_publish(item, privileged, fresh);
        if (fresh != nullptr)
            put_spare(fresh);
        return r;
    }

    push_result claim_and_publish(work_item* item, bool privileged, segment*& fresh) noexcept {
        // Acquire: a refusal read here makes what shutdown did before restrict() visible.
        std::uint64_t pos = enqueue_pos_.load(std::memory_order_acquire);
        for (;;) {
            if (refused(pos, privileged))
                return push_result::refused;
            const std::uint64_t position = pos & position_mask;
            directory_entry& entry = directory_[page_of(position) & directory_mask_];
            segment* s = entry.current.load(std::memory_order_acquire);
            if (s == nullptr) {
                // The page is not installed yet (its first push, or a race for it).
                if (fresh == nullptr && (fresh = take_spare()) == nullptr)
                    return push_result::full; // no memory for the page: the overflow takes it
                if (!install(entry, position, fresh))
                    pos = enqueue_pos_.load(std::memory_order_acquire);
                continue;
            }
            const std::uint64_t base = s->base.load(std::memory_order_acquire);
            if (base < page_base(position))
                return push_result::full; // the entry's older page is not consumed yet
            if (base > page_base(position) ||
                s->slots[index_of(position)].seq.load(std::memory_order_acquire) != position) {
                pos = enqueue_pos_.load(std::memory_order_acquire); // overtaken
                continue;
            }
            // TRICKY: the CAS fails if restrict() set a flag since the load above, so the
            // access check and the claim are one atomic step. If it succeeds, `position` was
            // current: its page cannot be retired before this item is taken, so `s` still holds
            // it (see the file's comment).
            if (!enqueue_pos_.compare_exchange_weak(pos, pos + 1, std::memory_order_seq_cst,
                                                    std::memory_order_acquire))
                continue;
            slot& sl = s->slots[index_of(position)];
            sl.item = item;
            // seq_cst, not just release: this store is the producer's half of the pool's
            // wake-up protocol (see thread_pool::wake_one_if_needed).
            sl.seq.store(position + 1, std::memory_order_seq_cst); // publish
            return push_result::pushed;
        }
    }

    // Installs `fresh` for the page of `position` in its empty entry. True if it did (then
    // `fresh` is the entry's); false if another producer installed first, or if the page turned
    // out to be consumed already (then `fresh` stays in hand). Either way the caller looks again.
    // TRICKY: `position` may have been overtaken while this producer was away, even past the
    // page's end and its retirement; installing the page again would block its entry for good
    // (no position of it is left to fill and release it). Retirement counts the page before it
    // empties the entry, so an install that found the entry empty sees that count if it came
    // from this page's retirement, and takes its segment back (nobody can have used it: the
    // page's positions are all taken, and the entry's next page sees an older one there).
    bool install(directory_entry& entry, std::uint64_t position, segment*& fresh) noexcept {
        start_page(*fresh, page_base(position));
        segment* current = nullptr;
        // seq_cst: part of the wake-up protocol (see maybe_nonempty) and of the count's check
        // below; release for the segment's new base and sequences.
        if (!entry.current.compare_exchange_strong(current, fresh, std::memory_order_seq_cst,
                                                   std::memory_order_acquire))
            return false;
        if (entry.retired.load(std::memory_order_seq_cst) <= round_of(page_of(position))) {
            fresh = nullptr;
            return true;
        }
        segment* mine = fresh;
        if (!entry.current.compare_exchange_strong(mine, nullptr, std::memory_order_seq_cst))
            fresh = nullptr; // cannot happen (see above); if it did, the entry owns it now
        return false;
    }

    std::size_t pop_slots(std::size_t max, work_item**& link, bool& more) noexcept {
        std::uint64_t pos = dequeue_pos_.load(std::memory_order_relaxed);
        for (;;) {
            const segment* found =
                directory_[page_of(pos) & directory_mask_].current.load(std::memory_order_acquire);
            if (found == nullptr)
                return 0; // the page is not installed: nothing was pushed there yet
            const std::uint64_t base = found->base.load(std::memory_order_acquire);
            if (base != page_base(pos)) {
                if (base < page_base(pos))
                    return 0; // an older page still being released: nothing pushed here yet
                pos = dequeue_pos_.load(std::memory_order_relaxed); // overtaken: reload
                continue;
            }
            auto* s = const_cast<segment*>(found);
            // Count the consecutive published slots of this page from `pos`, up to `max`. (Not
            // the producers' counter: reading it on every claim would pull their cache line
            // away from them.)
            const std::size_t first = index_of(pos);
            const std::size_t limit = (std::min)(max, slots_per_segment_ - first);
            std::size_t ready = 0;
            while (ready < limit &&
                   s->slots[first + ready].seq.load(std::memory_order_acquire) == pos + ready + 1)
                ++ready;
            if (ready == 0) {
                const std::uint64_t seq = s->slots[first].seq.load(std::memory_order_acquire);
                if (seq == pos)
                    return 0; // empty (or the producer of `pos` has not published yet)
                pos = dequeue_pos_.load(std::memory_order_relaxed); // another consumer won
                continue;
            }
            more = ready == max || first + ready == slots_per_segment_ ||
                   overflow_size_.load(std::memory_order_relaxed) != 0;
            // TRICKY: the slots are ours only once the CAS succeeds; before it, another
            // consumer may take them (the CAS then fails, since positions never repeat), and
            // the page may even be retired: nothing but atomics is read before it.
            if (dequeue_pos_.compare_exchange_weak(pos, pos + ready, std::memory_order_relaxed)) {
                for (std::size_t i = 0; i < ready; ++i) {
                    work_item* item = s->slots[first + i].item;
                    *link = item;
                    link = &item->next;
                }
                release(*s, page_of(pos), ready);
                return ready;
            }
        }
    }

    // The items of `n` slots of `s` are taken out: the last release of a page retires it.
    void release(segment& s, std::uint64_t page, std::size_t n) noexcept {
        // acq_rel: every consumer's reads of the page come before its retirement.
        if (s.released.fetch_add(n, std::memory_order_acq_rel) + n != slots_per_segment_)
            return;
        directory_entry& entry = directory_[page & directory_mask_];
        // Counted before the entry empties: an install that finds it empty then sees the count
        // (see install).
        entry.retired.store(round_of(page) + 1, std::memory_order_seq_cst);
        entry.current.store(nullptr, std::memory_order_seq_cst);
        put_spare(&s);
    }

    // Prepares `s` to hold the page starting at `base`: each slot free for its position.
    void start_page(segment& s, std::uint64_t base) noexcept {
        s.released.store(0, std::memory_order_relaxed);
        for (std::size_t i = 0; i < slots_per_segment_; ++i)
            s.slots[i].seq.store(base + i, std::memory_order_relaxed);
        s.base.store(base, std::memory_order_release);
    }

    // A retired segment, or a new one; nullptr without memory.
    segment* take_spare() noexcept {
        if (segment* s = spares_.take())
            return s;
        return new_segment();
    }

    void put_spare(segment* s) noexcept { spares_.put(s); }

    segment* new_segment() noexcept {
        segment* s = nullptr;
        try {
            auto fresh = std::make_unique<segment>();
            fresh->slots = std::make_unique<slot[]>(slots_per_segment_);
            s = fresh.release();
        } catch (const std::bad_alloc&) {
            return nullptr;
        }
        std::lock_guard lock(owned_mutex_);
        s->owned_next = owned_;
        owned_ = s;
        segments_allocated_.fetch_add(1, std::memory_order_relaxed);
        return s;
    }

    std::size_t pop_overflow(std::size_t max, work_item**& link, bool& more) noexcept {
        std::lock_guard lock(overflow_mutex_);
        // TRICKY: looked at again under the lock. Seen empty before it, the slots may since
        // have taken a producer's item while the overflow was empty for a moment, and that
        // producer's next item may be in the overflow now: taking it first would break the
        // producer's order (the work_queue_test stress saw it). Under the lock no item joins
        // the overflow, and an item in the slots that is older than one in it was claimed
        // before that one was appended: so before this look.
        if (!slots_empty())
            return 0; // the caller looks again
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

    const std::size_t slots_per_segment_;
    const unsigned page_shift_;
    const std::size_t directory_mask_;
    const std::unique_ptr<directory_entry[]> directory_;

    // Producers' and consumers' counters on separate cache lines: each side writes only its
    // own, and the slots carry the hand-off.
    [[maybe_unused]] cache_line_pad pad0_{};
    std::atomic<std::uint64_t> enqueue_pos_{0};
    [[maybe_unused]] cache_line_pad pad1_{};
    std::atomic<std::uint64_t> dequeue_pos_{0};
    [[maybe_unused]] cache_line_pad pad2_{};
    parking_slots<segment, &segment::spare_next, spare_slots> spares_;
    std::mutex owned_mutex_; // guards owned_
    segment* owned_ = nullptr;
    std::atomic<std::size_t> segments_allocated_{0};

    [[maybe_unused]] cache_line_pad pad3_{};
    std::atomic<std::size_t> overflow_size_{0};
    std::atomic<std::uint64_t> overflow_pushed_{0};
    std::mutex overflow_mutex_;
    work_item* overflow_head_ = nullptr;
    work_item* overflow_tail_ = nullptr;
};

} // namespace iocp::detail
