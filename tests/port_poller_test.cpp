// The user-space port with a completion_poller installed (detail/posix/completion_poller.hpp):
// the thread that would block with nothing queued waits in the poller instead and takes what it
// reaps itself; a post from elsewhere interrupts that wait; close() does too; a thread that
// finds the polling role taken blocks as before and is woken by posts.
//
// A fake poller stands in for the Linux I/O backends (their own tests drive them directly):
// "kernel completions" are queued on it by the test, and whoever polls posts them to the port,
// as a backend's on_complete does. The kernel's port (Win32) has no poller: there this program
// has no tests (its POSIX-backend build runs them).

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <mutex>
#include <thread>
#include <vector>

#include <iocp/port.hpp>

#if !IOCP_HAS_IOCP

namespace {

using namespace std::chrono_literals;

class fake_poller final : public iocp::detail::posix::completion_poller {
public:
    explicit fake_poller(iocp::port<>& port) : port_(port) {}

    bool poll(std::chrono::milliseconds timeout) noexcept override {
        if (role_.exchange(true))
            return false;
        polls_.fetch_add(1);
        std::deque<iocp::overlapped*> reaped;
        {
            std::unique_lock lock(mutex_);
            if (timeout.count() > 0 && ready_.empty() && !interrupted_) {
                waiting_ = true;
                cv_.notify_all();
                // The test's timeouts are long; cap it so that a lost interrupt fails the test
                // by its assertions rather than by hanging until ctest's timeout.
                cv_.wait_for(lock, (std::min)(timeout, std::chrono::milliseconds(10'000)),
                             [&] { return interrupted_ || !ready_.empty(); });
                waiting_ = false;
            }
            interrupted_ = false;
            reaped.swap(ready_);
        }
        // As a backend's on_complete: a packet per completion, posted by the reaping thread.
        for (iocp::overlapped* ov : reaped) {
            std::error_code ec;
            port_.post(ov, &reaped_key, 0, ec);
            EXPECT_FALSE(ec) << ec.message();
        }
        role_.store(false);
        return true;
    }

    void interrupt() noexcept override {
        std::lock_guard lock(mutex_);
        interrupted_ = true;
        interrupts_.fetch_add(1);
        cv_.notify_all();
    }

    bool maybe_ready() const noexcept override {
        std::lock_guard lock(mutex_);
        return !ready_.empty();
    }

    // Completions "in the kernel": the next poll reaps them (all at once).
    void complete(std::initializer_list<iocp::overlapped*> ovs) {
        std::lock_guard lock(mutex_);
        ready_.insert(ready_.end(), ovs);
        cv_.notify_all();
    }
    void complete(iocp::overlapped* ov) { complete({ov}); }

    // Waits until some thread waits inside poll().
    void wait_for_a_waiter() {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return waiting_; });
    }

    // Holds the role as another port's thread would.
    bool take_role() { return !role_.exchange(true); }
    void give_role() { role_.store(false); }

    int polls() const { return polls_.load(); }
    int interrupts() const { return interrupts_.load(); }

    static inline int reaped_key = 0;

private:
    iocp::port<>& port_;
    mutable std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<iocp::overlapped*> ready_;
    bool interrupted_ = false;
    bool waiting_ = false;
    std::atomic<bool> role_{false};
    std::atomic<int> polls_{0};
    std::atomic<int> interrupts_{0};
};

TEST(port_poller_test, an_idle_thread_polls_and_takes_what_it_reaps_itself) {
    iocp::port<> port;
    fake_poller poller(port);
    port.native_handle()->set_poller(&poller);
    iocp::overlapped ov;
    std::thread getter([&] {
        auto p = port.get(30s);
        ASSERT_TRUE(p.has_value());
        EXPECT_EQ(p->ov, &ov);
        EXPECT_EQ(p->key, &fake_poller::reaped_key);
    });
    poller.wait_for_a_waiter();
    EXPECT_EQ(port.native_handle()->waiting(), 0u); // it waits in the poller, not on the port
    poller.complete(&ov);
    getter.join();
    EXPECT_GE(poller.polls(), 1);
    EXPECT_EQ(poller.interrupts(), 0); // its own post interrupted nobody
}

TEST(port_poller_test, a_post_from_another_thread_interrupts_the_polling_thread) {
    iocp::port<> port;
    fake_poller poller(port);
    port.native_handle()->set_poller(&poller);
    iocp::overlapped ov;
    std::thread getter([&] {
        auto p = port.get(30s);
        ASSERT_TRUE(p.has_value());
        EXPECT_EQ(p->ov, &ov);
        EXPECT_EQ(p->bytes, 7u);
    });
    poller.wait_for_a_waiter();
    port.post(&ov, nullptr, 7);
    getter.join();
    EXPECT_EQ(poller.interrupts(), 1);
}

TEST(port_poller_test, close_interrupts_the_polling_thread) {
    iocp::port<> port;
    fake_poller poller(port);
    port.native_handle()->set_poller(&poller);
    std::thread getter([&] {
        std::error_code ec;
        iocp::port<>::packet_type out[1];
        EXPECT_EQ(port.get_many(std::span(out), iocp::infinite, ec), 0u);
        EXPECT_EQ(ec, iocp::errc::closed);
    });
    poller.wait_for_a_waiter();
    port.close();
    getter.join();
    EXPECT_GE(poller.interrupts(), 1);
}

TEST(port_poller_test, a_zero_timeout_reaps_what_is_ready_without_waiting) {
    iocp::port<> port;
    fake_poller poller(port);
    port.native_handle()->set_poller(&poller);
    EXPECT_FALSE(port.get(0ms).has_value()); // nothing ready: times out at once
    iocp::overlapped ov;
    poller.complete(&ov);
    EXPECT_TRUE(port.native_handle()->maybe_ready());
    auto p = port.get(0ms);
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->ov, &ov);
}

