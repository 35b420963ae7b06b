#pragma once
// The polling role of a Linux backend (completion_poller.hpp): at most one thread of the process
// reaps the backend's completions at a time (a ring's CQ and an epoll set's batch have one
// consumer), and a thread waiting in the kernel for them can be interrupted without a kernel call
// when nobody waits there.

#include <atomic>

namespace iocp::detail::io::lnx {

class poll_role {
public:
    // Takes the role; false at once if another thread holds it.
    bool try_acquire() noexcept {
        return !held_.load(std::memory_order_relaxed) &&
               !held_.exchange(true, std::memory_order_acquire);
    }
    void release() noexcept { held_.store(false, std::memory_order_release); }
    bool held() const noexcept { return held_.load(std::memory_order_relaxed); }

    // The holder is about to wait in the kernel: false when an interrupt came first (then it
    // must not wait). Pair a true with end_wait().
    bool begin_wait() noexcept {
        // TRICKY: a Dekker pair with interrupt(): either the interrupter sees `blocking_` and
        // wakes the wait (an eventfd write, which a wait that has not begun yet still sees), or
        // this sees its request and does not wait. Both sides seq_cst.
        blocking_.store(true, std::memory_order_seq_cst);
        if (requested_.exchange(false, std::memory_order_seq_cst)) {
            blocking_.store(false, std::memory_order_relaxed);
            return false;
        }
        return true;
    }
    void end_wait() noexcept {
        blocking_.store(false, std::memory_order_relaxed);
        // A request that came during the wait woke it (or its eventfd write will make the next
        // wait return at once, harmlessly): it is consumed either way.
        requested_.store(false, std::memory_order_relaxed);
    }

    // Asks the waiting (or about to wait) holder to return; true when the caller must wake it
    // (write the backend's eventfd): someone waits in the kernel.
    bool interrupt() noexcept {
        requested_.store(true, std::memory_order_seq_cst);
        return blocking_.load(std::memory_order_seq_cst);
    }

    // Someone waits in the kernel for completions now.
    bool blocking() const noexcept { return blocking_.load(std::memory_order_relaxed); }

private:
    std::atomic<bool> held_{false};
    std::atomic<bool> blocking_{false};
    std::atomic<bool> requested_{false};
};

} // namespace iocp::detail::io::lnx
