// detail::completion_backlog alone: the pool's FIFO of completions that did not go through the
// port, and (under TSan) that entries pushed from many threads at once are each popped once.
#include "iocp/detail/pool/completion_backlog.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "support/platform.hpp"

using iocp::detail::completion_backlog;

namespace {

// An operation that is only an address: the backlog never completes or destroys one.
struct inert_op final : iocp::operation {
    inert_op() noexcept : operation(&never) {}
    static void never(void*, iocp::operation*, const iocp::completion&) noexcept {
        ADD_FAILURE() << "the backlog completed an operation";
    }
};

} // namespace

TEST(completion_backlog_test, pops_oldest_first_with_its_result) {
    completion_backlog b;
    inert_op ops[3];
    EXPECT_FALSE(b.maybe_nonempty());
    EXPECT_FALSE(b.nonempty());
    EXPECT_FALSE(b.pop().has_value());
    for (std::size_t i = 0; i < 3; ++i)
        ASSERT_TRUE(b.push(&ops[i], iocp::completion{{}, 10 * i, &ops[i]}));
    EXPECT_TRUE(b.maybe_nonempty());
    EXPECT_TRUE(b.nonempty());
    for (std::size_t i = 0; i < 3; ++i) {
        const std::optional<completion_backlog::entry> e = b.pop();
        ASSERT_TRUE(e.has_value());
        EXPECT_EQ(e->op, &ops[i]);
        EXPECT_EQ(e->result.bytes, 10 * i);
        EXPECT_EQ(e->result.key, &ops[i]);
    }
    EXPECT_FALSE(b.pop().has_value());
    EXPECT_FALSE(b.nonempty());
    // Empty again, then reused: the tail was reset with the head.
    ASSERT_TRUE(b.push(&ops[1], iocp::completion{}));
    const std::optional<completion_backlog::entry> e = b.pop();
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->op, &ops[1]);
}

TEST(completion_backlog_test, keeps_an_error_result) {
    completion_backlog b;
    inert_op op;
    const std::error_code ec = std::make_error_code(std::errc::connection_reset);
    ASSERT_TRUE(b.push(&op, iocp::completion{ec, 0, nullptr}));
    const std::optional<completion_backlog::entry> e = b.pop();
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->result.error, ec);
}

// What nobody popped is freed with the backlog (ASan's leak check sees a lost node); the
// operations are the caller's and stay untouched (inert_op fails the test if completed).
TEST(completion_backlog_test, destruction_frees_what_was_not_popped_and_leaves_the_operations) {
    auto ops = std::make_unique<inert_op[]>(5);
    {
        completion_backlog b;
        for (std::size_t i = 0; i < 5; ++i)
            ASSERT_TRUE(b.push(&ops[i], iocp::completion{}));
        ASSERT_TRUE(b.pop().has_value());
        EXPECT_TRUE(b.nonempty());
    } // four nodes freed here
}

// Producers push while consumers pop: every entry is popped exactly once, and one producer's
// entries come out in its order (each consumer sees them increasing).
TEST(completion_backlog_test, stress_every_entry_pushed_from_many_threads_is_popped_once) {
    constexpr std::size_t producers = 4;
    constexpr int consumers = 3;
    const auto per_producer = static_cast<std::size_t>(20000 / iocp_test::tsan_divisor);
    const std::size_t total = producers * per_producer;
    completion_backlog b;
    // The entries' addresses name them; `bytes` carries the producer's sequence number.
    auto ops = std::make_unique<inert_op[]>(total);
    auto seen = std::make_unique<std::atomic<int>[]>(total);
    std::atomic<std::size_t> popped{0};
    std::atomic<int> producing{static_cast<int>(producers)};
    std::atomic<int> out_of_order{0};
    std::vector<std::thread> threads;
    for (std::size_t p = 0; p < producers; ++p) {
        threads.emplace_back([&, p] {
            for (std::size_t i = 0; i < per_producer; ++i) {
                while (!b.push(&ops[p * per_producer + i], iocp::completion{{}, i, nullptr}))
                    std::this_thread::yield();
                if (i % 64 == 0)
                    std::this_thread::yield(); // let the consumers empty it now and then
            }
            producing.fetch_sub(1);
        });
    }
    for (int c = 0; c < consumers; ++c) {
        threads.emplace_back([&] {
            std::vector<long> last(producers, -1);
            // Until every entry came out, or (an entry lost) the producers are done and the
            // backlog is empty: then the count below fails instead of the test hanging.
            while (popped.load() < total) {
                const bool done = producing.load() == 0;
                const std::optional<completion_backlog::entry> e = b.pop();
                if (!e) {
                    if (done)
                        break;
                    std::this_thread::yield();
                    continue;
                }
                const auto index =
                    static_cast<std::size_t>(static_cast<inert_op*>(e->op) - ops.get());
                const std::size_t p = index / per_producer;
                if (static_cast<long>(e->result.bytes) <= last[p])
                    out_of_order.fetch_add(1);
                last[p] = static_cast<long>(e->result.bytes);
                seen[index].fetch_add(1);
                popped.fetch_add(1);
            }
        });
    }
    for (auto& t : threads)
        t.join();
    EXPECT_FALSE(b.pop().has_value());
    EXPECT_FALSE(b.nonempty());
    EXPECT_EQ(out_of_order.load(), 0);
    int missing = 0;
    int twice = 0;
    for (std::size_t i = 0; i < total; ++i) {
        missing += seen[i].load() == 0 ? 1 : 0;
        twice += seen[i].load() > 1 ? 1 : 0;
    }
    EXPECT_EQ(missing, 0);
    EXPECT_EQ(twice, 0);
}
