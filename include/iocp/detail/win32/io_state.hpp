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
#include "error_table.hpp"
#include "windows.hpp"
#include "winsock.hpp"

namespace iocp::detail::win32 {

// The table's numbers are the SDK's (ERROR_HANDLES_CLOSED, 676, is not in every <winerror.h>).
static_assert(classify_error(ERROR_OPERATION_ABORTED).kind == error_kind::aborted);
static_assert(classify_error(WSAECANCELLED).kind == error_kind::aborted);
static_assert(classify_error(ERROR_NETNAME_DELETED).kind == error_kind::closed_or_reset);
static_assert(classify_error(WSAECONNRESET).kind == error_kind::connection_reset);
static_assert(classify_error(WSAENETRESET).kind == error_kind::connection_reset);
static_assert(classify_error(ERROR_CONNECTION_ABORTED).kind == error_kind::connection_aborted);
static_assert(classify_error(WSAECONNABORTED).kind == error_kind::connection_aborted);
static_assert(is_per_connection_error(ERROR_UNEXP_NET_ERR));
static_assert(classify_error(ERROR_HANDLE_EOF).kind == error_kind::eof);
static_assert(classify_error(ERROR_BROKEN_PIPE).kind == error_kind::eof);
static_assert(classify_error(ERROR_CONNECTION_REFUSED).kind == error_kind::refused);
static_assert(classify_error(WSAECONNREFUSED).kind == error_kind::refused);
static_assert(classify_error(WAIT_TIMEOUT).kind == error_kind::timed_out);
static_assert(classify_error(ERROR_SEM_TIMEOUT).kind == error_kind::timed_out);
static_assert(classify_error(WSAETIMEDOUT).kind == error_kind::timed_out);
static_assert(classify_error(ERROR_ABANDONED_WAIT_0).kind == error_kind::port_closed);
static_assert(classify_error(ERROR_INVALID_HANDLE).kind == error_kind::invalid_handle);
static_assert(classify_error(WSAENOTSOCK).kind == error_kind::invalid_handle);

// The result of an overlapped call for the start path: 0 when the I/O is pending or already
// done (either way a packet will come: the library does not use skip-on-success), the Win32 or
// WSA error otherwise. ERROR_IO_PENDING and WSA_IO_PENDING are the same number (997).
inline DWORD pending_or_error(DWORD error) noexcept {
    return error == ERROR_IO_PENDING ? 0 : error;
}
// For the BOOL-returning calls (ReadFile, WriteFile, AcceptEx, ConnectEx).
inline DWORD issue_result(BOOL ok) noexcept { return ok ? 0 : pending_or_error(::GetLastError()); }
// For the int-returning Winsock calls (WSARecv, WSASend: 0 or SOCKET_ERROR).
inline DWORD wsa_issue_result(int rc) noexcept {
    return rc == 0 ? 0 : pending_or_error(static_cast<DWORD>(::WSAGetLastError()));
}

// The completion key of the completions the library posts itself (an operation that failed at
// once, or whose packet came before its start call returned). Kernel packets carry the
// handle's key, its io_state: the key tells the two apart (io_operation's start guard).
inline constexpr unsigned char posted_completion_tag = 0;
inline void* posted_completion_key() noexcept {
    return const_cast<unsigned char*>(&posted_completion_tag);
}

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
    // Sockets: this state holds the socket's Winsock reference (see winsock.hpp).
    bool holds_winsock = false;
    // Sockets: the provider's extension functions, loaded on first use (see winsock.hpp).
    std::atomic<LPFN_ACCEPTEX> accept_ex{nullptr};
    std::atomic<LPFN_CONNECTEX> connect_ex{nullptr};
    std::atomic<LPFN_GETACCEPTEXSOCKADDRS> get_accept_ex_sockaddrs{nullptr};
    // Orders close() against the few uses of the handle from a completion (a send_all
    // continuation, the accept context update), which may run on a worker while the owner
    // closes the object on another thread.
    std::mutex mutex;

    io_state(const io_state&) = delete;
    io_state& operator=(const io_state&) = delete;
    // The last reference is gone: no completion of this handle will run any more, so its
    // Winsock reference can go too.
    ~io_state() {
        if (holds_winsock)
            winsock_release();
    }

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
// cancellation at shutdown. On failure `h` is left open (the caller still owns it). A socket
// (from make_tcp_socket) hands its Winsock reference to the state on success.
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
    st->holds_winsock = kind == handle_kind::socket;
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

// The error an operation reports, normalised by the error table: the "aborted" family (995,
// Wine's 676, ...) is errc::operation_aborted; so are ERROR_NETNAME_DELETED and the
// connection resets and aborts when we closed the handle or the pool cancelled it (`ours`); a
// peer reset is errc::connection_reset; end of file, refused connections and bad handles get
// their errc (readable messages, same meaning on both backends). Other codes (timeouts, a
// connection aborted by the stack, ...) stay as the system reported them: they still compare
// equal to their errc through error.hpp, which reads the same table.
inline std::error_code translate_io_error(const std::error_code& e, bool ours) noexcept {
    if (!e || e.category() != std::system_category())
        return e;
    switch (classify_error(e.value()).kind) {
    case error_kind::aborted: return make_error_code(errc::operation_aborted);
    case error_kind::closed_or_reset:
    case error_kind::connection_reset:
        return make_error_code(ours ? errc::operation_aborted : errc::connection_reset);
    case error_kind::connection_aborted: return ours ? make_error_code(errc::operation_aborted) : e;
    case error_kind::eof: return make_error_code(errc::eof);
    case error_kind::refused: return make_error_code(errc::connection_refused);
    case error_kind::invalid_handle: return make_error_code(errc::invalid_handle);
    case error_kind::timed_out:
    case error_kind::port_closed:
    case error_kind::unclassified: return e;
    }
    return e;
}

// As above, for an operation on `st`'s handle: `ours` is whether we closed it or the pool's
// shutdown cancelled it.
inline std::error_code translate_error(const std::error_code& e, const io_state* st) noexcept {
    const bool ours = st != nullptr && (st->closed_by_us.load(std::memory_order_seq_cst) ||
                                        st->pool_cancelling.load(std::memory_order_seq_cst));
    return translate_io_error(e, ours);
}

} // namespace iocp::detail::win32
