#pragma once
// The user-space completion port: Windows IOCP semantics on top of a mutex and one condition
// variable per waiting thread.
//
//  - Packets are FIFO (a growable ring, so steady-state posting allocates nothing).
//  - Waiters are released LIFO (a stack of waiter records living on the waiters' own stacks):
//    the most recently blocked thread is the one whose cache is still warm.
//  - At most `concurrency` threads are "active" at once. As on Windows, a thread becomes
//    active when it dequeues a packet and stops being active when it next calls get (or
//    get_many) or exits. A thread blocked inside a handler (on a mutex, say) still counts as
//    active: unlike the kernel, we cannot see that. A thread is bound to one port at a time:
//    calling get on a second port releases its active slot on the first.
//  - close() wakes every waiter with errc::closed; later calls report errc::closed.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <new>
#include <system_error>
#include <thread>
#include <utility>

#include "../../config.hpp"
#include "../../error.hpp"
#include "../fault_injection.hpp"
#include "../packet.hpp"
#include "../per_thread.hpp"

#if IOCP_WINDOWS
#include "../win32/windows.hpp"
#else
#include "handle.hpp"
#endif

namespace iocp::detail::posix {

// FIFO of packets in a power-of-two ring that doubles when full and never shrinks.
class packet_ring {
public:
    bool empty() const noexcept { return size_ == 0; }
    std::size_t size() const noexcept { return size_; }

    // Throws std::bad_alloc only when the ring must grow.
    void push(raw_packet p) {
        if (size_ == capacity_)
            grow();
        slots_[(head_ + size_) & (capacity_ - 1)] = p;
        ++size_;
    }

    raw_packet pop() noexcept {
        raw_packet p = slots_[head_];
        head_ = (head_ + 1) & (capacity_ - 1);
        --size_;
        return p;
    }

private:
    void grow() {
        // 64 slots to start: enough for a pool's wake-ups and sentinels without regrowing.
        std::size_t capacity = capacity_ == 0 ? 64 : capacity_ * 2;
        auto slots = std::make_unique<raw_packet[]>(capacity);
        for (std::size_t i = 0; i < size_; ++i)
            slots[i] = slots_[(head_ + i) & (capacity_ - 1)];
        slots_ = std::move(slots);
        capacity_ = capacity;
        head_ = 0;
    }

    std::unique_ptr<raw_packet[]> slots_;
    std::size_t capacity_ = 0;
    std::size_t head_ = 0;
    std::size_t size_ = 0;
};

class port_state;

// Which port the calling thread is bound to and whether it holds one of that port's active
// slots. The shared_ptr keeps the state alive until the thread lets go of it, so a thread may
// outlive the port object it last dequeued from.
struct thread_binding {
    std::shared_ptr<port_state> port;
    bool active = false;
    // Reused by every wait of this thread: constructing one per wait allocates on some
    // platforms (winpthreads).
    std::condition_variable cv;
    inline ~thread_binding();
};

inline thread_binding& this_thread_binding() { return per_thread<thread_binding>(); }

class port_state : public std::enable_shared_from_this<port_state> {
public:
    explicit port_state(unsigned concurrency) noexcept : concurrency_(concurrency) {}

    std::error_code post(raw_packet p) noexcept {
        std::lock_guard lock(mutex_);
        if (closed_)
            return make_error_code(errc::closed);
        try {
            queue_.push(p);
        } catch (const std::bad_alloc&) {
            return std::make_error_code(std::errc::not_enough_memory);
        }
        release_waiters();
        return {};
    }

    std::size_t get(packet_sink out, std::size_t capacity, std::chrono::milliseconds timeout,
                    std::error_code& ec) noexcept {
        thread_binding& self = this_thread_binding();
        if (self.port.get() != this)
            rebind(self);

        std::unique_lock lock(mutex_);
        if (closed_) {
            ec = make_error_code(errc::closed);
            return 0;
        }
        // The calling thread is done with the packet it dequeued last: its slot is free.
        if (self.active) {
            self.active = false;
            --active_;
        }
        if (!queue_.empty() && active_ < concurrency_) {
            self.active = true;
            ++active_;
            ec.clear();
            return take(out, capacity);
        }
        if (timeout.count() <= 0) {
            ec = make_error_code(errc::timed_out);
            return 0;
        }

        // Block: push a waiter record on the LIFO stack. Whoever releases it hands it its
        // packets and counts it active on its behalf.
        waiter w{self.cv, out, capacity};
        w.next = waiters_;
        waiters_ = &w;
        auto released = [&w] { return w.released; };
        if (timeout == infinite)
            w.cv.wait(lock, released);
        else if (!w.cv.wait_for(lock, timeout, released))
            unlink(&w); // timed out, and nobody released it (checked under the lock)

        if (!w.released) {
            ec = make_error_code(errc::timed_out);
            return 0;
        }
        if (w.closed) {
            ec = make_error_code(errc::closed);
            return 0;
        }
        self.active = true;
        ec.clear();
        return w.count;
    }

    void close() noexcept {
        std::lock_guard lock(mutex_);
        closed_ = true;
        // TRICKY: notify while holding the lock. A waiter record lives on its thread's stack;
        // once the lock is released the waiter may return and the record is gone.
        while (waiter* w = waiters_) {
            waiters_ = w->next;
            w->released = true;
            w->closed = true;
            w->cv.notify_one();
        }
    }

