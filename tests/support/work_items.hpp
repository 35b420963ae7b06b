#pragma once
// Work items for the queue tests (work_queue_test, work_lanes_test): items known by their index
// in one array, and a drain that records the indexes in the order the queue gives them out.

#include <gtest/gtest.h>

#include <cstddef>
#include <vector>

#include "iocp/detail/work_item.hpp"

namespace iocp_test {

// Items are identified by their address in one array.
struct items {
    explicit items(std::size_t n) : nodes(n) {}
    std::size_t index(const iocp::detail::work_item* w) const {
        return static_cast<std::size_t>(w - nodes.data());
    }
    iocp::detail::work_item* at(std::size_t i) { return &nodes[i]; }
    std::vector<iocp::detail::work_item> nodes;
};

// Pops everything `q` (a work_queue or work_lanes) holds now, in batches of up to `max`, into
// `out` (indexes); each batch's chain must be as long as its count and at most `max`.
template <class Queue>
void pop_all(Queue& q, items& it, std::size_t max, std::vector<std::size_t>& out) {
    for (;;) {
        const typename Queue::pop_result r = q.pop(max);
        if (r.count == 0)
            return;
        std::size_t n = 0;
        for (iocp::detail::work_item* w = r.head; w != nullptr; w = w->next, ++n)
            out.push_back(it.index(w));
        EXPECT_EQ(n, r.count);
        EXPECT_LE(n, max);
    }
}

} // namespace iocp_test
