#pragma once
/// @file
/// `iocp::io_operation`: the per-I/O record of overlapped file and socket I/O on a
/// `thread_pool` (the classic IOCP samples' `OVERLAPPEDPLUS`). Derive your own struct from it to
/// keep your per-I/O data (an opcode, the buffer, the connection) next to the `OVERLAPPED`, start
/// it with `iocp::start_recv`, `iocp::start_send`, `iocp::start_read_at`, ... and the library only
/// starts the I/O and routes its completion to your function: no allocation at all.
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
///         std::error_code started;
///         if (io->op_code == per_io::op_read) {        // echo it back (a send may take less
///             io->op_code = per_io::op_write;          // than offered: a real server sends
///             started = iocp::start_send(*io->conn, *io, iocp::buffer(io->data, bytes));
///         } else {                                     // the rest before reading again)
///             io->op_code = per_io::op_read;
///             started = iocp::start_recv(*io->conn, *io, iocp::buffer(io->data));
///         }
///         if (started) { /* nothing started (closed, pool shut down): on_done won't run */ }
///     }
/// };
/// @endcode
///
/// Available wherever `IOCP_HAS_IO` is 1: the Win32 backend (overlapped calls on the kernel's
/// IOCP) and Linux (io_uring or epoll below, see `iocp::io_backend_name()`). On Linux the
/// operation's `OVERLAPPED` part is unused; completions still arrive as port packets.

#include "config.hpp"

#if IOCP_HAS_IO

#include <atomic>
#include <cstddef>
#include <system_error>
#include <utility>

#include "detail/io/in_flight.hpp"
#include "detail/io/io_state.hpp"
#include "detail/io/op_core.hpp"
#include "error.hpp"
#include "operation.hpp"
#include "thread_pool.hpp"

namespace iocp {

namespace detail::io {
struct io_access;
} // namespace detail::io

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
    io_operation(const io_operation&) = delete;
    io_operation& operator=(const io_operation&) = delete;

    /// The completion function: `self` is the operation, `ec` its (normalised) result,
    /// `bytes` the bytes transferred.
    using handler_fn = void (*)(io_operation* self, const std::error_code& ec,
                                std::size_t bytes) noexcept;

    /// The pool the operation was last started on (nullptr before its first start).
    thread_pool* pool() const noexcept { return core_.pool; }

protected:
    /// An idle operation that calls `handler` when it completes.
    explicit io_operation(handler_fn handler) noexcept
        : operation(&io_operation::on_complete), handler_(handler) {}

    ~io_operation() = default;

    /// For operations that own what they complete into (the library's handler-owning
    /// operations): called in destroy mode, after the library released what it holds, to free
    /// the operation without running anything of the user's.
    using abandon_fn = void (*)(io_operation* self) noexcept;
    /// Sets the function destroy mode calls (nullptr, the default: destroy mode frees nothing,
    /// the object stays its owner's). Not thread-safe: set it before the first start.
    void set_abandon(abandon_fn fn) noexcept { abandon_ = fn; }

private:
    friend struct detail::io::io_access;

    // The pool's completion: normalise the error, let the operation kind finish its work,
    // run the user's function, then give back the state reference and the pool's count.
    static void on_complete(void* owner, operation* base, const completion& c) noexcept {
        auto* self = static_cast<io_operation*>(base);
        if (owner == nullptr) {
            abandon(self);
            return;
        }
        detail::io::op_core& core = self->core_;
        detail::io::io_state* st = core.state;
        if (st != nullptr && c.key == static_cast<void*>(st)) {
            if (!self->take_kernel_packet(c))
                return; // left to the start path, or a stray
        } else {
            // One of ours: it is the completion of this start, whatever the phase says.
            core.ph.store(detail::io::phase::idle, std::memory_order_relaxed);
        }
        std::error_code ec = detail::io::translate_error(c.error, st);
        std::size_t bytes = c.bytes;
        if (core.finish != nullptr && !core.finish(self, ec, bytes))
            return; // started again (a partial send continues): still in flight
        // From here `self` belongs to the user's function: it may free or restart it, so
        // everything needed afterwards was read above.
        // Gives back the state reference and the pool's count when this returns.
        detail::io::in_flight done(core.pool, st);
        self->handler_(self, ec, bytes);
    }

    // A packet from the kernel (Win32 only: elsewhere every completion is the layer's own
    // post): true if it completes the operation now.
    bool take_kernel_packet(const completion& c) noexcept {
        using detail::io::phase;
        std::atomic<phase>& ph = core_.ph;
        phase p = ph.load(std::memory_order_acquire);
        for (;;) {
            switch (p) {
            case phase::in_kernel: ph.store(phase::idle, std::memory_order_relaxed); return true;
            case phase::issuing:
                // TRICKY: the start path has not yet seen the call return, and still reads the
                // operation: it must not be completed (and perhaps freed) under it. Leave the
                // result; whichever of us moves the phase second posts it (the start path).
                core_.early_error = c.error;
                core_.early_bytes = c.bytes;
                if (ph.compare_exchange_weak(p, phase::early_packet, std::memory_order_acq_rel,
                                             std::memory_order_acquire))
                    return false;
                break; // the start path moved first: look again
            case phase::failed_sync:
                // A packet for a call that failed at once (Wine queues one for ERROR_INVALID_
                // PARAMETER): the start path delivers the failure; drop this one.
                if (ph.compare_exchange_weak(p, phase::stray_dropped, std::memory_order_acq_rel,
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
        if (self->core_.ph.exchange(detail::io::phase::idle, std::memory_order_acq_rel) ==
            detail::io::phase::idle)
            return; // not in flight (a stray): nothing is held for it
        detail::io::io_state* st = std::exchange(self->core_.state, nullptr);
        detail::io::in_flight done(self->core_.pool, st);
        abandon_fn fn = self->abandon_;
        if (fn != nullptr)
            fn(self); // frees self
    }

    handler_fn handler_;
    abandon_fn abandon_ = nullptr;
    detail::io::op_core core_;
};

} // namespace iocp

#include "detail/io/start.hpp"

#endif // IOCP_HAS_IO
