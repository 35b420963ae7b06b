#pragma once
/// @file
/// `iocp::io_operation`: the per-I/O record of overlapped file and socket I/O on a
/// `thread_pool` (the seeds' `OVERLAPPEDPLUS`). Derive your own struct from it to keep your
/// per-I/O data (an opcode, the buffer, the connection) next to the `OVERLAPPED`, start it
/// with `iocp::start_recv`, `iocp::start_send`, `iocp::start_read_at`, ... and the library
/// only starts the I/O and routes its completion to your function: no allocation at all.
///
/// @code
/// struct per_io : iocp::io_operation {
///     enum { op_read, op_write } op_code = op_read;
///     char data[4096];
///     iocp::socket* conn;
///     per_io() : io_operation(&per_io::on_done) {}
///     static void on_done(iocp::io_operation* base, const std::error_code& ec,
///                         std::size_t bytes) noexcept {
///         auto* io = static_cast<per_io*>(base);
///         if (ec) return;                              // eof, reset, aborted, ...
///         io->op_code = per_io::op_write;              // echo it back
///         (void)iocp::start_send(*io->conn, *io, iocp::buffer(io->data, bytes));
///     }
/// };
/// @endcode
///
/// Available with the Win32 backend only (`IOCP_HAS_IOCP`); the POSIX I/O backend is future
/// work.

#include "config.hpp"

#if IOCP_HAS_IOCP

#include <atomic>
#include <cstddef>
#include <system_error>
#include <utility>

#include "detail/win32/io_state.hpp"
#include "detail/win32/windows.hpp"
#include "error.hpp"
#include "operation.hpp"
#include "thread_pool.hpp"

namespace iocp {

class io_operation;

namespace detail::win32 {
// Work an operation does on its completion before the user's function sees it (update the
// accept context, map a 0-byte receive to eof, continue a partial send). Returns false when
// the operation was started again and is still in flight.
using finish_fn = bool (*)(io_operation* op, std::error_code& ec, std::size_t& bytes) noexcept;
struct io_access;
} // namespace detail::win32

/// Base of every overlapped file and socket operation (see the file comment for an example).
///
/// Contract:
/// - Exactly one call of the completion function per start that returned no error (a start
///   that returns an error started nothing and calls nothing). It runs on a worker of the
///   pool, never inside the start call, also when the start failed at once (that failure is
///   posted through the port). This does not rest on the kernel keeping its promise to queue
///   no packet for a call that failed at once (Wine breaks it: see "start guard" below).
/// - From the start until the completion function runs, the object must stay alive and must
///   not be started again or moved; the buffers must stay valid too. After the start call
///   returns, do not read the object from the starting thread either: another worker may
///   already be running its completion.
/// - Inside the completion function the object is yours again: reuse it (start it again),
///   free it, or keep it. An exception must not leave the function (it is `noexcept`).
/// - Errors are normalised: `errc::operation_aborted` when the operation was cancelled or its
///   file/socket closed by us (whichever code Windows or Wine used), `errc::eof` for a
///   0-byte receive or a read at the end of a file, `errc::connection_reset`,
///   `errc::connection_refused`, `errc::invalid_handle` (the object was not open), and
///   `errc::closed` when the pool was shutting down and refused to start it.
/// - Destroy mode (`operation::destroy()`, see operation.hpp) never calls the completion
///   function. It can happen only to an operation whose completion packet is still in the
///   port when the pool's final drain runs, which the pool's shutdown rules out for every start
///   that returned no error (the pool waits for all started I/O to complete before it stops its
///   workers). Should it happen, the library gives back what it holds for the operation (its
///   reference on the file's or socket's state, the pool's in-flight count) and nothing else:
///   the object stays yours, and after the pool has joined you may free it.
///
/// Thread safety: an operation is used by one start at a time; see above.
class io_operation : public operation {
public:
    /// The completion function: `self` is the operation, `ec` its (normalised) result,
    /// `bytes` the bytes transferred.
    using handler_fn = void (*)(io_operation* self, const std::error_code& ec,
                                std::size_t bytes) noexcept;

    /// The pool the operation was last started on (nullptr before its first start).
    thread_pool* pool() const noexcept { return pool_; }

protected:
    /// An idle operation that calls `handler` when it completes.
    explicit io_operation(handler_fn handler) noexcept
        : operation(&io_operation::on_complete), handler_(handler) {}

    io_operation(const io_operation&) = delete;
    io_operation& operator=(const io_operation&) = delete;
    ~io_operation() = default;

    /// For operations that own what they complete into (the library's handler-owning
    /// operations): called in destroy mode, after the library released what it holds, to free
    /// the operation without running anything of the user's.
    using abandon_fn = void (*)(io_operation* self) noexcept;
    void set_abandon(abandon_fn fn) noexcept { abandon_ = fn; }

private:
    friend struct detail::win32::io_access;

