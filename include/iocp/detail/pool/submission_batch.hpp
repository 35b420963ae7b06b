#pragma once
// submission_batch: lets an I/O backend hold back the kernel call that hands over the operations
// started while a worker runs a batch of completions, and make one call for all of them when the
// batch ends, instead of one per operation.
//
// Why: on io_uring, an operation started from a completion handler (an echo server's next recv,
// a coroutine's next accept) is an SQE that takes an io_uring_enter to reach the kernel. A worker
// that runs eight completions in a row starts eight operations; entering once after the eighth
// hands over all eight in one system call (io_uring_enter(2) takes any number of SQEs). Asio's
// io_uring service batches the same way (it submits its pending SQEs once the handlers queued
// ahead of the submission have run).
//
// The pool opens a scope around each batch of port packets it runs (thread_pool::poll_port). A
// backend that would enter calls defer(): inside a scope it registers its flush, called once when
// the scope ends, and returns true; outside any scope, or when another flush is registered
// already (a second backend in the process: the backends' own tests), it returns false and the
// backend enters now. The cost of an open scope to everything else: two thread-local stores.
//
// The price, documented where the backend defers (uring_backend::issue_impl, README): an
// operation started by a handler may reach the kernel only when the handlers after it in the same
// batch (at most thread_pool_options::batch) have run, so a handler that blocks delays the
// operations started before it in its batch until another thread's io_uring_enter hands them over
// (published SQEs belong to the shared ring, whoever enters).
//
// Thread safety: per thread; nothing is shared.

namespace iocp::detail {

class submission_batch {
public:
    /// What a backend runs when the batch ends; must not throw.
    using flush_fn = void (*)(void* context) noexcept;

private:
    struct slot {
        bool open;
        flush_fn flush;
        void* context;
    };

public:
    /// Opens a batch on this thread until destroyed; the destructor runs the flush registered
    /// meanwhile, if any. Scopes nest: an inner scope's flush runs at its own end.
    class scope {
    public:
        scope() noexcept : saved_(state()) { state() = slot{true, nullptr, nullptr}; }
        scope(const scope&) = delete;
        scope& operator=(const scope&) = delete;
        ~scope() {
            const slot s = state();
            state() = saved_;
            if (s.flush != nullptr)
                s.flush(s.context);
        }

    private:
        const slot saved_;
    };

    /// Inside a scope: registers flush(context) to run when it ends (once, however many calls
    /// name it) and returns true: the caller must not enter itself. False outside any scope, or
    /// when a different flush is registered already: the caller enters now.
    static bool defer(flush_fn flush, void* context) noexcept {
        slot& s = state();
        if (!s.open)
            return false;
        if (s.flush == nullptr) {
            s.flush = flush;
            s.context = context;
            return true;
        }
        return s.flush == flush && s.context == context;
    }

    /// Whether this thread is inside a scope.
    static bool open() noexcept { return state().open; }

private:
    static slot& state() noexcept {
        // A trivially destructible thread_local: nothing runs at thread exit (per_thread.hpp
        // explains why a MinGW thread_local with a destructor is unsafe).
        thread_local slot s{false, nullptr, nullptr};
        return s;
    }
};

} // namespace iocp::detail