    bool closed() const noexcept {
        std::lock_guard lock(mutex_);
        return closed_;
    }

    // Threads blocked in get right now (diagnostics and tests).
    std::size_t waiting() const noexcept {
        std::lock_guard lock(mutex_);
        std::size_t n = 0;
        for (const waiter* w = waiters_; w != nullptr; w = w->next)
            ++n;
        return n;
    }

    // The binding thread exits or moves to another port: give back its active slot.
    void unbind(bool was_active) noexcept {
        std::lock_guard lock(mutex_);
        if (was_active) {
            --active_;
            release_waiters();
        }
    }

private:
    struct waiter {
        waiter(std::condition_variable& v, packet_sink o, std::size_t c) noexcept
            : cv(v), out(o), capacity(c) {}
        std::condition_variable& cv; // the waiting thread's own (see thread_binding)
        packet_sink out;
        std::size_t capacity;
        std::size_t count = 0;
        waiter* next = nullptr;
        bool released = false;
        bool closed = false;
    };

    void rebind(thread_binding& self) noexcept {
        if (self.port) {
            auto old = std::move(self.port);
            old->unbind(std::exchange(self.active, false));
        }
        self.port = shared_from_this();
    }

    std::size_t take(packet_sink out, std::size_t capacity) noexcept {
        std::size_t n = (std::min)(capacity, queue_.size());
        for (std::size_t i = 0; i < n; ++i)
            out.put(i, queue_.pop());
        return n;
    }

    // Hand queued packets to the most recent waiters while active slots remain. Lock held.
    void release_waiters() noexcept {
        while (waiters_ != nullptr && !queue_.empty() && active_ < concurrency_) {
            waiter* w = waiters_;
            waiters_ = w->next;
            w->count = take(w->out, w->capacity);
            w->released = true;
            ++active_;
            w->cv.notify_one(); // TRICKY: under the lock, see close()
        }
    }

    void unlink(waiter* w) noexcept {
        for (waiter** p = &waiters_; *p != nullptr; p = &(*p)->next) {
            if (*p == w) {
                *p = w->next;
                return;
            }
        }
    }

    mutable std::mutex mutex_;
    packet_ring queue_;
    waiter* waiters_ = nullptr; // top of the LIFO stack
    unsigned active_ = 0;       // threads between a dequeue and their next get
    const unsigned concurrency_;
    bool closed_ = false;
};

inline thread_binding::~thread_binding() {
    if (port)
        port->unbind(active);
}

// The POSIX backend's port: a handle to a shared state (threads bound to it keep it alive).
class port_impl {
public:
    using native_handle_type = port_state*;
    using io_handle_type = ::iocp::native_handle_type;

    port_impl() noexcept = default;

    port_impl(unsigned concurrency, std::error_code& ec) noexcept {
        if (concurrency == 0)
            concurrency = (std::max)(1u, std::thread::hardware_concurrency());
        try {
            state_ = std::make_shared<port_state>(concurrency);
            ec.clear();
        } catch (const std::bad_alloc&) {
            ec = std::make_error_code(std::errc::not_enough_memory);
        }
    }

    port_impl(port_impl&&) noexcept = default;
    port_impl& operator=(port_impl&& other) noexcept {
        if (this != &other) {
            if (is_open())
                state_->close();
            state_ = std::move(other.state_);
        }
        return *this;
    }
    ~port_impl() {
        if (is_open())
            state_->close();
    }

    bool is_open() const noexcept { return state_ && !state_->closed(); }
    native_handle_type native_handle() const noexcept { return state_.get(); }

    // The user-space port has no kernel object to bind a handle to: associating only checks
    // that the handle is open. Completions for it are posted by whoever performs the I/O.
    std::error_code associate(io_handle_type h, void*) const noexcept {
        if (!is_open())
            return make_error_code(errc::closed);
#if IOCP_WINDOWS
        DWORD flags = 0;
        if (h == nullptr || h == INVALID_HANDLE_VALUE || !::GetHandleInformation(h, &flags))
            return make_error_code(errc::invalid_handle);
        return {};
#else
        return check_fd(h);
#endif
    }

    std::error_code post(overlapped* ov, void* key, std::size_t bytes,
                         std::error_code result) const noexcept {
        if (!state_)
            return make_error_code(errc::closed);
        if (fault_injection::fail_port_post())
            return std::make_error_code(std::errc::not_enough_memory);
        return state_->post(raw_packet{ov, key, bytes, result});
    }

    std::size_t get(packet_sink out, std::size_t capacity, std::chrono::milliseconds timeout,
                    std::error_code& ec) const noexcept {
        if (!state_) {
            ec = make_error_code(errc::closed);
            return 0;
        }
        return state_->get(out, capacity, timeout, ec);
    }

    // TRICKY: close() may run while other threads wait in get() on this object, so it only
    // marks the shared state closed (waking them); state_ itself is released by the destructor.
    std::error_code close() noexcept {
        if (is_open())
            state_->close();
        return {};
    }

private:
    std::shared_ptr<port_state> state_;
};

} // namespace iocp::detail::posix
