#pragma once
// The io_uring backend of the Linux I/O layer (liburing): one ring per process, a mutex around
// every get_sqe/prep and the publication of the SQ tail (the kernel call that hands the SQEs
// over is made after it is released: see issue()), and one reaper at a time: the pool worker
// that would sleep (completion_poller::poll, called by the port) waits in
// io_uring_wait_cqe_timeout and calls each operation's on_complete itself (the neutral layer
// then posts it to the pool's port, which hands it back to that same worker: no thread
// handoff). A "watchdog" thread reaps only when no
// worker does (every worker busy, or no pool polling: the backend's own tests), at most a tick
// after a completion arrived.
//
// Why this shape (LINUX-IO-NOTES "Threads and rings", model A): liburing is not thread-safe, but
// one submitter at a time (the mutex) plus one reaper is [liburing#562, #784]. A ring per worker
// would reap nothing while its worker sleeps on the port, and DEFER_TASKRUN needs the submitter to
// be the waiter, which it is not here (io_uring_setup(2)). COOP_TASKRUN does not: the kernel still
// wakes a submitter that sleeps to run its task work, and only stops interrupting one that runs
// (see uring_options::coop_taskrun for what that buys and costs). Waiting with a timeout
// and no SQE needs IORING_FEAT_EXT_ARG (5.11); without it the watchdog is the only reaper, blocked
// in io_uring_wait_cqe, and workers never poll (the design before 5.11 could have).
//
// Kernel calls per completion: the issuing thread makes at most one io_uring_enter per operation
// (none when another thread's enter, or the reaper's timed wait, handed its SQE over first; the
// kernel usually runs the call inline there). The reaping worker makes one io_uring_enter per batch
// it waits for (none when CQEs are already there: a spinning worker sees them in the shared CQ),
// and the layer's port post wakes nobody when the reaper runs the completion itself.
//
// Completions are reported as the contract in backend.hpp says: exactly once per issue(), never
// inside issue(), on the reaping thread. -EAGAIN from a CQE is never reported (the operation waits
// for a POLL_ADD of its readiness, then is issued again); a cancelled accept that still produced a
// socket closes it and reports -ECANCELED. An operation outlives the thread that issued it: the
// kernel ends a request whose issuing thread exited without running it, and the backend issues
// it again from the reaper (see resume_locked). That also makes it safe for a thread's
// io_uring_enter to hand over SQEs other threads published (the kernel then ties those requests
// to the entering thread): the mutex is not held across io_uring_enter, where the reaper waited
// for it (0.22-0.39 futex calls per echoed message under perf stat; 0.01-0.04 without).
//
// Every SQE that names an fd is published under the mutex while the fd is attached, and the
// kernel has consumed it before detach() returns (detach enters under the mutex): none is linked
// (IOSQE_IO_LINK) or forced to io-wq (IOSQE_ASYNC), because the kernel resolves the fd of such an
// SQE when it starts it, not when it was submitted (io_uring/ io_uring.c io_assign_file), by which
// time the number may be closed and reused by a new socket.

#include "backend.hpp"
#include "cached_read.hpp"
#include "poll_role.hpp"
#include "tsan.hpp"

#if defined(IOCP_HAS_LIBURING) && IOCP_HAS_LIBURING

#include "../../thread_name.hpp"
#include "../../time.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <new>
#include <system_error>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

namespace iocp::detail::io::lnx {

/// Ring sizes and test switches of a uring_backend. The process-wide instance uses the defaults.
struct uring_options {
    /// Submission queue entries. Every issue() submits at once, so the SQ holds a few entries at
    /// a time; 256 absorbs bursts of issuers racing for the mutex.
    unsigned sq_entries = 256;
    /// Completion queue entries (IORING_SETUP_CQSIZE). Operations in flight are not bounded by
    /// it (the kernel keeps overflowed CQEs, IORING_FEAT_NODROP), but a CQ that holds a burst
    /// saves the reaper an enter to flush the overflow list.
    unsigned cq_entries = 4096;
    /// IORING_SETUP_COOP_TASKRUN (5.19; ignored before): the kernel no longer interrupts a thread
    /// running user code to finish an operation that thread submitted. io_uring finishes a recv, a
    /// send or an accept whose socket became ready as "task work" of the submitting thread; without
    /// this flag a thread that is running gets an inter-processor interrupt for it, with it the
    /// work waits for that thread's next system call or interrupt return (io_uring_setup(2)); a
    /// sleeping thread is woken either way (task_work_add's TWA_SIGNAL_NO_IPI still wakes an
    /// interruptible sleeper: __set_notify_signal in the kernel's include/linux/sched/signal.h).
    /// Measured on the echo ping-pong of bench/ (KVM guest, 2 vCPUs): 0.87× → 0.99× the round trips
    /// per second of asio::io_context on epoll (medians of 8 pairs of runs, bench/README.md). The
    /// price: an operation whose submitter runs user code without a system call (a long computation
    /// after starting a recv) completes up to one scheduler tick late (1-4 ms by CONFIG_HZ; later
    /// still on a nohz_full CPU) instead of at once. `IOCP_IO_URING_COOP_TASKRUN=0` in the
    /// environment turns it off for the process-wide backend.
    bool coop_taskrun = true;
    /// Tests only: cancel each operation by user_data even where the kernel cancels by fd
    /// (IORING_ASYNC_CANCEL_FD, 5.19+), to exercise the path older kernels take.
    bool force_cancel_by_user_data = false;
    /// Tests only: every operation waits for its readiness POLL_ADD before its first try, as one
    /// that completed with -EAGAIN does (rare, see reap_locked), to exercise that path at will.
    bool force_poll_first = false;
};

/// The io_uring backend. Thread safety: every member may be called from any thread at once.
/// Completions run on the reaping thread (a worker in poll(), or the watchdog), one batch at a
/// time.
class uring_backend final : public backend {
public:
    /// The backend, or nullptr when io_uring cannot be set up here: io_uring_queue_init failed
    /// (ENOSYS: no CONFIG_IO_URING; EPERM: seccomp or kernel.io_uring_disabled; ENOMEM:
    /// RLIMIT_MEMLOCK on <= 5.11 - io_uring_setup(2)), the kernel lacks IORING_FEAT_NODROP (5.5)
    /// or an opcode this backend issues (IORING_REGISTER_PROBE), or the reaper thread could not
    /// start. The contract's entry point, used by select.hpp.
    static std::unique_ptr<backend> try_create() noexcept {
        std::error_code ignored;
        uring_options options;
        if (const char* coop = std::getenv("IOCP_IO_URING_COOP_TASKRUN"))
            options.coop_taskrun = std::strcmp(coop, "0") != 0;
        return create(options, ignored);
    }

    /// As try_create(), with sizes, and the reason in `why` when it returns nullptr (the errno of
    /// io_uring_queue_init, errc::function_not_supported for a missing feature or opcode).
    static std::unique_ptr<uring_backend> create(const uring_options& options,
                                                 std::error_code& why) noexcept {
        why.clear();
        std::unique_ptr<uring_backend> self(new (std::nothrow) uring_backend());
        if (!self) {
            why = std::make_error_code(std::errc::not_enough_memory);
            return nullptr;
        }
        why = self->init(options);
        if (why)
            return nullptr; // the destructor undoes what init did
        return self;
    }

    uring_backend(const uring_backend&) = delete;
    uring_backend& operator=(const uring_backend&) = delete;

