// detail::wake_protocol alone: who must post a wake-up, when a worker may sleep, and (under
// TSan) that no wake-up is ever lost or doubled when producers and sleepers race.
#include "iocp/detail/pool/wake_protocol.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

using iocp::detail::wake_protocol;

namespace {

// A stand-in for the port: wake-up tokens that sleepers wait for (unbounded waits: a lost
// wake-up hangs the stress test, which the liveness bound below then reports).
class token_port {
public:
    void post() {
        {
            std::lock_guard lock(mutex_);
            ++tokens_;
        }
        cv_.notify_one();
    }
    // False when closed and no token is left.
    bool wait() {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return tokens_ > 0 || closed_; });
        if (tokens_ == 0)
            return false;
        --tokens_;
        return true;
    }
    void close() {
        {
            std::lock_guard lock(mutex_);
            closed_ = true;
        }
        cv_.notify_all();
    }
    int left() {
        std::lock_guard lock(mutex_);
        return tokens_;
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    int tokens_ = 0;
    bool closed_ = false;
};

} // namespace

TEST(wake_protocol_test, nobody_to_wake_without_a_sleeper) {
    wake_protocol w;
    EXPECT_FALSE(w.must_wake());
    EXPECT_EQ(w.sleepers(), 0);
}

TEST(wake_protocol_test, one_sleeper_is_claimed_by_exactly_one_producer) {
    wake_protocol w;
    ASSERT_TRUE(w.try_mark_inactive([] { return false; }));
    EXPECT_EQ(w.sleepers(), 1);
    EXPECT_TRUE(w.must_wake());
    EXPECT_FALSE(w.must_wake()) << "a second producer must not wake the same sleeper";
    EXPECT_FALSE(w.unregister()) << "the claimed sleeper's wake-up is on the way";
}

TEST(wake_protocol_test, work_seen_while_registering_cancels_the_sleep) {
    wake_protocol w;
    EXPECT_FALSE(w.try_mark_inactive([] { return true; }));
    EXPECT_EQ(w.sleepers(), 0);
    EXPECT_FALSE(w.must_wake());
}

TEST(wake_protocol_test, a_claim_made_while_registering_means_sleep_the_wake_up_is_coming) {
    wake_protocol w;
    bool claimed = false;
    // The producer publishes and claims between the registration and the look for work.
    EXPECT_TRUE(w.try_mark_inactive([&] {
        claimed = w.must_wake();
        return true;
    }));
    EXPECT_TRUE(claimed);
    EXPECT_EQ(w.sleepers(), 0);
}

TEST(wake_protocol_test, a_spinner_makes_the_wake_up_unnecessary) {
    wake_protocol w;
    ASSERT_TRUE(w.try_mark_inactive([] { return false; }));
    ASSERT_TRUE(w.try_start_spinning());
    EXPECT_FALSE(w.try_start_spinning()) << "at most one spinner";
    EXPECT_TRUE(w.spinning());
    EXPECT_FALSE(w.must_wake());
    w.stop_spinning();
    EXPECT_TRUE(w.must_wake());
}

TEST(wake_protocol_test, a_failed_wake_up_gives_the_claim_back) {
    wake_protocol w;
    ASSERT_TRUE(w.try_mark_inactive([] { return false; }));
    ASSERT_TRUE(w.must_wake());
    w.wake_failed();
    EXPECT_EQ(w.sleepers(), 1);
    EXPECT_TRUE(w.must_wake()) << "a later producer may try again";
}

TEST(wake_protocol_test, unregister_takes_back_an_unclaimed_registration) {
    wake_protocol w;
    EXPECT_FALSE(w.unregister());
    ASSERT_TRUE(w.try_mark_inactive([] { return false; }));
    EXPECT_TRUE(w.unregister());
    EXPECT_EQ(w.sleepers(), 0);
}

