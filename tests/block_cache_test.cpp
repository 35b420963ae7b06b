#include "iocp/detail/work_item.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

// The work-item block caches and their depot, without a pool: blocks allocated on one thread
// and freed on another, in random amounts, so that batches go round through the depot in both
// directions. A block handed to two owners at once would show as a stamp overwritten while its
// owner held it.

namespace {

using iocp::detail::block_cache;
using iocp::detail::work_item_block;

struct stamp {
    std::uint64_t owner;
    std::uint64_t serial;
};

void write_stamp(void* block, stamp s) {
    // The whole block: a descriptor left in it by the depot would be overwritten too.
    auto* bytes = static_cast<unsigned char*>(block);
    for (std::size_t off = 0; off + sizeof(stamp) <= work_item_block; off += sizeof(stamp))
        std::memcpy(bytes + off, &s, sizeof s);
}

bool stamp_intact(const void* block, stamp s) {
    const auto* bytes = static_cast<const unsigned char*>(block);
    for (std::size_t off = 0; off + sizeof(stamp) <= work_item_block; off += sizeof(stamp)) {
        stamp seen{};
        std::memcpy(&seen, bytes + off, sizeof seen);
        if (seen.owner != s.owner || seen.serial != s.serial)
            return false;
    }
    return true;
}

struct held_block {
    void* block;
    stamp s;
};

} // namespace

TEST(block_cache_test, blocks_freed_on_other_threads_are_never_handed_out_twice) {
    constexpr int threads = 4;
    constexpr int rounds = 3000;
    std::mutex mutex;
    std::vector<held_block> shared; // allocated by one thread, freed by whichever takes it
    std::atomic<long> corrupted{0};
    std::atomic<long> allocated{0};
    std::atomic<long> freed{0};

    auto check_and_free = [&](const held_block& h) {
        if (!stamp_intact(h.block, h.s))
            corrupted.fetch_add(1, std::memory_order_relaxed);
        block_cache::local().deallocate(h.block);
        freed.fetch_add(1, std::memory_order_relaxed);
    };

    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t)
        workers.emplace_back([&, t] {
            std::mt19937 rng(static_cast<unsigned>(t) * 7919U + 17U);
            std::uint64_t serial = 0;
            for (int r = 0; r < rounds; ++r) {
                // Allocate a random number (sometimes more than a depot batch), stamp, share.
                const int n = static_cast<int>(rng() % 150);
                std::vector<held_block> mine;
                for (int i = 0; i < n; ++i) {
                    void* b = block_cache::local().allocate();
                    const stamp s{static_cast<std::uint64_t>(t), ++serial};
                    write_stamp(b, s);
                    mine.push_back({b, s});
                }
                allocated.fetch_add(n, std::memory_order_relaxed);
                std::vector<held_block> to_free;
                {
                    std::lock_guard lock(mutex);
                    shared.insert(shared.end(), mine.begin(), mine.end());
                    // Take a random amount back, from anywhere (mostly others' blocks).
                    const std::size_t take = rng() % (shared.size() + 1);
                    for (std::size_t i = 0; i < take; ++i) {
                        const std::size_t at = rng() % shared.size();
                        to_free.push_back(shared[at]);
                        shared[at] = shared.back();
                        shared.pop_back();
                    }
                }
                for (const held_block& h : to_free)
                    check_and_free(h);
            }
        });
    for (auto& w : workers)
        w.join();
    for (const held_block& h : shared)
        check_and_free(h);
    EXPECT_EQ(corrupted.load(), 0) << "a block was handed to two owners at once";
    EXPECT_EQ(freed.load(), allocated.load());
    EXPECT_GT(allocated.load(), 0);
}
