#pragma once
// The work items the pool's workers hold but have not started: per worker, the rest of the batch
// it claimed from the queue (a range), and one coroutine continuation (`next`, see
// thread_pool::post_continuation). Both stay visible to idle workers, which take them: a worker
// never sits on items that another could start while it runs a long one. Busy workers take them
// too, but only once they are stalled (steal_stalled): otherwise, while other producers keep the
// queue from ever emptying, items claimed behind a long or blocking item would wait for it
// however many newer items the other workers run meanwhile.
//
// TRICKY: the owner publishes with seq_cst stores and then asks the wake protocol for a sleeper
// (detail/pool/wake_protocol.hpp); a worker about to sleep registers and then looks at `any()`
// with seq_cst loads. That is the same Dekker pair as a queue publish, so held items are never
// left unnoticed by a sleeper. Each item has exactly one taker: the owner takes the range's items
// one by one with a CAS on `begin`, a thief takes the whole rest with one CAS on it, and `next`
// is taken by an exchange.
//
// Positions only grow. The owner publishes a new range only when the previous one is empty
// (taken or stolen), and a range never spans more than `slots`, so a thief that read a stale
// `begin` and old slots fails its CAS (the owner moved `begin` on, and it never goes back).

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "../work_item.hpp"
#include "constants.hpp"

namespace iocp::detail {

class held_items {
public:
    // The most items one range holds (a claim of pool_max_batch items holds back one fewer).
    static constexpr std::size_t slots = held_range_slots;

    explicit held_items(std::size_t workers)
        : workers_(workers), held_(std::make_unique<worker_held[]>(workers)) {}

    held_items(const held_items&) = delete;
    held_items& operator=(const held_items&) = delete;

    // --- the owner's side (one thread per worker index) -------------------------------------

    // Publishes `items[0, n)` (n <= slots) as `worker`'s range. Its previous range must be
    // empty: every item published before was taken by take_own() or stolen. The caller then
    // asks the wake protocol for a sleeper (the store here is the seq_cst half of the pair).
    void publish(std::size_t worker, work_item* const* items, std::size_t n) noexcept {
        worker_held& h = held_[worker];
        const std::uint64_t end = h.end.load(std::memory_order_relaxed); // only we write it
        for (std::size_t i = 0; i < n; ++i)
            h.slots[(end + i) % slots].store(items[i], std::memory_order_relaxed);
        h.end.store(end + n, std::memory_order_seq_cst);
    }

    // The oldest item of `worker`'s range, or nullptr once it is empty (taken or stolen).
    work_item* take_own(std::size_t worker) noexcept {
        worker_held& h = held_[worker];
        const std::uint64_t end = h.end.load(std::memory_order_relaxed); // ours
        std::uint64_t begin = h.begin.load(std::memory_order_relaxed);
        while (begin < end) {
            work_item* item = h.slots[begin % slots].load(std::memory_order_relaxed);
            if (h.begin.compare_exchange_weak(begin, begin + 1, std::memory_order_relaxed))
                return item;
        }
        return nullptr;
    }

    // Whether `worker` may put a continuation into its `next` slot now: the slot is empty and
    // fewer than continuation_streak continuations ran from it since reset_streak().
    bool next_available(std::size_t worker) const noexcept {
        const worker_held& h = held_[worker];
        return h.next_streak < continuation_streak &&
               h.next.load(std::memory_order_relaxed) == nullptr;
    }

    // Puts `item` into `worker`'s empty `next` slot (after next_available()). Counted as
    // accepted first, so that finished <= accepted at every instant (outstanding_work::idle).
    // The caller then asks the wake protocol for a sleeper, as after publish().
    void put_next(std::size_t worker, work_item* item) noexcept {
        worker_held& h = held_[worker];
        h.next_accepted.fetch_add(1, std::memory_order_release);
        h.next.store(item, std::memory_order_seq_cst);
    }

    // `worker`'s continuation, or nullptr (none, or a thief took it). Counts toward the streak.
    work_item* take_next(std::size_t worker) noexcept {
        worker_held& h = held_[worker];
        if (h.next.load(std::memory_order_relaxed) == nullptr)
            return nullptr;
        work_item* item = h.next.exchange(nullptr, std::memory_order_acquire);
        if (item != nullptr)
            ++h.next_streak;
        return item;
    }

    // `worker` took work from the shared queue: continuations may jump it again.
    void reset_streak(std::size_t worker) noexcept { held_[worker].next_streak = 0; }

    // --- everyone -------------------------------------------------------------------------

    // Takes what another worker holds, looking at each in turn from `thief + 1`: the whole rest
    // of a range, else a continuation. Writes at most `slots` items to `out`; returns how many.
    std::size_t steal(std::size_t thief, work_item** out) noexcept {
        for (std::size_t k = 1; k < workers_; ++k) {
            worker_held& h = held_[(thief + k) % workers_];
            if (const std::size_t n = steal_range(h, out))
                return n;
            // A continuation its owner has not come back for (it runs a long item).
            if (h.next.load(std::memory_order_relaxed) != nullptr) {
                if (work_item* item = h.next.exchange(nullptr, std::memory_order_acquire)) {
                    out[0] = item;
                    return 1;
                }
            }
        }
        return 0;
    }

