#pragma once
// The epoll fallback below the I/O layer (the contract is backend.hpp): readiness, then the
// non-blocking call, then on_complete on the reaping thread. select.hpp picks it when io_uring
// cannot be set up (ENOSYS, EPERM: old kernels, seccomp, many containers), when liburing was not
// compiled in, or when IOCP_IO_BACKEND=epoll.
//
// Who reaps (completion_poller.hpp): one thread at a time runs a "round": epoll_wait, the
// waiting socket operations whose fd became ready, and the "ready list" (operations that finished
// inside issue() or were cancelled: on_complete never runs inside issue()). That thread is the
// pool worker that would sleep on its port (poll(), called by the port), so a completion reaches
// the thread that runs it without a handoff, as in Asio's reactor-as-a-task scheduler. A
// "watchdog" thread ("iocp-epoll") runs a round only when no worker does (every worker busy, or
// no pool polls: the backend's own tests), a tick after the work arrived at most.
//
// Threads (created with every signal blocked, so signals go to the program's own threads, as
// Asio's thread_pool does):
// - the watchdog;
// - up to `epoll_backend::max_file_threads` file threads ("iocp-file"), started on demand, that
//   run read_at/write_at as blocking preadv/pwritev. epoll cannot wait for regular files
//   (epoll_ctl ADD fails with EPERM, epoll_ctl(2)): they are always "ready", and a read that
//   misses the page cache blocks. These are the backend's own threads, not the pool's workers:
//   a pool in stop() abandons queued work items, and a blocked read would hold a worker.
//
// Sockets (and pipes) are registered once, at attach(), edge-triggered (EPOLLIN | EPOLLOUT |
// EPOLLRDHUP | EPOLLET), with `data.ptr` = a per-fd state object, never the fd number (a closed
// number is reused at once: ABA). attach() puts them in non-blocking mode (O_NONBLOCK through
// fcntl; this changes the open file description, so dup()ed copies see it too). Each fd keeps
// two FIFO queues under its lock: read-side operations (recv, accept) and write-side ones (send,
// connect). issue() makes the non-blocking call at once when its queue is empty; an operation
// that would block (EAGAIN) waits in the queue for the next edge. The call is made under the
// fd's lock, so a reaping round that gets an edge of that fd meanwhile would sleep on the lock
// for the length of a send (a futex wait and wake, and a context switch, per collision: 0.4-0.8
// per round trip in the echo benchmark); instead it leaves the events to the lock's holder,
// which performs them before it unlocks (epoll_detail::defer_or_lock / unlock_state).
//
// Cost in kernel calls per operation (measured facts in LINUX-IO-NOTES.md 1 and 6):
// - finished at once (data already there, room to send): the call itself; the issuing worker
//   then reaps it from the ready list without a kernel call (an eventfd write only when a
//   reaper waits in epoll_wait, once per batch);
// - waited: the call that gave EAGAIN, a share of one epoll_wait, and the call again;
// - files: a read the page cache holds is one preadv2(RWF_NOWAIT) on the issuing thread
//   (cached_read.hpp, as on io_uring); any other read or write is the preadv/pwritev on a file
//   thread, plus a futex wake when every started file thread is asleep (a thread handoff, in
//   microseconds), and at most max_file_threads of those overlap, the others wait in the queue.
//
// Thread safety: every member function may be called from any thread concurrently, except the
// destructor (no other call may run or start). on_complete may call any member function except
// the destructor.

#if !defined(__linux__)
#error "epoll_backend.hpp is the Linux I/O backend"
#endif

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <shared_mutex>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../../thread_name.hpp"
#include "../../time.hpp"
#include "backend.hpp"
#include "cached_read.hpp"
#include "poll_role.hpp"
#include "tsan.hpp"

namespace iocp::detail::io::lnx {

namespace epoll_detail {
// A FIFO of operations linked through linux_op::next: queuing allocates nothing.
struct op_queue {
    linux_op* head = nullptr;
    linux_op* tail = nullptr;

    bool empty() const noexcept { return head == nullptr; }

    void push(linux_op* op) noexcept {
        op->next = nullptr;
        if (tail != nullptr)
            tail->next = op;
        else
            head = op;
        tail = op;
    }

    linux_op* pop() noexcept {
        linux_op* op = head;
        if (op != nullptr) {
            head = op->next;
            if (head == nullptr)
                tail = nullptr;
            op->next = nullptr;
        }
        return op;
    }

    // Moves every operation of `other` to the end of this queue.
    void splice(op_queue& other) noexcept {
        if (other.head == nullptr)
            return;
        if (tail != nullptr)
            tail->next = other.head;
        else
            head = other.head;
        tail = other.tail;
        other.head = other.tail = nullptr;
    }

