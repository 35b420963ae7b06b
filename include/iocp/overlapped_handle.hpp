#pragma once
/// @file
/// `iocp::overlapped_handle`: any `HANDLE` opened for overlapped I/O, associated with a
/// `thread_pool`, and a safe way to start *any* overlapped call on it (DeviceIoControl,
/// LockFileEx, ReadDirectoryChangesW, ConnectNamedPipe, TransactNamedPipe, WaitCommEvent,
/// ReadFile/WriteFile on a device, ...). What Asio's `windows::overlapped_ptr` and the Windows
/// thread pool's `TP_IO` (StartThreadpoolIo / CancelThreadpoolIo) give, with the library's
/// guarantees: exactly one completion per start, never inside the start call, counted by the
/// pool's shutdown.
///
/// @code
/// iocp::thread_pool pool(2);
/// iocp::overlapped_handle dir(pool, iocp::unique_handle(::CreateFileW(
///     L"C:\\logs", FILE_LIST_DIRECTORY, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
///     nullptr, OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OVERLAPPED, nullptr)));
/// alignas(DWORD) static char changes[4096];
/// dir.start(
///     [&](HANDLE h, OVERLAPPED* ov) {        // issue the call with the library's OVERLAPPED
///         return iocp::call_result::from_bool(::ReadDirectoryChangesW(
///             h, changes, sizeof changes, FALSE, FILE_NOTIFY_CHANGE_FILE_NAME, nullptr, ov,
///             nullptr));
///     },
///     [](std::error_code ec, std::size_t bytes) { // once, on a worker
///         if (!ec) { /* FILE_NOTIFY_INFORMATION records in changes[0, bytes) */ }
///     });
/// @endcode
///
/// Why this name: Asio calls the I/O object of a Windows handle that supports overlapped I/O
/// `windows::basic_overlapped_handle`; the object here is that, with one start call for any
/// overlapped function instead of a fixed set of reads and writes.
///
/// Win32 only (`IOCP_HAS_IOCP`). Linux has no equivalent: there is no OVERLAPPED to hand to an
/// arbitrary call; the nearest are io_uring's own opcodes (each call its own submission, which
/// `iocp::file` and `iocp::socket` use) and readiness through epoll.

#include "config.hpp"

#if IOCP_HAS_IOCP || defined(IOCP_DOXYGEN) // the API docs show the Win32-only API too

#include <cstddef>
#include <system_error>
#include <type_traits>
#include <utility>

#include "detail/io/handler_op.hpp"
#include "detail/io/io_state.hpp"
#include "detail/io/skip_on_success.hpp"
#include "detail/io/start.hpp"
#include "detail/win32/windows.hpp"
#include "error.hpp"
#include "io_operation.hpp"
#include "thread_pool.hpp"
#include "unique_handle.hpp"

namespace iocp {

/// What the issuing callable of `overlapped_handle::start` / `start_overlapped` reports about
/// the overlapped call it made.
///
/// Most calls return a BOOL (or a Winsock int): `from_bool(::DeviceIoControl(...))` reads
/// `GetLastError()` and says which of the four it was. Build one yourself for the calls whose
/// "failure" is a success, as ConnectNamedPipe's ERROR_PIPE_CONNECTED (`finished()`).
class call_result {
public:
    /// ERROR_IO_PENDING: the call is under way; its completion packet comes later.
    static call_result pending() noexcept { return call_result({}); }

    /// The call succeeded at once (it returned TRUE). On Windows a completion packet still
    /// comes, unless the handle skips the port on success (`overlapped_handle::
    /// skip_completion_port_on_success`): the library then delivers the result itself, with the
    /// bytes the kernel wrote to the OVERLAPPED.
    static call_result done() noexcept { return call_result({kind::done, 0, 0}); }

    /// The call failed at once with `error` (the system's code): no packet comes; the
    /// completion reports `error`, through the pool. `ERROR_IO_PENDING` is taken as `pending()`
    /// and 0 as `done()` (what `from_bool` would say).
    static call_result failed(DWORD error) noexcept {
        if (error == ERROR_IO_PENDING)
            return pending();
        if (error == 0)
            return done();
        return call_result({kind::failed, error, 0});
    }