    // For a busy worker's periodic look: takes what another worker has held, unstarted, since
    // the previous look of any worker: the rest of a range whose `begin` has not moved (its
    // owner has started none of its items since), else a continuation still in `next`. Such an
    // owner is stuck in a long or blocking item, and what it holds was claimed before anything
    // now in the queue. An owner that makes progress keeps its batch and its cache lines.
    // Writes at most `slots` items to `out`; returns how many.
    std::size_t steal_stalled(std::size_t thief, work_item** out) noexcept {
        for (std::size_t k = 1; k < workers_; ++k) {
            worker_held& h = held_[(thief + k) % workers_];
            // The marks are relaxed: they only decide when to try. A stale one makes a steal
            // earlier or later; steal_range's CAS and the exchange decide who takes each item.
            const std::uint64_t begin = h.begin.load(std::memory_order_acquire);
            if (begin < h.end.load(std::memory_order_acquire)) {
                // TRICKY: positions only grow and a range is republished only once empty, so
                // an unchanged `begin` over a non-empty range means that no item of it was
                // taken since the mark (steal_range takes whatever is left by then).
                if (h.seen_begin.load(std::memory_order_relaxed) == begin) {
                    if (const std::size_t n = steal_range(h, out))
                        return n;
                } else {
                    h.seen_begin.store(begin, std::memory_order_relaxed);
                }
            }
            // The same for a continuation (a recycled item at the same address may make a
            // fresh one look stalled: stealing it early is harmless).
            if (work_item* next = h.next.load(std::memory_order_relaxed); next != nullptr) {
                if (h.seen_next.load(std::memory_order_relaxed) == next) {
                    if (work_item* item = h.next.exchange(nullptr, std::memory_order_acquire)) {
                        out[0] = item;
                        return 1;
                    }
                } else {
                    h.seen_next.store(next, std::memory_order_relaxed);
                }
            }
        }
        return 0;
    }

    // Whether any worker holds an item (seq_cst: the sleeper's half of the pair above).
    bool any() const noexcept {
        for (std::size_t i = 0; i < workers_; ++i) {
            const worker_held& h = held_[i];
            if (h.begin.load(std::memory_order_seq_cst) < h.end.load(std::memory_order_seq_cst) ||
                h.next.load(std::memory_order_seq_cst) != nullptr)
                return true;
        }
        return false;
    }

    // Continuations ever put into `next` slots (monotonic; part of the pool's accepted count).
    std::uint64_t next_accepted() const noexcept {
        std::uint64_t n = 0;
        for (std::size_t i = 0; i < workers_; ++i)
            n += held_[i].next_accepted.load(std::memory_order_acquire);
        return n;
    }

    // Shutdown, after the workers are joined: empties `worker`'s `next` slot.
    work_item* release_next(std::size_t worker) noexcept {
        return held_[worker].next.exchange(nullptr, std::memory_order_acquire);
    }

private:
    struct worker_held {
        [[maybe_unused]] cache_line_pad pad{}; // apart from the previous worker's
        std::atomic<std::uint64_t> begin{0};   // taken by the owner or a thief (CAS)
        std::atomic<std::uint64_t> end{0};     // published by the owner only
        std::atomic<work_item*> slots[held_items::slots] = {};
        std::atomic<work_item*> next{nullptr};       // exchange: one taker
        std::atomic<std::uint64_t> next_accepted{0}; // written by the owner only
        unsigned next_streak = 0;                    // the owner's only
        // steal_stalled's marks: `begin` and `next` as a busy worker's last look saw them
        // (written by thieves only; no position is ever the maximum).
        std::atomic<std::uint64_t> seen_begin{UINT64_MAX};
        std::atomic<work_item*> seen_next{nullptr};
    };

    static std::size_t steal_range(worker_held& h, work_item** out) noexcept {
        std::uint64_t begin = h.begin.load(std::memory_order_acquire);
        for (;;) {
            const std::uint64_t end = h.end.load(std::memory_order_acquire);
            if (begin >= end)
                return 0;
            if (end - begin > slots) {
                // TRICKY: `begin` is stale and the owner has published again since (a range
                // never spans more than `slots`): read both afresh.
                begin = h.begin.load(std::memory_order_acquire);
                continue;
            }
            // TRICKY: read the slots before the CAS. If the owner took or republished anything
            // meanwhile, `begin` moved on (it never goes back) and the CAS fails: what was read
            // is then dropped.
            const auto n = static_cast<std::size_t>(end - begin);
            for (std::size_t i = 0; i < n; ++i)
                out[i] = h.slots[(begin + i) % slots].load(std::memory_order_relaxed);
            if (h.begin.compare_exchange_weak(begin, end, std::memory_order_acquire,
                                              std::memory_order_acquire))
                return n;
        }
    }

    const std::size_t workers_;
    std::unique_ptr<worker_held[]> held_;
};

} // namespace iocp::detail
