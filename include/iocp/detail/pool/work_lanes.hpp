#pragma once
// The pool's work items, in lanes: a few independent FIFOs (work_queue.hpp each), one chosen by
// the posting thread, so that two threads posting at once do not fight over one counter.
//
// Why. With one queue every post is a CAS on one shared position: two producers move its cache
// line between their cores on every post, and the CAS of one fails whenever the other got in
// between. `perf` on the two-producer bench (W4) put 54 % of all cycles on that CAS. A lane per
// producer is what the fastest queues do (moodycamel's ConcurrentQueue, Go's per-P run queues):
// a producer's counter stays in its own cache, and only the slot hand-off crosses cores.
//
// Order. Items one thread posts run in the order it posted them (its lane is a FIFO, and a thread
// keeps its lane for life). Items posted by different threads have no order among them, even when
// one post happens before the other: a worker may look at the later one's lane first. (A pool
// with several workers never ordered their *running* anyway; with one worker this is the
// difference from a single FIFO, documented on thread_pool::post.)
//
// Lanes. `lane_count` lanes, a thread's lane being its ordinal (numbered on first post, process
// wide) modulo the count: more threads than lanes share lanes, which stay correct (each is a
// multi-producer queue) and only contend again. Lane 0 exists from the start; the others are
// made on the first post that picks them (their memory follows the producers, not the maximum).
// A lane that cannot be made (no memory) becomes another name for lane 0, for good, so that a
// thread's items never move from one queue to another (which would break their order).
// Consumers scan the lanes from a per-thread rotating start, so that no lane waits behind a busy
// one for more than `lane_count` batches.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>

#include "../work_queue.hpp"

// Keeps a function out of its callers (undefined again at the end of this header).
#if defined(_MSC_VER) && !defined(__clang__)
#define IOCP_DETAIL_NOINLINE __declspec(noinline)
#else
#define IOCP_DETAIL_NOINLINE __attribute__((noinline))
#endif

namespace iocp::detail {

class work_lanes {
public:
    // Lanes of one pool (a power of two).
    static constexpr std::size_t lane_count = 8;

    using access = work_queue::access;
    using pop_result = work_queue::pop_result;

    // `capacity` and `segment_slots` are each lane's (see work_queue). Throws std::bad_alloc.
    explicit work_lanes(std::size_t capacity,
                        std::size_t segment_slots = work_queue::max_segment_slots)
        : capacity_(capacity), segment_slots_(segment_slots) {
        owned_[0] = std::make_unique<work_queue>(capacity_, segment_slots_);
        lanes_[0].store(owned_[0].get(), std::memory_order_release);
    }

    work_lanes(const work_lanes&) = delete;
    work_lanes& operator=(const work_lanes&) = delete;

    // Appends `item` to the calling thread's lane; false if refused (see work_queue::push).
    // Kept out of the pool's post, as GCC kept the single queue's push before lanes: inlined
    // there (GCC 12 -O3, one-producer bench W1 on a 2-vCPU AMD EPYC), most processes settled
    // in W1's slow state (6-11 M/s against 14-16; bench/README.md, "W1 is bimodal"); out of
    // line, W1 was where it was without lanes (9 processes of each build).
    IOCP_DETAIL_NOINLINE bool push(work_item* item, bool privileged) {
        return lane_for(lane_of_this_thread()).push(item, privileged);
    }

    // Restricts every lane, and those made from now on (see work_queue::restrict).
    void restrict(access a) noexcept {
        // TRICKY: under the lock that makes lanes, so that a lane is either made before this
        // (and restricted here) or after (and made restricted): a post never lands in an open
        // lane once this returns.
        std::lock_guard lock(make_mutex_);
        if (a == access::closed || access_ == access::open)
            access_ = a;
        for (const auto& lane : owned_)
            if (lane != nullptr)
                lane->restrict(a);
    }

    // After restrict(closed): true once every lane has given out every item it accepted.
    bool drained() const noexcept {
        for (const auto& lane : lanes_)
            if (const work_queue* q = lane.load(std::memory_order_acquire); q && !q->drained())
                return false;
        return true;
    }