    // Moves the operations on `fd` to `out`, keeping the order of both queues.
    void take_fd(int fd, op_queue& out) noexcept {
        op_queue keep;
        while (linux_op* op = pop())
            (op->fd == fd ? out : keep).push(op);
        *this = keep;
    }
};

// The result of a finished operation travels in its scratch word from where it finished to where
// on_complete runs (the ready list, a reaping round).
inline void set_result(linux_op& op, int res) noexcept {
    // NOLINTNEXTLINE(performance-no-int-to-ptr): the scratch word holds an int, never dereferenced
    op.backend_data = reinterpret_cast<void*>(static_cast<std::intptr_t>(res));
}

inline int result_of(const linux_op& op) noexcept {
    return static_cast<int>(reinterpret_cast<std::intptr_t>(op.backend_data));
}

// Marks a queued connect whose ::connect already returned EINPROGRESS (the scratch word is free
// while an operation waits; set_result overwrites it when it finishes).
inline void* connect_started_mark(linux_op& op) noexcept { return &op; }

// Calls on_complete for every operation of `done`, each with its stored result; returns how
// many. The link is read before the call: on_complete may free or reuse the operation.
inline std::size_t complete_all(op_queue& done) noexcept {
    linux_op* op = done.head;
    done.head = done.tail = nullptr;
    std::size_t n = 0;
    while (op != nullptr) {
        linux_op* next = op->next;
        op->next = nullptr;
        op->on_complete(op, result_of(*op));
        op = next;
        ++n;
    }
    return n;
}

// A byte count from the kernel as the contract's int. Linux moves at most MAX_RW_COUNT
// (INT_MAX rounded down to a page) bytes per call, so this never clamps in practice.
inline int count_result(::ssize_t n) noexcept {
    return n > static_cast<::ssize_t>(INT_MAX) ? INT_MAX : static_cast<int>(n);
}

// Whether a socket operation waits for EPOLLIN (the read-side queue), not EPOLLOUT. One
// definition for issue() and cancel(op): cancel must look in the queue issue() chose (it once
// looked for a recv_from among the sends, and a stop request left it waiting).
inline bool waits_to_read(const linux_op& op) noexcept {
    using kind = linux_op::kind;
    return op.what == kind::recv || op.what == kind::accept || op.what == kind::recv_from;
}

// Makes the socket operation's non-blocking call once. True: it finished, `res` is the result
// (>= 0) or -errno. False: it would block; wait for readiness and call again.
inline bool attempt_socket_op(linux_op& op, int& res) noexcept {
    using kind = linux_op::kind;
    for (;;) {
        ::ssize_t n = -1;
        switch (op.what) {
        case kind::recv:
            // MSG_DONTWAIT as well as O_NONBLOCK: a reaping round never blocks, even if someone
            // cleared O_NONBLOCK on the file description after attach().
            n = ::recvmsg(op.fd, &op.msg, MSG_DONTWAIT);
            break;
        case kind::send:
            // MSG_NOSIGNAL: a peer that is gone gives EPIPE, never SIGPIPE (send(2)).
            n = ::sendmsg(op.fd, &op.msg, MSG_DONTWAIT | MSG_NOSIGNAL);
            break;
        case kind::accept:
            // The new socket is non-blocking and close-on-exec at once (accept4(2)): the layer
            // attaches it to this backend, which wants it non-blocking anyway.
            op.addr_len = static_cast<::socklen_t>(sizeof op.addr);
            n = ::accept4(op.fd, reinterpret_cast<::sockaddr*>(&op.addr), &op.addr_len,
                          SOCK_NONBLOCK | SOCK_CLOEXEC);
            break;
        case kind::connect:
            if (op.backend_data == nullptr) {
                if (::connect(op.fd, reinterpret_cast<const ::sockaddr*>(&op.addr), op.addr_len) ==
                    0) {
                    res = 0;
                    return true;
                }
                const int error = errno;
                // EINTR on a connect: the connection goes on in the background (connect(2)).
                if (error == EINPROGRESS || error == EINTR) {
                    op.backend_data = connect_started_mark(op);
                    return false;
                }
                // EAGAIN here is a UNIX-domain listener's full backlog, not "in progress": no
                // edge would announce room, so it is the result, never a wait.
                res = -error;
                return true;
            } else {
                // A write-side event on a connecting socket: SO_ERROR tells a failure (and
                // clears it); no error and a peer name mean connected; ENOTCONN means the
                // event was stale (attach() reports the fresh socket's state) and it goes on.
                int error = 0;
                ::socklen_t len = sizeof error;
                if (::getsockopt(op.fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) {
                    res = -errno;
                    return true;
                }
                if (error != 0) {
                    res = -error;
                    return true;
                }
                ::sockaddr_storage peer{};
                ::socklen_t peer_len = sizeof peer;
                if (::getpeername(op.fd, reinterpret_cast<::sockaddr*>(&peer), &peer_len) == 0) {
                    // Connected. The call again, as connect(2) describes for EINPROGRESS (and as
                    // the io_uring backend does): until then Linux keeps the socket marked
                    // "connecting" (inet_stream_connect), and a later connect to any other
                    // address would return 0 as if it had connected there; after it, EISCONN.
                    // It returns 0 (or EISCONN) while the connection stands. A reset that came
                    // after the handshake makes it fail: it then takes the socket's pending
                    // error and disconnects the socket, so that error is the connect's result
                    // (reported as 0, it would be lost: the next recv would say "not
                    // connected" instead of "reset").
                    const int again = ::connect(
                        op.fd, reinterpret_cast<const ::sockaddr*>(&op.addr), op.addr_len);
                    res = again == 0 || errno == EISCONN ? 0 : -errno;
                    return true;
                }
                if (errno == ENOTCONN)
                    return false;
                res = -errno;
                return true;
            }
        case kind::recv_from:
            // As recv; msg_namelen is in and out: a retry after EAGAIN offers the whole room.
            op.msg.msg_namelen = sizeof op.addr;
            n = ::recvmsg(op.fd, &op.msg, MSG_DONTWAIT);
            break;
        case kind::send_to: n = ::sendmsg(op.fd, &op.msg, MSG_DONTWAIT | MSG_NOSIGNAL); break;
        case kind::read_at:
        case kind::write_at:
        default:
            res = -EINVAL; // not a socket operation: issue() routes those elsewhere
            return true;
        }
        if (n >= 0) {
            res = count_result(n);
            return true;
        }
        const int error = errno;
        if (error == EINTR)
            continue;
        if (error == EAGAIN || error == EWOULDBLOCK)
            return false;
        res = -error;
        return true;
    }
}

// Runs a read_at / write_at as a blocking call; returns the byte count or -errno.
inline int run_file_op(linux_op& op) noexcept {
    // Offsets the kernel would read as negative are refused (the layer refuses them first).
    if (op.offset > static_cast<std::uint64_t>(INT64_MAX))
        return -EINVAL;
    // read_at / write_at use iov[0]; more buffers, when given, are one preadv/pwritev.
    const unsigned count = op.iov_count == 0 ? 1u : op.iov_count;
    if (count > max_buffers)
        return -EINVAL;
    const auto offset = static_cast<::off_t>(op.offset);
    for (;;) {
        const ::ssize_t n = op.what == linux_op::kind::read_at
                                ? ::preadv(op.fd, op.iov, static_cast<int>(count), offset)
                                : ::pwritev(op.fd, op.iov, static_cast<int>(count), offset);
        if (n >= 0)
            return count_result(n);
        if (errno != EINTR)
            return -errno;
    }
}

// One attached fd. Reached from the epoll event (data.ptr) and from the fd table.
struct fd_state {
    fd_state(int attached_fd, bool is_registered) noexcept
        : fd(attached_fd), registered(is_registered) {}

    std::mutex mutex;      // guards everything below that is not const
    const int fd;          // the fd as attached (for the test hook and messages)
    const bool registered; // false: epoll refused it (a regular file); no readiness ever comes
    bool detached = false; // set by detach(): events still in the reaping round's batch are dropped
    op_queue read_ops;     // recv, accept: waiting for EPOLLIN (FIFO)
    op_queue write_ops;    // send, connect: waiting for EPOLLOUT (FIFO)
    fd_state* next_retired = nullptr; // the reaper frees detached states through this link
    // Events a reaping round found `mutex` taken for: the holder performs them when it unlocks
    // (unlock_state), so the reaper never sleeps behind a thread making its call under the lock.
    std::atomic<std::uint32_t> deferred_events{0};
};

// Makes the calls of the queue's operations in order until one would block; the finished ones
// (results set) move to `done`. Caller holds the state's lock.
// TRICKY: edge-triggered: every operation must be tried until EAGAIN, or readiness that this
// edge announced would never be announced again.
inline void perform(op_queue& queue, op_queue& done) noexcept {
    while (linux_op* op = queue.head) {
        int res = 0;
        if (!attempt_socket_op(*op, res))
            return;
        queue.pop();
        set_result(*op, res);
        done.push(op);
    }
}

// Performs what `events` make possible on `state` (caller holds its lock). A detached state's
// events are dropped: its operations were cancelled.
inline void perform_events(fd_state& state, std::uint32_t events, op_queue& done) noexcept {
    if (state.detached)
        return;
    // The write side first: a connect reads its failure from SO_ERROR, which a recv on the
    // read side would otherwise consume and clear (then the connect would wait for an event
    // that never comes).
    if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0)
        perform(state.write_ops, done);
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) != 0)
        perform(state.read_ops, done);
}

