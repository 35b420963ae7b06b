#pragma once
// The pool's tuning constants, each named once. Several happen to be 64; they are unrelated
// and may change independently.

#include <chrono>
#include <cstddef>

#include "../packet.hpp"

namespace iocp::detail {

// Bytes of a cache line on the targets we know (x86-64, most AArch64 cores).
inline constexpr std::size_t cache_line_size = 64;

// Keeps the members around it on different cache lines, so that counters written by different
// threads do not false-share. Padding rather than alignas: MinGW-w64 GCC does not honour
// over-alignment of stack objects and then faults on aligned moves (GCC bug 54412).
struct cache_line_pad {
    unsigned char bytes[cache_line_size];
};

// The most packets one dequeue takes (GetQueuedCompletionStatusEx's limit, which the POSIX
// port shares); also the most work items a worker claims at once.
inline constexpr std::size_t pool_max_batch = max_dequeue_batch;

// Work items a busy worker runs between two non-blocking looks at the port, so that I/O
// completions never starve behind a busy FIFO.
inline constexpr std::size_t port_poll_interval = 64;

// Rounds of pure pause an idle spinner makes before it starts yielding between looks (so that
// a producer sharing its core gets to run).
inline constexpr unsigned pure_spin_rounds = 64;

// A spinner's yield that returns later than this handed its core to another thread for a time
// slice (an uncontended sched_yield returns within a microsecond or two).
inline constexpr std::chrono::microseconds spin_preempted_after{20};

// The shortest yielding spin an adaptive spin grows back from (after its pure-spin rounds found
// work while it was shortened to nothing).
inline constexpr std::chrono::microseconds spin_window_min{2};

// Work-item blocks that move between a thread's cache and the shared depot at a time.
inline constexpr std::size_t block_depot_batch = 64;

// Batches the lock-free depot parks (32 x 64 blocks of 96 bytes: 192 KiB); more go to its
// locked overflow list.
inline constexpr std::size_t block_depot_slots = 32;

// Coroutine continuations (`co_await schedule()`) a worker runs in a row from its own `next`
// slot before one goes through the shared queue, behind the work and I/O waiting there.
inline constexpr unsigned continuation_streak = 32;

// Slots of a worker's held range (a ring): a claim publishes at most pool_max_batch - 1 items.
inline constexpr std::size_t held_range_slots = pool_max_batch;

} // namespace iocp::detail
