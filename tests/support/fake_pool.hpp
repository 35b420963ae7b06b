#pragma once
// A pool made of nothing but the parts thread_pool is built from (the real queue, held items,
// wake protocol, spin, backlog, accounting, phase, sentinels, I/O registry and port), under the
// names thread_pool gives them, with the pool's small helpers written the way thread_pool writes
// them. detail::worker_loop and detail::shutdown_sequence run on it unchanged, so each can be
// tested alone (worker_loop_test, shutdown_sequence_test) without the rest of thread_pool.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <span>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "iocp/detail/pool/adaptive_spin.hpp"
#include "iocp/detail/pool/completion_backlog.hpp"
#include "iocp/detail/pool/constants.hpp"
#include "iocp/detail/pool/held_items.hpp"
#include "iocp/detail/pool/io_registry.hpp"
#include "iocp/detail/pool/outstanding_work.hpp"
#include "iocp/detail/pool/shutdown_phase.hpp"
#include "iocp/detail/pool/wake_protocol.hpp"
#include "iocp/detail/pool/work_lanes.hpp"
#include "iocp/detail/pool/worker_loop.hpp"
#include "iocp/detail/pool/worker_sentinels.hpp"
#include "iocp/detail/work_item.hpp"
#include "iocp/port.hpp"

namespace iocp_test {

struct fake_pool {
    using clock = std::chrono::steady_clock;
    // Short, so that a lost wake-up would cost a test a fraction of a second, not hang it.
    static constexpr std::chrono::milliseconds idle_recheck{50};
    struct options {
        std::size_t threads = 2;
        std::size_t batch = iocp::detail::pool_max_batch;
        std::chrono::microseconds spin{0};
    };
    struct wake_tag {
        unsigned char unused = 0;
    };
    // The pool's timers as shutdown sees them: shutdown() abandons the pending ones and says
    // how many. Records the thread that called it and what that thread's shutdown mark said.
    struct fake_timers {
        std::size_t pending = 0;
        int shutdowns = 0;
        bool marked_as_owner = false;
        std::atomic<std::thread::id>* owner = nullptr;
        std::size_t shutdown() noexcept {
            ++shutdowns;
            marked_as_owner = owner != nullptr && owner->load() == std::this_thread::get_id();
            return std::exchange(pending, 0);
        }
    };

    explicit fake_pool(std::size_t threads = 2,
                       std::chrono::microseconds spin = std::chrono::microseconds(0))
        : options_{threads, iocp::detail::pool_max_batch, spin}, sentinels_(threads),
          work_(threads + 1), // one finished count per worker, plus shutdown's
          held_(threads), spin_(spin) {
        timers_.owner = &shutdown_thread_;
    }

    // Starts the workers, each running detail::worker_loop as thread_pool's workers do.
    void start_workers() {
        for (std::size_t i = 0; i < options_.threads; ++i) {
            workers_.emplace_back([this, i] {
                {
                    std::lock_guard lock(start_mutex_);
                    ++workers_started_;
                }
                start_cv_.notify_all();
                iocp::detail::worker_loop<fake_pool>(*this, i).run();
            });
        }
    }

    void wake_one_if_needed() noexcept {
        if (wake_.must_wake() && !post_wakeup())
            wake_.wake_failed();
    }
    bool post_wakeup() noexcept {
        std::error_code ec;
        port_.post(nullptr, &wake_tag_, 0, ec);
        return !ec;
    }
    void post_sentinel(iocp::detail::worker_sentinels::sentinel& s) noexcept {
        std::error_code ec;
        port_.post(&s, nullptr, 0, ec);
    }
    void abandon(iocp::detail::work_item* item) noexcept {
        if (std::exception_ptr e = iocp::detail::abandon_work_item(item))
            handle_exception(e);
    }
    void handle_exception(const std::exception_ptr&) noexcept { exceptions.fetch_add(1); }

    // Posts as thread_pool::enqueue does (`internal`: a timer's or a worker's post); false when
    // the queue refused it (shutdown), and the item is still the caller's.
    bool try_enqueue(iocp::detail::work_item* item, bool internal = false) noexcept {
        if (!queue_.push(item, internal))
            return false;
        wake_one_if_needed();
        return true;
    }
    void enqueue(iocp::detail::work_item* item) { ASSERT_TRUE(try_enqueue(item)); }

    std::uint64_t accepted() const noexcept { return queue_.pushed() + held_.next_accepted(); }
    bool idle() const noexcept {
        return work_.idle([this] { return accepted(); });
    }

    options options_;
    iocp::port<> port_{0};
    iocp::detail::worker_sentinels sentinels_;
    wake_tag wake_tag_;
    std::vector<std::thread> workers_;
    std::mutex start_mutex_;
    std::condition_variable start_cv_;
    std::size_t workers_started_ = 0; // guarded by start_mutex_
    iocp::detail::work_lanes queue_{1024};
    iocp::detail::shutdown_phase phase_;
    iocp::detail::wake_protocol wake_;
    iocp::detail::outstanding_work work_;
    iocp::detail::held_items held_;
    iocp::detail::adaptive_spin spin_;
    iocp::detail::io_registry io_objects_;
    std::atomic<int> completions_posting_{0};
    iocp::detail::completion_backlog backlog_;
    std::atomic<std::size_t> abandoned_{0};
    std::atomic<std::uint64_t> port_polls_{0};
    std::atomic<std::uint64_t> sleeps_{0};
    std::atomic<std::uint64_t> recoveries_{0};
    std::mutex shutdown_mutex_;
    std::atomic<std::thread::id> shutdown_thread_{};
    fake_timers timers_;
    std::atomic<int> exceptions{0};
};

// Everything left on the port, without waiting.
inline std::vector<iocp::packet<void>> drain(iocp::port<>& port) {
    std::vector<iocp::packet<void>> out;
    iocp::packet<void> packets[iocp::detail::pool_max_batch];
    std::error_code ec;
    while (std::size_t n = port.get_many(std::span(packets), std::chrono::milliseconds(0), ec))
        out.insert(out.end(), packets, packets + n);
    return out;
}

// Waits (yielding) until `done()`; the code under test runs on another thread meanwhile.
template <class Done>
void wait_for(Done&& done) {
    while (!done())
        std::this_thread::yield();
}

} // namespace iocp_test