// Releases the state's lock, first performing the events a reaper deferred to this holder
// (fd_state::deferred_events); operations they finish move to `done`, for the caller to
// complete where on_complete may run.
// TRICKY: a store-buffer pair with defer_or_lock(): the reaper publishes its events, then
// tries the lock; the holder unlocks, then looks for events. A seq_cst fence on each side
// between the two steps: either the reaper's try_lock sees the unlock (it performs them), or
// this look sees the events (and takes the lock again for them).
inline void unlock_state(fd_state& state, op_queue& done) noexcept {
    for (;;) {
        if (const std::uint32_t events =
                state.deferred_events.exchange(0, std::memory_order_acquire)) {
            perform_events(state, events, done);
            continue; // more may have come while the calls ran
        }
        state.mutex.unlock();
        std::atomic_thread_fence(std::memory_order_seq_cst);
        if (state.deferred_events.load(std::memory_order_relaxed) == 0 || !state.mutex.try_lock())
            return; // nothing deferred, or the thread that now holds the lock performs it
    }
}

// The reaper's side: takes the state's lock, or, when another thread holds it (an issuer making
// its call, a cancel), leaves `events` to that thread and returns false.
inline bool defer_or_lock(fd_state& state, std::uint32_t events) noexcept {
    state.deferred_events.fetch_or(events, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return state.mutex.try_lock();
}

// Blocks every signal in the threads this backend starts, restoring the caller's mask after.
class signal_blocker {
public:
    signal_blocker() noexcept {
        ::sigset_t all;
        ::sigfillset(&all);
        blocked_ = ::pthread_sigmask(SIG_BLOCK, &all, &old_) == 0;
    }
    ~signal_blocker() {
        if (blocked_)
            ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    }
    signal_blocker(const signal_blocker&) = delete;
    signal_blocker& operator=(const signal_blocker&) = delete;

private:
    ::sigset_t old_{};
    bool blocked_ = false;
};

} // namespace epoll_detail