    /// The call succeeded at once and the kernel queues no packet for it whatever the handle's
    /// mode (ConnectNamedPipe failing with ERROR_PIPE_CONNECTED: the client came first). The
    /// completion reports success with `bytes`, through the pool.
    static call_result finished(std::size_t bytes = 0) noexcept {
        return call_result({kind::finished, 0, bytes});
    }

    /// The result of a BOOL-returning call (reads `GetLastError()` when `ok` is FALSE: call it
    /// right after the call).
    static call_result from_bool(BOOL ok) noexcept {
        return call_result(detail::io::win32::bool_status(ok));
    }

    /// The result of an int-returning Winsock call (0 or SOCKET_ERROR; reads
    /// `WSAGetLastError()`).
    static call_result from_wsa(int rc) noexcept {
        return call_result(detail::io::win32::wsa_status(rc));
    }

    /// The status the start guard reads (library use).
    detail::io::win32::call_status status() const noexcept { return status_; }

private:
    using kind = detail::io::win32::call_status::kind;
    explicit call_result(detail::io::win32::call_status s) noexcept : status_(s) {}
    detail::io::win32::call_status status_;
};

class overlapped_handle;

/// Starts an overlapped call on `h` with your own operation object (no allocation; the classic IOCP
/// samples' OVERLAPPEDPLUS). `call(HANDLE, OVERLAPPED*)` makes the call with the operation's
/// OVERLAPPED (zeroed, so set `Offset`/`OffsetHigh` or `hEvent`-free fields inside `call` if the
/// function reads them) and returns a `call_result`. It runs once, inside this function, on this
/// thread; it must not throw (this function is noexcept: an exception terminates) and must not
/// touch the operation after making the call (another worker may already complete it).
///
/// Completes `op` exactly once, on a worker of the handle's pool, never inside this call:
/// with the call's bytes and error when its packet comes; with the error of a call that failed
/// at once (posted through the pool's port); `errc::operation_aborted` after `cancel` or
/// `close`, or at pool shutdown; `errc::invalid_handle` if the handle is closed; `errc::closed`
/// if the pool is shutting down. Errors are normalised as for files and sockets (the one error
/// table: ERROR_BROKEN_PIPE is `errc::eof`, ...); other codes arrive as the system reported
/// them, in the system category.
///
/// Keep `op` alive and unmoved, and the call's buffers valid, until the completion runs.
/// @returns an error only if nothing was started (the call was not made and `op` will not be
/// completed): `std::errc::invalid_argument` for a handle without a pool, `errc::closed` when
/// the pool has shut down for good.
template <class Call>
std::error_code start_overlapped(overlapped_handle& h, io_operation& op, Call&& call) noexcept;

/// A Win32 `HANDLE` opened with FILE_FLAG_OVERLAPPED (a file, a directory, a pipe, a device,
/// a mailslot...), owned and associated with a `thread_pool`, on which any overlapped call can
/// be started with `start` / `start_overlapped`.
///
/// What the library does for every start:
/// - immediate failure: the error is delivered through the pool, never inline; a packet the
///   kernel queues anyway for a failed call (Wine does, for some) is dropped;
/// - in-flight accounting: the pool's `join()` and `stop()` cancel the handle's pending calls
///   (CancelIoEx) and wait for their completions before the workers stop;
/// - cancellation: `cancel()` (every pending call of the handle) and `cancel(op)` (one, by its
///   OVERLAPPED: CancelIoEx(handle, overlapped));
/// - exactly one completion per start, even when the packet comes before the call returns.
///
/// Wine: some calls that complete at once queue no packet under Wine where Windows queues one
/// (LockFileEx, DeviceIoControl with FSCTL_SET_SPARSE, measured with Wine 8). With
/// `skip_completion_port_on_success()` set, neither system queues one and the library delivers
/// the result: set it for such calls if the program must run under Wine.
///
/// Lifetime: the pool must outlive the handle. Closing or destroying it cancels the pending
/// calls; each still completes once, with `errc::operation_aborted` or its result.
///
/// Thread safety: `start`, `start_overlapped`, `cancel` and `native_handle` may run concurrently
/// with each other; `assign`, `close`, `skip_completion_port_on_success`, assignment and
/// destruction must not overlap any other call on the object.
class overlapped_handle {
public:
    /// A closed handle without a pool: it can only be assigned to.
    overlapped_handle() noexcept = default;

