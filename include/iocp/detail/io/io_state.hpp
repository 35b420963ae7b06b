#pragma once
// The per-handle data of a file, socket or acceptor bound to a pool (classic IOCP code's
// "per-handle data"): the handle, the pool, and the flags that tell how a failed operation must be
// reported. On Win32 it is also the handle's completion key.
//
// Lifetime: reference counted. The owning object (file, socket, acceptor) holds one reference
// until it closes the handle, and every operation in flight holds one until its completion
// has run (io_operation.hpp), so that an object destroyed with operations pending leaves their
// completions a valid state to read. Nothing here blocks: closing cancels, it never waits.

#include <atomic>
#include <cstdint>
#include <mutex>
#include <new>
#include <system_error>

#include "../../error.hpp"
#include "../../thread_pool.hpp"
#include "native.hpp"

namespace iocp::detail::io {

struct io_state : io_object_hook {
    io_state(thread_pool& p, native::handle_type h, handle_kind k, int f) noexcept
        : io_object_hook{&io_state::on_pool_shutdown}, pool(&p), kind(k), family(f), handle(h) {}

    thread_pool* const pool;                 // the pool the handle is associated with
    const handle_kind kind;                  // how to close the handle
    const int family;                        // sockets: AF_INET or AF_INET6 (0 for files)
    std::atomic<native::handle_type> handle; // native::invalid_handle() once closed
    std::atomic<std::uint32_t> refs{1};
    // close() began: a reset (Win32: ERROR_NETNAME_DELETED) is then our own doing.
    std::atomic<bool> closed_by_us{false};
    // The pool's shutdown cancelled this handle's I/O (or the handle was registered after).
    std::atomic<bool> pool_cancelling{false};
    native::state_extra extra; // what the backend keeps per handle
    // Orders close() against the few uses of the handle from a completion (a send_all
    // continuation, the accept context update), which may run on a worker while the owner
    // closes the object on another thread.
    std::mutex mutex;

    io_state(const io_state&) = delete;
    io_state& operator=(const io_state&) = delete;

    native::handle_type get() const noexcept { return handle.load(std::memory_order_relaxed); }
    native::socket_type socket() const noexcept { return native::as_socket(get()); }

    // Whether an error now is our own doing (we closed the handle or the pool cancels it).
    bool ours() const noexcept {
        return closed_by_us.load(std::memory_order_seq_cst) ||
               pool_cancelling.load(std::memory_order_seq_cst);
    }

    // Called at the pool's shutdown by its I/O registry's cancel pass, under the registry's lock
    // (so never concurrently with our remove_io_object in close(), which closes the handle only
    // after that returns); or, for a state registered after the pass, by io_registry::add,
    // outside the lock, before the owner has the state (so close() cannot run meanwhile).
    static void on_pool_shutdown(io_object_hook* hook) noexcept {
        auto* self = static_cast<io_state*>(hook);
        // TRICKY: the flag is set before the cancel, and an initiator reads it after handing
        // its operation to the backend (see io_access::start): either our cancel sees that
        // operation, or the initiator sees the flag and cancels it itself. Without this, an
        // operation started by a handler during the cancel pass would keep join() waiting.
        self->pool_cancelling.store(true, std::memory_order_seq_cst);
        native::handle_type h = self->handle.load(std::memory_order_seq_cst);
        if (native::valid(h))
            native::cancel_all(h);
    }
};

inline void add_ref(io_state* st) noexcept {
    if (st != nullptr)
        st->refs.fetch_add(1, std::memory_order_relaxed);
}

inline void release(io_state* st) noexcept {
    if (st != nullptr && st->refs.fetch_sub(1, std::memory_order_acq_rel) == 1)
        delete st;
}

// Joins `h` to `pool` (Win32: the port, with the state as completion key; Linux: the backend)
// and registers the state for cancellation at shutdown. On failure `h` is left open (the
// caller still owns it). A Win32 socket (from make_tcp_socket) hands its use of Winsock to
// the state on success.
inline io_state* open_state(thread_pool& pool, native::handle_type h, handle_kind kind, int family,
                            std::error_code& ec) noexcept {
    if (!native::valid(h)) {
        ec = make_error_code(errc::invalid_handle);
        return nullptr;
    }
    auto* st = new (std::nothrow) io_state(pool, h, kind, family);
    if (st == nullptr) {
        ec = std::make_error_code(std::errc::not_enough_memory);
        return nullptr;
    }
    ec = native::attach(pool, h, st, kind, st->extra);
    if (ec) {
        delete st;
        return nullptr;
    }
    pool_io_access::add_io_object(pool, *st);
    return st;
}

// Cancels every pending operation on the handle; they complete with operation_aborted.
inline std::error_code cancel_state(io_state* st) noexcept {
    native::handle_type h = st != nullptr ? st->get() : native::invalid_handle();
    if (!native::valid(h))
        return make_error_code(errc::invalid_handle);
    return native::cancel(h);
}

// Closes the handle, cancelling its pending operations, and drops the owner's reference.
inline std::error_code close_state(io_state* st) noexcept {
    if (st == nullptr)
        return {};
    std::error_code ec;
    {
        std::lock_guard lock(st->mutex);
        st->closed_by_us.store(true, std::memory_order_seq_cst);
        native::handle_type h = st->handle.load(std::memory_order_seq_cst);
        // TRICKY: cancel before closing. Closing alone does cancel on Windows, but under Wine
        // a send stuck on a peer that does not read gets no packet until the peer reads, and
        // on Linux a close cancels nothing at all (io_uring keeps the operation, and the file).
        native::cancel_all(h);
        // Unregister before closing: the pool's shutdown pass cancels registered handles, and
        // must never see a closed (and perhaps already reused) handle value.
        pool_io_access::remove_io_object(*st->pool, *st);
        st->handle.store(native::invalid_handle(), std::memory_order_seq_cst);
        native::detach(h);
        ec = native::close(h, st->kind);
    }
    release(st);
    return ec;
}

// As native::translate, for an operation on `st`'s handle.
inline std::error_code translate_error(const std::error_code& e, const io_state* st) noexcept {
    return native::translate(e, st != nullptr && st->ours());
}

} // namespace iocp::detail::io