    // The start guard. Where a start stands between its overlapped call and its completion:
    //   issuing        the call is under way in the start path
    //   in_kernel      the call returned pending or done: the kernel's packet completes it
    //   early_packet   the kernel's packet came before the call returned: the packet's worker
    //                  left the operation (and its result) to the start path, which posts it
    //   failed_sync    the call failed at once: the start path posts the failure, and a
    //                  kernel packet for this start is a stray, dropped
    //   stray_dropped  such a stray came and was dropped
    //   idle           completed (or never started)
    // Kernel packets carry the handle's key (the io_state); the library's own posts carry
    // detail::win32::posted_completion_key(). So a second packet for one start never runs the
    // handler twice.
    enum class phase : unsigned char {
        idle,
        issuing,
        in_kernel,
        early_packet,
        failed_sync,
        stray_dropped
    };

    // The pool's completion: normalise the error, let the operation kind finish its work,
    // run the user's function, then give back the state reference and the pool's count.
    static void on_complete(void* owner, operation* base, const completion& c) noexcept {
        auto* self = static_cast<io_operation*>(base);
        if (owner == nullptr) {
            abandon(self);
            return;
        }
        detail::win32::io_state* st = self->state_;
        thread_pool* pool = self->pool_;
        if (st != nullptr && c.key == static_cast<void*>(st)) {
            if (!self->take_kernel_packet(c))
                return; // left to the start path, or a stray
        } else {
            // One of ours: it is the completion of this start, whatever the phase says.
            self->phase_.store(phase::idle, std::memory_order_relaxed);
        }
        std::error_code ec = detail::win32::translate_error(c.error, st);
        std::size_t bytes = c.bytes;
        if (self->finish_ != nullptr && !self->finish_(self, ec, bytes))
            return; // started again (a partial send continues): still in flight
        // From here `self` belongs to the user's function: it may free or restart it, so
        // everything needed afterwards was read above.
        self->handler_(self, ec, bytes);
        detail::win32::release(st);
        pool->operation_finished();
    }

    // A packet from the kernel: true if it completes the operation now.
    bool take_kernel_packet(const completion& c) noexcept {
        phase p = phase_.load(std::memory_order_acquire);
        for (;;) {
            switch (p) {
            case phase::in_kernel:
                phase_.store(phase::idle, std::memory_order_relaxed);
                return true;
            case phase::issuing:
                // TRICKY: the start path has not yet seen the call return, and still reads the
                // operation: it must not be completed (and perhaps freed) under it. Leave the
                // result; whichever of us moves the phase second posts it (the start path).
                early_error_ = c.error;
                early_bytes_ = c.bytes;
                if (phase_.compare_exchange_weak(p, phase::early_packet, std::memory_order_acq_rel,
                                                 std::memory_order_acquire))
                    return false;
                break; // the start path moved first: look again
            case phase::failed_sync:
                // A packet for a call that failed at once (Wine queues one for ERROR_INVALID_
                // PARAMETER): the start path delivers the failure; drop this one.
                if (phase_.compare_exchange_weak(p, phase::stray_dropped, std::memory_order_acq_rel,
                                                 std::memory_order_acquire))
                    return false;
                break;
            case phase::idle:
            case phase::early_packet:
            case phase::stray_dropped: return false; // nobody expects it
            }
        }
    }

    // Destroy mode: give back what the library holds, run nothing of the user's.
    static void abandon(io_operation* self) noexcept {
        if (self->phase_.exchange(phase::idle, std::memory_order_acq_rel) == phase::idle)
            return; // not in flight (a stray): nothing is held for it
        detail::win32::io_state* st = std::exchange(self->state_, nullptr);
        thread_pool* pool = self->pool_;
        abandon_fn fn = self->abandon_;
        if (fn != nullptr)
            fn(self); // frees self
        detail::win32::release(st);
        if (pool != nullptr)
            pool->operation_finished();
    }

    handler_fn handler_;
    abandon_fn abandon_ = nullptr;
    detail::win32::finish_fn finish_ = nullptr; // set by each start
    detail::win32::io_state* state_ = nullptr;  // holds a reference while in flight
    thread_pool* pool_ = nullptr;
    std::size_t requested_ = 0; // bytes asked for (a 0-byte result of a non-empty read = eof)
    std::atomic<phase> phase_{phase::idle};
    std::error_code early_error_; // a kernel packet's result, kept while phase is early_packet
    std::size_t early_bytes_ = 0;
};

namespace detail::win32 {

struct io_access {
    static io_state* state(io_operation& op) noexcept { return op.state_; }
    static std::size_t requested(const io_operation& op) noexcept { return op.requested_; }