    /// Cancels every operation in flight, waits until each has completed (its on_complete
    /// returned), then stops the watchdog and frees the ring. The process-wide instance is never
    /// destroyed; instances made by tests are (no pool may poll it then).
    ~uring_backend() override {
        if (watchdog_.joinable()) {
            {
                std::lock_guard lock(mutex_);
                for (std::size_t fd = 0; fd < fds_.size(); ++fd)
                    if (fds_[fd].head != nullptr)
                        (void)cancel_locked(static_cast<int>(fd)); // interrupted below
            }
            reaping_.stop();
            interrupt();
            watchdog_.join();
        }
        if (ring_ready_)
            ::io_uring_queue_exit(&ring_);
        if (wake_fd_ >= 0)
            ::close(wake_fd_);
    }

    const char* name() const noexcept override { return "io_uring"; }

    /// Registers fd. io_uring needs no registration; this checks that fd is open (EBADF) and
    /// reserves its slot in the table of operations per fd (ENOMEM), so issue() rarely allocates.
    std::error_code attach(int fd) noexcept override {
        if (fd < 0 || ::fcntl(fd, F_GETFD) == -1)
            return std::make_error_code(std::errc::bad_file_descriptor);
        std::lock_guard lock(mutex_);
        if (!reserve_slot_locked(fd))
            return std::make_error_code(std::errc::not_enough_memory);
        fd_slot& slot = fds_[static_cast<std::size_t>(fd)];
        slot.recv_misses = slot.recv_skips = 0; // a new file or socket with a reused number
        return {};
    }

    /// Called before close(fd). Operations still in flight on fd are cancelled: close alone
    /// would leave them in the kernel, where a pending recv later eats the peer's bytes
    /// [liburing#568, LINUX-IO-NOTES 4]. They still complete once each.
    void detach(int fd) noexcept override {
        bool completed_later = false;
        {
            std::lock_guard lock(mutex_);
            if (fd >= 0 && static_cast<std::size_t>(fd) < fds_.size() && fds_[fd].head != nullptr)
                completed_later = cancel_locked(fd);
        }
        if (completed_later)
            interrupt(); // a reaper waiting in the kernel takes the done list
    }

    /// Hands op to the kernel: prepares its SQE and submits it (one io_uring_enter). Never
    /// blocks on I/O and never completes op here; an error found before the kernel saw op
    /// (fd < 0: -EBADF; offset > INT64_MAX, more than max_buffers buffers or an address longer
    /// than sockaddr_storage: -EINVAL; no memory for the fd table: -ENOMEM; a submission queue
    /// that stays full: -EBUSY) is delivered on the reaper like any completion.
    void issue(linux_op& op) noexcept override { issue_impl(op, false); }

    /// A read_at tries the page cache first (cached_read.hpp). A send or a recv tries the socket
    /// first (sendmsg / recvmsg with MSG_DONTWAIT) when no operation of the same direction on
    /// its fd is in the ring (order is kept): a send with room or a recv whose data is already
    /// there, the common cases of a busy connection, then cost one system call and no ring
    /// round trip (the SQE's enter, the CQE, a reaper's wake-up). Everything else, and a call
    /// that would block, goes to the ring as issue() does. Asio's reactor sends and receives
    /// the same way ("speculative" operations); the price is one failed call per recv that has
    /// to wait. Where that is most recvs (a request-reply connection: the reply's recv follows
    /// the request's send), the fd's recvs back off: after k tries in a row found no data, the
    /// next 2^k - 1 recvs (at most 15) skip the try and go to the ring, whose submission (the
    /// io_uring_enter a recv that has to wait makes anyway) makes the same attempt in the kernel;
    /// a try that finds data ends the back-off. On the echo ping-pong of bench/ this took the
    /// recvmsg calls per round trip from 1.00 to about 0.5 (bench/README.md).
    bool issue_now(linux_op& op, int& res) noexcept override {
        // A read the page cache holds: one preadv2(RWF_NOWAIT), no ring round trip.
        if (op.what == linux_op::kind::read_at && read_cached(op, res))
            return true;
        const bool send = op.what == linux_op::kind::send;
        bool had_misses = false;
        if ((send || op.what == linux_op::kind::recv) && op.fd >= 0 &&
            op.iov_count <= max_buffers && try_direct(op.fd, op.what, had_misses)) {
            ::msghdr msg{};
            msg.msg_iov = op.iov;
            msg.msg_iovlen = op.iov_count;
            for (;;) {
                const ::ssize_t n = send ? ::sendmsg(op.fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL)
                                         : ::recvmsg(op.fd, &msg, MSG_DONTWAIT);
                if (n >= 0) {
                    res = n > static_cast<::ssize_t>(INT_MAX) ? INT_MAX : static_cast<int>(n);
                    if (had_misses)
                        note_recv_hit(op.fd);
                    return true;
                }
                if (errno == EINTR)
                    continue;
                if (errno != EAGAIN && errno != EWOULDBLOCK) {
                    res = -errno;
                    return true;
                }
                // No room, or no data yet: the ring waits for it.
                issue_impl(op, !send);
                return false;
            }
        }
        issue(op);
        return false;
    }

    /// Cancels every operation of fd in flight: each completes once, with -ECANCELED unless it
    /// had finished first. One IORING_OP_ASYNC_CANCEL with IORING_ASYNC_CANCEL_FD|ALL (5.19+),
    /// else one cancel by user_data per operation (io_uring_prep_cancel(3)). Call it before
    /// close(fd): a cancel by fd after close fails with EBADF (then this falls back by user_data).
    void cancel(int fd) noexcept override {
        bool completed_later = false;
        {
            std::lock_guard lock(mutex_);
            if (fd >= 0 && static_cast<std::size_t>(fd) < fds_.size())
                completed_later = cancel_locked(fd);
        }
        if (completed_later)
            interrupt(); // a reaper waiting in the kernel takes the done list
    }

    /// Cancels the one operation `op`: an IORING_OP_ASYNC_CANCEL (io_uring_prep_cancel64(3)) of
    /// the SQE op has in the kernel now, op's own or, after an -EAGAIN, the POLL_ADD it waits
    /// for (see reap_locked), only while op is still in its fd's list (issued and not yet
    /// reaped: see cancel_each_locked for why the user_data cannot name a later op). It completes
    /// once, with -ECANCELED unless it had finished first; promptly, also on a quiet socket.
    void cancel(linux_op& op) noexcept override {
        bool interrupt_after_unlock = false;
        {
            std::lock_guard lock(mutex_);
            cancel_one_locked(op, interrupt_after_unlock);
        }
        if (interrupt_after_unlock)
            interrupt(); // a reaper waiting in the kernel takes the done list
    }

    /// Whether cancel() uses IORING_ASYNC_CANCEL_FD (false before 5.19 and when forced).
    bool cancels_by_fd() const noexcept { return cancel_by_fd_; }

    /// Whether the ring was set up with IORING_SETUP_COOP_TASKRUN (uring_options::coop_taskrun,
    /// on a 5.19+ kernel).
    bool coop_taskrun() const noexcept { return coop_taskrun_; }

    /// completion_poller: reaps as the one reaper of the process, waiting up to `timeout` for
    /// the first CQE (io_uring_wait_cqe_timeout). False at once when another thread reaps, and
    /// always false without IORING_FEAT_EXT_ARG (the watchdog reaps alone there).
    bool poll(std::chrono::milliseconds timeout) noexcept override {
        if (!ext_arg_)
            return false;
        return reaping_.worker_poll(
            timeout, [this](std::chrono::milliseconds t) { reap(t); }, [this] { interrupt(); });
    }

    /// completion_poller: an eventfd write, only when a reaper waits in the kernel.
    void interrupt() noexcept override {
        if (reaping_.role.interrupt())
            wake();
    }

