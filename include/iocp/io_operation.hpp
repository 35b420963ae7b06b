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

#include <cstddef>
#include <system_error>

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
///   posted through the port).
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

private:
    friend struct detail::win32::io_access;

    // The pool's completion: normalise the error, let the operation kind finish its work,
    // run the user's function, then give back the state reference and the pool's count.
    // `owner == nullptr` (destroy mode) happens only if the pool discards the packet at
    // teardown; the function then still runs, with errc::closed, so that the owner of the
    // object learns it is free.
    static void on_complete(void* owner, operation* base, const completion& c) noexcept {
        auto* self = static_cast<io_operation*>(base);
        detail::win32::io_state* st = self->state_;
        thread_pool* pool = self->pool_;
        std::error_code ec = owner != nullptr ? detail::win32::translate_error(c.error, st)
                                              : make_error_code(errc::closed);
        std::size_t bytes = owner != nullptr ? c.bytes : 0;
        if (self->finish_ != nullptr && !self->finish_(self, ec, bytes))
            return; // started again (a partial send continues): still in flight
        // From here `self` belongs to the user's function: it may free or restart it, so
        // everything needed afterwards was read above.
        self->handler_(self, ec, bytes);
        detail::win32::release(st);
        pool->operation_finished();
    }

    handler_fn handler_;
    detail::win32::finish_fn finish_ = nullptr; // set by each start
    detail::win32::io_state* state_ = nullptr;  // holds a reference while in flight
    thread_pool* pool_ = nullptr;
    std::size_t requested_ = 0; // bytes asked for (a 0-byte result of a non-empty read = eof)
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
        std::error_code failure;
        HANDLE h = st != nullptr ? st->handle.load(std::memory_order_relaxed) : nullptr;
        if (!pool.operation_started()) {
            failure = make_error_code(errc::closed);
        } else if (!io_state::valid(h)) {
            failure = make_error_code(errc::invalid_handle);
        } else {
            // TRICKY: from here on `op` belongs to the kernel. Once `issue` returns 0 another
            // worker may already have run the completion and freed or restarted `op`: it is
            // not touched again. `st` stays alive: the caller's object holds a reference.
            const DWORD error = issue(h, static_cast<OVERLAPPED*>(&op));
            if (error == 0) {
                // TRICKY: the pool's shutdown may have run its cancel pass between
                // operation_started() and `issue`, and then missed this operation.
                if (st->pool_cancelling.load(std::memory_order_seq_cst))
                    ::CancelIoEx(h, nullptr);
                return {};
            }
            failure.assign(static_cast<int>(error), std::system_category());
        }
        // Failed at once: no packet will come, so deliver the failure through the port.
        std::error_code post_error;
        pool.post_completion(&op, completion{failure, 0, st}, post_error);
        if (!post_error)
            return {};
        op.state_ = nullptr;
        release(st);
        pool.operation_finished();
        return post_error;
    }

    // Starts `op` again from its own completion (a send continuing after a partial send).
    // Unlike start(), nobody else holds `st` for us, and a failure may be handled in place:
    // returns false with `ec` set if the operation was not started.
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
        bool started = false;
        {
            std::lock_guard lock(st->mutex);
            HANDLE h = st->handle.load(std::memory_order_relaxed);
            if (st->closed_by_us.load(std::memory_order_seq_cst) ||
                st->pool_cancelling.load(std::memory_order_seq_cst) || !io_state::valid(h)) {
                ec = make_error_code(errc::operation_aborted);
            } else if (const DWORD error = issue(h, static_cast<OVERLAPPED*>(&op)); error != 0) {
                ec = translate_error(
                    std::error_code(static_cast<int>(error), std::system_category()), st);
            } else {
                started = true;
                // TRICKY: as in start(): the pool's cancel pass may have just missed it.
                if (st->pool_cancelling.load(std::memory_order_seq_cst))
                    ::CancelIoEx(h, nullptr);
            }
        }
        release(st);
        return started;
    }
};

} // namespace detail::win32

} // namespace iocp

#endif // IOCP_HAS_IOCP