/// The epoll backend. Made once per process by select.hpp (`instance()`); tests make their own.
class epoll_backend final : public backend {
public:
    /// At most this many file threads: 4 reads that miss the page cache overlap, which is
    /// plenty for a fallback; page-cache hits are bound by the copy, not by the thread count.
    static constexpr unsigned max_file_threads = 4;

    /// At most this many events per epoll_wait: enough to share one kernel call among many
    /// ready sockets; more would only delay running the ready list.
    static constexpr int max_events = 128;

    /// Test-only hook, called on the reaping thread for each socket event of a batch, after
    /// epoll_wait returned it and before the backend handles it (`fd` is the attached number).
    struct test_hook {
        void (*before_event)(void* context, int fd, std::uint32_t events) noexcept = nullptr;
        void* context = nullptr;
    };

    /// Makes a backend: an epoll instance, an eventfd, the watchdog thread.
    /// @throws std::system_error when one of them cannot be made (EMFILE, ENOMEM, EAGAIN).
    static std::unique_ptr<backend> create() {
        std::error_code ec;
        std::unique_ptr<backend> b = create(ec);
        if (ec)
            throw std::system_error(ec, "iocp: cannot start the epoll I/O backend");
        return b;
    }

    /// As create(), reporting failure in `ec` (and returning null) instead of throwing.
    static std::unique_ptr<backend> create(std::error_code& ec) noexcept {
        ec.clear();
        std::unique_ptr<epoll_backend> b(new (std::nothrow) epoll_backend());
        if (b == nullptr) {
            ec = std::make_error_code(std::errc::not_enough_memory);
            return nullptr;
        }
        ec = b->start();
        if (ec)
            return nullptr;
        return b;
    }

    /// Completes every queued operation with -ECANCELED (on the backend's threads), lets the
    /// file I/O running now finish with its result, then stops and joins the threads. No other
    /// call may run or start meanwhile, and no pool may poll it. The process-wide instance is
    /// never destroyed.
    ~epoll_backend() override { shutdown(); }

    epoll_backend(const epoll_backend&) = delete;
    epoll_backend& operator=(const epoll_backend&) = delete;

    const char* name() const noexcept override { return "epoll"; }

    /// Registers `fd` (once; edge-triggered) and makes it non-blocking; a regular file, which
    /// epoll refuses with EPERM, is attached without registration (its I/O runs on the file
    /// threads). Errors: EBADF (not an open fd), EEXIST (already attached: detach first),
    /// ENOMEM, ENOSPC (epoll's max_user_watches), or fcntl's error.
    std::error_code attach(int fd) noexcept override {
        if (fd < 0)
            return {EBADF, std::system_category()};
        const int flags = ::fcntl(fd, F_GETFL);
        if (flags < 0)
            return {errno, std::system_category()};
        std::unique_lock table(table_mutex_);
        const auto index = static_cast<std::size_t>(fd);
        if (index < table_.size() && table_[index] != nullptr)
            return {EEXIST, std::system_category()};
        try {
            if (index >= table_.size())
                table_.resize(index + 1, nullptr);
        } catch (...) {
            return std::make_error_code(std::errc::not_enough_memory);
        }
        auto* state = new (std::nothrow) epoll_detail::fd_state(fd, true);
        if (state == nullptr)
            return std::make_error_code(std::errc::not_enough_memory);
        ::epoll_event ev{};
        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
        ev.data.ptr = state;
        tsan_release(state); // before epoll_ctl ADD (see tsan.hpp)
        if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
            const int error = errno;
            delete state;
            if (error != EPERM)
                return {error, std::system_category()};
            // A regular file (or directory): always "ready"; its I/O runs on the file threads.
            state = new (std::nothrow) epoll_detail::fd_state(fd, false);
            if (state == nullptr)
                return std::make_error_code(std::errc::not_enough_memory);
        } else if ((flags & O_NONBLOCK) == 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
            const int error = errno;
            ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
            // TRICKY: a reaping round may hold this state in its current batch (ADD reported the
            // fd's readiness at once): it is freed by the next round.
            state->detached = true;
            retire(state);
            return {error, std::system_category()};
        }
        table_[index] = state;
        return {};
    }

    /// Unregisters `fd` before its owner closes it: every operation still queued on it
    /// completes with -ECANCELED, events of it already returned by epoll_wait are dropped, and
    /// a read_at/write_at running on a file thread is waited for (so that the number, once
    /// closed and reused, is never read or written by a stale operation). No-op for an fd that
    /// is not attached (its queued file operations are still cancelled).
    void detach(int fd) noexcept override {
        if (fd < 0)
            return; // never an fd (and -1 marks an idle file thread in running_fd_)
        epoll_detail::fd_state* state = nullptr;
        {
            std::unique_lock table(table_mutex_);
            const auto index = static_cast<std::size_t>(fd);
            if (index < table_.size()) {
                state = table_[index];
                table_[index] = nullptr;
            }
        }
        epoll_detail::op_queue cancelled;
        if (state != nullptr) {
            {
                // A plain unlock: events deferred to this holder are dropped with the state.
                std::lock_guard lock(state->mutex);
                state->detached = true;
                cancelled.splice(state->read_ops);
                cancelled.splice(state->write_ops);
            }
            if (state->registered) {
                // EBADF here means the owner closed first (a bug above): the kernel removed
                // the registration with the last reference to the file anyway.
                ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
                retire(state);
            } else {
                delete state; // never registered: no round can hold it
            }
        }
        take_file_ops(fd, cancelled);
        post_ready(cancelled, -ECANCELED);
        wait_file_ops_running_on(fd);
    }

    /// Hands `op` over; on_complete runs once later on a backend thread. Socket operations need
    /// an attached fd (else -EBADF); read_at/write_at do not. More than max_buffers buffers:
    /// -EINVAL. A recv/send/accept that cannot finish now waits for readiness; connect waits
    /// for its outcome (-ECONNREFUSED, ...). The result of an accept is a non-blocking,
    /// close-on-exec socket.
    void issue(linux_op& op) noexcept override {
        int ignored = 0;
        (void)issue_impl(op, nullptr, ignored);
    }

    /// As issue(), but an operation that finishes at once is not completed: true with its
    /// result in `res` (on_complete will not be called), for the caller to deliver from its own
    /// thread without a handoff. Sockets: the non-blocking call of issue(). read_at: a
    /// `preadv2(RWF_NOWAIT)` first, which reads what the page cache holds without blocking
    /// (preadv2(2), Linux 4.14); only a read it cannot finish whole goes to a file thread.
    bool issue_now(linux_op& op, int& res) noexcept override {
        if (op.what == linux_op::kind::read_at && read_cached(op, res))
            return true;
        return issue_impl(op, &op, res);
    }