    /// completion_poller: CQEs are in the CQ (shared memory: no kernel call) or failures wait
    /// in the done list.
    bool maybe_ready() const noexcept override {
        return ::io_uring_smp_load_acquire(ring_.cq.ktail) !=
                   ::io_uring_smp_load_acquire(ring_.cq.khead) ||
               done_pending_.load(std::memory_order_relaxed);
    }

    /// The watchdog's tick: how long after a completion it reaps when no worker does.
    static constexpr std::chrono::milliseconds watchdog_tick = reaping::tick;

private:
    // Reserved user_data values: an operation's user_data is its address, aligned to at least 8,
    // so values with any of the low 3 bits set are never an operation.
    static constexpr std::uint64_t tag_mask = 7;
    static constexpr std::uint64_t tag_wake = 1;   // the POLL_ADD on wake_fd_
    static constexpr std::uint64_t tag_cancel = 3; // an ASYNC_CANCEL; fd in the upper 32 bits
    // The POLL_ADD an op waits for before it is issued again; the op's address in the other bits.
    static constexpr std::uint64_t tag_poll = 5;
    static_assert(alignof(linux_op) >= 8);

    // An op's backend_data while it is in flight: its fd's cancel epoch when it was issued, above
    // two flags.
    static constexpr std::uintptr_t behind_poll = 1;      // its POLL_ADD is its SQE in the kernel
    static constexpr std::uintptr_t cancel_requested = 2; // cancel(op) was called
    static constexpr std::uintptr_t connect_resumed = 4;  // a connect whose handshake went on
    static constexpr std::uintptr_t fault_resumed = 8;    // issued again after an -EFAULT
    static constexpr std::uintptr_t queued = 16;          // a recv waiting for its turn
    static constexpr unsigned flag_bits = 5;

    // Operations of one fd in flight (linked through linux_op::next) and its cancel epoch.
    struct fd_slot {
        linux_op* head = nullptr;
        std::uint32_t epoch = 0; // bumped by every cancel of the fd
        // How issue_now treats the fd's next recvs: after `recv_misses` direct tries in a row
        // found no data, the next 2^recv_misses - 1 recvs skip the try (`recv_skips` of them are
        // left). Only a hint: a recv that skips the try goes to the ring, which is always right.
        std::uint8_t recv_misses = 0;
        std::uint8_t recv_skips = 0;

        void note_recv_miss() noexcept {
            if (recv_misses < max_recv_misses)
                ++recv_misses;
            recv_skips = static_cast<std::uint8_t>((1U << recv_misses) - 1);
        }
    };
    // At most 2^4 - 1 = 15 recvs in a row skip the direct try: a connection whose data starts to
    // arrive ahead of its recvs (a stream after a request-reply phase) tries again within 16.
    static constexpr std::uint8_t max_recv_misses = 4;

    // One reaped CQE of an operation, completed after the mutex is released.
    struct reaped {
        linux_op* op;
        int res;
        int close_fd; // an accepted socket to close (the accept was cancelled), or -1
    };

    uring_backend() = default;

    static void* epoch_word(std::uint32_t epoch) noexcept {
        // NOLINTNEXTLINE(performance-no-int-to-ptr): the scratch word holds an epoch, not a pointer
        return reinterpret_cast<void*>(static_cast<std::uintptr_t>(epoch) << flag_bits);
    }
    static std::uintptr_t word_of(const linux_op& op) noexcept {
        return reinterpret_cast<std::uintptr_t>(op.backend_data);
    }
    static bool has_flag(const linux_op& op, std::uintptr_t flag) noexcept {
        return (word_of(op) & flag) != 0;
    }
    static void set_flag(linux_op& op, std::uintptr_t flag, bool on = true) noexcept {
        const std::uintptr_t word = on ? word_of(op) | flag : word_of(op) & ~flag;
        // NOLINTNEXTLINE(performance-no-int-to-ptr): the scratch word holds flags, not a pointer
        op.backend_data = reinterpret_cast<void*>(word);
    }
    // Whether op's fd was cancelled (cancel(fd), detach) since op was issued. Compared in the
    // bits the word keeps (on a 32-bit target the epoch wraps at 2^28 cancels: harmless, an op
    // is in flight across far fewer).
    bool fd_cancelled_locked(const linux_op& op) const noexcept {
        const fd_slot& slot = fds_[static_cast<std::size_t>(op.fd)];
        return (word_of(op) >> flag_bits) !=
               (reinterpret_cast<std::uintptr_t>(epoch_word(slot.epoch)) >> flag_bits);
    }
    // The user_data of the SQE op has in the kernel now: its POLL_ADD's, or its own.
    static std::uint64_t user_data_locked(const linux_op& op) noexcept {
        const auto address = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(&op));
        return has_flag(op, behind_poll) ? address | tag_poll : address;
    }
    static void* result_word(int res) noexcept {
        // NOLINTNEXTLINE(performance-no-int-to-ptr): the scratch word holds an int, not a pointer
        return reinterpret_cast<void*>(static_cast<std::intptr_t>(res));
    }
    static int result_of(const linux_op& op) noexcept {
        return static_cast<int>(reinterpret_cast<std::intptr_t>(op.backend_data));
    }

    static bool valid_request(const linux_op& op) noexcept {
        switch (op.what) {
        case linux_op::kind::read_at:
        case linux_op::kind::write_at:
            // Offset -1 means "the file position" to the kernel: refuse what is not an offset.
            return op.offset <= static_cast<std::uint64_t>(INT64_MAX);
        case linux_op::kind::recv:
        case linux_op::kind::send: return op.iov_count <= max_buffers;
        case linux_op::kind::accept: return true;
        case linux_op::kind::connect: return op.addr_len <= sizeof(op.addr);
        case linux_op::kind::recv_from: return op.iov_count <= max_buffers;
        case linux_op::kind::send_to:
            return op.iov_count <= max_buffers && op.addr_len <= sizeof(op.addr);
        }
        return false;
    }

    std::error_code init(const uring_options& options) noexcept {
        ::io_uring_params params{};
        params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
        if (options.coop_taskrun)
            params.flags |= IORING_SETUP_COOP_TASKRUN;
        params.cq_entries = options.cq_entries;
        int r = ::io_uring_queue_init_params(options.sq_entries, &ring_, &params);
        if (r == -EINVAL && options.coop_taskrun) {
            // Before 5.19 an unknown setup flag is EINVAL: the ring without it.
            params = ::io_uring_params{};
            params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
            params.cq_entries = options.cq_entries;
            r = ::io_uring_queue_init_params(options.sq_entries, &ring_, &params);
        } else if (r >= 0) {
            coop_taskrun_ = options.coop_taskrun;
        }
        if (r < 0)
            return {-r, std::system_category()};
        ring_ready_ = true;
        // Without NODROP (5.5) an overflowing CQ drops completions: a lost completion is a hang.
        if ((params.features & IORING_FEAT_NODROP) == 0)
            return std::make_error_code(std::errc::function_not_supported);
        ext_arg_ = (params.features & IORING_FEAT_EXT_ARG) != 0;
        if (!opcodes_supported())
            return std::make_error_code(std::errc::function_not_supported);
        wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (wake_fd_ < 0)
            return {errno, std::system_category()};
        cancel_by_fd_ = !options.force_cancel_by_user_data && probe_cancel_by_fd();
        force_poll_first_ = options.force_poll_first;
        {
            std::lock_guard lock(mutex_);
            if (!arm_wake_locked())
                return std::make_error_code(std::errc::resource_unavailable_try_again);
        }
        // The watchdog takes no signal: a process's handlers run on its own threads, not ours.
        ::sigset_t all, old;
        ::sigfillset(&all);
        ::pthread_sigmask(SIG_SETMASK, &all, &old);
        std::error_code started;
        try {
            watchdog_ = std::thread([this] { run_watchdog(); });
        } catch (const std::system_error& e) {
            started = e.code();
        } catch (...) { // std::bad_alloc
            started = std::make_error_code(std::errc::not_enough_memory);
        }
        ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
        return started;
    }

