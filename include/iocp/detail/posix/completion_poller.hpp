#pragma once
// What the user-space port needs from an I/O backend whose completions an idle thread can reap
// itself (Linux: io_uring, epoll). Defined in the port layer, implemented by the backends below
// the I/O layer (detail/io/linux/), so that the port includes nothing above it.
//
// Why: a backend that reaps on its own thread pays a thread handoff per completion (its thread
// wakes, posts a packet, a worker wakes). When the worker that would sleep on the port waits in
// the backend instead (io_uring_wait_cqe, epoll_wait) and reaps what comes, a completion reaches
// the thread that runs it without a handoff: Asio's scheduler runs its reactor "as a task" the
// same way. See port_state::get in port_impl.hpp for the protocol.

#include <chrono>

namespace iocp::detail::posix {

class completion_poller {
public:
    // Becomes the one thread that reaps completions (a role shared by every port of the process
    // using this poller), or returns false at once when another thread holds the role. While it
    // holds the role it waits up to `timeout` for completions (0: only what is ready now;
    // `infinite`: no limit), calls each operation's completion (which posts a packet to its
    // pool's port), and returns true after the first batch, a timeout, or interrupt().
    // Thread safety: any thread; at most one holds the role at a time.
    virtual bool poll(std::chrono::milliseconds timeout) noexcept = 0;

    // Makes a poll() that is waiting now, or starts waiting before it next checks, return
    // soon. Cheap when nobody waits. Thread safety: any thread.
    virtual void interrupt() noexcept = 0;

    // A hint, without a kernel call where the backend can: completions may be ready to reap
    // (a spinning worker looks at it). False negatives are allowed, false positives cost one
    // empty poll(0). Thread safety: any thread.
    virtual bool maybe_ready() const noexcept = 0;

protected:
    completion_poller() = default;
    ~completion_poller() = default;
    completion_poller(const completion_poller&) = default;
    completion_poller& operator=(const completion_poller&) = default;
};

} // namespace iocp::detail::posix
