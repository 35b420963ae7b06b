#pragma once
// A queued work item: an intrusive node holding the callable, in recycled fixed-size blocks, so
// that posting a small callable allocates nothing in steady state.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include "per_thread.hpp"
#include "pool/constants.hpp"
#include "pool/parking_slots.hpp"

namespace iocp::detail {

// Every node is one block of this size: a cache line's worth of callable plus the header.
// 64 bytes hold a lambda capturing up to 8 pointers, or a std::promise and a small capture;
// bigger callables live in their own heap allocation and the node keeps a pointer to it.
inline constexpr std::size_t work_item_block = 96;

struct work_item {
    // Runs the callable (`run == true`) or only destroys it (`run == false`: abandoned), and
    // in both cases destroys the callable. Never frees the node itself. What the call throws
    // propagates, and so does what the destructor throws; when both throw, the call's
    // propagates and the destructor's is stored in `destroy_error` (two exceptions in flight
    // at once would be std::terminate).
    using invoke_fn = void (*)(work_item* self, bool run, std::exception_ptr& destroy_error);

    work_item* next = nullptr;
    invoke_fn invoke = nullptr;
};

// The callable lives right after the header, at this offset.
inline constexpr std::size_t work_item_storage_offset =
    (sizeof(work_item) + alignof(std::max_align_t) - 1) & ~(alignof(std::max_align_t) - 1);
inline constexpr std::size_t work_item_capacity = work_item_block - work_item_storage_offset;

inline void* work_item_storage(work_item* item) noexcept {
    return reinterpret_cast<unsigned char*>(item) + work_item_storage_offset;
}

// --- block recycling ---------------------------------------------------------------------
//
// Blocks freed by a worker are usually needed by a producer on another thread. Each thread
// keeps a small stack of free blocks' addresses; past `spill` it moves a batch to a global
// depot, and an empty stack refills with a whole batch: one depot call per `batch` items in
// either direction.
//
// Why addresses in an array and not a list linked through the free blocks: a block reaches a
// producer from another core, so its line is a cache miss there. Popping a linked list reads
// each block's link before the next pop can start: one full miss per post, in series (measured:
// the producer's hottest instruction, 93 % of block allocation in a two-producer burst). Taking
// an address from an array reads nothing of the block; the post then only writes it, and the
// processor overlaps those misses.
//
// In the depot a batch describes itself: its blocks are in groups, the first block of each
// group listing the addresses of the others (a taker reads one block in ten, and fetches the next
// group's block while it uses up this one). Batches are parked in block_depot_slots lock-free
// slots (pool/parking_slots.hpp); only when every slot is full (after a burst) does a batch go
// to a locked list: posting in steady state never takes a lock.

class block_depot {
public:
    // The most blocks one batch holds (a thread's whole cache: see block_cache).
    static constexpr std::size_t max_batch = 2 * block_depot_batch;

    // One group of a batch, in its first block: the addresses of the group's other blocks.
    struct group {
        static constexpr std::size_t capacity =
            (work_item_block - 3 * sizeof(void*)) / sizeof(void*);
        group* next_batch = nullptr; // parked_'s locked list (a batch's first group only)
        group* next_group = nullptr;
        std::size_t count = 0;
        void* blocks[capacity];
    };
    static_assert(sizeof(group) <= work_item_block);

    static block_depot& instance() noexcept {
        // Never destroyed: threads may hand their caches back at any point of process exit,
        // after static destructors have run. Its blocks stay reachable, so leak checkers are
        // quiet, and the process returns the memory at exit.
        static auto* depot = new block_depot;
        return *depot;
    }

    // Parks the free blocks `blocks[0..n)` as one batch; 1 <= n <= max_batch. Their contents
    // are overwritten (the batch's groups live in them).
    void give(void* const* blocks, std::size_t n) noexcept {
        group* first = nullptr;
        group** link = &first;
        for (std::size_t i = 0; i < n;) {
            auto* g = ::new (blocks[i++]) group;
            while (g->count < group::capacity && i < n)
                g->blocks[g->count++] = blocks[i++];
            *link = g;
            link = &g->next_group;
        }
        give_groups(first);
    }