    bool opcodes_supported() noexcept {
        ::io_uring_probe* probe = ::io_uring_get_probe_ring(&ring_);
        if (probe == nullptr)
            return false; // IORING_REGISTER_PROBE is 5.6, as READ/WRITE are
        bool ok = true;
        for (int opcode :
             {IORING_OP_READ, IORING_OP_WRITE, IORING_OP_RECVMSG, IORING_OP_SENDMSG,
              IORING_OP_ACCEPT, IORING_OP_CONNECT, IORING_OP_ASYNC_CANCEL, IORING_OP_POLL_ADD})
            ok = ok && ::io_uring_opcode_supported(probe, opcode) != 0;
        ::io_uring_free_probe(probe);
        return ok;
    }

    // Whether ASYNC_CANCEL takes IORING_ASYNC_CANCEL_FD (5.19): cancel by fd on an fd with
    // nothing in flight gives 0 (a count, with ALL) or -ENOENT where it does, -EINVAL before.
    bool probe_cancel_by_fd() noexcept {
        ::io_uring_sqe* sqe = ::io_uring_get_sqe(&ring_);
        if (sqe == nullptr)
            return false;
        ::io_uring_prep_cancel_fd(sqe, wake_fd_, IORING_ASYNC_CANCEL_ALL);
        ::io_uring_sqe_set_data64(sqe, tag_cancel);
        if (::io_uring_submit(&ring_) != 1)
            return false;
        ::io_uring_cqe* cqe = nullptr;
        int r;
        do
            r = ::io_uring_wait_cqe(&ring_, &cqe);
        while (r == -EINTR);
        if (r < 0)
            return false;
        const bool ok = cqe->res >= 0 || cqe->res == -ENOENT;
        ::io_uring_cqe_seen(&ring_, cqe);
        return ok;
    }

    // The reaper's wake-up: a multishot POLL_ADD on an eventfd. wake() needs no SQE and no lock
    // (a write(2)), so it works while the SQ is jammed; each write is a CQE tagged tag_wake.
    bool arm_wake_locked() noexcept {
        ::io_uring_sqe* sqe = get_sqes_locked(1);
        if (sqe == nullptr)
            return false;
        ::io_uring_prep_poll_multishot(sqe, wake_fd_, POLLIN);
        ::io_uring_sqe_set_data64(sqe, tag_wake);
        submit_locked();
        return true;
    }

    void wake() noexcept { (void)::eventfd_write(wake_fd_, 1); }

    bool reserve_slot_locked(int fd) noexcept {
        const auto index = static_cast<std::size_t>(fd);
        if (index < fds_.size())
            return true;
        try {
            // Geometric growth: one allocation per doubling of the highest fd seen.
            std::size_t size = fds_.size() < 64 ? 64 : fds_.size();
            while (size <= index)
                size *= 2;
            fds_.resize(size);
            return true;
        } catch (...) {
            return false;
        }
    }

    // Whether issue_now tries a send or a recv of fd directly: not while an operation of its
    // direction (a send, or a receive) is in the ring, which a direct call would overtake, nor
    // for a recv that the fd's misses tell to skip the try (fd_slot::recv_skips). `had_misses`:
    // the fd had missed before, so a hit must reset it (note_recv_hit).
    bool try_direct(int fd, linux_op::kind what, bool& had_misses) noexcept {
        const auto sends = [](linux_op::kind k) {
            return k == linux_op::kind::send || k == linux_op::kind::send_to;
        };
        const auto receives = [](linux_op::kind k) {
            return k == linux_op::kind::recv || k == linux_op::kind::recv_from;
        };
        const bool send = sends(what);
        std::lock_guard lock(mutex_);
        if (static_cast<std::size_t>(fd) >= fds_.size())
            return true; // nothing of fd was ever in the ring
        fd_slot& slot = fds_[static_cast<std::size_t>(fd)];
        for (const linux_op* op = slot.head; op != nullptr; op = op->next)
            if (send ? sends(op->what) : receives(op->what))
                return false;
        if (send)
            return true;
        had_misses = slot.recv_misses != 0;
        if (slot.recv_skips == 0)
            return true;
        --slot.recv_skips;
        return false;
    }

    // A direct recv of fd found data: its next recvs try directly again.
    void note_recv_hit(int fd) noexcept {
        std::lock_guard lock(mutex_);
        if (static_cast<std::size_t>(fd) < fds_.size())
            fds_[static_cast<std::size_t>(fd)].recv_misses = 0;
    }

    void unlink_locked(linux_op& op) noexcept {
        // Few operations per fd are in flight at once (a recv and a send), so a search is short.
        for (linux_op** link = &fds_[static_cast<std::size_t>(op.fd)].head; *link != nullptr;
             link = &(*link)->next) {
            if (*link == &op) {
                *link = op.next;
                op.next = nullptr;
                return;
            }
        }
    }

    // An op that leaves the kernel for good: out of its fd's list, and the next recv of its fd
    // waiting for its turn starts.
    void finished_locked(linux_op& op) noexcept {
        unlink_locked(op);
        if (op.what == linux_op::kind::recv && !has_flag(op, queued))
            start_queued_recv_locked(op.fd);
    }

    // issue(); `recv_missed`: op is a recv whose direct try found no data (see issue_now).
    void issue_impl(linux_op& op, bool recv_missed) noexcept {
        int early = 0;
        reaping_.issued();
        {
            std::lock_guard lock(mutex_);
            if (op.fd < 0)
                early = -EBADF;
            else if (!valid_request(op))
                early = -EINVAL;
            else if (!reserve_slot_locked(op.fd))
                early = -ENOMEM;
            if (early == 0) {
                fd_slot& slot = fds_[static_cast<std::size_t>(op.fd)];
                op.backend_data = epoch_word(slot.epoch);
                if (recv_missed)
                    slot.note_recv_miss();
                // A recv behind another of its fd waits for its turn
                // (start_queued_recv_locked).
                const bool wait_turn =
                    op.what == linux_op::kind::recv && recv_in_flight_locked(op.fd);
                op.next = slot.head;
                slot.head = &op;
                if (wait_turn)
                    set_flag(op, queued);
                else
                    early = submit_locked_as_issued(op);
                if (early != 0)
                    unlink_locked(op);
            }
            if (early != 0)
                complete_later_locked(op, early);
        }
        if (early != 0) {
            interrupt(); // a reaper waiting in the kernel takes it; else the next reap does
            return;
        }
        // TRICKY: the kernel call is made without the mutex (held across it, the mutex was
        // contended between the issuer and the reaper), and op must not be touched any more:
        // another thread's enter may consume its SQE, and the reaper complete it, first.
        // The fd named by the SQE is still the one op was given when the kernel resolves it:
        // the kernel consumes SQEs in ring order (one submitter at a time, under its uring_lock),
        // and detach()/cancel(), which run before close(fd), publish and enter under the mutex
        // (submit_locked) while op is still in its fd's list, so every SQE published before them
        // (op's among them) is consumed before they return. A cancel by user_data is likewise
        // consumed, and run, before any SQE published after it (a re-issue at op's address).
        enter_published();
    }