    /// A closed handle whose calls will complete on `pool`.
    explicit overlapped_handle(thread_pool& pool) noexcept : pool_(&pool) {}

    /// Takes ownership of `handle` and associates it with `pool` (see `assign`).
    /// @throws std::system_error as `assign`.
    overlapped_handle(thread_pool& pool, unique_handle handle) : pool_(&pool) {
        assign(std::move(handle));
    }

    /// Takes over `other`'s handle, pool and pending calls.
    overlapped_handle(overlapped_handle&& other) noexcept
        : pool_(other.pool_), state_(std::exchange(other.state_, nullptr)) {}

    /// Closes this handle (cancelling its calls), then takes over `other`'s.
    overlapped_handle& operator=(overlapped_handle&& other) noexcept {
        if (this != &other) {
            (void)detail::io::close_state(std::exchange(state_, nullptr));
            pool_ = other.pool_;
            state_ = std::exchange(other.state_, nullptr);
        }
        return *this;
    }

    overlapped_handle(const overlapped_handle&) = delete;
    overlapped_handle& operator=(const overlapped_handle&) = delete;

    /// Closes the handle, cancelling pending calls (they still complete, aborted).
    ~overlapped_handle() { (void)detail::io::close_state(state_); }

    /// Takes ownership of `handle` (opened with FILE_FLAG_OVERLAPPED; closed with CloseHandle,
    /// so not a SOCKET: use `iocp::socket`) and associates it with the pool's port. A handle
    /// that was open is closed first. On failure `handle` is closed.
    /// Errors: `errc::invalid_handle` for an empty handle; the system's for a bogus one or one
    /// already associated with a port (ERROR_INVALID_PARAMETER); `std::errc::invalid_argument`
    /// without a pool.
    void assign(unique_handle handle, std::error_code& ec) noexcept {
        close(ec);
        if (pool_ == nullptr) {
            ec = std::make_error_code(std::errc::invalid_argument);
            return;
        }
        HANDLE h = handle.release();
        state_ = detail::io::open_state(*pool_, h, detail::io::handle_kind::file, 0, ec);
        if (ec)
            detail::io::native::close_unowned(h);
    }
    /// As above. @throws std::system_error
    void assign(unique_handle handle) {
        std::error_code ec;
        assign(std::move(handle), ec);
        detail::throw_if(ec, "iocp::overlapped_handle::assign");
    }

    /// True while a handle is held.
    bool is_open() const noexcept { return state_ != nullptr; }

    /// The handle (INVALID_HANDLE_VALUE when closed), still owned by this object.
    HANDLE native_handle() const noexcept {
        return state_ != nullptr ? state_->get() : INVALID_HANDLE_VALUE;
    }

    /// The pool the calls complete on (nullptr when default-constructed).
    thread_pool* pool() const noexcept { return pool_; }

    /// Starts an overlapped call (see `start_overlapped` for what `call` must do) and calls
    /// `handler(std::error_code, std::size_t bytes)` once when it completes: on a worker of
    /// the pool, never inside this call. An exception from the handler goes to the pool's
    /// exception handler.
    /// @throws std::system_error (`errc::closed`) if the pool has already shut down, or
    /// `std::errc::invalid_argument` without a pool: `call` is then not made and the handler
    /// is destroyed without running. `std::bad_alloc` if the operation cannot be allocated.
    template <class Call, class Handler>
    void start(Call&& call, Handler&& handler) {
        detail::io::start_handler_op<io_operation>(
            std::forward<Handler>(handler), "iocp::overlapped_handle::start",
            [&](io_operation& op) { return start_overlapped(*this, op, call); });
    }

