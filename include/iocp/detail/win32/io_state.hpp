#pragma once
// The per-handle data of a file, socket or acceptor bound to a pool (the seeds' "per-handle
// data"): the handle, the pool, and the flags that tell how a failed operation must be
// reported. It is also the handle's completion key.
//
// Lifetime: reference counted. The owning object (file, socket, acceptor) holds one reference
// until it closes the handle, and every operation in flight holds one until its completion
// has run, so that an object destroyed with operations pending leaves their completions a
// valid state to read. Nothing here blocks: closing cancels, it never waits.

#include <atomic>
#include <cstdint>
#include <mutex>
#include <new>
#include <system_error>

#include "../../error.hpp"
#include "../../thread_pool.hpp"
#include "windows.hpp"
#include "winsock.hpp"

namespace iocp::detail::win32 {

// ERROR_HANDLES_CLOSED: what Wine's closesocket gives pending socket I/O. Not every SDK's
// <winerror.h> names it.
inline constexpr int error_handles_closed = 676;

enum class handle_kind : unsigned char { file, socket };

struct io_state : io_object_hook {
    io_state(thread_pool& p, HANDLE h, handle_kind k, int f) noexcept
        : io_object_hook{&io_state::on_pool_shutdown}, pool(&p), kind(k), family(f), handle(h) {}

    thread_pool* const pool;    // the pool the handle is associated with
    const handle_kind kind;     // how to close the handle
    const int family;           // sockets: AF_INET or AF_INET6 (0 for files)
    std::atomic<HANDLE> handle; // INVALID_HANDLE_VALUE once closed
    std::atomic<std::uint32_t> refs{1};
    // close() began: ERROR_NETNAME_DELETED is then our own doing, not a peer reset.
    std::atomic<bool> closed_by_us{false};
    // The pool's shutdown cancelled this handle's I/O (or the handle was registered after).
    std::atomic<bool> pool_cancelling{false};
    // Orders close() against the few uses of the handle from a completion (a send_all
    // continuation, the accept context update), which may run on a worker while the owner
    // closes the object on another thread.
    std::mutex mutex;

    SOCKET socket() const noexcept {
        return reinterpret_cast<SOCKET>(handle.load(std::memory_order_relaxed));
    }

    static bool valid(HANDLE h) noexcept { return h != nullptr && h != INVALID_HANDLE_VALUE; }

    // Called by the pool at shutdown, under its hook lock (so never concurrently with our
    // remove_io_object in close(), which closes the handle only after that returns).
    static void on_pool_shutdown(io_object_hook* hook) noexcept {
        auto* self = static_cast<io_state*>(hook);
        // TRICKY: the flag is set before CancelIoEx, and an initiator reads it after handing
        // its operation to the kernel (see start_operation): either our CancelIoEx sees that
        // operation, or the initiator sees the flag and cancels it itself. Without this, an
        // operation started by a handler during the cancel pass would keep join() waiting.
        self->pool_cancelling.store(true, std::memory_order_seq_cst);
        HANDLE h = self->handle.load(std::memory_order_seq_cst);
        if (valid(h))
            ::CancelIoEx(h, nullptr);
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

inline std::error_code close_native(HANDLE h, handle_kind kind) noexcept {
    if (kind == handle_kind::socket) {
        if (::closesocket(reinterpret_cast<SOCKET>(h)) != 0)
            return last_wsa_error();
        return {};
    }
    if (!::CloseHandle(h))
        return {static_cast<int>(::GetLastError()), std::system_category()};
    return {};
}

// Binds `h` to `pool` with a new state as its completion key, and registers the state for
// cancellation at shutdown. On failure `h` is left open (the caller still owns it).
inline io_state* open_state(thread_pool& pool, HANDLE h, handle_kind kind, int family,
                            std::error_code& ec) noexcept {
    if (!io_state::valid(h)) {
        ec = make_error_code(errc::invalid_handle);
        return nullptr;
    }
    auto* st = new (std::nothrow) io_state(pool, h, kind, family);
    if (st == nullptr) {
        ec = std::make_error_code(std::errc::not_enough_memory);
        return nullptr;
    }
    pool.associate(h, st, ec);
    if (ec) {
        delete st;
        return nullptr;
    }
    pool.add_io_object(*st);
    return st;
}

// Cancels every pending operation on the handle; they complete with operation_aborted.
inline std::error_code cancel_state(io_state* st) noexcept {
    HANDLE h = st != nullptr ? st->handle.load(std::memory_order_relaxed) : INVALID_HANDLE_VALUE;
    if (!io_state::valid(h))
        return make_error_code(errc::invalid_handle);
    if (!::CancelIoEx(h, nullptr) && ::GetLastError() != ERROR_NOT_FOUND)
        return {static_cast<int>(::GetLastError()), std::system_category()};
    return {}; // ERROR_NOT_FOUND: nothing was pending
}

// Closes the handle, cancelling its pending operations, and drops the owner's reference.
inline std::error_code close_state(io_state* st) noexcept {
    if (st == nullptr)
        return {};
    std::error_code ec;
    {
        std::lock_guard lock(st->mutex);
        st->closed_by_us.store(true, std::memory_order_seq_cst);
        HANDLE h = st->handle.load(std::memory_order_seq_cst);
        // TRICKY: CancelIoEx before closing. Closing alone does cancel on Windows, but under
        // Wine a send stuck on a peer that does not read gets no packet until the peer reads.
        ::CancelIoEx(h, nullptr);
        // Unregister before closing: the pool's shutdown pass calls CancelIoEx on registered
        // handles, and must never see a closed (and perhaps already reused) handle value.
        st->pool->remove_io_object(*st);
        st->handle.store(INVALID_HANDLE_VALUE, std::memory_order_seq_cst);
        ec = close_native(h, st->kind);
    }
    release(st);
    return ec;
}

// The error an operation reports, normalised: the "aborted" family (995, Wine's 676, and
// ERROR_NETNAME_DELETED when we closed the handle) is errc::operation_aborted; a peer reset
// (ERROR_NETNAME_DELETED without a local close) is errc::connection_reset; end of file,
// refused connections and bad handles get their errc too (readable messages, same meaning).
// Other codes stay as the system reported them.
inline std::error_code translate_error(const std::error_code& e, const io_state* st) noexcept {
    if (!e || e.category() != std::system_category())
        return e;
    const bool ours = st != nullptr && (st->closed_by_us.load(std::memory_order_seq_cst) ||
                                        st->pool_cancelling.load(std::memory_order_seq_cst));
    switch (e.value()) {
    case ERROR_OPERATION_ABORTED: // 995, CancelIoEx (and closesocket on Windows)
    case error_handles_closed:    // 676, closesocket under Wine
    case WSAECANCELLED: return make_error_code(errc::operation_aborted);
    case ERROR_NETNAME_DELETED: // 64: closesocket with the I/O pending, or a peer RST
    case WSAECONNRESET:
        return make_error_code(ours ? errc::operation_aborted : errc::connection_reset);
    case ERROR_CONNECTION_ABORTED: // 1236: a local abort of the connection
    case WSAECONNABORTED: return ours ? make_error_code(errc::operation_aborted) : e;
    case ERROR_HANDLE_EOF: return make_error_code(errc::eof);
    case ERROR_CONNECTION_REFUSED:
    case WSAECONNREFUSED: return make_error_code(errc::connection_refused);
    case ERROR_INVALID_HANDLE:
    case WSAENOTSOCK: return make_error_code(errc::invalid_handle);
    default: return e;
    }
}

} // namespace iocp::detail::win32