    // Whether a recv of fd is in flight (in the kernel or waiting for its turn).
    bool recv_in_flight_locked(int fd) const noexcept {
        for (const linux_op* op = fds_[static_cast<std::size_t>(fd)].head; op != nullptr;
             op = op->next)
            if (op->what == linux_op::kind::recv)
                return true;
        return false;
    }

    // TRICKY: queued recvs. Several recvs pending in the kernel on one TCP socket take its bytes
    // newest first (measured on 6.18: 8 one-byte recvs got "hgfedcba" of "abcdefgh", every
    // time; user_trial3_test), so a stream recv issued while another of its fd is
    // in flight waits here, in its fd's list with the `queued` mark, and goes to the kernel when
    // the one ahead of it has finished: one recv per socket in the kernel, the rest in the order
    // they were started, as on Windows and on the epoll backend. A queued op is never in the
    // kernel: cancel(op) and cancel(fd) complete it through the done list. recv_from is not
    // queued: each takes a whole datagram, and several pending at once are how a UDP server keeps
    // up with bursts. (The backend does not know a socket's type: a connected datagram socket's
    // recv is queued like a stream's, which keeps its datagrams in order too.)
    void start_queued_recv_locked(int fd) noexcept {
        for (;;) {
            // The list is newest first: the last queued recv is the oldest.
            linux_op* next = nullptr;
            for (linux_op* op = fds_[static_cast<std::size_t>(fd)].head; op != nullptr;
                 op = op->next)
                if (has_flag(*op, queued))
                    next = op;
            if (next == nullptr)
                return;
            set_flag(*next, queued, false);
            int r = -ECANCELED;
            if (!reaping_.stopping() && !fd_cancelled_locked(*next))
                r = submit_locked_as_issued(*next); // entered by the reaper (reap)
            if (r == 0)
                return;
            unlink_locked(*next);
            complete_later_locked(*next, r);
        }
    }

    // Queues op's first SQE, as issue() does (the caller enters).
    int submit_locked_as_issued(linux_op& op) noexcept {
        return force_poll_first_ ? submit_poll_locked(op) : submit_op_locked(op);
    }

    // Completes op with `res` on the reaper, through the done list (never inside the caller).
    void complete_later_locked(linux_op& op, int res) noexcept {
        op.backend_data = result_word(res);
        op.next = nullptr;
        *done_tail_ = &op;
        done_tail_ = &op.next;
        done_pending_.store(true, std::memory_order_relaxed);
    }

    // `count` free SQEs, or nullptr. A full SQ is submitted and retried (io_uring_submit hands
    // the kernel what is queued); it can stay full only while the kernel refuses submissions
    // (EAGAIN: no memory; EBUSY: the CQ overflow list could not grow), so after a bounded number
    // of yields the caller fails the operation instead of blocking its issuer.
    ::io_uring_sqe* get_sqes_locked(unsigned count) noexcept {
        for (int attempt = 0; ::io_uring_sq_space_left(&ring_) < count; ++attempt) {
            if (attempt == 64)
                return nullptr;
            publish_locked();
            const int r = ::io_uring_submit(&ring_);
            if (r <= 0 && r != -EINTR)
                ::sched_yield();
        }
        // Space was checked: with count == 2 the caller takes the second with io_uring_get_sqe.
        return ::io_uring_get_sqe(&ring_);
    }

    // Hands the kernel every SQE queued so far, under the mutex: when it returns, the kernel has
    // consumed (and so resolved the fd of) each SQE queued before it, whoever queued it. Used
    // where that matters (cancel, detach, the wake poll); issue() publishes and enters outside
    // the mutex instead (publish_locked, enter_published).
    void submit_locked() noexcept {
        publish_locked();
        int r;
        do
            r = ::io_uring_submit(&ring_);
        while (r == -EINTR);
        // TRICKY: on EAGAIN/EBUSY the SQEs stay queued in the shared ring (liburing already
        // advanced its tail): the next submit of any thread hands them over. The reaper retries
        // while any are left, so a refused submit delays an operation and never loses it.
        if (r < 0)
            submit_pending_.store(true, std::memory_order_relaxed);
    }

    // Makes the SQEs prepared so far visible to the kernel (the SQ tail it reads), without a
    // kernel call. liburing's own fields (sqe_head, sqe_tail) are read and written only here and
    // in the other *_locked members, under the mutex; the kernel's tail is stored with release
    // so that whichever thread enters next, and consumes these SQEs, sees their contents.
    void publish_locked() noexcept {
        ::io_uring_sq& sq = ring_.sq;
        if (sq.sqe_head == sq.sqe_tail)
            return;
        // The index array is the identity map liburing 2.3+ writes once at setup; written here
        // too, as older liburing versions wrote it at each submit.
        for (unsigned i = sq.sqe_head; i != sq.sqe_tail; ++i)
            sq.array[i & sq.ring_mask] = i & sq.ring_mask;
        sq.sqe_head = sq.sqe_tail;
        ::io_uring_smp_store_release(sq.ktail, sq.sqe_tail);
    }

    // SQEs published and not yet consumed by the kernel. Any thread, no lock: both words are
    // shared with the kernel, which advances the head under its own lock.
    unsigned sq_published() const noexcept {
        return ::io_uring_smp_load_acquire(ring_.sq.ktail) -
               ::io_uring_smp_load_acquire(ring_.sq.khead);
    }

    // Hands the kernel what is published: one io_uring_enter, none when another thread's enter
    // consumed it already. Called without the mutex (see the TRICKY in issue()).
    void enter_published() noexcept {
        for (;;) {
            const unsigned n = sq_published();
            if (n == 0)
                return;
            const int r = ::io_uring_enter(static_cast<unsigned>(ring_.ring_fd), n, 0, 0, nullptr);
            if (r == -EINTR)
                continue;
            // TRICKY: on EAGAIN/EBUSY the SQEs stay published: as in submit_locked, the reaper
            // retries every tick while submit_pending_ says so.
            if (r < 0)
                submit_pending_.store(true, std::memory_order_relaxed);
            return;
        }
    }

    void prep_op(::io_uring_sqe* sqe, linux_op& op) noexcept {
        // The kernel takes at most MAX_RW_COUNT (2 GiB - 4 KiB) per call anyway: a short count.
        const auto length =
            static_cast<unsigned>(op.iov[0].iov_len > UINT_MAX ? UINT_MAX : op.iov[0].iov_len);
        switch (op.what) {
        case linux_op::kind::read_at:
            ::io_uring_prep_read(sqe, op.fd, op.iov[0].iov_base, length, op.offset);
            break;
        case linux_op::kind::write_at:
            ::io_uring_prep_write(sqe, op.fd, op.iov[0].iov_base, length, op.offset);
            break;
        case linux_op::kind::recv:
        case linux_op::kind::send:
            // The msghdr lives in the op until the CQE: without IORING_FEAT_SUBMIT_STABLE (5.5)
            // the kernel may read it after submit [liburing#27].
            op.msg = ::msghdr{};
            op.msg.msg_iov = op.iov;
            op.msg.msg_iovlen = op.iov_count;
            if (op.what == linux_op::kind::recv)
                ::io_uring_prep_recvmsg(sqe, op.fd, &op.msg, 0);
            else // SENDMSG never raises SIGPIPE; say so anyway (torvalds/linux:io_uring/net.c)
                ::io_uring_prep_sendmsg(sqe, op.fd, &op.msg, MSG_NOSIGNAL);
            break;
        case linux_op::kind::accept:
            op.addr_len = sizeof(op.addr);
            ::io_uring_prep_accept(sqe, op.fd, reinterpret_cast<::sockaddr*>(&op.addr),
                                   &op.addr_len, SOCK_CLOEXEC);
            break;
        case linux_op::kind::connect:
            ::io_uring_prep_connect(sqe, op.fd, reinterpret_cast<const ::sockaddr*>(&op.addr),
                                    op.addr_len);
            break;
        case linux_op::kind::recv_from:
        case linux_op::kind::send_to:
            // As recv / send, with the address in msg_name: recvmsg writes the sender there (and
            // its length in msg_namelen, MSG_TRUNC in msg_flags) before the CQE.
            op.msg = ::msghdr{};
            op.msg.msg_name = &op.addr;
            op.msg.msg_namelen =
                op.what == linux_op::kind::recv_from ? sizeof(op.addr) : op.addr_len;
            op.msg.msg_iov = op.iov;
            op.msg.msg_iovlen = op.iov_count;
            if (op.what == linux_op::kind::recv_from)
                ::io_uring_prep_recvmsg(sqe, op.fd, &op.msg, 0);
            else
                ::io_uring_prep_sendmsg(sqe, op.fd, &op.msg, MSG_NOSIGNAL);
            break;
        }
        ::io_uring_sqe_set_data(sqe, &op);
    }