    // Takes up to `max` items from the first lane that has some, starting from the calling
    // thread's next lane in turn. `more` is also set when another lane holds items.
    // TRICKY: that is what makes the pool wake a sleeper for them (worker_loop::run). A
    // producer does not wake anyone while a worker spins, counting on the spinner to come; with
    // one FIFO the spinner's batch took the item, and items it did not start stayed visible to
    // idle workers. With lanes the spinner takes one lane's items only: without `more`, an item
    // in another lane could wait behind this batch (a long task) while a worker sleeps.
    pop_result pop(std::size_t max) noexcept {
        const std::size_t start = next_start();
        for (std::size_t i = 0; i < lane_count; ++i) {
            const std::size_t index = (start + i) & (lane_count - 1);
            work_queue* q = lanes_[index].load(std::memory_order_acquire);
            if (q == nullptr)
                continue;
            pop_result r = q->pop(max);
            if (r.head == nullptr)
                continue;
            if (!r.more)
                r.more = others_nonempty(index);
            return r;
        }
        return {};
    }

    // True when some lane has an item a consumer can take now (work_queue::maybe_nonempty's
    // seq_cst loads, lane by lane: the wake protocol's sleeper half holds for each).
    bool maybe_nonempty() const noexcept {
        for (const auto& lane : lanes_)
            if (const work_queue* q = lane.load(std::memory_order_seq_cst);
                q != nullptr && q->maybe_nonempty())
                return true;
        return false;
    }

    // Items ever accepted by all lanes. Monotonic.
    std::uint64_t pushed() const noexcept {
        const work_queue* first = lanes_[0].load(std::memory_order_acquire);
        std::uint64_t n = first->pushed();
        for (std::size_t i = 1; i < lane_count; ++i)
            if (const work_queue* q = lanes_[i].load(std::memory_order_acquire);
                q != nullptr && q != first) // another name for lane 0 counts once
                n += q->pushed();
        return n;
    }

    // The lane the calling thread posts to (the same for life, in every pool).
    static std::size_t lane_of_this_thread() noexcept {
        return thread_ordinal() & (lane_count - 1);
    }

private:
    // The calling thread's number, from 0 in order of first use, process wide.
    static std::size_t thread_ordinal() noexcept {
        static std::atomic<std::size_t> next{0};
        thread_local const std::size_t mine = next.fetch_add(1, std::memory_order_relaxed);
        return mine;
    }

    // Where the calling thread's next scan starts (advances by one each scan).
    static std::size_t next_start() noexcept {
        thread_local std::size_t cursor = thread_ordinal();
        return cursor++;
    }

    bool others_nonempty(std::size_t taken) const noexcept {
        for (std::size_t i = 0; i < lane_count; ++i)
            if (const work_queue* q = lanes_[i].load(std::memory_order_acquire);
                i != taken && q != nullptr && q->maybe_nonempty())
                return true;
        return false;
    }

    work_queue& lane_for(std::size_t index) {
        if (work_queue* q = lanes_[index].load(std::memory_order_acquire))
            return *q;
        return make_lane(index);
    }

    work_queue& make_lane(std::size_t index) noexcept {
        std::lock_guard lock(make_mutex_);
        if (lanes_[index].load(std::memory_order_relaxed) == nullptr) {
            try {
                owned_[index] = std::make_unique<work_queue>(capacity_, segment_slots_);
            } catch (const std::bad_alloc&) {
                // No memory for the lane: it is lane 0 from now on (see the file's comment).
                lanes_[index].store(owned_[0].get(), std::memory_order_seq_cst);
                return *owned_[0];
            }
            if (access_ != access::open)
                owned_[index]->restrict(access_);
            lanes_[index].store(owned_[index].get(), std::memory_order_seq_cst);
        }
        return *lanes_[index].load(std::memory_order_relaxed);
    }

    const std::size_t capacity_;
    const std::size_t segment_slots_;
    std::array<std::atomic<work_queue*>, lane_count> lanes_{};
    std::mutex make_mutex_; // guards owned_ and access_ (lanes are made and restricted under it)
    std::array<std::unique_ptr<work_queue>, lane_count> owned_{};
    access access_ = access::open;
};

} // namespace iocp::detail

#undef IOCP_DETAIL_NOINLINE