    /// Cancels every pending call of the handle (CancelIoEx(handle, nullptr)): each completes
    /// with `errc::operation_aborted`, or with its result if it finished first.
    /// Errors: `errc::invalid_handle` when closed; the system's.
    void cancel(std::error_code& ec) noexcept { ec = detail::io::cancel_state(state_); }
    /// As above. @throws std::system_error
    void cancel() {
        detail::throw_if(detail::io::cancel_state(state_), "iocp::overlapped_handle::cancel");
    }

    /// Cancels one pending call, the one started with `op` (CancelIoEx(handle, &op's
    /// OVERLAPPED)); it completes with `errc::operation_aborted`, or with its result if it
    /// finished first. Call it only between the start of `op` and its completion: once the
    /// completion has run, `op` may have been started again (this would cancel that start) or
    /// freed. Nothing pending for `op` (ERROR_NOT_FOUND: it completed already, or failed at
    /// once) is not an error.
    /// Errors: `errc::invalid_handle` when closed; the system's.
    void cancel(io_operation& op, std::error_code& ec) noexcept {
        const HANDLE h = native_handle();
        if (!detail::io::native::valid(h)) {
            ec = make_error_code(errc::invalid_handle);
            return;
        }
        ec.clear();
        if (!::CancelIoEx(h, reinterpret_cast<OVERLAPPED*>(static_cast<overlapped*>(&op))) &&
            ::GetLastError() != ERROR_NOT_FOUND)
            ec.assign(static_cast<int>(::GetLastError()), std::system_category());
    }
    /// As above. @throws std::system_error
    void cancel(io_operation& op) {
        std::error_code ec;
        cancel(op, ec);
        detail::throw_if(ec, "iocp::overlapped_handle::cancel");
    }

    /// Sets FILE_SKIP_COMPLETION_PORT_ON_SUCCESS | FILE_SKIP_SET_EVENT_ON_HANDLE on the handle
    /// (SetFileCompletionNotificationModes): a call that succeeds at once then queues no packet,
    /// and the library delivers its result through the pool's own queue — still exactly once,
    /// never inside the start call, but without the port's post and dequeue. It cannot be
    /// undone. Set it before starting any call.
    /// Errors: `errc::invalid_handle` when closed; `std::errc::device_or_resource_busy` while a
    /// call is in flight; the system's.
    void skip_completion_port_on_success(std::error_code& ec) noexcept {
        ec = detail::io::enable_skip_on_success(state_);
    }
    /// As above. @throws std::system_error
    void skip_completion_port_on_success() {
        detail::throw_if(detail::io::enable_skip_on_success(state_),
                         "iocp::overlapped_handle::skip_completion_port_on_success");
    }
    /// Whether the handle skips the port on success.
    bool skips_completion_port_on_success() const noexcept {
        return detail::io::skips_on_success(state_);
    }

    /// Closes the handle: cancels pending calls (CancelIoEx, then CloseHandle; they complete
    /// with `errc::operation_aborted`). Closing a closed handle does nothing. The object keeps
    /// its pool and can be assigned again.
    void close(std::error_code& ec) noexcept {
        ec = detail::io::close_state(std::exchange(state_, nullptr));
    }
    /// As above. @throws std::system_error if CloseHandle fails (the handle is closed anyway).
    void close() {
        std::error_code ec;
        close(ec);
        detail::throw_if(ec, "iocp::overlapped_handle::close");
    }

private:
    template <class Call>
    friend std::error_code start_overlapped(overlapped_handle&, io_operation&, Call&&) noexcept;

    thread_pool* pool_ = nullptr;
    detail::io::io_state* state_ = nullptr; // non-null while open
};

template <class Call>
std::error_code start_overlapped(overlapped_handle& h, io_operation& op, Call&& call) noexcept {
    static_assert(std::is_invocable_r_v<call_result, Call&, HANDLE, OVERLAPPED*>,
                  "the call must be callable as call_result(HANDLE, OVERLAPPED*)");
    if (h.pool_ == nullptr)
        return std::make_error_code(std::errc::invalid_argument);
    return detail::io::io_access::start(
        *h.pool_, h.state_, op, nullptr, 0,
        [&](HANDLE native, OVERLAPPED* ov) -> detail::io::win32::call_status {
            return static_cast<call_result>(call(native, ov)).status();
        });
}

} // namespace iocp

#endif // IOCP_HAS_IOCP