    // Queues op's SQE and submits. 0, or -EBUSY when no SQE could be had.
    int submit_op_locked(linux_op& op) noexcept {
        ::io_uring_sqe* sqe = get_sqes_locked(1);
        if (sqe == nullptr)
            return -EBUSY;
        set_flag(op, behind_poll, false);
        prep_op(sqe, op);
        tsan_release(&op); // the reaper's thread will read what we wrote (tsan.hpp)
        publish_locked();  // the caller enters (enter_published) once it has let go of the mutex
        return 0;
    }

    // Queues a POLL_ADD for op's readiness (user_data: op's address | tag_poll) and submits; its
    // CQE issues op again (on_poll_locked). 0, or -EBUSY when no SQE could be had.
    // TRICKY: not linked to op's SQE (IOSQE_IO_LINK), as it once was, for two reasons, both seen
    // on 6.18: a cancel by op's address does not find an SQE that waits behind a link head
    // (-ENOENT: a stop request would wait for data that may never come), and a linked SQE's fd
    // is resolved when the link head completes, so an op whose fd was closed while it waited,
    // and the number reused by a new socket, read the new socket's bytes. Issued here, under
    // the mutex and only while the fd's epoch is op's, the fd is still the one op was given.
    int submit_poll_locked(linux_op& op) noexcept {
        ::io_uring_sqe* sqe = get_sqes_locked(1);
        if (sqe == nullptr)
            return -EBUSY;
        const bool in = op.what == linux_op::kind::read_at || op.what == linux_op::kind::recv ||
                        op.what == linux_op::kind::accept || op.what == linux_op::kind::recv_from;
        ::io_uring_prep_poll_add(sqe, op.fd, in ? POLLIN : POLLOUT);
        set_flag(op, behind_poll);
        ::io_uring_sqe_set_data64(sqe, user_data_locked(op));
        publish_locked(); // the caller enters (enter_published) once it has let go of the mutex
        return 0;
    }

    // cancel(op) under the mutex; `interrupt_after_unlock` is set when op went to the done
    // list (the caller then wakes a reaper waiting in the kernel, after unlocking).
    void cancel_one_locked(linux_op& op, bool& interrupt_after_unlock) noexcept {
        const int fd = op.fd;
        if (fd < 0 || static_cast<std::size_t>(fd) >= fds_.size())
            return;
        for (linux_op* p = fds_[static_cast<std::size_t>(fd)].head; p != nullptr; p = p->next) {
            if (p != &op)
                continue;
            if (has_flag(op, queued)) {
                // Never in the kernel: it completes through the done list, on the reaper (never
                // inside this call), and the recvs behind it keep their order.
                unlink_locked(op);
                complete_later_locked(op, -ECANCELED);
                interrupt_after_unlock = true;
                return;
            }
            // TRICKY: marked first. The kernel may have posted the CQE that ends op's current
            // SQE (an -EAGAIN, or its poll's readiness) just before our cancel runs: the cancel
            // then finds nothing (-ENOENT), and the mark stops the reaper from issuing op again.
            set_flag(op, cancel_requested);
            if (::io_uring_sqe* sqe = get_sqes_locked(1)) {
                ::io_uring_prep_cancel64(sqe, user_data_locked(op), 0);
                // fd -1 in the tag: its CQE (0, -ENOENT or -EALREADY) never falls back to
                // cancelling the whole fd (on_tag_locked ignores negative fds).
                ::io_uring_sqe_set_data64(sqe, tag_cancel | (std::uint64_t{0xFFFFFFFFu} << 32));
                submit_locked();
            }
            return;
        }
    }

    // Returns true when some op went to the done list (the caller wakes a reaper after
    // unlocking).
    bool cancel_locked(int fd) noexcept {
        fd_slot& slot = fds_[static_cast<std::size_t>(fd)];
        ++slot.epoch; // an op reaped after this with -EAGAIN or a new socket is cancelled
        // Recvs waiting for their turn were never in the kernel: they complete now (through the
        // done list, on the reaper), before the in-flight recv ahead of them could start one.
        bool completed_later = false;
        for (linux_op** link = &slot.head; *link != nullptr;) {
            linux_op& op = **link;
            if (!has_flag(op, queued)) {
                link = &op.next;
                continue;
            }
            *link = op.next;
            complete_later_locked(op, -ECANCELED);
            completed_later = true;
        }
        if (slot.head == nullptr)
            return completed_later; // nothing in flight: no kernel call
        if (cancel_by_fd_) {
            if (::io_uring_sqe* sqe = get_sqes_locked(1)) {
                ::io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
                ::io_uring_sqe_set_data64(sqe, tag_cancel | (static_cast<std::uint64_t>(fd) << 32));
                submit_locked();
                return completed_later;
            }
        }
        cancel_each_locked(fd);
        return completed_later;
    }

    // TRICKY: cancel by user_data names an op by its address (while it waits for readiness, its
    // POLL_ADD's: the address | tag_poll; cancelling that completes op through the poll's CQE).
    // The op stays in its fd's list until the reaper takes the mutex for its CQE, so every
    // address cancelled here is still in flight or its CQE is queued (then the cancel finds
    // nothing: -ENOENT). An op completed and re-issued at the same address afterwards could only
    // be hit if the kernel ran this cancel after that re-issue; it runs ASYNC_CANCEL within the
    // submitting io_uring_enter (io_uring/cancel.c), which happens here under the mutex, before
    // any re-issue can.
    void cancel_each_locked(int fd) noexcept {
        for (linux_op* op = fds_[static_cast<std::size_t>(fd)].head; op != nullptr; op = op->next) {
            ::io_uring_sqe* sqe = get_sqes_locked(1);
            if (sqe == nullptr)
                break; // the kernel refuses submissions; the ops complete when it recovers
            ::io_uring_prep_cancel64(sqe, user_data_locked(*op), 0);
            ::io_uring_sqe_set_data64(sqe, tag_cancel | (static_cast<std::uint64_t>(fd) << 32));
        }
        submit_locked();
    }

