#pragma once
// The pool's timers: a binary min-heap of due times, served by one thread that is started on
// the first timer. Each node remembers its heap index (a classic IOCP timer's event struct does the
// same), so cancelling is O(log n) without searching.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "time.hpp"
#include "work_item.hpp"

namespace iocp {

/// Identifies a timer for `thread_pool::cancel`. Ids are never reused within a pool.
struct timer_id {
    std::uint64_t value = 0;
    friend bool operator==(timer_id, timer_id) = default;
};

namespace detail {

class timer_queue {
public:
    using clock = std::chrono::steady_clock;
    // Hands a due item to the pool; returns false if the pool refused it (it is then ours to
    // abandon).
    using fire_fn = std::function<bool(work_item*)>;
    // Receives what an abandoned callable's destructor threw. Must not throw.
    using report_fn = std::function<void(std::exception_ptr)>;

    timer_queue(fire_fn fire, report_fn report)
        : fire_(std::move(fire)), report_(std::move(report)) {}
    timer_queue(const timer_queue&) = delete;
    timer_queue& operator=(const timer_queue&) = delete;
    ~timer_queue() { shutdown(); }

    // Takes ownership of `item` in every case. Returns the id, or an empty id (0) if the queue
    // was shut down (the item is then abandoned). `due == time_point::max()` never fires: it
    // waits for cancel() or shutdown(). Throws std::bad_alloc or std::system_error (no thread),
    // having abandoned the item.
    timer_id add(clock::time_point due, work_item* item) {
        std::unique_lock lock(mutex_);
        if (closed_) {
            lock.unlock();
            abandon(item);
            return {};
        }
        try {
            if (!thread_.joinable())
                thread_ = std::thread([this] { run(); });
            auto node = std::make_unique<timer_node>(timer_node{due, next_id_, item, 0});
            by_id_.emplace(next_id_, node.get());
            try {
                push(node.get());
            } catch (...) {
                by_id_.erase(next_id_);
                throw;
            }
            (void)node.release(); // owned by the heap and by_id_ now
        } catch (...) {
            lock.unlock();
            abandon(item);
            throw;
        }
        timer_id id{next_id_++};
        if (heap_.front()->id == id.value)
            cv_.notify_one(); // a new earliest deadline
        return id;
    }

    // True if the timer was pending and now never runs (its callable is destroyed).
    bool cancel(timer_id id) noexcept {
        timer_node* node = nullptr;
        {
            std::lock_guard lock(mutex_);
            auto it = by_id_.find(id.value);
            if (it == by_id_.end())
                return false;
            node = it->second;
            by_id_.erase(it);
            remove_at(node->heap_index);
        }
        abandon(node->item);
        delete node;
        return true;
    }

    // Stops the thread and abandons every pending timer; returns how many. Idempotent.
    std::size_t shutdown() noexcept {
        std::vector<timer_node*> pending;
        {
            std::lock_guard lock(mutex_);
            closed_ = true;
            pending.swap(heap_);
            by_id_.clear();
            cv_.notify_one();
        }
        if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id())
            thread_.join();
        for (timer_node* node : pending) {
            abandon(node->item);
            delete node;
        }
        return pending.size();
    }

private:
    struct timer_node {
        clock::time_point due;
        std::uint64_t id;
        work_item* item;
        std::size_t heap_index;
    };

    void run() {
        std::unique_lock lock(mutex_);
        while (!closed_) {
            if (heap_.empty()) {
                cv_.wait(lock);
                continue;
            }
            const auto due = heap_.front()->due;
            const auto now = clock::now();
            if (now < due) {
                // Wait for a relative, saturated time: `due - now` cannot overflow (now < due),
                // and no absolute deadline near time_point::max() reaches the C library's
                // clock arithmetic. A wait longer than the longest finite one is done in
                // steps; time_point::max() is never reached, so such a timer never fires.
                const std::chrono::milliseconds step = wait_timeout(due - now);
                cv_.wait_for(lock, step == infinite ? max_finite_wait : step);
                continue;
            }
            timer_node* node = heap_.front();
            remove_at(0);
            by_id_.erase(node->id);
            lock.unlock();
            // TRICKY: fire outside the lock; from here on cancel() no longer finds the timer,
            // so the item has exactly one owner: the pool, or us if the pool refuses it.
            if (!fire_(node->item))
                abandon(node->item);
            delete node;
            lock.lock();
        }
    }

    void abandon(work_item* item) noexcept {
        if (std::exception_ptr e = abandon_work_item(item); e && report_)
            report_(std::move(e));
    }

    static bool earlier(const timer_node* a, const timer_node* b) noexcept {
        return a->due < b->due || (a->due == b->due && a->id < b->id); // FIFO for equal times
    }

    void place(std::size_t i, timer_node* node) noexcept {
        heap_[i] = node;
        node->heap_index = i;
    }

    void sift_up(std::size_t i) noexcept {
        timer_node* node = heap_[i];
        while (i > 0) {
            std::size_t parent = (i - 1) / 2;
            if (!earlier(node, heap_[parent]))
                break;
            place(i, heap_[parent]);
            i = parent;
        }
        place(i, node);
    }

    void sift_down(std::size_t i) noexcept {
        timer_node* node = heap_[i];
        const std::size_t n = heap_.size();
        for (;;) {
            std::size_t child = 2 * i + 1;
            if (child >= n)
                break;
            if (child + 1 < n && earlier(heap_[child + 1], heap_[child]))
                ++child;
            if (!earlier(heap_[child], node))
                break;
            place(i, heap_[child]);
            i = child;
        }
        place(i, node);
    }

    void push(timer_node* node) {
        heap_.push_back(node);
        sift_up(heap_.size() - 1);
    }

    void remove_at(std::size_t i) noexcept {
        timer_node* last = heap_.back();
        heap_.pop_back();
        if (i == heap_.size())
            return;
        place(i, last);
        sift_down(i);
        sift_up(last->heap_index);
    }

    fire_fn fire_;
    report_fn report_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::vector<timer_node*> heap_;
    std::unordered_map<std::uint64_t, timer_node*> by_id_;
    std::uint64_t next_id_ = 1;
    bool closed_ = false;
    std::thread thread_;
};

} // namespace detail
} // namespace iocp
