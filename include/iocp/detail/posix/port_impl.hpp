#pragma once
// The user-space completion port: Windows IOCP semantics on top of a mutex and one condition
// variable per waiting thread.
//
//  - Packets are FIFO (a growable ring, so steady-state posting allocates nothing).
//  - Waiters are released LIFO (a stack of waiter records, each living in its thread's
//    per-thread binding): the most recently blocked thread is the one whose cache is warm.
//  - At most `concurrency` threads are "active" at once. As on Windows, a thread becomes
//    active when it dequeues a packet and stops being active when it next calls get (or
//    get_many) or exits. A thread blocked inside a handler (on a mutex, say) still counts as
//    active: unlike the kernel, we cannot see that. A thread is bound to one port at a time:
//    calling get on a second port releases its active slot on the first.
//  - close() wakes every waiter with errc::closed; later calls report errc::closed.
//  - With a completion_poller installed (the Linux I/O backend, once the pool has an I/O
//    object), the thread that would block with nothing queued waits in the backend instead
//    (one thread of the process at a time) and reaps the completions itself: see get().
//  - Nothing a caller hands in as an OVERLAPPED or a key is read or written, except the two
//    fields post_failure documents (written as the Win32 backend writes them, so that a
//    program tested here behaves the same there).

#include <algorithm>
#include <atomic>
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
#include "completion_poller.hpp"

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

// A thread blocked in get: pushed on its port's LIFO stack; whoever releases it hands it its
// packets and counts it active on its behalf. It lives in the thread's binding, not on the
// stack of get: the record outlives every wait (so a pointer to it in the port can never
// dangle, and compilers see no local address escaping), and one thread waits in at most one
// get at a time, so one record per thread suffices.
struct waiter_record {
    std::condition_variable cv; // reused by every wait: one per wait allocates on winpthreads
    packet_sink out{};
    std::size_t capacity = 0;
    std::size_t count = 0; // packets handed over by the releaser
    waiter_record* next = nullptr;
    bool released = false;
    bool closed = false;

    // Prepares the record for a new wait (lock of the port held).
    void arm(packet_sink o, std::size_t c) noexcept {
        out = o;
        capacity = c;
        count = 0;
        next = nullptr;
        released = false;
        closed = false;
    }
};

// Which port the calling thread is bound to and whether it holds one of that port's active
// slots. The shared_ptr keeps the state alive until the thread lets go of it, so a thread may
// outlive the port object it last dequeued from.
struct thread_binding {
    std::shared_ptr<port_state> port;
    bool active = false;
    const port_state* polling = nullptr; // the port whose get() this thread polls for now
    waiter_record waiter;
    inline ~thread_binding();
};

inline thread_binding& this_thread_binding() { return per_thread<thread_binding>(); }

class port_state : public std::enable_shared_from_this<port_state> {
public:
    explicit port_state(unsigned concurrency) noexcept : concurrency_(concurrency) {}

    // `local`: the caller is about to come back to get() when it is a thread of this port
    // between a dequeue and its next get (a worker running a completion that starts I/O): then
    // the packet waits for it, or for any thread that looks, and wakes nobody, as Asio's
    // thread-private queue does. Only the I/O layer posts so; a user's post always wakes.
    std::error_code post(raw_packet p, bool local = false) noexcept {
        // The thread polling for this port posts what it reaps: it takes that itself when its
        // poll returns (and hands what it leaves to waiters then), so it wakes nobody now.
        thread_binding& self = this_thread_binding();
        const bool from_poller =
            self.polling == this || (local && self.active && self.port.get() == this);
        completion_poller* interrupt = nullptr;
        {
            std::lock_guard lock(mutex_);
            if (closed_)
                return make_error_code(errc::closed);
            try {
                queue_.push(p);
            } catch (const std::bad_alloc&) {
                return std::make_error_code(std::errc::not_enough_memory);
            }
            size_.store(queue_.size(), std::memory_order_relaxed);
            if (from_poller)
                return {};
            release_waiters();
            // Nobody blocked on the condition variable could take it: the thread waiting in the
            // backend for this port must come back for it (once per poll).
            if (!queue_.empty() && polling_ && !poll_interrupted_ && active_ < concurrency_) {
                poll_interrupted_ = true;
                interrupt = poller_;
            }
        }
        if (interrupt != nullptr)
            interrupt->interrupt();
        return {};
    }