    // One round of reaping (the role held): waits up to `timeout` for the first CQE when none is
    // there, then completes every CQE of the batch and the failures of the done list.
    void reap(std::chrono::milliseconds timeout) noexcept {
        // 64 CQEs per batch: one enter and one mutex round per 64 completions at most.
        constexpr unsigned batch = 64;
        ::io_uring_cqe* cqes[batch];
        reaped ready[batch];
        if (submit_pending_.load(std::memory_order_relaxed) && timeout > watchdog_tick)
            timeout = watchdog_tick; // submissions the kernel refused are retried every tick
        if (timeout.count() > 0 && ::io_uring_cq_ready(&ring_) == 0 &&
            !done_pending_.load(std::memory_order_relaxed) && reaping_.role.begin_wait()) {
            ::io_uring_cqe* first = nullptr;
            // Both enter the kernel only when the CQ is empty; then they also flush an
            // overflowed CQ (IORING_SQ_CQ_OVERFLOW), which io_uring_for_each_cqe alone would
            // miss [libuv#3991]. io_uring_peek_batch_cqe below does the same when it finds none.
            if (timeout == infinite || !ext_arg_) {
                (void)::io_uring_wait_cqe(&ring_, &first);
            } else {
                wait_timed(timeout);
            }
            reaping_.role.end_wait();
        }
        const unsigned n = ::io_uring_peek_batch_cqe(&ring_, cqes, batch);
        unsigned count = 0;
        bool woken = false;
        linux_op* done = nullptr;
        {
            std::lock_guard lock(mutex_);
            for (unsigned i = 0; i < n; ++i) {
                const std::uint64_t data = ::io_uring_cqe_get_data64(cqes[i]);
                const int res = cqes[i]->res;
                const unsigned flags = cqes[i]->flags;
                if ((data & tag_mask) == tag_poll) {
                    const auto address = static_cast<std::uintptr_t>(data & ~tag_mask);
                    // NOLINTNEXTLINE(performance-no-int-to-ptr): the op's address, untagged
                    auto& op = *reinterpret_cast<linux_op*>(address);
                    if (on_poll_locked(op, res, ready[count]))
                        ++count;
                    continue;
                }
                if ((data & tag_mask) != 0) {
                    on_tag_locked(data, res, flags, woken);
                    continue;
                }
                // NOLINTNEXTLINE(performance-no-int-to-ptr): user_data is the op's address
                auto& op = *reinterpret_cast<linux_op*>(static_cast<std::uintptr_t>(data));
                if (reap_locked(op, res, ready[count]))
                    ++count;
            }
            ::io_uring_cq_advance(&ring_, n);
            if (done_head_ != nullptr) {
                done = done_head_;
                done_head_ = nullptr;
                done_tail_ = &done_head_;
                done_pending_.store(false, std::memory_order_relaxed);
            }
            if (submit_pending_.exchange(false, std::memory_order_relaxed))
                submit_locked();
        }
        // What the round published: ops (or their readiness polls) issued again, and recvs whose
        // turn came. No kernel call when there is none.
        enter_published();
        std::size_t completed = 0;
        for (unsigned i = 0; i < count; ++i, ++completed) {
            if (ready[i].close_fd >= 0)
                ::close(ready[i].close_fd);
            tsan_acquire(ready[i].op);
            ready[i].op->on_complete(ready[i].op, ready[i].res);
        }
        while (done != nullptr) {
            linux_op* op = done;
            done = op->next; // read before on_complete: the op may be freed there
            const int res = result_of(*op);
            op->on_complete(op, res);
            ++completed;
        }
        reaping_.completed(completed);
    }

