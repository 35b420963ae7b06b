#pragma once
// The I/O objects a pool cancels at shutdown: an intrusive list of hooks, one per object that
// owns pending I/O on the pool (a socket, a file), and the one cancel pass over it.
//
// Shutdown calls cancel_all() once, after the phase has moved to cancelling_io (so that an
// operation started after the pass is refused by the pool: thread_pool::operation_started),
// then waits for every operation to complete. An object registered after the pass is cancelled
// at once, inside add(): so every object that lives through shutdown is cancelled exactly once,
// whether it registered before, during or after the pass. Removal is the object's destructor's
// business and may come at any time.

#include <mutex>

namespace iocp::detail {

// One object's registration. The I/O layer's, through pool_io_access (thread_pool.hpp): not part
// of the public API.
struct io_object_hook {
    // Cancels every pending operation of the object. Must not throw, block, or remove the hook:
    // the registry's cancel pass calls it under the registry's lock (add(), after the pass,
    // calls it outside).
    void (*cancel)(io_object_hook* self) noexcept = nullptr;
    io_object_hook* prev_ = nullptr; // the registry's list link (owned by the registry)
    io_object_hook* next_ = nullptr; // the registry's list link (owned by the registry)
};

class io_registry {
public:
    io_registry() = default;
    io_registry(const io_registry&) = delete;
    io_registry& operator=(const io_registry&) = delete;

    // Registers `hook` (not registered already). After cancel_all() it is also cancelled at
    // once, on this thread, outside the lock. Thread safety: any thread.
    void add(io_object_hook& hook) noexcept {
        bool cancel_now = false;
        {
            std::lock_guard lock(mutex_);
            hook.prev_ = nullptr;
            hook.next_ = head_;
            if (head_ != nullptr)
                head_->prev_ = &hook;
            head_ = &hook;
            cancel_now = cancelled_;
        }
        if (cancel_now)
            hook.cancel(&hook);
    }

    // Unregisters `hook`; harmless if it is not registered. Thread safety: any thread, but not
    // twice at once for one hook (its object is being destroyed once).
    void remove(io_object_hook& hook) noexcept {
        std::lock_guard lock(mutex_);
        if (hook.prev_ != nullptr)
            hook.prev_->next_ = hook.next_;
        else if (head_ == &hook)
            head_ = hook.next_;
        else
            return; // not in the list
        if (hook.next_ != nullptr)
            hook.next_->prev_ = hook.prev_;
        hook.prev_ = hook.next_ = nullptr;
    }

    // Cancels every registered object, and from now on every object added. Once: a second call
    // cancels nothing again. Thread safety: any thread.
    // TRICKY: the pass and the flag are under the lock that add() takes: an add either put its
    // hook in the list before the pass (cancelled here) or sees the flag (cancels at once).
    void cancel_all() noexcept {
        std::lock_guard lock(mutex_);
        if (cancelled_)
            return;
        cancelled_ = true;
        for (io_object_hook* h = head_; h != nullptr; h = h->next_)
            h->cancel(h);
    }

private:
    std::mutex mutex_;
    io_object_hook* head_ = nullptr; // guarded by mutex_
    bool cancelled_ = false;         // guarded by mutex_
};

} // namespace iocp::detail