    // Parks a chain of groups (from give, or the rest of a taken batch) as one batch.
    void give_groups(group* first) noexcept {
        first->next_batch = nullptr;
        parked_.put(first);
    }

    // Takes one parked batch as its chain of groups (nullptr when the depot is empty), for the
    // taker to unpack a group at a time.
    group* take_groups() noexcept { return parked_.take(); }

    // Writes the addresses of the blocks of the first group of `chain` (the listed ones and
    // the group's own) to `out` (room for group::capacity + 1), and advances `chain` to the
    // next group, which it starts fetching: that block is a cache miss (another thread wrote
    // it), overlapped this way with the posts that use up this group.
    static std::size_t unpack(group*& chain, void** out) noexcept {
        group* g = chain;
        chain = g->next_group;
        if (chain != nullptr)
            prefetch(chain);
        std::size_t n = 0;
        for (std::size_t i = 0; i < g->count; ++i)
            out[n++] = g->blocks[i];
        g->~group();
        out[n++] = g;
        return n;
    }

    // Takes one parked batch whole: writes its blocks' addresses to `out` (room for max_batch)
    // and returns how many; 0 when the depot is empty.
    std::size_t take(void** out) noexcept {
        group* chain = take_groups();
        std::size_t n = 0;
        while (chain != nullptr)
            n += unpack(chain, out + n);
        return n;
    }

    // Calls that took the overflow's lock since the process started (tests: the steady state
    // takes none).
    std::uint64_t locked_calls() const noexcept { return parked_.locked_calls(); }

private:
    static void prefetch(const void* p) noexcept {
#if defined(__GNUC__) || defined(__clang__)
        __builtin_prefetch(p);
#else
        (void)p;
#endif
    }

    parking_slots<group, &group::next_batch, block_depot_slots> parked_;
};

class block_cache {
public:
    // block_depot_batch blocks move between a thread and the depot at a time: one depot call
    // per batch of work items, and at most two batches of idle blocks (12 KiB) parked per
    // thread, plus the rest of the batch it is using up.
    static constexpr std::size_t batch = block_depot_batch;
    static constexpr std::size_t capacity = block_depot::max_batch;
    static_assert(capacity >= 2 * batch);

    static block_cache& local() { return per_thread<block_cache>(); }

    block_cache() noexcept = default;
    block_cache(const block_cache&) = delete;
    block_cache& operator=(const block_cache&) = delete;

    void* allocate() {
        if (dead_.load(std::memory_order_relaxed))
            return ::operator new(work_item_block); // see ~block_cache
        if (count_ == 0) {
            if (taken_ == nullptr)
                taken_ = block_depot::instance().take_groups();
            if (taken_ == nullptr)
                return ::operator new(work_item_block);
            count_ = block_depot::unpack(taken_, free_); // one group: at most 10 blocks
        }
        return free_[--count_];
    }

    void deallocate(void* p) noexcept {
        if (dead_.load(std::memory_order_relaxed)) {
            ::operator delete(p); // every block comes from ::operator new(work_item_block)
            return;
        }
        free_[count_++] = p;
        if (count_ == capacity) {
            count_ -= batch;
            block_depot::instance().give(free_ + count_, batch);
        }
    }

