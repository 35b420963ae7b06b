#pragma once
// The pool's completion backlog: completions that could not go through the port (its post
// failed for want of memory, or the I/O layer queued them here on purpose: queue_completion),
// oldest first, for the workers to run and for shutdown's final drain to destroy.
//
// A locked FIFO of small nodes, allocated with `new (std::nothrow)`: this is the slow path
// (the port's own queue is the fast one), and a failure to allocate is reported, never thrown,
// because it is taken when memory has already run out once. The entries' operations belong to
// whoever pops them: the backlog neither runs nor destroys an operation (its destructor frees
// only the nodes of what nobody popped).
//
// The size is an atomic beside the list so that the run loop can look at it on every turn
// without the lock, and so that a push is a seq_cst publish for the wake protocol (a producer
// that pushes, then looks for sleepers, is seen by a worker that registers as a sleeper, then
// looks at `nonempty()`: detail/pool/wake_protocol.hpp).

#include <atomic>
#include <cstddef>
#include <mutex>
#include <new>
#include <optional>
#include <utility>

#include "../../operation.hpp"

namespace iocp::detail {

class completion_backlog {
public:
    struct entry {
        operation* op;
        completion result;
    };

    completion_backlog() = default;
    completion_backlog(const completion_backlog&) = delete;
    completion_backlog& operator=(const completion_backlog&) = delete;
    ~completion_backlog() {
        while (head_ != nullptr)
            delete std::exchange(head_, head_->next);
    }

    // Appends (op, result). False when no node could be allocated: nothing is kept, the caller
    // still owns `op`. The size grows (seq_cst) under the lock, so it never counts an entry that
    // a pop already took. Thread safety: any thread.
    bool push(operation* op, const completion& result) noexcept {
        auto* n = new (std::nothrow) node{{op, result}};
        if (n == nullptr)
            return false;
        std::lock_guard lock(mutex_);
        if (tail_ != nullptr)
            tail_->next = n;
        else
            head_ = n;
        tail_ = n;
        size_.fetch_add(1, std::memory_order_seq_cst);
        return true;
    }

    // Takes the oldest entry, or nothing when empty. Thread safety: any thread.
    std::optional<entry> pop() noexcept {
        node* n = nullptr;
        {
            std::lock_guard lock(mutex_);
            n = head_;
            if (n == nullptr)
                return std::nullopt;
            head_ = n->next;
            if (head_ == nullptr)
                tail_ = nullptr;
            size_.fetch_sub(1, std::memory_order_seq_cst);
        }
        const entry e = n->value;
        delete n;
        return e;
    }

    // A look without ordering, for the run loop's every turn: may miss a push under way (the
    // wake protocol, through nonempty(), covers that).
    bool maybe_nonempty() const noexcept { return size_.load(std::memory_order_relaxed) != 0; }

    // The seq_cst look of the wake protocol's consumer half.
    bool nonempty() const noexcept { return size_.load(std::memory_order_seq_cst) != 0; }

private:
    struct node {
        entry value;
        node* next = nullptr;
    };

    std::mutex mutex_;
    node* head_ = nullptr; // guarded by mutex_
    node* tail_ = nullptr; // guarded by mutex_
    std::atomic<std::size_t> size_{0};
};

} // namespace iocp::detail