private:
    // `now`: non-null (the op itself) when the caller takes a result known at once.
    bool issue_impl(linux_op& op, const linux_op* now, int& now_res) noexcept {
        using kind = linux_op::kind;
        op.next = nullptr;
        op.backend_data = nullptr;
        reaping_.issued();
        switch (op.what) {
        case kind::read_at:
        case kind::write_at: issue_file_op(op); return false;
        case kind::recv:
        case kind::send:
            if (op.iov_count > max_buffers) {
                post_ready(op, -EINVAL);
                return false;
            }
            op.msg = ::msghdr{};
            op.msg.msg_iov = op.iov;
            op.msg.msg_iovlen = op.iov_count;
            break;
        case kind::accept:
        case kind::connect: break;
        case kind::recv_from:
        case kind::send_to:
            // As recv / send, with the datagram's address in msg_name (the peer for send_to,
            // filled with the sender by recvmsg for recv_from).
            if (op.iov_count > max_buffers || op.addr_len > sizeof op.addr) {
                post_ready(op, -EINVAL);
                return false;
            }
            op.msg = ::msghdr{};
            op.msg.msg_name = &op.addr;
            op.msg.msg_namelen = op.what == kind::recv_from ? sizeof op.addr : op.addr_len;
            op.msg.msg_iov = op.iov;
            op.msg.msg_iovlen = op.iov_count;
            break;
        default: post_ready(op, -EINVAL); return false;
        }
        std::shared_lock table(table_mutex_);
        epoll_detail::fd_state* state = find(op.fd);
        if (state == nullptr) {
            table.unlock();
            post_ready(op, -EBADF);
            return false;
        }
        // TRICKY: the table's shared lock is held until unlock_state() has returned, as in
        // cancel(): detach() removes the state from the table under the table's exclusive lock
        // before it retires it, and unlock_state() still reads the state after releasing the
        // state's lock (its look for deferred events), so a detach() and the reaper's next
        // round could otherwise free the state under that read (ThreadSanitizer saw it). The
        // table's lock is shared: other issuers and cancels are not held up, only attach() and
        // detach(), for the length of one non-blocking call. The call is made under the state's
        // lock: an edge that the reaper handles before this point happened before the call (which
        // then sees the data); one after it finds the operation queued. Either way no readiness is
        // lost. An edge the reaper sees while this thread holds the lock is left to it
        // (defer_or_lock): unlock_state performs it before the lock is released, and the
        // operations it finishes go to the ready list (on_complete never runs inside issue()).
        state->mutex.lock();
        epoll_detail::op_queue& queue =
            epoll_detail::waits_to_read(op) ? state->read_ops : state->write_ops;
        epoll_detail::op_queue finished;
        int res = 0;
        bool done_now = false;
        // The call only when no operation waits ahead (FIFO: else it queues behind them).
        const bool first = queue.empty();
        if (first && epoll_detail::attempt_socket_op(op, res)) {
            done_now = true;
        } else if (first && !state->registered) {
            // Not registered (a regular file): no edge would ever come. Not reached by a
            // regular file (recvmsg on one is ENOTSOCK), kept so that nothing can wait forever.
            res = -EAGAIN;
            done_now = true;
        } else {
            queue.push(&op); // waits for the next edge
        }
        epoll_detail::unlock_state(*state, finished);
        table.unlock(); // the state is not touched after this (it may be retired now)
        post_finished(finished);
        if (!done_now)
            return false;
        if (now != nullptr) {
            now_res = res;
            reaping_.completed(1);
            return true;
        }
        post_ready(op, res);
        return false;
    }

