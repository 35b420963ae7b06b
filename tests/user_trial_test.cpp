// Programs a user might write from the README and the headers, aimed at what could go wrong with
// `co_await pool.schedule()` on a worker (the continuation waits in that worker's own slot):
// hops started from the thread hooks and the exception handler, hops inside long items, wait()
// from many threads while coroutines hop, one worker juggling hops, timers and sockets, and
// shutdown (stop, join, destructor) at random moments. Each counts what it started and checks
// that everything ran, or was abandoned, exactly once.

#include "iocp/coroutine.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "iocp/config.hpp"
#include "iocp/coro/spawn.hpp"
#include "iocp/coro/sync_wait.hpp"
#include "iocp/coro/task.hpp"
#include "iocp/coro/when_all.hpp"
#include "iocp/error.hpp"
#include "iocp/thread_pool.hpp"
#include "support/coroutines.hpp"
#include "support/waiting.hpp"

#if IOCP_HAS_IO
#include "iocp/acceptor.hpp"
#include "iocp/coro/io.hpp"
#include "iocp/endpoint.hpp"
#include "iocp/socket.hpp"
#include "support/socket_pair.hpp"
#endif

namespace {

// What a hopping coroutine did.
struct hop_counts {
    std::atomic<int> hops{0};      // hops that resumed
    std::atomic<int> ended{0};     // bodies that reached their end (closed or not)
    std::atomic<int> closed{0};    // bodies that ended on errc::closed
    std::atomic<int> destroyed{0}; // frames destroyed
};

// Hops `n` times (n < 0: until the pool refuses), counting each hop; an errc::closed ends it.
iocp_test::eager_coroutine eager_hopper(iocp::thread_pool& pool, int n, hop_counts& c,
                                        iocp_test::frame_guard) {
    try {
        for (int i = 0; n < 0 || i < n; ++i) {
            co_await pool.schedule();
            c.hops.fetch_add(1);
        }
    } catch (const std::system_error& e) {
        if (e.code() == iocp::errc::closed)
            c.closed.fetch_add(1);
    }
    c.ended.fetch_add(1);
}

iocp::task<> hopper(iocp::thread_pool& pool, int n, hop_counts& c, iocp_test::frame_guard) {
    try {
        for (int i = 0; n < 0 || i < n; ++i) {
            co_await pool.schedule();
            c.hops.fetch_add(1);
        }
    } catch (const std::system_error& e) {
        if (e.code() == iocp::errc::closed)
            c.closed.fetch_add(1);
    }
    c.ended.fetch_add(1);
}

iocp::thread_pool_options options_with(std::size_t threads) {
    iocp::thread_pool_options o;
    o.threads = threads;
    return o;
}

// --- hops started where no item runs ------------------------------------------------------

TEST(user_trial_test, hops_started_in_on_thread_start_run_once_or_end_closed) {
    // on_thread_start runs on the worker before its loop: a hop from there lands in the slot of
    // a worker that has not run anything yet. Shutdown races the hooks in most rounds (join,
    // stop, the destructor right after the constructor); it waits for them, so each hook's
    // coroutine makes all its hops (or, under stop(), ends on errc::closed), and its frame is
    // freed once.
    constexpr std::size_t threads = 3;
    constexpr int hops = 40;
    for (int round = 0; round < 40; ++round) {
        hop_counts c;
        {
            iocp::thread_pool_options o = options_with(threads);
            // The hook may run before the constructor returns: it waits for the pool's address.
            std::atomic<iocp::thread_pool*> self{nullptr};
            o.on_thread_start = [&](std::size_t) {
                iocp_test::wait_until([&] { return self.load() != nullptr; }, "the pool");
                eager_hopper(*self.load(), hops, c, iocp_test::frame_guard(c.destroyed));
            };
            iocp::thread_pool pool(std::move(o));
            self.store(&pool);
            switch (round % 4) {
            case 0:
                iocp_test::wait_until([&] { return c.ended.load() == int{threads}; },
                                      "every hook's coroutine to end");
                pool.wait();
                break;
            case 1: pool.join(); break;
            case 2: pool.stop(); break;
            default: break; // the destructor
            }
        }
        EXPECT_EQ(c.ended.load(), int{threads}) << "round " << round;
        EXPECT_EQ(c.destroyed.load(), int{threads}) << "round " << round;
        // join() and stop() wait for the hooks before they look for outstanding work: under
        // wait(), join() and the destructor (a join) every hop runs; under stop() each
        // coroutine makes all its hops or ends on errc::closed, once.
        EXPECT_LE(c.hops.load(), int{threads} * hops) << "round " << round;
        EXPECT_GE(c.hops.load(), (int{threads} - c.closed.load()) * hops) << "round " << round;
        if (round % 4 != 2) {
            EXPECT_EQ(c.closed.load(), 0) << "round " << round;
            EXPECT_EQ(c.hops.load(), int{threads} * hops) << "round " << round;
        }
    }
}

TEST(user_trial_test, hops_started_by_the_exception_handler_are_counted_by_wait) {
    // The exception handler runs on the worker, inside the throwing item: a hop it starts is
    // accepted before that item is finished, so wait() must not return before it has run.
    constexpr int items = 300;
    constexpr int hops = 3;
    hop_counts c;
    std::atomic<int> handled{0};
    iocp::thread_pool* self = nullptr;
    iocp::thread_pool_options o = options_with(2);
    o.exception_handler = [&](const std::exception_ptr&) {
        handled.fetch_add(1);
        eager_hopper(*self, hops, c, iocp_test::frame_guard(c.destroyed));
    };
    iocp::thread_pool pool(std::move(o));
    self = &pool; // before the first item that can throw
    std::vector<std::thread> posters;
    for (int t = 0; t < 2; ++t) {
        posters.emplace_back([&] {
            for (int i = 0; i < items / 2; ++i) {
                pool.post([] { throw std::runtime_error("user error"); });
                if (i % 50 == 49)
                    pool.wait();
            }
        });
    }
    for (auto& t : posters)
        t.join();
    pool.wait();
    EXPECT_EQ(handled.load(), items);
    EXPECT_EQ(c.ended.load(), items);
    EXPECT_EQ(c.hops.load(), items * hops);
    EXPECT_EQ(c.destroyed.load(), items);
    EXPECT_EQ(c.closed.load(), 0);
}

// --- hops and long items -------------------------------------------------------------------

TEST(user_trial_test, hops_started_inside_long_items_all_run_and_wait_counts_them) {
    // Each item starts a hopping coroutine and then goes on working (a busy loop of a random
    // length): its continuation waits in the slot of a busy worker, so another worker takes it
    // or it runs when the item returns. Every hop runs once; wait() returns after all of them.
    iocp::thread_pool pool(3);
    std::mt19937 rng(7);
    for (int round = 0; round < 20; ++round) {
        hop_counts c;
        constexpr int items = 12;
        constexpr int hops = 25;
        for (int i = 0; i < items; ++i) {
            const auto busy = std::chrono::microseconds(rng() % 400);
            pool.post([&pool, &c, busy] {
                eager_hopper(pool, hops, c, iocp_test::frame_guard(c.destroyed));
                const auto until = std::chrono::steady_clock::now() + busy;
                while (std::chrono::steady_clock::now() < until) {
                }
            });
        }
        pool.wait();
        EXPECT_EQ(c.ended.load(), items) << "round " << round;
        EXPECT_EQ(c.hops.load(), items * hops) << "round " << round;
        EXPECT_EQ(c.destroyed.load(), items) << "round " << round;
    }
}

TEST(user_trial_test, waiters_on_many_threads_see_every_hop_of_what_they_started) {
    // Several threads each start coroutines and post items, then call wait(), while the others
    // do the same: after its wait() returns, everything a thread started has run, every hop
    // included (wait() counts continuations in worker slots as queued work).
    iocp::thread_pool pool(2);
    constexpr int threads = 3;
    constexpr int rounds = 40;
    constexpr int coroutines = 4;
    constexpr int hops = 30;
    constexpr int items = 10;
    std::atomic<int> failures{0};
    std::atomic<int> destroyed{0};
    std::vector<std::thread> clients;
    for (int t = 0; t < threads; ++t) {
        clients.emplace_back([&] {
            for (int r = 0; r < rounds; ++r) {
                hop_counts c;
                std::atomic<int> ran{0};
                for (int k = 0; k < coroutines; ++k)
                    iocp::spawn(pool, hopper(pool, hops, c, iocp_test::frame_guard(c.destroyed)));
                for (int i = 0; i < items; ++i)
                    pool.post([&ran] { ran.fetch_add(1); });
                pool.wait();
                if (c.hops.load() != coroutines * hops || c.ended.load() != coroutines ||
                    ran.load() != items) {
                    failures.fetch_add(1);
                }
                // The frame is freed after the body's end: wait for it (not for the hops).
                iocp_test::wait_until([&] { return c.destroyed.load() == coroutines; },
                                      "the frames to be freed");
                destroyed.fetch_add(c.destroyed.load());
            }
        });
    }
    for (auto& t : clients)
        t.join();
    EXPECT_EQ(failures.load(), 0);
    EXPECT_EQ(destroyed.load(), threads * rounds * coroutines);
}

// --- shutdown at random moments --------------------------------------------------------------

TEST(user_trial_test, stop_join_or_destructor_while_coroutines_hop_and_sleep) {
    // Coroutines that hop, sleep on the pool's timers and hop again, started from the outside
    // and from workers, then stop(), join() or the destructor at a random moment. Every frame
    // is destroyed exactly once; join()/destructor run each body to its end.
    for (int round = 0; round < 30; ++round) {
        const int mode = round % 3; // 0: stop, 1: join, 2: destructor
        constexpr int n = 24;
        std::atomic<int> destroyed{0};
        std::atomic<int> started{0};
        std::atomic<int> ended{0};
        std::atomic<int> closed{0};
        std::atomic<int> reported{0}; // exceptions the pool's handler received
        {
            std::optional<iocp::thread_pool> pool;
            auto body = [&](iocp_test::frame_guard, int id) -> iocp::task<> {
                started.fetch_add(1);
                try {
                    for (int i = 0; mode == 0 || i < 60; ++i) {
                        co_await pool->schedule();
                        if ((i + id) % 20 == 0) {
                            std::error_code ec =
                                co_await pool->sleep_for(std::chrono::microseconds(50));
                            if (ec == iocp::errc::closed)
                                throw std::system_error(ec);
                        }
                    }
                } catch (const std::system_error& e) {
                    if (e.code() == iocp::errc::closed)
                        closed.fetch_add(1);
                }
                ended.fetch_add(1);
            };
            iocp::thread_pool_options o = options_with(2);
            o.exception_handler = [&](const std::exception_ptr&) { reported.fetch_add(1); };
            pool.emplace(std::move(o));
            std::mt19937 rng(static_cast<unsigned>(round));
            for (int c = 0; c < n / 2; ++c)
                iocp::spawn(*pool, body(iocp_test::frame_guard(destroyed), c));
            // Spawned from a worker (their first hop goes into a slot); an item stop() abandons
            // destroys the unstarted task it owns, and a spawn stop() refuses (errc::closed,
            // reported to the exception handler) destroys it too.
            for (int c = n / 2; c < n; ++c) {
                pool->post([&pool, t = body(iocp_test::frame_guard(destroyed), c)]() mutable {
                    iocp::spawn(*pool, std::move(t));
                });
            }
            std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
            if (mode == 0)
                pool->stop();
            else if (mode == 1)
                pool->join();
            pool.reset();
        }
        EXPECT_EQ(destroyed.load(), n) << "round " << round;
        EXPECT_EQ(ended.load(), started.load()) << "round " << round;
        if (mode == 0) {
            EXPECT_EQ(closed.load(), started.load()) << "round " << round;
        } else {
            // A sleep pending at join() is abandoned (errc::closed): that body ends early. Every
            // spawned task started, though (join runs queued work, and what its items post).
            EXPECT_EQ(started.load(), n) << "round " << round;
            EXPECT_EQ(reported.load(), 0) << "round " << round;
        }
    }
}

#if IOCP_HAS_IO

// --- one worker: hops, timers and sockets --------------------------------------------------

using iocp_test::socket_pair;

socket_pair make_pair(iocp::thread_pool& pool) { return iocp_test::make_socket_pair(pool); }

unsigned char byte_at(std::size_t i) {
    return static_cast<unsigned char>((i * 13 + i / 257) & 0xFF);
}

TEST(user_trial_test, one_worker_interleaves_hops_timers_and_socket_io) {
    // A 1-thread pool: a sender that hops and sleeps between sends, a receiver that hops after
    // each receive, and a coroutine that only hops. The continuations in the worker's slot must
    // not starve the socket completions or the timers (and the other way round): every byte
    // arrives in order and every hop runs.
    iocp::thread_pool pool(1);
    socket_pair p = make_pair(pool);
    constexpr std::size_t messages = 300;
    constexpr std::size_t message_size = 48;
    constexpr int free_hops = 3000;
    std::atomic<int> hops{0};
    auto sender = [&]() -> iocp::task<std::size_t> {
        std::array<unsigned char, message_size> buf{};
        std::size_t sent = 0;
        for (std::size_t m = 0; m < messages; ++m) {
            for (std::size_t i = 0; i < message_size; ++i)
                buf[i] = byte_at(sent + i);
            co_await pool.schedule();
            hops.fetch_add(1);
            auto [ec, n] = co_await iocp::async_send_all(p.client, iocp::buffer(buf));
            if (ec)
                throw std::system_error(ec, "send_all");
            sent += n;
            if (m % 25 == 0) {
                if (std::error_code sec = co_await pool.sleep_for(std::chrono::microseconds(100)))
                    throw std::system_error(sec, "sleep_for");
            }
        }
        p.client.shutdown(iocp::shutdown_type::send);
        co_return sent;
    };
    auto receiver = [&]() -> iocp::task<std::size_t> {
        std::array<unsigned char, 37> buf{}; // not a multiple of the message: splits them
        std::size_t received = 0;
        bool in_order = true;
        for (;;) {
            auto [ec, n] = co_await iocp::async_recv(p.server, iocp::buffer(buf));
            if (ec == iocp::errc::eof)
                break;
            if (ec)
                throw std::system_error(ec, "recv");
            for (std::size_t i = 0; i < n; ++i)
                in_order = in_order && buf[i] == byte_at(received + i);
            received += n;
            co_await pool.schedule();
            hops.fetch_add(1);
        }
        EXPECT_TRUE(in_order);
        co_return received;
    };
    auto spinner = [&]() -> iocp::task<int> {
        int n = 0;
        for (; n < free_hops; ++n) {
            co_await pool.schedule();
            hops.fetch_add(1);
        }
        co_return n;
    };
    auto [sent, received, spun] = iocp::sync_wait(iocp::when_all(sender(), receiver(), spinner()));
    EXPECT_EQ(sent, messages * message_size);
    EXPECT_EQ(received, messages * message_size);
    EXPECT_EQ(spun, free_hops);
    EXPECT_GE(hops.load(), free_hops + static_cast<int>(messages) + 1);
}

TEST(user_trial_test, stop_or_join_while_coroutines_hop_and_wait_on_sockets) {
    // Receivers waiting on sockets that hop after every message, a sender, and hoppers; then
    // stop() or join() at a random moment. Each pending receive completes once (aborted), each
    // frame is destroyed once, and nothing leaks (ASan).
    for (int round = 0; round < 16; ++round) {
        const bool stopping = round % 2 == 0;
        std::atomic<int> destroyed{0};
        std::atomic<int> started{0};
        std::atomic<int> ended{0};
        std::atomic<int> recv_aborted{0};
        constexpr int pairs = 3;
        constexpr int hoppers = 6;
        {
            iocp::thread_pool pool(2);
            std::vector<socket_pair> sockets;
            for (int i = 0; i < pairs; ++i)
                sockets.push_back(make_pair(pool));
            auto receiver = [&](iocp_test::frame_guard, socket_pair& sp) -> iocp::task<> {
                started.fetch_add(1);
                std::array<char, 64> buf{};
                try {
                    for (;;) {
                        auto [ec, n] = co_await iocp::async_recv(sp.server, iocp::buffer(buf));
                        if (ec) {
                            if (ec == iocp::errc::operation_aborted)
                                recv_aborted.fetch_add(1);
                            break;
                        }
                        co_await pool.schedule();
                    }
                } catch (const std::system_error&) { // the hop refused or abandoned
                }
                ended.fetch_add(1);
            };
            auto sender = [&](iocp_test::frame_guard, socket_pair& sp) -> iocp::task<> {
                started.fetch_add(1);
                const char msg[16] = "0123456789abcde";
                try {
                    for (int i = 0; stopping || i < 200; ++i) {
                        auto [ec, n] = co_await iocp::async_send_all(sp.client, iocp::buffer(msg));
                        if (ec)
                            break;
                        co_await pool.schedule();
                    }
                } catch (const std::system_error&) {
                }
                ended.fetch_add(1);
            };
            auto hop = [&](iocp_test::frame_guard) -> iocp::task<> {
                started.fetch_add(1);
                try {
                    for (int i = 0; stopping || i < 500; ++i)
                        co_await pool.schedule();
                } catch (const std::system_error&) {
                }
                ended.fetch_add(1);
            };
            for (auto& sp : sockets) {
                iocp::spawn(pool, receiver(iocp_test::frame_guard(destroyed), sp));
                iocp::spawn(pool, sender(iocp_test::frame_guard(destroyed), sp));
            }
            for (int h = 0; h < hoppers; ++h)
                iocp::spawn(pool, hop(iocp_test::frame_guard(destroyed)));
            std::mt19937 rng(static_cast<unsigned>(round) + 100);
            std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
            if (stopping)
                pool.stop();
            else
                pool.join();
            // The sockets go before the pool (the pool must outlive them).
            sockets.clear();
        }
        constexpr int spawned = pairs * 2 + hoppers;
        EXPECT_EQ(destroyed.load(), spawned) << "round " << round;
        EXPECT_EQ(ended.load(), started.load()) << "round " << round;
        if (!stopping) {
            EXPECT_EQ(started.load(), spawned) << "round " << round;
        }
        // Each receiver ends once: on an aborted receive (shutdown cancelled it), or a refused
        // or abandoned hop; never twice.
        EXPECT_LE(recv_aborted.load(), pairs) << "round " << round;
    }
}

TEST(user_trial_test, a_hopping_coroutine_stops_another_ones_receive_while_bytes_arrive) {
    // The timeout pattern on the pool's own workers: a coroutine hops a random number of times,
    // then stops the receive another coroutine awaits, while a thread outside the pool sends
    // bytes at random moments. Each receive resumes once, never inside request_stop() (1 and
    // 2 workers: on one, the worker that stops is the only one that can run the completion),
    // with errc::operation_aborted or with its bytes; no byte is lost, duplicated or reordered.
    for (const std::size_t threads : {std::size_t{1}, std::size_t{2}}) {
        iocp::thread_pool pool(threads);
        socket_pair p = make_pair(pool);
        constexpr int rounds = 400;
        constexpr std::size_t total = 3000;
        thread_local bool in_request_stop = false;
        std::atomic<bool> resumed_inside_stop{false};
        std::atomic<std::size_t> sent{0};
        std::thread sender([&] {
            std::mt19937 rng(static_cast<unsigned>(threads));
            std::array<unsigned char, 8> buf{};
            while (sent.load() < total) {
                const std::size_t n = std::min<std::size_t>(1 + rng() % buf.size(), total - sent);
                for (std::size_t i = 0; i < n; ++i)
                    buf[i] = byte_at(sent.load() + i);
                std::promise<std::pair<std::error_code, std::size_t>> done;
                p.client.send_all(iocp::buffer(buf.data(), n),
                                  [&done](std::error_code ec, std::size_t bytes) {
                                      done.set_value({ec, bytes});
                                  });
                const auto [ec, bytes] = iocp_test::await(done.get_future(), "a send");
                ASSERT_FALSE(ec) << ec.message();
                ASSERT_EQ(bytes, n);
                sent.fetch_add(n);
                std::this_thread::sleep_for(std::chrono::microseconds(rng() % 200));
            }
        });
        int started = 0;
        int aborted = 0;
        int completed = 0;
        std::size_t received = 0;
        bool in_order = true;
        auto reader = [&](std::stop_token token) -> iocp::task<> {
            std::array<unsigned char, 16> buf{};
            ++started;
            auto [ec, n] = co_await iocp::async_recv(p.server, iocp::buffer(buf), token);
            if (in_request_stop)
                resumed_inside_stop.store(true);
            if (ec == iocp::errc::operation_aborted) {
                EXPECT_EQ(n, 0U);
                ++aborted;
                co_return;
            }
            if (ec)
                throw std::system_error(ec, "recv");
            ++completed;
            for (std::size_t i = 0; i < n; ++i)
                in_order = in_order && buf[i] == byte_at(received + i);
            received += n;
        };
        auto stopper = [&](std::stop_source& stop, int hops) -> iocp::task<> {
            for (int i = 0; i < hops; ++i)
                co_await pool.schedule();
            in_request_stop = true;
            stop.request_stop();
            in_request_stop = false;
        };
        std::mt19937 rng(42);
        for (int r = 0; r < rounds && received < total; ++r) {
            std::stop_source stop;
            iocp::sync_wait(iocp::when_all(reader(stop.get_token()),
                                           stopper(stop, static_cast<int>(rng() % 40))));
        }
        // The rest without a stop, so that every byte sent is accounted for.
        while (received < total) {
            iocp::sync_wait(reader({}));
        }
        sender.join();
        EXPECT_FALSE(resumed_inside_stop.load()) << threads << " workers";
        EXPECT_TRUE(in_order) << threads << " workers";
        EXPECT_EQ(received, total) << threads << " workers";
        EXPECT_EQ(aborted + completed, started) << threads << " workers";
        std::printf("[ trial    ] %zu workers: %d receives aborted, %d completed\n", threads,
                    aborted, completed);
    }
}

#endif // IOCP_HAS_IO

} // namespace