    // A thread's cache can be reached after its destructor ran: main's thread_local is
    // destroyed before static objects, and a static pool (or a pool a static object uses) then
    // still makes and frees work items on that thread. per_thread (POSIX) hands out a fresh
    // cache then; where it cannot (the Windows fallback), the destructor leaves this one empty
    // and dead, and a dead cache goes straight to the heap, never handing out again the blocks
    // it gave to the depot.
    ~block_cache() {
        if (count_ > 0)
            block_depot::instance().give(free_, count_);
        if (taken_ != nullptr)
            block_depot::instance().give_groups(taken_);
        count_ = 0;
        taken_ = nullptr;
        dead_.store(true, std::memory_order_relaxed);
    }

private:
    // Atomic only so that the compiler keeps the destructor's store: plain stores to an object
    // whose lifetime ends are dead to GCC (-flifetime-dse). One thread reads and writes it.
    std::atomic<bool> dead_{false};
    std::size_t count_ = 0;
    void* free_[capacity];                // free blocks' addresses; [0, count_) are valid
    block_depot::group* taken_ = nullptr; // the groups of a taken batch not unpacked yet
};

// --- making and disposing of work items ----------------------------------------------------

// Calls `*f` if `run`, then destroys it with `destroy` (whose exception, if the callable's
// destructor is noexcept(false) and throws, reaches the caller and through it the pool's
// exception handler, instead of std::terminate). The destructor runs after the call's exception
// was caught, never during its unwinding, so that both exceptions survive: the call's
// propagates, the destructor's goes to `destroy_error`.
template <class F, class Destroy>
void run_then_destroy(F* f, bool run, std::exception_ptr& destroy_error, Destroy&& destroy) {
    if (run) {
        try {
            (*f)();
        } catch (...) {
            const std::exception_ptr call_error = std::current_exception();
            try {
                destroy(f);
            } catch (...) {
                destroy_error = std::current_exception();
            }
            std::rethrow_exception(call_error);
        }
    }
    destroy(f);
}

template <class F>
struct inline_item {
    static void invoke(work_item* self, bool run, std::exception_ptr& destroy_error) {
        F* f = std::launder(reinterpret_cast<F*>(work_item_storage(self)));
        run_then_destroy(f, run, destroy_error, [](F* p) { p->~F(); });
    }
};

template <class F>
struct boxed_item {
    static void invoke(work_item* self, bool run, std::exception_ptr& destroy_error) {
        F* f = *std::launder(reinterpret_cast<F**>(work_item_storage(self)));
        run_then_destroy(f, run, destroy_error, [](F* p) { delete p; });
    }
};

template <class F>
inline constexpr bool fits_inline =
    sizeof(F) <= work_item_capacity &&
    alignof(F) <= alignof(std::max_align_t) && std::is_nothrow_move_constructible_v<F>;

// Allocates a node holding `f` (decayed). Throws std::bad_alloc, or whatever F's constructor
// throws; nothing leaks if it does.
template <class F>
work_item* make_work_item(F&& f) {
    using fn_type = std::decay_t<F>;
    block_cache& cache = block_cache::local();
    void* block = cache.allocate();
    auto* item = ::new (block) work_item;
    try {
        if constexpr (fits_inline<fn_type>) {
            ::new (work_item_storage(item)) fn_type(std::forward<F>(f));
            item->invoke = &inline_item<fn_type>::invoke;
        } else {
            auto box = std::make_unique<fn_type>(std::forward<F>(f));
            ::new (work_item_storage(item)) fn_type*(box.release());
            item->invoke = &boxed_item<fn_type>::invoke;
        }
    } catch (...) {
        cache.deallocate(block);
        throw;
    }
    return item;
}

// Gives a block back to this thread's cache (any thread may free any block).
inline void free_block(void* block) noexcept {
    try {
        block_cache::local().deallocate(block);
    } catch (const std::bad_alloc&) {
        ::operator delete(block); // no cache for this thread (Windows)
    }
}

inline void free_work_item(work_item* item) noexcept { free_block(item); }

// Runs the item's callable, destroys it and frees the node. What the call or the destructor
// throws propagates; when both throw, the destructor's is stored in `destroy_error` (the
// caller reports both, the call's first).
inline void run_work_item(work_item* item, std::exception_ptr& destroy_error) {
    struct free_guard {
        work_item* item;
        ~free_guard() { free_work_item(item); }
    } guard{item};
    item->invoke(item, true, destroy_error);
}

// Destroys the item's callable without running it, and frees the node. Returns what the
// callable's destructor threw (usually nothing), for the caller to hand to its exception
// handler: an exception is never swallowed.
[[nodiscard]] inline std::exception_ptr abandon_work_item(work_item* item) noexcept {
    std::exception_ptr error;
    try {
        item->invoke(item, false, error); // (`error` is only written when a call threw too)
    } catch (...) {
        error = std::current_exception();
    }
    free_work_item(item);
    return error;
}

} // namespace iocp::detail