    // Starts `op` on the handle of `st` (nullptr: the object is not open) with `issue(handle,
    // overlapped)`, which returns 0 when the I/O is pending or done (either way a packet
    // will come: skip-on-success is not used) and the Win32/WSA error otherwise.
    //
    // Returns an error only when nothing was started and no completion will come: the pool
    // is shut down for good and not even the failure can be delivered. Every other failure,
    // immediate or not, arrives through the port.
    template <class Issue>
    static std::error_code start(thread_pool& pool, io_state* st, io_operation& op,
                                 finish_fn finish, std::size_t requested, Issue&& issue) noexcept {
        op.reset_overlapped();
        op.pool_ = &pool;
        op.state_ = st;
        op.finish_ = finish;
        op.requested_ = requested;
        add_ref(st);
        completion posted{{}, 0, posted_completion_key()};
        HANDLE h = st != nullptr ? st->handle.load(std::memory_order_relaxed) : nullptr;
        if (!pool.operation_started()) {
            posted.error = make_error_code(errc::closed);
            op.phase_.store(io_operation::phase::failed_sync, std::memory_order_relaxed);
        } else if (!io_state::valid(h)) {
            posted.error = make_error_code(errc::invalid_handle);
            op.phase_.store(io_operation::phase::failed_sync, std::memory_order_relaxed);
        } else if (issue_guarded(op, h, issue, posted)) {
            // TRICKY: the pool's shutdown may have run its cancel pass between
            // operation_started() and `issue`, and then missed this operation.
            if (st->pool_cancelling.load(std::memory_order_seq_cst))
                ::CancelIoEx(h, nullptr);
            return {};
        }
        // Failed at once, or the kernel's packet came early: deliver through the port.
        std::error_code post_error;
        pool.post_completion(&op, posted, post_error);
        if (!post_error)
            return {};
        op.phase_.store(io_operation::phase::idle, std::memory_order_relaxed);
        op.state_ = nullptr;
        release(st);
        pool.operation_finished();
        return post_error;
    }

    // Starts `op` again from its own completion (a send continuing after a partial send, an
    // accept skipping a reset client). Unlike start(), nobody else holds `st` for us. Returns
    // true if a completion will come (the kernel's, or a failure posted like start() does);
    // false with `ec` set if not even the failure could be posted: the caller completes the
    // operation in place (it runs in a completion already, not in a start call).
    template <class Issue>
    static bool restart(io_operation& op, std::error_code& ec, Issue&& issue) noexcept {
        io_state* st = op.state_;
        if (st == nullptr) { // never: a restarted operation was started on a handle
            ec = make_error_code(errc::invalid_handle);
            return false;
        }
        op.reset_overlapped();
        // Our own reference: once `issue` returns, `op` (and its reference) may be gone.
        st->refs.fetch_add(1, std::memory_order_relaxed);
        completion posted{{}, 0, posted_completion_key()};
        bool in_kernel = false;
        {
            std::lock_guard lock(st->mutex);
            HANDLE h = st->handle.load(std::memory_order_relaxed);
            if (st->closed_by_us.load(std::memory_order_seq_cst) ||
                st->pool_cancelling.load(std::memory_order_seq_cst) || !io_state::valid(h)) {
                posted.error = make_error_code(errc::operation_aborted);
                op.phase_.store(io_operation::phase::failed_sync, std::memory_order_relaxed);
            } else if (issue_guarded(op, h, issue, posted)) {
                in_kernel = true;
                // TRICKY: as in start(): the pool's cancel pass may have just missed it.
                if (st->pool_cancelling.load(std::memory_order_seq_cst))
                    ::CancelIoEx(h, nullptr);
            }
        }
        bool pending = in_kernel;
        if (!in_kernel) {
            // TRICKY: posted, not handled in place: a stray packet of a failed call is already
            // in the port, and the FIFO port hands it out before our post.
            std::error_code post_error;
            op.pool_->post_completion(&op, posted, post_error);
            if (!post_error) {
                pending = true;
            } else {
                op.phase_.store(io_operation::phase::idle, std::memory_order_relaxed);
                ec = translate_error(posted.error, st);
            }
        }
        release(st);
        return pending;
    }

private:
    // Issues the call under the start guard. True: the kernel owns the operation now (do not
    // touch it). False: `posted` holds the completion the caller must post (the call's
    // failure, or the result of a kernel packet that came before the call returned).
    template <class Issue>
    static bool issue_guarded(io_operation& op, HANDLE h, Issue& issue,
                              completion& posted) noexcept {
        using phase = io_operation::phase;
        op.phase_.store(phase::issuing, std::memory_order_release);
        const DWORD error = issue(h, static_cast<OVERLAPPED*>(&op));
        phase expected = phase::issuing;
        // TRICKY: from here on, if the call returned 0, `op` belongs to the kernel: once the
        // phase says in_kernel another worker may complete, free or restart it at any time.
        if (op.phase_.compare_exchange_strong(
                expected, error == 0 ? phase::in_kernel : phase::failed_sync,
                std::memory_order_acq_rel, std::memory_order_acquire)) {
            if (error == 0)
                return true;
            posted.error.assign(static_cast<int>(error), std::system_category());
            return false;
        }
        // early_packet: the kernel's packet came first and left its result to us.
        if (error == 0) {
            posted.error = op.early_error_;
            posted.bytes = op.early_bytes_;
        } else {
            // The early packet was a stray of the failed call (nothing else is pending).
            posted.error.assign(static_cast<int>(error), std::system_category());
        }
        return false;
    }
};

} // namespace detail::win32

} // namespace iocp

#endif // IOCP_HAS_IOCP
