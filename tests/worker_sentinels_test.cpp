// detail::worker_sentinels alone: the pool recognises a worker's stop signal by the address of
// the OVERLAPPED a dequeued packet carries. Only the sentinels' own OVERLAPPEDs may be taken for
// one: not null, not another operation, not an address inside a sentinel or just past the last.
#include "iocp/detail/pool/worker_sentinels.hpp"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

using iocp::detail::worker_sentinels;

namespace {

struct other_op final : iocp::operation {
    other_op() noexcept : operation(&ignore) {}
    static void ignore(void*, iocp::operation*, const iocp::completion&) noexcept {}
};

// An address `offset` bytes past `base`, made with integers (as find() compares them): a packet
// never carries such an address, and pointer arithmetic past an object would not be defined.
const iocp::overlapped* at_offset(const void* base, std::size_t offset) {
    // NOLINTNEXTLINE(performance-no-int-to-ptr): an address from an integer is the point here
    return reinterpret_cast<const iocp::overlapped*>(reinterpret_cast<std::uintptr_t>(base) +
                                                     offset);
}

} // namespace

TEST(worker_sentinels_test, each_sentinel_is_found_as_itself) {
    worker_sentinels s(5);
    ASSERT_EQ(s.size(), 5u);
    for (std::size_t i = 0; i < s.size(); ++i) {
        const iocp::overlapped* ov = &s[i];
        EXPECT_EQ(s.find(ov), &s[i]) << i;
    }
}

TEST(worker_sentinels_test, nothing_else_is_a_sentinel) {
    worker_sentinels s(3);
    EXPECT_EQ(s.find(nullptr), nullptr);
    other_op op;
    EXPECT_EQ(s.find(&op), nullptr);
    auto heap = std::make_unique<other_op[]>(4);
    for (std::size_t i = 0; i < 4; ++i)
        EXPECT_EQ(s.find(&heap[i]), nullptr) << i;
    // Addresses inside the array that are not a sentinel's OVERLAPPED, and the one just past it
    // (a packet never carries these; the check must still say no rather than guess).
    const void* first = &s[0];
    const std::size_t size = sizeof(worker_sentinels::sentinel);
    const std::size_t align = alignof(iocp::overlapped);
    for (std::size_t off : {std::size_t{1}, align, size / 2, size - align, size - 1, size + align})
        EXPECT_EQ(s.find(at_offset(first, off)), nullptr) << off;
    EXPECT_EQ(s.find(at_offset(first, 3 * size)), nullptr) << "one past the last";
}

TEST(worker_sentinels_test, sentinels_of_two_sets_are_told_apart) {
    worker_sentinels a(2);
    worker_sentinels b(2);
    EXPECT_EQ(a.find(&b[0]), nullptr);
    EXPECT_EQ(a.find(&b[1]), nullptr);
    EXPECT_EQ(b.find(&a[0]), nullptr);
    EXPECT_EQ(b.find(&a[1]), nullptr);
    EXPECT_EQ(b.find(&b[1]), &b[1]);
}

TEST(worker_sentinels_test, an_empty_set_finds_nothing) {
    worker_sentinels s(0);
    other_op op;
    EXPECT_EQ(s.find(&op), nullptr);
    EXPECT_EQ(s.find(nullptr), nullptr);
}