    // Installs the backend that idle threads of this port poll (once; later calls with the
    // same poller change nothing). Thread safety: any thread.
    void set_poller(completion_poller* poller) noexcept {
        std::lock_guard lock(mutex_);
        if (poller_ == nullptr) {
            poller_ = poller;
            poller_hint_.store(poller, std::memory_order_release); // after its construction
        }
    }

    // Whether a packet may be waiting, without the lock (a spinning thread looks at it):
    // queued packets, or completions the poller may have ready.
    bool maybe_ready() const noexcept {
        if (size_.load(std::memory_order_relaxed) != 0)
            return true;
        const completion_poller* p = poller_hint_.load(std::memory_order_acquire);
        return p != nullptr && p->maybe_ready();
    }

    // `capacity` is at least 1; `timeout` as wait_timeout makes it (0 polls, `infinite` waits
    // without a limit, anything else is at most max_finite_wait).
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
        // With nothing queued, reap what the backend has ready (or wait in it) instead of
        // sleeping on the condition variable.
        const auto deadline = timeout.count() <= 0 || timeout == infinite
                                  ? std::chrono::steady_clock::time_point::max()
                                  : deadline_after<std::chrono::steady_clock>(
                                        std::chrono::steady_clock::now(), timeout);
        while (poller_ != nullptr && !polling_ && queue_.empty()) {
            std::chrono::milliseconds wait = timeout;
            if (timeout.count() > 0 && timeout != infinite) {
                wait = std::chrono::ceil<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now());
                if (wait.count() <= 0)
                    break;
            }
            if (!poll_once(self, lock, wait))
                break; // another thread holds the role: block on the condition variable
            if (closed_) {
                ec = make_error_code(errc::closed);
                return 0;
            }
            if (!queue_.empty() && active_ < concurrency_) {
                self.active = true;
                ++active_;
                ec.clear();
                // Take one when others wait: what is left goes to them, to run in parallel.
                const std::size_t n = take(out, waiters_ != nullptr ? 1 : capacity);
                release_waiters();
                return n;
            }
            if (timeout.count() <= 0)
                break;
        }
        if (timeout.count() <= 0) {
            ec = make_error_code(errc::timed_out);
            return 0;
        }

        // Block: push this thread's waiter record on the LIFO stack.
        waiter_record& w = self.waiter;
        w.arm(out, capacity);
        w.next = waiters_;
        waiters_ = &w;
        auto released = [&w] { return w.released; };
        if (timeout == infinite) {
            w.cv.wait(lock, released);
        } else {
            // A deadline, not wait_for: spurious wake-ups must not restart the full timeout.
            // max_finite_wait (49.7 days) cannot overflow steady_clock, and deadline_after
            // saturates anyway.
            if (!w.cv.wait_until(lock, deadline, released))
                unlink(&w); // timed out, and nobody released it (checked under the lock)
        }

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
        std::unique_lock lock(mutex_);
        closed_ = true;
        if (polling_ && poller_ != nullptr) {
            poll_interrupted_ = true;
            completion_poller* p = poller_;
            lock.unlock();
            p->interrupt(); // the polling thread sees closed_ when it comes back
            lock.lock();
        }
        // TRICKY: notify while holding the lock. Once the lock is released the waiter may
        // return and its thread exit, destroying its binding and with it the condition
        // variable we would notify.
        while (waiter_record* w = waiters_) {
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

    // The concurrency limit (diagnostics and tests).
    unsigned concurrency() const noexcept { return concurrency_; }

    // Threads blocked in get right now (diagnostics and tests).
    std::size_t waiting() const noexcept {
        std::lock_guard lock(mutex_);
        std::size_t n = 0;
        for (const waiter_record* w = waiters_; w != nullptr; w = w->next)
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
    void rebind(thread_binding& self) noexcept {
        if (self.port) {
            auto old = std::move(self.port);
            old->unbind(std::exchange(self.active, false));
        }
        self.port = shared_from_this();
    }

    std::size_t take(packet_sink out, std::size_t capacity) noexcept {
        std::size_t n = (std::min)((std::min)(capacity, max_dequeue_batch), queue_.size());
        for (std::size_t i = 0; i < n; ++i)
            out.put(i, queue_.pop());
        size_.store(queue_.size(), std::memory_order_relaxed);
        return n;
    }

    // Hand queued packets to the most recent waiters while active slots remain. Lock held.
    void release_waiters() noexcept {
        while (waiters_ != nullptr && !queue_.empty() && active_ < concurrency_) {
            waiter_record* w = waiters_;
            waiters_ = w->next;
            w->count = take(w->out, w->capacity);
            w->released = true;
            ++active_;
            w->cv.notify_one(); // TRICKY: under the lock, see close()
        }
    }

    // Polls the backend for this port with the lock released; false if another thread of the
    // process holds the polling role. Lock held on entry and on return.
    bool poll_once(thread_binding& self, std::unique_lock<std::mutex>& lock,
                   std::chrono::milliseconds wait) noexcept {
        completion_poller* p = poller_;
        polling_ = true;
        poll_interrupted_ = false;
        self.polling = this;
        lock.unlock();
        // TRICKY: a post between the unlock and the backend's wait sees polling_ and
        // interrupts; the backend keeps that interrupt for a wait that has not begun yet
        // (completion_poller::interrupt), so the packet is never left behind a full wait.
        const bool polled = p->poll(wait);
        lock.lock();
        self.polling = nullptr;
        polling_ = false;
        return polled;
    }

    void unlink(waiter_record* w) noexcept {
        for (waiter_record** p = &waiters_; *p != nullptr; p = &(*p)->next) {
            if (*p == w) {
                *p = w->next;
                return;
            }
        }
    }

    mutable std::mutex mutex_;
    packet_ring queue_;
    waiter_record* waiters_ = nullptr; // top of the LIFO stack
    unsigned active_ = 0;              // threads between a dequeue and their next get
    const unsigned concurrency_;
    bool closed_ = false;
    completion_poller* poller_ = nullptr; // idle threads reap its completions (set once)
    bool polling_ = false;                // a thread of this port is in poller_->poll
    bool poll_interrupted_ = false;       // ... and a post has interrupted it
    std::atomic<std::size_t> size_{0};    // queue_.size(), for maybe_ready() without the lock
    std::atomic<completion_poller*> poller_hint_{nullptr}; // poller_, for maybe_ready()
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
#if IOCP_WINDOWS
    // A Winsock SOCKET is a kernel handle; associate takes it as one.
    using socket_type = SOCKET;
    static io_handle_type socket_as_handle(socket_type s) noexcept {
        return reinterpret_cast<io_handle_type>(s);
    }
#else
    using socket_type = int; // a socket is a descriptor like any other
    static io_handle_type socket_as_handle(socket_type s) noexcept { return s; }
#endif

    port_impl() noexcept = default;

    // `concurrency`: 0 = the number of processors; at most max_port_concurrency (port clamps).
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

    // Queues {ov, key, bytes} as it is: neither `ov` nor `key` is dereferenced.
    std::error_code post(overlapped* ov, void* key, std::size_t bytes) const noexcept {
        return post_packet(raw_packet{ov, key, bytes, {}});
    }

    // Queues a packet that completes `ov` (not null, not in flight) with `failure`.
    std::error_code post_failure(overlapped* ov, void* key,
                                 const std::error_code& failure) const noexcept {
        if (!state_)
            return make_error_code(errc::closed);
        stamp_posted_failure(*ov, key, failure.category());
        return post_packet(raw_packet{ov, key, 0, failure});
    }

    // Dequeues up to min(capacity, max_dequeue_batch) packets (capacity >= 1). Any timeout
    // is taken: it is normalised by wait_timeout here too.
    std::size_t get(packet_sink out, std::size_t capacity, std::chrono::milliseconds timeout,
                    std::error_code& ec) const noexcept {
        if (!state_) {
            ec = make_error_code(errc::closed);
            return 0;
        }
        return state_->get(out, capacity, wait_timeout(timeout), ec);
    }

    // TRICKY: close() may run while other threads wait in get() on this object, so it only
    // marks the shared state closed (waking them); state_ itself is released by the destructor.
    std::error_code close() noexcept {
        if (is_open())
            state_->close();
        return {};
    }

private:
    std::error_code post_packet(const raw_packet& p) const noexcept {
        if (!state_)
            return make_error_code(errc::closed);
        if (fault_injection::fail_port_post())
            return std::make_error_code(std::errc::not_enough_memory);
        return state_->post(p);
    }

    std::shared_ptr<port_state> state_;
};

} // namespace iocp::detail::posix
