#pragma once
// Starting and restarting an io_operation, written once for every backend: the in-flight
// guard, the start guard's phases, and the rule that a failure is posted through the port
// (never delivered inside the start call). Only `native::issue` differs per backend.

#include <mutex>
#include <system_error>
#include <type_traits>

#include "../../io_operation.hpp"
#include "in_flight.hpp"
#include "io_state.hpp"
#include "op_core.hpp"

#if IOCP_HAS_IOCP
#include "win32/issue.hpp"
#else
#include "linux/issue.hpp"
#endif

namespace iocp::detail::io {

struct io_access {
    static op_core& core(io_operation& op) noexcept { return op.core_; }
    static io_state* state(io_operation& op) noexcept { return op.core_.state; }
    static std::size_t requested(const io_operation& op) noexcept { return op.core_.requested; }

    // Starts `op` on the handle of `st` (nullptr: the object is not open) with `req`.
    //
    // Returns an error only when nothing was started and no completion will come: the pool
    // is shut down for good and not even the failure can be delivered. Every other failure,
    // immediate or not, arrives through the port.
    static std::error_code start(thread_pool& pool, io_state* st, io_operation& op,
                                 finish_fn finish, std::size_t requested,
                                 const request& req) noexcept {
        return start_with(pool, st, op, finish, requested,
                          [&](op_core& c, io_state& s, native::handle_type h, completion& posted) {
                              return native::issue(op, c, s, h, req, posted);
                          });
    }

    // Starts `op` as an operation with nothing to wait for (a receive into 0 bytes): no call
    // is made; it completes with no error and 0 bytes through the port, as a failure at once
    // does (never inside this call). A closed object or a pool shutting down still report
    // errc::invalid_handle / errc::closed, as for any start.
    // Why not hand it to the kernel: a 0-byte WSARecv pends until data arrives (the IOCP
    // servers' zero-byte read), and so do io_uring's and epoll's receives here, which wait for
    // readiness first; a receive that asks for nothing would then wait for ever on a quiet
    // connection.
    static std::error_code start_done_at_once(thread_pool& pool, io_state* st, io_operation& op,
                                              finish_fn finish) noexcept {
        return start_with(pool, st, op, finish, 0, [](op_core& c, io_state&, auto, completion&) {
            c.ph.store(phase::failed_sync, std::memory_order_relaxed); // no packet will come
            return false;
        });
    }

#if IOCP_HAS_IOCP
    // Any overlapped call (iocp::overlapped_handle; tests of the start guard): `call(handle,
    // overlapped)` makes it and returns a win32::call_status, or 0 (pending or done) or the
    // error. A call done at once on a handle that skips the port on success is delivered
    // through the pool's queue, as the library's own calls are.
    template <class Call>
    requires(std::is_invocable_r_v<DWORD, Call&, HANDLE, OVERLAPPED*> ||
             std::is_invocable_r_v<win32::call_status, Call&, HANDLE,
                                   OVERLAPPED*>) static std::error_code
        start(thread_pool& pool, io_state* st, io_operation& op, finish_fn finish,
              std::size_t requested, Call&& call) noexcept {
        auto* ov = reinterpret_cast<OVERLAPPED*>(static_cast<overlapped*>(&op));
        return start_with(pool, st, op, finish, requested,
                          [&](op_core& c, io_state& s, HANDLE h, completion& posted) {
                              const bool skip =
                                  s.extra.skip_on_success.load(std::memory_order_relaxed);
                              return win32::issue_guarded(
                                  c, [&] { return call(h, ov); }, posted, skip, ov);
                          });
    }
#endif

private:
    // Delivers a completion the start path holds, never inside the start call. Through the
    // port (post_completion) for failures and early packets: a stray packet of a failed call
    // may be in the port already, and the FIFO port hands it out (to be dropped) before ours.
    // Win32 only: a call that succeeded at once on a handle that skips the port on success
    // (skipped_completion_key) goes to the pool's own queue instead, costing no port call; no
    // packet of that call can exist.
    static void deliver(thread_pool& pool, io_operation& op, const completion& posted,
                        std::error_code& ec) noexcept {
#if IOCP_HAS_IOCP
        if (posted.key == win32::skipped_completion_key()) {
            // Read before queueing: once queued, another worker may complete and free `op`.
            // The state outlives this call (start: the owner's reference; restart: its own).
            io_state* st = op.core_.state;
            pool_io_access::queue_completion(pool, &op, posted, ec);
            if (!ec && st != nullptr)
                st->extra.skipped_packets.fetch_add(1, std::memory_order_relaxed);
            return;
        }
#endif
        pool.post_completion(&op, posted, ec);
    }