TEST(port_poller_test, with_the_role_taken_a_thread_blocks_on_the_port_and_a_post_wakes_it) {
    iocp::port<> port;
    fake_poller poller(port);
    port.native_handle()->set_poller(&poller);
    ASSERT_TRUE(poller.take_role());
    iocp::overlapped ov;
    std::thread getter([&] {
        auto p = port.get(30s);
        ASSERT_TRUE(p.has_value());
        EXPECT_EQ(p->ov, &ov);
    });
    while (port.native_handle()->waiting() == 0)
        std::this_thread::yield();
    port.post(&ov, nullptr, 0);
    getter.join();
    EXPECT_EQ(poller.polls(), 0);
    poller.give_role();
}

TEST(port_poller_test, what_a_poll_reaps_beyond_one_packet_goes_to_threads_blocked_on_the_port) {
    iocp::port<> port;
    fake_poller poller(port);
    port.native_handle()->set_poller(&poller);
    // One thread blocks on the port (the role is taken while it arrives), one polls.
    ASSERT_TRUE(poller.take_role());
    std::atomic<int> got{0};
    auto get_one = [&] {
        if (port.get(30s).has_value())
            got.fetch_add(1);
    };
    std::thread blocked(get_one);
    while (port.native_handle()->waiting() == 0)
        std::this_thread::yield();
    poller.give_role();
    std::thread polling(get_one);
    poller.wait_for_a_waiter();
    // Both in one reap (a fake without a watchdog: what one poll leaves in the "kernel" waits
    // for the next poll, and the polling thread leaves after its packet).
    iocp::overlapped a, b;
    poller.complete({&a, &b});
    polling.join();
    blocked.join();
    EXPECT_EQ(got.load(), 2);
}

// Many getters, posts from outside and completions reaped by whoever polls, at random moments:
// every packet is taken exactly once, none waits forever.
TEST(port_poller_test, stress_posts_and_reaped_completions_are_each_taken_once) {
    constexpr int getters = 4;
    constexpr int per_source = 4000;
    iocp::port<> port(2);
    fake_poller poller(port);
    port.native_handle()->set_poller(&poller);
    std::vector<iocp::overlapped> posted(per_source);
    std::vector<iocp::overlapped> reaped(per_source);
    std::vector<std::atomic<int>> seen_posted(per_source);
    std::vector<std::atomic<int>> seen_reaped(per_source);
    std::atomic<int> total{0};
    // Integer addresses: comparing pointers into different arrays is unspecified.
    auto index_in = [](const std::vector<iocp::overlapped>& v, const iocp::overlapped* ov) {
        const auto base = reinterpret_cast<std::uintptr_t>(v.data());
        const auto addr = reinterpret_cast<std::uintptr_t>(ov);
        const std::size_t i = (addr - base) / sizeof(iocp::overlapped);
        return addr >= base && i < v.size() ? static_cast<long>(i) : -1L;
    };
    auto count = [&](iocp::overlapped* ov) {
        if (const long i = index_in(posted, ov); i >= 0)
            seen_posted[static_cast<std::size_t>(i)].fetch_add(1);
        else if (const long j = index_in(reaped, ov); j >= 0)
            seen_reaped[static_cast<std::size_t>(j)].fetch_add(1);
        else
            ADD_FAILURE() << "a packet nobody posted";
        total.fetch_add(1);
    };
    std::vector<std::thread> threads;
    for (int g = 0; g < getters; ++g) {
        threads.emplace_back([&, g] {
            iocp::port<>::packet_type out[8];
            while (total.load() < 2 * per_source) {
                std::error_code ec;
                // Short and zero timeouts mixed: both the waiting and the non-waiting poll.
                const auto timeout = g % 2 == 0 ? 0ms : 5ms;
                const std::size_t n = port.get_many(std::span(out), timeout, ec);
                for (std::size_t i = 0; i < n; ++i)
                    count(out[i].ov);
            }
        });
    }
    threads.emplace_back([&] {
        for (int i = 0; i < per_source; ++i) {
            port.post(&posted[static_cast<std::size_t>(i)], nullptr, 0);
            if (i % 64 == 0)
                std::this_thread::yield();
        }
    });
    threads.emplace_back([&] {
        for (int i = 0; i < per_source; ++i) {
            poller.complete(&reaped[static_cast<std::size_t>(i)]);
            if (i % 64 == 0)
                std::this_thread::yield();
        }
    });
    for (std::thread& t : threads)
        t.join();
    for (int i = 0; i < per_source; ++i) {
        EXPECT_EQ(seen_posted[static_cast<std::size_t>(i)].load(), 1) << i;
        EXPECT_EQ(seen_reaped[static_cast<std::size_t>(i)].load(), 1) << i;
    }
}

} // namespace

#endif // !IOCP_HAS_IOCP