public:
    /// Completes every operation of `fd` that is still queued (socket operations waiting for
    /// readiness, file operations no file thread has started) with -ECANCELED, on the reaping
    /// thread. Operations that already finished, and file I/O already running, complete with
    /// their own result. A connect in progress goes on in the kernel until the fd is closed.
    void cancel(int fd) noexcept override {
        epoll_detail::op_queue cancelled;
        epoll_detail::op_queue finished;
        {
            std::shared_lock table(table_mutex_);
            if (epoll_detail::fd_state* state = find(fd)) {
                state->mutex.lock();
                cancelled.splice(state->read_ops);
                cancelled.splice(state->write_ops);
                epoll_detail::unlock_state(*state, finished); // (queues empty: finds nothing)
            }
        }
        take_file_ops(fd, cancelled);
        post_ready(cancelled, -ECANCELED);
        post_finished(finished);
    }

    /// Cancels the one operation `op` if it is still queued (a socket operation waiting for
    /// readiness, a file operation no file thread has taken): it is taken out of its queue and
    /// completes once with -ECANCELED, on the reaping thread. One that already finished, or
    /// whose file I/O runs now, is left alone and completes with its own result.
    void cancel(linux_op& op) noexcept override {
        using kind = linux_op::kind;
        // Moves `op` from `queue` to `out` if it is there, keeping the order of the others.
        auto take = [&op](epoll_detail::op_queue& queue, epoll_detail::op_queue& out) {
            epoll_detail::op_queue keep;
            while (linux_op* p = queue.pop())
                (p == &op ? out : keep).push(p);
            queue = keep;
        };
        epoll_detail::op_queue cancelled;
        epoll_detail::op_queue finished;
        if (op.what == kind::read_at || op.what == kind::write_at) {
            std::lock_guard lock(file_mutex_);
            take(file_ops_, cancelled);
        } else {
            std::shared_lock table(table_mutex_);
            if (epoll_detail::fd_state* state = find(op.fd)) {
                state->mutex.lock();
                take(epoll_detail::waits_to_read(op) ? state->read_ops : state->write_ops,
                     cancelled);
                // An edge deferred to this holder finishes the operations left queued.
                epoll_detail::unlock_state(*state, finished);
            }
        }
        post_ready(cancelled, -ECANCELED);
        post_finished(finished);
    }

    /// completion_poller: runs one round as the one reaper of the process (epoll_wait up to
    /// `timeout` when nothing is ready, the ready sockets' calls, the ready list). False at once
    /// when another thread reaps.
    bool poll(std::chrono::milliseconds timeout) noexcept override {
        return reaping_.worker_poll(
            timeout, [this](std::chrono::milliseconds t) { run_round(t); },
            [this] { interrupt(); });
    }

    /// completion_poller: an eventfd write, only when a reaper waits in epoll_wait.
    void interrupt() noexcept override {
        if (reaping_.role.interrupt())
            signal_reaper();
    }

    /// completion_poller: operations finished inside issue() (or cancelled) wait in the ready
    /// list. Sockets that became ready are seen only by epoll_wait: not here.
    bool maybe_ready() const noexcept override {
        return ready_pending_.load(std::memory_order_relaxed);
    }

    /// The watchdog's tick: how long after a completion it reaps when no worker does.
    static constexpr std::chrono::milliseconds watchdog_tick = reaping::tick;

    /// Installs (or with null, removes) the test hook. Tests only.
    void set_test_hook(const test_hook* hook) noexcept {
        test_hook_.store(hook, std::memory_order_release);
    }