    template <class Issue>
    static std::error_code start_with(thread_pool& pool, io_state* st, io_operation& op,
                                      finish_fn finish, std::size_t requested,
                                      Issue&& issue) noexcept {
        op.reset_overlapped();
        op_core& c = op.core_;
        c.pool = &pool;
        c.state = st;
        c.finish = finish;
        c.requested = requested;
        in_flight guard = in_flight::begin(pool, st);
        completion posted{{}, 0, posted_completion_key()};
        native::handle_type h = st != nullptr ? st->get() : native::invalid_handle();
        if (!guard.admitted()) {
            posted.error = make_error_code(errc::closed);
            c.ph.store(phase::failed_sync, std::memory_order_relaxed);
        } else if (!native::valid(h)) {
            posted.error = make_error_code(errc::invalid_handle);
            c.ph.store(phase::failed_sync, std::memory_order_relaxed);
        } else {
            // TRICKY: our own reference for the look after the issue. Once the issue returns,
            // the completion may already have run on another worker and given back the
            // operation's reference, and its handler may have let the owner go (a program
            // that ends when its last write completes): without this one the state could be
            // freed under the look.
            add_ref(st);
            in_flight own(nullptr, st);
            if (issue(c, *st, h, posted)) {
                guard.hand_over(); // the operation holds it now: its completion gives it back
                // TRICKY: the pool's shutdown may have run its cancel pass between
                // operation_started() and the issue, and then missed this operation.
                if (st->pool_cancelling.load(std::memory_order_seq_cst)) {
                    const native::handle_type now = st->get();
                    if (native::valid(now))
                        native::cancel_all(now);
                }
                return {};
            }
        }
        // Failed at once, or the kernel's packet came early: deliver through the port.
        std::error_code post_error;
        deliver(pool, op, posted, post_error);
        if (!post_error) {
            guard.hand_over();
            return {};
        }
        c.ph.store(phase::idle, std::memory_order_relaxed);
        c.state = nullptr;
        return post_error; // the guard gives back the count and the reference
    }

public:
    // Asks the one operation `op` to complete early, with errc::operation_aborted (Win32:
    // CancelIoEx with its OVERLAPPED; io_uring: an ASYNC_CANCEL by its address; epoll: taken
    // out of its descriptor's queue). It still completes exactly once, on a worker, never
    // inside this call: aborted if the cancel won, with its own result if the I/O finished
    // first. Does nothing for an operation that is not in flight. The other operations of the
    // handle go on.
    //
    // The caller keeps `op` alive and does not start it meanwhile, and the file or socket it
    // was started on stays open or is closed by its owner (whose close cancels anyway): the
    // state is read here. A completion running at the same time is fine (see the TRICKY).
    static void cancel(io_operation& op) noexcept {
        op_core& c = op.core_;
        io_state* st = c.state;
        if (st == nullptr)
            return;
        // TRICKY: under the state's lock, as restart() issues: a send_all continuation or an
        // accept retry rewrites the operation's request on a worker while we would read it,
        // and the handle cannot be closed under us (close_state takes the lock). The phase
        // says whether the backend still has the operation; if it completes right after the
        // look, the backend's cancel finds nothing (Win32: ERROR_NOT_FOUND; Linux: no longer
        // in its descriptor's list) and the completion is delivered once, unchanged.
        std::lock_guard lock(st->mutex);
        if (c.ph.load(std::memory_order_acquire) != phase::in_kernel)
            return;
        native::handle_type h = st->get();
        if (!native::valid(h))
            return; // closed: close_state cancelled everything
#if IOCP_HAS_IOCP
        native::cancel_one(h, &op);
#else
        native::cancel_one(h, c.lop);
#endif
    }

    // Starts `op` again from its own completion (a send continuing after a partial send, an
    // accept skipping a reset client). Unlike start(), nobody else holds `st` for us. Returns
    // true if a completion will come (the backend's, or a failure posted like start() does);
    // false with `ec` set if not even the failure could be posted: the caller completes the
    // operation in place (it runs in a completion already, not in a start call).
    static bool restart(io_operation& op, std::error_code& ec, const request& req) noexcept {
        op_core& c = op.core_;
        io_state* st = c.state;
        if (st == nullptr) { // never: a restarted operation was started on a handle
            ec = make_error_code(errc::invalid_handle);
            return false;
        }
        op.reset_overlapped();
        // Our own reference: once the issue returns, `op` (and its reference) may be gone.
        add_ref(st);
        in_flight own(nullptr, st);
        completion posted{{}, 0, posted_completion_key()};
        bool issued = false;
        {
            std::lock_guard lock(st->mutex);
            native::handle_type h = st->get();
            if (st->ours() || !native::valid(h)) {
                posted.error = make_error_code(errc::operation_aborted);
                c.ph.store(phase::failed_sync, std::memory_order_relaxed);
            } else if (native::issue(op, c, *st, h, req, posted)) {
                issued = true;
                // TRICKY: as in start(): the pool's cancel pass may have just missed it.
                if (st->pool_cancelling.load(std::memory_order_seq_cst))
                    native::cancel_all(h);
            }
        }
        if (issued)
            return true;
        // TRICKY: posted, not handled in place: on Win32 a stray packet of a failed call is
        // already in the port, and the FIFO port hands it out before our post.
        std::error_code post_error;
        deliver(*c.pool, op, posted, post_error);
        if (!post_error)
            return true;
        c.ph.store(phase::idle, std::memory_order_relaxed);
        ec = translate_error(posted.error, st);
        return false;
    }
};

} // namespace iocp::detail::io
