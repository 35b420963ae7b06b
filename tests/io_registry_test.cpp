// detail::io_registry alone: the I/O objects a pool cancels at shutdown. Every object that is
// registered when the cancel pass runs, or registers after it, is cancelled exactly once; one
// removed before the pass never is. Under TSan, objects come and go on many threads while the
// pass runs at a random moment.
#include "iocp/detail/pool/io_registry.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "support/platform.hpp"

using iocp::detail::io_object_hook;
using iocp::detail::io_registry;

namespace {

// An I/O object's stand-in: counts its cancels.
struct counted_hook : io_object_hook {
    counted_hook() noexcept : io_object_hook{&counted_hook::on_cancel} {}
    static void on_cancel(io_object_hook* self) noexcept {
        static_cast<counted_hook*>(self)->cancels.fetch_add(1, std::memory_order_relaxed);
    }
    std::atomic<int> cancels{0};
};

} // namespace

TEST(io_registry_test, the_pass_cancels_each_registered_object_once_and_no_removed_one) {
    io_registry r;
    counted_hook h[5];
    for (auto& x : h)
        r.add(x);
    r.remove(h[0]); // the oldest: the list's tail
    r.remove(h[4]); // the newest: the list's head
    r.remove(h[2]); // one in the middle
    r.remove(h[2]); // twice: harmless
    r.cancel_all();
    r.cancel_all(); // once only
    EXPECT_EQ(h[0].cancels.load(), 0);
    EXPECT_EQ(h[1].cancels.load(), 1);
    EXPECT_EQ(h[2].cancels.load(), 0);
    EXPECT_EQ(h[3].cancels.load(), 1);
    EXPECT_EQ(h[4].cancels.load(), 0);
    r.remove(h[1]);
    r.remove(h[3]);
}

TEST(io_registry_test, an_object_registered_after_the_pass_is_cancelled_at_once) {
    io_registry r;
    r.cancel_all();
    counted_hook late;
    r.add(late);
    EXPECT_EQ(late.cancels.load(), 1); // inside add, on this thread
    r.cancel_all();
    EXPECT_EQ(late.cancels.load(), 1);
    r.remove(late);
}

TEST(io_registry_test, removing_an_object_never_added_is_harmless) {
    io_registry r;
    counted_hook a;
    counted_hook never_added;
    r.add(a);
    r.remove(never_added);
    r.cancel_all();
    EXPECT_EQ(a.cancels.load(), 1);
    EXPECT_EQ(never_added.cancels.load(), 0);
    r.remove(a);
}

// Threads register objects and remove most of them again while the pass runs at a random
// moment of the first three quarters of their work; the last quarter waits for the pass to be
// done, so every round has registrations before, during and after it. Each registration is a
// fresh object. Afterwards: no object was cancelled twice; every
// object registered after its thread saw the pass done was cancelled (inside add); every object
// still registered at the end was cancelled; every object removed before the pass began was not.
TEST(io_registry_test, stress_objects_come_and_go_while_the_pass_runs) {
    constexpr int threads = 4;
    const int per_thread = 4000 / iocp_test::tsan_divisor;
    for (int round = 0; round < 5; ++round) {
        io_registry r;
        std::vector<std::unique_ptr<counted_hook[]>> hooks;
        for (int t = 0; t < threads; ++t)
            hooks.push_back(std::make_unique<counted_hook[]>(static_cast<std::size_t>(per_thread)));
        std::atomic<bool> pass_started{false};
        std::atomic<bool> pass_done{false};
        std::atomic<int> progress{0}; // iterations done, all threads together
        const int hold_at = per_thread * 3 / 4;
        // Per registration: 1 if it was made after the pass was seen done, 2 if it was removed
        // before the pass was seen starting, 3 if it stays registered, else 0.
        std::vector<std::vector<int>> kind(threads, std::vector<int>(per_thread, 0));
        std::vector<std::thread> workers;
        for (int t = 0; t < threads; ++t) {
            workers.emplace_back([&, t] {
                std::minstd_rand rng(static_cast<unsigned>(round * threads + t + 1));
                for (int i = 0; i < per_thread; ++i, progress.fetch_add(1)) {
                    if (i == hold_at) {
                        while (!pass_done.load())
                            std::this_thread::yield();
                    }
                    counted_hook& h =
                        hooks[static_cast<std::size_t>(t)][static_cast<std::size_t>(i)];
                    const bool after = pass_done.load();
                    r.add(h);
                    if (after)
                        kind[t][i] = 1;
                    if (rng() % 8 == 0) {
                        if (kind[t][i] == 0)
                            kind[t][i] = 3;
                        continue; // stays registered
                    }
                    if (rng() % 4 == 0)
                        std::this_thread::yield();
                    r.remove(h);
                    if (!pass_started.load() && kind[t][i] == 0)
                        kind[t][i] = 2; // pass_started is set before the pass takes the lock
                }
            });
        }
        // Somewhere between 1/8 and 5/8 of the way to the threads' hold.
        std::minstd_rand rng(static_cast<unsigned>(round));
        const int target = threads * hold_at / 8 +
                           static_cast<int>(rng() % static_cast<unsigned>(threads * hold_at / 2));
        while (progress.load() < target)
            std::this_thread::yield();
        pass_started = true;
        r.cancel_all();
        pass_done = true;
        for (auto& w : workers)
            w.join();
        int twice = 0;
        int missed = 0;
        int wrong = 0;
        int after_pass = 0;
        for (int t = 0; t < threads; ++t) {
            for (int i = 0; i < per_thread; ++i) {
                const int c =
                    hooks[static_cast<std::size_t>(t)][static_cast<std::size_t>(i)].cancels.load();
                twice += c > 1 ? 1 : 0;
                if ((kind[t][i] == 1 || kind[t][i] == 3) && c != 1)
                    ++missed;
                if (kind[t][i] == 2 && c != 0)
                    ++wrong;
                after_pass += kind[t][i] == 1 ? 1 : 0;
            }
        }
        EXPECT_GE(after_pass, threads * (per_thread - hold_at)) << "round " << round;
        EXPECT_EQ(twice, 0) << "round " << round;
        EXPECT_EQ(missed, 0) << "round " << round;
        EXPECT_EQ(wrong, 0) << "round " << round;
        // The ones still registered are removed before they are destroyed, as objects do.
        for (int t = 0; t < threads; ++t)
            for (int i = 0; i < per_thread; ++i)
                r.remove(hooks[static_cast<std::size_t>(t)][static_cast<std::size_t>(i)]);
    }
}