    // Waits up to `timeout` (finite) for a CQE, handing the kernel in the same io_uring_enter
    // the SQEs published and not yet consumed (an issuer's enter that has not run yet then finds
    // nothing left to submit and makes no kernel call). IORING_ENTER_EXT_ARG (5.11) carries the
    // timeout, as io_uring_wait_cqe_timeout does, without an SQE of ours.
    void wait_timed(std::chrono::milliseconds timeout) noexcept {
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(timeout);
        ::__kernel_timespec ts{static_cast<long long>(ns.count() / 1'000'000'000),
                               static_cast<long long>(ns.count() % 1'000'000'000)};
        ::io_uring_getevents_arg arg{};
        arg.sigmask = 0;
        arg.sigmask_sz = _NSIG / 8;
        arg.ts = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(&ts));
        // The kernel waits only when it submitted all `n` (io_uring_enter(2)): when another
        // thread's enter took some first, this returns at once and the caller's loop polls
        // again. -ETIME, -EINTR: nothing to do; a refused submit is retried as in submit_locked.
        const unsigned n = sq_published();
        const int r = ::io_uring_enter2(static_cast<unsigned>(ring_.ring_fd), n, 1,
                                        IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG,
                                        reinterpret_cast<::sigset_t*>(&arg), sizeof arg);
        if (n != 0 && (r == -EAGAIN || r == -EBUSY))
            submit_pending_.store(true, std::memory_order_relaxed);
    }

    // The watchdog: reaps when no worker does (reaping::run_watchdog). Without
    // IORING_FEAT_EXT_ARG it is the only reaper, blocked in the kernel.
    void run_watchdog() noexcept {
        set_current_thread_name("iocp-io_uring");
        if (!ext_arg_) {
            while (!reaping_.stopping()) {
                if (reaping_.role.try_acquire()) {
                    reap(infinite);
                    reaping_.role.release();
                }
            }
        } else {
            reaping_.run_watchdog(
                [this](std::chrono::milliseconds t) { reap(t); },
                [this] { return submit_pending_.load(std::memory_order_relaxed); });
        }
        // Stopping (the destructor cancelled everything): reap until every operation completed.
        while (reaping_.in_flight() != 0) {
            if (reaping_.role.try_acquire()) {
                reap(watchdog_tick);
                reaping_.role.release();
            } else {
                std::this_thread::yield();
            }
        }
    }

    // A CQE with a reserved user_data.
    void on_tag_locked(std::uint64_t data, int res, unsigned flags, bool& woken) noexcept {
        switch (data & tag_mask) {
        case tag_wake: {
            woken = true;
            ::eventfd_t value;
            (void)::eventfd_read(wake_fd_, &value); // non-blocking; resets the counter
            // A multishot poll ends (no IORING_CQE_F_MORE) on error or when the kernel decides;
            // before 5.13 every poll is single-shot. Either way: arm it again.
            if ((flags & IORING_CQE_F_MORE) == 0 && !reaping_.stopping())
                (void)arm_wake_locked();
            break;
        }
        case tag_cancel: {
            // Cancel by fd is refused after close (EBADF) or on an old kernel (EINVAL): cancel
            // what is left of that fd one by one.
            const auto fd = static_cast<int>(data >> 32);
            if ((res == -EBADF || res == -EINVAL) && fd >= 0 &&
                static_cast<std::size_t>(fd) < fds_.size() && cancel_by_fd_)
                cancel_each_locked(fd);
            break;
        }
        default: // none other: reap() takes tag_poll itself (its CQE may complete an op)
            break;
        }
    }

    // One CQE of an operation: true with `out` filled when op is complete, false when it was
    // issued again.
    bool reap_locked(linux_op& op, int res, reaped& out) noexcept {
        const bool cancelled = fd_cancelled_locked(op);
        out = {&op, res, -1};
        if (op.what == linux_op::kind::connect && has_flag(op, connect_resumed)) {
            // The connect SQE issued again by resume_locked: the handshake it started first
            // finished (EISCONN: connected) or is still going (EALREADY: wait again).
            if (res == -EISCONN) {
                out.res = 0;
                res = 0;
            } else if (res == -EALREADY) {
                res = -ECANCELED; // as below: resumed unless we asked for a cancel
            }
        }
        if (res == -ECANCELED || res == -EINTR ||
            (res == -EFAULT && !has_flag(op, fault_resumed))) {
            // TRICKY: -ECANCELED (or -EINTR) we did not ask for is the kernel ending a request
            // whose issuing thread exited without running it, or interrupting it in that
            // thread's io-wq (see resume_locked): issue it again. One we asked for (the op's
            // mark, its fd's epoch) or a backend being destroyed is the cancel it reads as.
            if (cancelled || has_flag(op, cancel_requested) || reaping_.stopping()) {
                out.res = -ECANCELED;
            } else {
                if (res == -EFAULT)
                    set_flag(op, fault_resumed);
                const int r = resume_locked(op);
                if (r == 0)
                    return false;
                out.res = r;
            }
        } else if (res == -EAGAIN) {
            // The kernel gave up on a non-blocking fd (5.9 did for READ [liburing#274]; io-wq
            // and retry caps still can [seastar#3479]: an O_NONBLOCK socket whose poll keeps
            // waking with nothing to read, past the kernel's APOLL_MAX_RETRY, is retried in
            // io-wq, where the socket's O_NONBLOCK gives -EAGAIN): wait for readiness, then call
            // again. TRICKY: a cancel between that CQE and now found nothing in the kernel; the
            // epoch or the op's mark tells, and the op completes as cancelled instead of waiting.
            if (cancelled || has_flag(op, cancel_requested)) {
                out.res = -ECANCELED;
            } else {
                const int r = submit_poll_locked(op);
                if (r == 0)
                    return false;
                out.res = r;
            }
        } else if (op.what == linux_op::kind::accept && res >= 0 && cancelled) {
            // TRICKY: the accept won the race with cancel(fd) and produced a socket nobody will
            // own (the layer is closing the acceptor): close it and report the cancel
            // [tokio-uring#207].
            out.close_fd = res;
            out.res = -ECANCELED;
        }
        finished_locked(op);
        return true;
    }

    // The CQE of op's readiness POLL_ADD: true with `out` filled when op is complete (cancelled,
    // or no SQE to issue it again), false when op was issued again. The poll's own error
    // (other than a cancel) is not op's: op is issued and reports what its call gives.
    bool on_poll_locked(linux_op& op, int res, reaped& out) noexcept {
        set_flag(op, behind_poll, false);
        out = {&op, -ECANCELED, -1};
        // TRICKY: the poll may have fired just before a cancel ran (which then found nothing):
        // the epoch or the mark says so, and op is not issued again. A cancel we did not ask
        // for ended a poll whose issuing thread (a reaper) exited: wait again.
        if (!fd_cancelled_locked(op) && !has_flag(op, cancel_requested) && !reaping_.stopping()) {
            int r = 0;
            if (res == -ECANCELED || res == -EFAULT) {
                r = submit_poll_locked(op);
            } else if (op.what == linux_op::kind::connect && has_flag(op, connect_resumed)) {
                // The handshake ended: a failure is in SO_ERROR (read and cleared here, as
                // connect(2) says for EINPROGRESS); else the connect SQE tells (EISCONN).
                int error = 0;
                ::socklen_t length = sizeof(error);
                if (::getsockopt(op.fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0)
                    error = errno;
                if (error != 0) {
                    out.res = -error;
                    finished_locked(op);
                    return true;
                }
                r = submit_op_locked(op);
            } else {
                r = submit_op_locked(op);
            }
            if (r == 0)
                return false;
            out.res = r;
        }
        finished_locked(op);
        return true;
    }

    // Issues op again after the kernel ended it without running it because the thread that
    // entered its SQE exited. 0, or -EBUSY when no SQE could be had.
    //
    // TRICKY: why this is safe. io_uring ties a request to the task that submitted it
    // (io_uring_enter). A request that waits for readiness (FAST_POLL, or our POLL_ADD) runs
    // its call from task_work of that task when the fd is ready; once the task exited, that
    // task_work runs on the kernel's fallback worker, which sees io_should_terminate_tw()
    // (PF_EXITING / PF_KTHREAD, io_uring/io_uring.h) and posts -ECANCELED before the call
    // (io_poll_check_events); a request queued for a retry there gets -EFAULT
    // (io_req_task_submit). Exec cancels a task's requests the same way (io_uring_task_cancel).
    // A request the kernel punted to the task's io-wq (a socket call that kept failing its
    // readiness retries, APOLL_MAX_RETRY, runs there blocking) is interrupted when the io-wq
    // exits with its task: -EINTR (-ERESTARTSYS, io_uring/net.c); an -EINTR recv_from was
    // seen here in udp_test's stress (several recv_from on one socket), which this explains; a
    // cancel we ask for interrupts it the same way, and then reads as -ECANCELED. An interrupted
    // call moved nothing either (a partial transfer reports its count). So recv, send, recvmsg,
    // sendmsg, accept, read and write moved nothing (no byte, no connection taken) and can be
    // issued again. Other sources of -ECANCELED: our own ASYNC_CANCEL (the op's mark, its fd's
    // epoch: checked by the caller under the mutex, so a cancel or detach either comes before, and
    // we complete the op as cancelled, or after, and finds the new SQE in the kernel: published
    // here under the mutex while the fd is attached and consumed before detach() returns, so never
    // on a closed and reused number), and the ring's teardown (the destructor, after stopping():
    // not issued again). A connect is different: its call already ran (it returned EINPROGRESS and
    // the handshake goes on in the kernel), and a second connect would start another handshake
    // after a failure. So it waits for POLLOUT, reads SO_ERROR and only then issues the connect SQE
    // again, which reports EISCONN (connected: 0) or EALREADY (still going: wait again); see
    // reap_locked and on_poll_locked. An -EFAULT is issued again once per issue() (a bad buffer
    // gives it again, reported then). The reaper that issues again may itself be a thread that
    // exits later (a worker of a pool being shut down): that ends the op the same way and another
    // reaper issues it again, one round per exit; the watchdog, which lives as long as the backend,
    // ends the chain.
    int resume_locked(linux_op& op) noexcept {
        if (op.what == linux_op::kind::connect) {
            set_flag(op, connect_resumed);
            return submit_poll_locked(op);
        }
        return submit_op_locked(op);
    }

    ::io_uring ring_{};
    bool ring_ready_ = false;       // ring_ was set up (the destructor frees it)
    bool ext_arg_ = false;          // IORING_FEAT_EXT_ARG: timed waits need no SQE (5.11)
    bool cancel_by_fd_ = false;     // ASYNC_CANCEL takes IORING_ASYNC_CANCEL_FD (5.19)
    bool force_poll_first_ = false; // uring_options::force_poll_first
    bool coop_taskrun_ = false;     // IORING_SETUP_COOP_TASKRUN (uring_options::coop_taskrun)
    int wake_fd_ = -1;              // eventfd the ring polls: wake() without an SQE
    std::mutex mutex_;              // around every SQ access, fds_, done_*
    std::vector<fd_slot> fds_;      // indexed by fd
    linux_op* done_head_ = nullptr; // ops completed without a CQE (result in backend_data)
    linux_op** done_tail_ = &done_head_;
    std::atomic<bool> submit_pending_{false}; // SQEs the kernel refused wait in the SQ
    std::atomic<bool> done_pending_{false};   // done_head_ is not empty
    reaping reaping_;      // the role, the count in flight, the watchdog's schedule
    std::thread watchdog_; // started last in init
};

} // namespace iocp::detail::io::lnx

#endif // IOCP_HAS_LIBURING