// Producers publish items (a seq_cst counter), consumers take them and sleep through the
// protocol on a token port. Every item must be taken, every token used by exactly one sleeper
// (none left over, none missing), and nobody may sleep through an item: a lost wake-up would
// leave items behind while every consumer sleeps.
TEST(wake_protocol_test, stress_no_lost_or_doubled_wake_up) {
    constexpr int producers = 2;
    constexpr int consumers = 3;
    constexpr int per_producer = 20000;
    wake_protocol w;
    token_port port;
    std::atomic<long> available{0};
    std::atomic<long> taken{0};
    std::atomic<long> tokens_used{0};
    std::atomic<long> tokens_posted{0};
    std::atomic<bool> done{false};
    auto has_work = [&] { return available.load(std::memory_order_seq_cst) > 0; };
    auto take = [&] {
        long n = available.load(std::memory_order_seq_cst);
        while (n > 0) {
            if (available.compare_exchange_weak(n, n - 1, std::memory_order_seq_cst)) {
                taken.fetch_add(1);
                return true;
            }
        }
        return false;
    };
    std::vector<std::thread> threads;
    for (int c = 0; c < consumers; ++c) {
        threads.emplace_back([&, c] {
            for (;;) {
                if (take())
                    continue;
                if (c == 0 && w.try_start_spinning()) { // one consumer also spins a little
                    bool found = false;
                    for (int i = 0; i < 100 && !found; ++i)
                        found = has_work();
                    w.stop_spinning();
                    if (found)
                        continue;
                }
                if (done.load())
                    return;
                if (!w.try_mark_inactive(has_work))
                    continue;
                if (!port.wait()) {
                    w.unregister(); // closed: leave
                    return;
                }
                tokens_used.fetch_add(1);
            }
        });
    }
    for (int p = 0; p < producers; ++p) {
        threads.emplace_back([&] {
            for (int i = 0; i < per_producer; ++i) {
                available.fetch_add(1, std::memory_order_seq_cst); // publish
                if (w.must_wake()) {
                    tokens_posted.fetch_add(1);
                    port.post();
                }
                if (i % 64 == 0)
                    std::this_thread::yield(); // let consumers go to sleep now and then
            }
        });
    }
    for (int p = 0; p < producers; ++p)
        threads[consumers + p].join();
    // Liveness bound, not a speed check: everything must be taken while the consumers are
    // free to sleep. A lost wake-up leaves items forever.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (taken.load() != long{producers} * per_producer &&
           std::chrono::steady_clock::now() < give_up)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(taken.load(), long{producers} * per_producer) << "a wake-up was lost";
    // Every claimed token reaches the sleeper it was claimed for (same liveness bound): a
    // token posted for nobody (a doubled claim) would stay in the port.
    while (tokens_used.load() != tokens_posted.load() && std::chrono::steady_clock::now() < give_up)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(port.left(), 0) << "a wake-up was posted for nobody";
    done.store(true);
    port.close();
    for (int c = 0; c < consumers; ++c)
        threads[c].join();
    EXPECT_EQ(available.load(), 0);
    EXPECT_EQ(tokens_used.load(), tokens_posted.load());
    EXPECT_GT(tokens_posted.load(), 0) << "the stress never put a consumer to sleep";
}

// One item at a time: the producer publishes, then waits until the consumer took it, so the
// consumer goes to sleep between almost every two items and the item often arrives just as
// it registers (the race the protocol exists for). A consumer that sleeps through an item
// stalls the ping-pong for good; the liveness bound then reports it.
TEST(wake_protocol_test, stress_ping_pong_never_sleeps_through_an_item) {
    constexpr long rounds = 20000;
    wake_protocol w;
    token_port port;
    std::atomic<long> available{0};
    std::atomic<long> taken{0};
    std::atomic<bool> done{false};
    auto has_work = [&] { return available.load(std::memory_order_seq_cst) > 0; };
    std::thread consumer([&] {
        for (;;) {
            if (available.load(std::memory_order_seq_cst) > 0) {
                available.fetch_sub(1, std::memory_order_seq_cst);
                taken.fetch_add(1, std::memory_order_seq_cst);
                continue;
            }
            if (done.load())
                return;
            // The pool's worker spins, steals and polls here before it sleeps: a gap in which
            // the next item usually arrives unannounced (no sleeper was registered yet).
            std::this_thread::yield();
            if (!w.try_mark_inactive(has_work))
                continue;
            if (!port.wait()) {
                w.unregister();
                return;
            }
        }
    });
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    long stalled_at = -1;
    for (long i = 0; i < rounds && stalled_at < 0; ++i) {
        available.fetch_add(1, std::memory_order_seq_cst); // publish
        if (w.must_wake())
            port.post();
        // Liveness bound, not a speed check.
        while (taken.load(std::memory_order_seq_cst) != i + 1) {
            if (std::chrono::steady_clock::now() >= give_up) {
                stalled_at = i;
                break;
            }
            std::this_thread::yield();
        }
    }
    EXPECT_EQ(stalled_at, -1) << "the consumer slept through item " << stalled_at;
    done.store(true);
    port.close();
    consumer.join();
    EXPECT_EQ(taken.load(), stalled_at < 0 ? rounds : stalled_at);
}