private:
    epoll_backend() = default;

    std::error_code start() noexcept {
        epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
        if (epoll_fd_ < 0)
            return {errno, std::system_category()};
        wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (wake_fd_ < 0)
            return {errno, std::system_category()};
        // Edge-triggered and never read: every eventfd write is a new edge (the eventfd wakes
        // its waiters on each write), so a wake costs one write and no read. The counter
        // (2^64 - 2 at most) cannot fill in the life of a process at one write per wake.
        ::epoll_event ev{};
        ev.events = EPOLLIN | EPOLLET;
        ev.data.ptr = &wake_fd_;
        if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) != 0)
            return {errno, std::system_category()};
        try {
            epoll_detail::signal_blocker blocker;
            watchdog_ = std::thread([this] { run_watchdog(); });
        } catch (const std::system_error& e) {
            return e.code();
        } catch (...) {
            return std::make_error_code(std::errc::not_enough_memory);
        }
        return {};
    }

    void shutdown() noexcept {
        epoll_detail::op_queue cancelled;
        std::vector<epoll_detail::fd_state*> states;
        {
            std::unique_lock table(table_mutex_);
            for (epoll_detail::fd_state* state : table_) {
                if (state == nullptr)
                    continue;
                std::lock_guard lock(state->mutex);
                state->detached = true;
                cancelled.splice(state->read_ops);
                cancelled.splice(state->write_ops);
                states.push_back(state); // reserve-free: shutdown is allowed to allocate
            }
            table_.clear();
        }
        {
            std::lock_guard lock(file_mutex_);
            cancelled.splice(file_ops_);
            file_stopping_ = true;
        }
        file_cv_.notify_all();
        for (std::thread& t : file_threads_)
            t.join(); // each finishes the operation it runs (and its on_complete) first
        post_ready(cancelled, -ECANCELED);
        // TRICKY: the stop flag is stored after the last post and loaded by the watchdog before
        // its last round, which takes the ready list: it runs every cancelled operation.
        reaping_.stop();
        interrupt();
        if (watchdog_.joinable())
            watchdog_.join();
        for (epoll_detail::fd_state* state : states)
            delete state;
        free_retired();
        if (wake_fd_ >= 0)
            ::close(wake_fd_);
        if (epoll_fd_ >= 0)
            ::close(epoll_fd_);
    }

    // The attached state of `fd`, or null. Caller holds table_mutex_.
    epoll_detail::fd_state* find(int fd) const noexcept {
        const auto index = static_cast<std::size_t>(fd);
        return fd >= 0 && index < table_.size() ? table_[index] : nullptr;
    }

    // Hands a finished operation to the reaper, which runs its on_complete.
    void post_ready(linux_op& op, int res) noexcept {
        epoll_detail::op_queue one;
        one.push(&op);
        post_ready(one, res);
    }

    // Hands finished operations (all with the result `res`) to the reaper.
    void post_ready(epoll_detail::op_queue& ops, int res) noexcept {
        for (linux_op* op = ops.head; op != nullptr; op = op->next)
            epoll_detail::set_result(*op, res);
        post_finished(ops);
    }

    // Hands finished operations (each with its result set) to the reaper.
    void post_finished(epoll_detail::op_queue& ops) noexcept {
        if (ops.empty())
            return;
        bool wake = false;
        {
            std::lock_guard lock(ready_mutex_);
            ready_.splice(ops);
            ready_pending_.store(true, std::memory_order_relaxed);
            // TRICKY: one interrupt per batch. The reaper clears wake_pending_ when it takes the
            // list (under this lock): a post after that interrupts again; a post before it is in
            // the list it takes. An interrupt while no reaper waits costs no kernel call: the
            // next round (a spinning worker sees ready_pending_, or the watchdog's tick) runs
            // the list.
            wake = !wake_pending_;
            wake_pending_ = true;
        }
        if (wake)
            interrupt();
    }

    void signal_reaper() noexcept {
        const std::uint64_t one = 1;
        while (::write(wake_fd_, &one, sizeof one) < 0 && errno == EINTR) {
        }
    }

    // Frees `state` once no reaping round can hold it (after its current batch).
    void retire(epoll_detail::fd_state* state) noexcept {
        std::lock_guard lock(ready_mutex_);
        state->next_retired = retired_;
        retired_ = state;
    }

    void free_retired() noexcept {
        epoll_detail::fd_state* state = nullptr;
        {
            std::lock_guard lock(ready_mutex_);
            state = std::exchange(retired_, nullptr);
        }
        while (state != nullptr)
            delete std::exchange(state, state->next_retired);
    }

    // One round (the role held): epoll_wait (up to `timeout` when nothing is ready), the ready
    // sockets' calls, then the ready list.
    void run_round(std::chrono::milliseconds timeout) noexcept {
        // TRICKY: a state is retired only after its EPOLL_CTL_DEL returned, and no epoll_wait
        // that starts after that returns it; the batches returned before were handled completely
        // by earlier rounds (one round at a time: the role). So this is the one safe place to
        // free (libuv instead rewrites the current batch: uv__platform_invalidate_fd).
        free_retired();
        ::epoll_event events[max_events];
        int wait_ms = 0;
        if (timeout.count() > 0 && !ready_pending_.load(std::memory_order_relaxed) &&
            reaping_.role.begin_wait()) {
            wait_ms = timeout == infinite || timeout.count() > INT_MAX
                          ? -1
                          : static_cast<int>(timeout.count());
        }
        const int n = ::epoll_wait(epoll_fd_, events, max_events, wait_ms);
        if (wait_ms != 0)
            reaping_.role.end_wait();
        if (n < 0 && errno != EINTR)
            std::terminate(); // EBADF/EFAULT/EINVAL: only a bug in this class gives them
        const test_hook* hook = test_hook_.load(std::memory_order_acquire);
        std::size_t completed = 0;
        for (int i = 0; i < n; ++i) {
            if (events[i].data.ptr == &wake_fd_)
                continue; // the ready list is run below, every round
            auto* state = static_cast<epoll_detail::fd_state*>(events[i].data.ptr);
            tsan_acquire(state); // after epoll_wait
            if (hook != nullptr && hook->before_event != nullptr)
                hook->before_event(hook->context, state->fd, events[i].events);
            completed += handle_events(*state, events[i].events);
        }
        completed += run_ready();
        reaping_.completed(completed);
    }

    // The watchdog: runs a round when no worker does (reaping::run_watchdog).
    void run_watchdog() noexcept {
        set_current_thread_name("iocp-epoll");
        reaping_.run_watchdog([this](std::chrono::milliseconds t) { run_round(t); },
                              [] { return false; });
        // Stopping: one last round runs what shutdown() cancelled (no pool polls a backend that
        // is being destroyed, so the role comes free).
        while (!reaping_.role.try_acquire())
            std::this_thread::yield();
        run_round(std::chrono::milliseconds(0));
        reaping_.role.release();
    }

    // Runs every queued operation of `state` that the event makes possible, then their
    // on_complete (outside the lock: on_complete may issue on the same fd). When another thread
    // holds the state's lock, the events are left to it (epoll_detail::defer_or_lock): the
    // reaper goes on with its batch instead of sleeping on the lock.
    std::size_t handle_events(epoll_detail::fd_state& state, std::uint32_t events) noexcept {
        if (!epoll_detail::defer_or_lock(state, events))
            return 0;
        epoll_detail::op_queue done;
        epoll_detail::unlock_state(state, done); // performs the events, then unlocks
        return epoll_detail::complete_all(done);
    }

    std::size_t run_ready() noexcept {
        epoll_detail::op_queue ready;
        {
            std::lock_guard lock(ready_mutex_);
            ready.splice(ready_);
            wake_pending_ = false;
            ready_pending_.store(false, std::memory_order_relaxed);
        }
        return epoll_detail::complete_all(ready);
    }

    void issue_file_op(linux_op& op) noexcept {
        bool notify = false;
        {
            std::lock_guard lock(file_mutex_);
            file_ops_.push(&op);
            if (idle_file_threads_ > 0) {
                notify = true;
            } else if (file_threads_.size() < max_file_threads) {
                try {
                    const std::size_t index = file_threads_.size();
                    file_threads_.reserve(max_file_threads);
                    epoll_detail::signal_blocker blocker;
                    file_threads_.emplace_back([this, index] { run_file_thread(index); });
                } catch (...) {
                    // No thread could start (EAGAIN, ENOMEM): with none running at all the
                    // operation would wait forever, so it fails now; else a running thread
                    // takes it.
                    if (file_threads_.empty()) {
                        op_queue_remove_last();
                        post_ready(op, -EAGAIN);
                    }
                }
            }
        }
        if (notify)
            file_cv_.notify_one();
    }

    // Removes the operation pushed last on file_ops_ (caller holds file_mutex_).
    void op_queue_remove_last() noexcept {
        epoll_detail::op_queue keep;
        linux_op* last = file_ops_.tail;
        while (linux_op* op = file_ops_.pop())
            if (op != last)
                keep.push(op);
        file_ops_ = keep;
    }

    void run_file_thread(std::size_t index) noexcept {
        set_current_thread_name("iocp-file");
        std::unique_lock lock(file_mutex_);
        for (;;) {
            while (file_ops_.empty() && !file_stopping_) {
                ++idle_file_threads_;
                file_cv_.wait(lock);
                --idle_file_threads_;
            }
            linux_op* op = file_ops_.pop();
            if (op == nullptr)
                return; // stopping, and nothing queued
            // TRICKY: published under file_mutex_, in the same critical section that takes
            // the operation from the queue, so detach() finds it either queued or running.
            running_fd_[index].store(op->fd, std::memory_order_relaxed);
            lock.unlock();
            const int res = epoll_detail::run_file_op(*op);
            running_fd_[index].store(-1, std::memory_order_release);
            running_fd_[index].notify_all();
            op->on_complete(op, res);
            reaping_.completed(1);
            lock.lock();
        }
    }

    // Moves the file operations queued on `fd` to `out`.
    void take_file_ops(int fd, epoll_detail::op_queue& out) noexcept {
        std::lock_guard lock(file_mutex_);
        file_ops_.take_fd(fd, out);
    }

    // Waits until no file thread runs an operation on `fd`.
    void wait_file_ops_running_on(int fd) noexcept {
        for (std::atomic<int>& running : running_fd_) {
            int seen = running.load(std::memory_order_acquire);
            while (seen == fd) {
                running.wait(seen, std::memory_order_acquire);
                seen = running.load(std::memory_order_acquire);
            }
        }
    }

    int epoll_fd_ = -1;
    int wake_fd_ = -1; // eventfd that interrupts epoll_wait; its address tags its epoll events
    std::thread watchdog_;

    reaping reaping_; // the role, the count in flight, the watchdog's schedule
    std::atomic<bool> ready_pending_{false}; // ready_ is not empty

    std::shared_mutex table_mutex_;              // guards table_
    std::vector<epoll_detail::fd_state*> table_; // attached states by fd number

    std::mutex ready_mutex_;       // guards ready_, wake_pending_, retired_
    epoll_detail::op_queue ready_; // finished operations whose on_complete the reaper runs
    bool wake_pending_ = false;    // an interrupt is on its way or unhandled
    epoll_detail::fd_state* retired_ = nullptr; // detached states the reaper frees

    std::mutex file_mutex_; // guards file_ops_, file_threads_, idle_file_threads_, file_stopping_
    std::condition_variable file_cv_;
    epoll_detail::op_queue file_ops_; // read_at / write_at no file thread has taken yet
    std::vector<std::thread> file_threads_;
    unsigned idle_file_threads_ = 0;
    bool file_stopping_ = false;
    static_assert(max_file_threads == 4, "running_fd_ initialises one slot per file thread");
    std::atomic<int> running_fd_[max_file_threads] = {-1, -1, -1, -1}; // fd each file thread runs

    std::atomic<const test_hook*> test_hook_{nullptr};
};

} // namespace iocp::detail::io::lnx
