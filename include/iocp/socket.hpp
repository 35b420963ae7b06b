#pragma once
/// @file
/// `iocp::socket`: a TCP socket (IPv4 or IPv6) whose connect, receive and send complete on a
/// `thread_pool`. Accepting connections is `iocp::acceptor` (acceptor.hpp).
///
/// @code
/// iocp::thread_pool pool(4);
/// iocp::socket sock(pool);
/// char reply[512];
/// sock.connect(iocp::endpoint::loopback(iocp::address_family::ipv4, 7), [&](std::error_code ec) {
///     if (ec) return;                                   // e.g. errc::connection_refused
///     sock.send_all(iocp::buffer("ping", 4), [&](std::error_code ec, std::size_t) {
///         if (!ec)
///             sock.recv(iocp::buffer(reply), [](std::error_code ec, std::size_t n) {
///                 // ec == iocp::errc::eof: the peer closed its side
///             });
///     });
/// });
/// @endcode
///
/// Costs: each handler-based call allocates one small operation object (recycled per thread:
/// a handler that starts the next operation on its worker allocates nothing in steady state);
/// `iocp::start_recv` / `start_send` / `start_send_all` / `start_connect` take an operation
/// of your own and allocate nothing. Completions go through the pool's port, or, on a socket
/// that opted in to `skip_completion_port_on_success()`, a call Winsock completes at once through
/// the pool's own queue; either way a handler never runs inside the call that started it and no
/// completion recurses.
///
/// Winsock is started by the library: it holds one WSAStartup reference while any of its
/// sockets is open or has an operation to complete, and gives it back (WSACleanup) after the
/// last one, so Winsock outlives every socket. The library's WSAStartup and WSACleanup calls
/// are serialised (Wine's are not thread-safe: see detail/io/win32/winsock.hpp).
///
/// Available wherever `IOCP_HAS_IO` is 1: Winsock's overlapped calls on Windows; on Linux
/// socket(2) (SOCK_CLOEXEC) with recvmsg/sendmsg/connect through io_uring or epoll. A send
/// never raises SIGPIPE (MSG_NOSIGNAL).

#include "config.hpp"

#if IOCP_HAS_IO

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>
#include <utility>

#include "buffer.hpp"
#include "detail/io/handler_op.hpp"
#include "detail/io/io_state.hpp"
#include "detail/io/net.hpp"
#include "detail/io/skip_on_success.hpp"
#include "detail/io/start.hpp"
#include "endpoint.hpp"
#include "error.hpp"
#include "io_operation.hpp"
#include "thread_pool.hpp"

namespace iocp {

/// The platform's socket handle: a Winsock `SOCKET` on Windows, a file descriptor on Linux.
using native_socket_type = detail::io::native::socket_type;

/// Which direction(s) `socket::shutdown` closes.
enum class shutdown_type {
    receive, ///< SD_RECEIVE
    send,    ///< SD_SEND: the peer's receives then end with `errc::eof`
    both,    ///< SD_BOTH
};

class socket;
class accept_operation;

/// An operation that sends a whole sequence of buffers, starting a new send after each
/// partial one (classic IOCP code's "send the remaining 512K"). Derive from it for
/// `iocp::start_send_all`; the completion function receives the total bytes sent (also on
/// error: what was sent before the error).
///
/// Each send offers at most `max_send` bytes: an overlapped send locks its bytes in memory
/// until it completes, and a bound keeps that, and the time one connection holds a worker's
/// attention, small. Larger sequences go out as several sends, one after the other.
class send_all_operation : public io_operation {
public:
    /// The most bytes one send of the sequence offers (1 MiB).
    static constexpr std::size_t max_send = std::size_t{1} << 20;

protected:
    /// An idle operation that calls `handler` when everything was sent or sending failed.
    explicit send_all_operation(handler_fn handler) noexcept : io_operation(handler) {}
    ~send_all_operation() = default;

private:
    friend std::error_code start_send_all(socket&, send_all_operation&,
                                          std::span<const const_buffer>) noexcept;

    // The send of what is left, at most max_send bytes.
    detail::io::request remaining() const noexcept {
        detail::io::request req;
        req.what = detail::io::request::kind::send;
        std::size_t skip = offset_;
        std::size_t budget = max_send;
        for (std::size_t i = first_; i < count_ && budget > 0; ++i, skip = 0) {
            const std::size_t len = (std::min)(buffers_[i].size - skip, budget);
            req.bufs[req.count++] = {static_cast<char*>(const_cast<void*>(buffers_[i].data)) + skip,
                                     len};
            budget -= len;
        }
        if (req.count == 0) // nothing (left) to send: one empty send completes the usual way
            req.bufs[req.count++] = {nullptr, 0};
        return req;
    }

    // Consumes `bytes` from the front; true when nothing is left.
    bool consume(std::size_t bytes) noexcept {
        while (first_ < count_) {
            const std::size_t left = buffers_[first_].size - offset_;
            if (bytes < left) {
                offset_ += bytes;
                return false;
            }
            bytes -= left;
            ++first_;
            offset_ = 0;
        }
        return true;
    }

    static bool finish(io_operation* op, std::error_code& ec, std::size_t& bytes) noexcept {
        auto* self = static_cast<send_all_operation*>(op);
        self->sent_ += bytes;
        if (!ec && !self->consume(bytes)) {
            if (bytes == 0) {
                ec = std::make_error_code(std::errc::io_error); // no progress: never loop
            } else if (detail::io::io_access::restart(*op, ec, self->remaining())) {
                return false; // the rest is on its way
            }
        }
        bytes = self->sent_;
        return true;
    }

    const_buffer buffers_[max_buffers];
    std::size_t count_ = 0;
    std::size_t first_ = 0;  // first buffer not completely sent
    std::size_t offset_ = 0; // bytes of buffers_[first_] already sent
    std::size_t sent_ = 0;   // total sent so far
};

/// Starts an overlapped receive into up to `max_buffers` buffers (filled in order) with your
/// own operation object (no allocation). Completes `op` exactly once on a worker of the
/// socket's pool with the bytes received; `errc::eof` when the peer closed its side (a 0-byte
/// receive into a non-empty buffer); `errc::connection_reset`; `errc::operation_aborted`
/// after `cancel`/`close` or at pool shutdown; `errc::invalid_handle` if the socket is not
/// open; `errc::closed` while the pool shuts down.
/// @returns an error only if nothing was started: `std::errc::invalid_argument` (no buffer,
/// more than `max_buffers`, or a socket without a pool) or `errc::closed` (the pool has shut
/// down for good); `op` is then not completed.
std::error_code start_recv(socket& s, io_operation& op,
                           std::span<const mutable_buffer> buffers) noexcept;
/// As above, one buffer.
std::error_code start_recv(socket& s, io_operation& op, mutable_buffer buffer) noexcept;

/// Starts one overlapped send of up to `max_buffers` buffers (gathered in order). The
/// completion reports how many bytes the send took, which may be fewer than offered: see
/// `start_send_all`. Same completion rules and returned errors as `start_recv` (no eof).
std::error_code start_send(socket& s, io_operation& op,
                           std::span<const const_buffer> buffers) noexcept;
/// As above, one buffer.
std::error_code start_send(socket& s, io_operation& op, const_buffer buffer) noexcept;

/// Starts sending all of `buffers` (at most `max_buffers`; the descriptors are copied into
/// `op`), continuing after partial sends. The completion reports the total sent. Same rules
/// and returned errors as `start_recv`.
std::error_code start_send_all(socket& s, send_all_operation& op,
                               std::span<const const_buffer> buffers) noexcept;

/// Starts connecting to `peer` with ConnectEx. A closed socket is opened for `peer`'s family
/// first, and an unbound one is bound to the wildcard address. Completes with `errc::
/// connection_refused` when nobody listens, `errc::operation_aborted` after `close`, or the
/// system's error.
/// @returns an error only if nothing was started (as `start_recv`; also
/// `std::errc::invalid_argument` for an unspecified `peer`), or if opening or binding the
/// socket failed.
std::error_code start_connect(socket& s, io_operation& op, const endpoint& peer) noexcept;

/// A TCP socket associated with a `thread_pool`.
///
/// Lifetime: the pool must outlive the socket. Closing or destroying the socket cancels its
/// pending operations (CancelIoEx, then closesocket): each completes exactly once, on the
/// pool, with `errc::operation_aborted` (or its result, if it finished first). The operation
/// objects live until their completion, so the kernel never writes to freed memory; the
/// buffers are yours and must stay valid until the completion. If the pool shuts down while
/// the socket is open, its pending operations are cancelled the same way, new ones complete
/// with `errc::closed`, and once the pool has joined they fail to start (the handler-based
/// calls throw).
///
/// Thread safety: calls that only use the socket — `recv`, `send`, `send_all`, `shutdown`,
/// `cancel`, the option setters, the endpoint queries and the `start_*` functions — may run
/// concurrently with each other (a receive chain and a send chain on two workers is the usual
/// case). Calls that change the object — `open`, `bind`, `connect`, `close`, assignment,
/// destruction — must not overlap any other call on it: serialise them yourself (a mutex, or
/// make the change from the only handler that can be running). Keep at most one send-type
/// operation pending if the order of the bytes matters (two pending sends may interleave).
class socket {
public:
    /// A closed socket without a pool: it can only be assigned to.
    socket() noexcept = default;

    /// A closed socket whose operations will run on `pool` (`connect` opens it).
    explicit socket(thread_pool& pool) noexcept : pool_(&pool) {}

    /// An open, unconnected socket of `family`. @throws std::system_error
    socket(thread_pool& pool, address_family family) : pool_(&pool) { open(family); }

    /// Takes over `other`'s handle, pool and pending operations.
    socket(socket&& other) noexcept
        : pool_(other.pool_), state_(std::exchange(other.state_, nullptr)),
          bound_(std::exchange(other.bound_, false)) {}

    /// Closes this socket (cancelling its operations), then takes over `other`'s.
    socket& operator=(socket&& other) noexcept {
        if (this != &other) {
            (void)detail::io::close_state(std::exchange(state_, nullptr));
            pool_ = other.pool_;
            state_ = std::exchange(other.state_, nullptr);
            bound_ = std::exchange(other.bound_, false);
        }
        return *this;
    }

    socket(const socket&) = delete;
    socket& operator=(const socket&) = delete;

    /// Closes the socket, cancelling pending operations (they still complete, aborted).
    ~socket() { (void)detail::io::close_state(state_); }

    /// Creates an overlapped TCP socket of `family` and associates it with the pool. A socket
    /// that was open is closed first.
    /// Errors: the system's (WSAEAFNOSUPPORT when the family is unavailable...);
    /// `std::errc::invalid_argument` without a pool.
    void open(address_family family, std::error_code& ec) noexcept {
        close(ec);
        if (pool_ == nullptr) {
            ec = std::make_error_code(std::errc::invalid_argument);
            return;
        }
        const int af = native_family(family);
        native_socket_type s = detail::io::native::make_tcp_socket(af, ec);
        if (ec)
            return;
        state_ = detail::io::open_state(*pool_, detail::io::native::from_socket(s),
                                        detail::io::handle_kind::socket, af, ec);
        if (ec)
            detail::io::native::close_socket(s);
    }
    /// As above. @throws std::system_error
    void open(address_family family) {
        std::error_code ec;
        open(family, ec);
        detail::throw_if(ec, "iocp::socket::open");
    }

    /// True while a socket is held.
    bool is_open() const noexcept { return state_ != nullptr; }

    /// The SOCKET (INVALID_SOCKET when closed), still owned by this object.
    native_socket_type native_handle() const noexcept {
        return state_ != nullptr ? state_->socket() : detail::io::native::invalid_socket;
    }

    /// The pool the socket's operations complete on (nullptr when default-constructed).
    thread_pool* pool() const noexcept { return pool_; }

    /// Binds the socket to a local address (opening it for that family if closed).
    /// Errors: the system's (WSAEADDRINUSE...); `std::errc::invalid_argument` for an
    /// unspecified endpoint.
    void bind(const endpoint& local, std::error_code& ec) noexcept {
        // Refused here, as datagram_socket and acceptor do: Linux's bind(2) reads an AF_UNSPEC
        // address whose bytes say INADDR_ANY as 0.0.0.0:0 (a compatibility rule of inet_bind)
        // and succeeds, binding the socket to an address nobody asked for.
        if (!local.is_specified()) {
            ec = std::make_error_code(std::errc::invalid_argument);
            return;
        }
        if (!ensure_open(local.family(), ec))
            return;
        if (detail::io::native::sock_bind(native_handle(), local.data(), local.size()) != 0) {
            ec = detail::io::native::last_socket_error();
            return;
        }
        bound_ = true;
        ec.clear();
    }
    /// As above. @throws std::system_error
    void bind(const endpoint& local) {
        std::error_code ec;
        bind(local, ec);
        detail::throw_if(ec, "iocp::socket::bind");
    }

    /// The local address (getsockname). Errors: `errc::invalid_handle` when closed, or the
    /// system's (WSAEINVAL when not bound).
    endpoint local_endpoint(std::error_code& ec) const noexcept {
        return query(&detail::io::native::sock_name, ec);
    }
    /// As above. @throws std::system_error
    endpoint local_endpoint() const {
        std::error_code ec;
        endpoint e = local_endpoint(ec);
        detail::throw_if(ec, "iocp::socket::local_endpoint");
        return e;
    }

    /// The peer's address (getpeername). Errors: `errc::invalid_handle` when closed, the
    /// system's (WSAENOTCONN when not connected).
    endpoint remote_endpoint(std::error_code& ec) const noexcept {
        return query(&detail::io::native::sock_peer, ec);
    }
    /// As above. @throws std::system_error
    endpoint remote_endpoint() const {
        std::error_code ec;
        endpoint e = remote_endpoint(ec);
        detail::throw_if(ec, "iocp::socket::remote_endpoint");
        return e;
    }

    /// Disables (true) or enables Nagle's algorithm (TCP_NODELAY).
    void set_no_delay(bool on, std::error_code& ec) noexcept {
        ec = set_int(IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0);
    }
    /// As above. @throws std::system_error
    void set_no_delay(bool on) {
        detail::throw_if(set_int(IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0),
                         "iocp::socket::set_no_delay");
    }

    /// Sets the send buffer size (SO_SNDBUF) in bytes. With 0, overlapped sends go straight
    /// from your buffers.
    void set_send_buffer_size(int bytes, std::error_code& ec) noexcept {
        ec = set_int(SOL_SOCKET, SO_SNDBUF, bytes);
    }
    /// As above. @throws std::system_error
    void set_send_buffer_size(int bytes) {
        detail::throw_if(set_int(SOL_SOCKET, SO_SNDBUF, bytes),
                         "iocp::socket::set_send_buffer_size");
    }

    /// Sets the receive buffer size (SO_RCVBUF) in bytes.
    void set_receive_buffer_size(int bytes, std::error_code& ec) noexcept {
        ec = set_int(SOL_SOCKET, SO_RCVBUF, bytes);
    }
    /// As above. @throws std::system_error
    void set_receive_buffer_size(int bytes) {
        detail::throw_if(set_int(SOL_SOCKET, SO_RCVBUF, bytes),
                         "iocp::socket::set_receive_buffer_size");
    }

    /// SO_LINGER. `on` with 0 seconds makes `close` reset the connection (the peer's pending
    /// and next receives fail with `errc::connection_reset`) instead of a graceful close.
    /// Avoid a non-zero timeout: `close` may then block that long.
    /// Errors: `errc::invalid_handle` when closed; `std::errc::invalid_argument` for `seconds`
    /// outside 0..65535 (Win32's `linger::l_linger` is a u_short: a larger value would be
    /// truncated, a negative one wrap to 65535; Linux reads a negative one as "linger for
    /// ever"); the system's.
    void set_linger(bool on, int seconds, std::error_code& ec) noexcept {
        if (state_ == nullptr) {
            ec = make_error_code(errc::invalid_handle);
            return;
        }
        if (seconds < 0 || seconds > 65535) {
            ec = std::make_error_code(std::errc::invalid_argument);
            return;
        }
        ec.clear();
        if (detail::io::native::sock_linger(native_handle(), on, seconds) != 0)
            ec = detail::io::native::last_socket_error();
    }
    /// As above. @throws std::system_error
    void set_linger(bool on, int seconds) {
        std::error_code ec;
        set_linger(on, seconds, ec);
        detail::throw_if(ec, "iocp::socket::set_linger");
    }

    /// Connects to `peer` (ConnectEx); calls `handler(std::error_code)` once, on a worker of
    /// the pool, never inside this call. A closed socket is opened for `peer`'s family and
    /// an unbound one bound to the wildcard address first. Errors in the handler: `errc::
    /// connection_refused`, `errc::operation_aborted` (closed meanwhile), the system's
    /// (WSAETIMEDOUT, WSAENETUNREACH...). After a failed connect the socket's state is
    /// unspecified (POSIX connect(2); the backends differ): close it, and connect again on a
    /// closed socket (it is then opened anew). An exception from the handler goes to the pool's
    /// exception handler.
    /// @throws std::system_error if opening/binding the socket fails, if the socket has no
    /// pool or `peer` is unspecified (`std::errc::invalid_argument`) or the pool has shut down
    /// (`errc::closed`): the handler is then destroyed without running. `std::bad_alloc`.
    template <class Handler>
    void connect(const endpoint& peer, Handler&& handler) {
        detail::io::start_handler_op<io_operation>(
            std::forward<Handler>(handler), "iocp::socket::connect",
            [&](io_operation& op) { return start_connect(*this, op, peer); });
    }

    /// Receives into `buffer`; calls `handler(std::error_code, std::size_t bytes)` once, on a
    /// worker, never inside this call. `errc::eof` when the peer has closed its side;
    /// `errc::connection_reset`; `errc::operation_aborted` after `cancel`/`close`. A receive
    /// into 0 bytes completes at once with 0 bytes (it waits for nothing; it is not eof). The
    /// buffer must stay valid until the handler runs.
    /// @throws std::system_error as `connect` does (no pool, pool shut down), and
    /// `std::errc::invalid_argument` for an empty span or more than `max_buffers` buffers.
    template <class Handler>
    void recv(mutable_buffer buffer, Handler&& handler) {
        recv(std::span<const mutable_buffer>(&buffer, 1), std::forward<Handler>(handler));
    }
    /// As above, scattering into up to `max_buffers` buffers (in order).
    template <class Handler>
    void recv(std::span<const mutable_buffer> buffers, Handler&& handler) {
        detail::io::start_handler_op<io_operation>(
            std::forward<Handler>(handler), "iocp::socket::recv",
            [&](io_operation& op) { return start_recv(*this, op, buffers); });
    }

    /// Sends `buffer` with one overlapped send; calls `handler(std::error_code, std::size_t
    /// bytes)` with what that send took, which may be less than offered (see `send_all`).
    /// Same rules as `recv`.
    template <class Handler>
    void send(const_buffer buffer, Handler&& handler) {
        send(std::span<const const_buffer>(&buffer, 1), std::forward<Handler>(handler));
    }
    /// As above, gathering up to `max_buffers` buffers (in order).
    template <class Handler>
    void send(std::span<const const_buffer> buffers, Handler&& handler) {
        detail::io::start_handler_op<io_operation>(
            std::forward<Handler>(handler), "iocp::socket::send",
            [&](io_operation& op) { return start_send(*this, op, buffers); });
    }

    /// Sends all of `buffer`, starting a new send after each partial one; calls
    /// `handler(std::error_code, std::size_t total)` once, when everything was sent or a send
    /// failed (`total` is then what was sent before). Same rules as `recv`.
    template <class Handler>
    void send_all(const_buffer buffer, Handler&& handler) {
        send_all(std::span<const const_buffer>(&buffer, 1), std::forward<Handler>(handler));
    }
    /// As above, for up to `max_buffers` buffers (the descriptors are copied).
    template <class Handler>
    void send_all(std::span<const const_buffer> buffers, Handler&& handler) {
        detail::io::start_handler_op<send_all_operation>(
            std::forward<Handler>(handler), "iocp::socket::send_all",
            [&](send_all_operation& op) { return start_send_all(*this, op, buffers); });
    }

    /// Shuts down one or both directions (graceful: after `shutdown_type::send` the peer's
    /// receives end with `errc::eof` once it has read everything). On Linux a receive pending
    /// on this socket when its receiving side is shut down (`receive` or `both`) completes with
    /// `errc::eof`, since recv(2) then returns 0; Windows does not document what happens to it
    /// (shutdown's page on learn.microsoft.com). To end a pending receive on every system, use
    /// `cancel()` (`errc::operation_aborted`).
    /// Errors: `errc::invalid_handle` when closed, the system's (WSAENOTCONN...).
    void shutdown(shutdown_type what, std::error_code& ec) noexcept {
        if (state_ == nullptr) {
            ec = make_error_code(errc::invalid_handle);
            return;
        }
        namespace native = detail::io::native;
        const int how = what == shutdown_type::receive ? native::shut_receive
                        : what == shutdown_type::send  ? native::shut_send
                                                       : native::shut_both;
        ec.clear();
        if (native::sock_shutdown(native_handle(), how) != 0)
            ec = native::last_socket_error();
    }
    /// As above. @throws std::system_error
    void shutdown(shutdown_type what) {
        std::error_code ec;
        shutdown(what, ec);
        detail::throw_if(ec, "iocp::socket::shutdown");
    }

    /// Opts in to skipping the completion port on success (Win32:
    /// SetFileCompletionNotificationModes with FILE_SKIP_COMPLETION_PORT_ON_SUCCESS |
    /// FILE_SKIP_SET_EVENT_ON_HANDLE): a receive that finds data waiting, or a send that fits in
    /// the buffer then queues no packet, and the library delivers its result through the pool's own
    /// queue instead — still exactly once, on a worker, never inside the start call, but without
    /// the port's post and dequeue. It cannot be undone; set it before starting any operation.
    /// Refused (`std::errc::operation_not_supported`) unless every Winsock provider of TCP and
    /// UDP over IPv4 and IPv6 is an IFS provider (XP1_IFS_HANDLES; a non-IFS layered provider
    /// may queue a packet for a call it reported done).
    /// Errors: `errc::invalid_handle` when closed; `std::errc::device_or_resource_busy` while an
    /// operation is in flight; the system's; on Linux always `std::errc::operation_not_supported`
    /// (every completion there is the I/O layer's own: there is no kernel packet to skip).
    void skip_completion_port_on_success(std::error_code& ec) noexcept {
        ec = detail::io::enable_skip_on_success(state_);
    }
    /// As above. @throws std::system_error
    void skip_completion_port_on_success() {
        detail::throw_if(detail::io::enable_skip_on_success(state_),
                         "iocp::socket::skip_completion_port_on_success");
    }
    /// Whether completions that succeed at once skip the port (see above).
    bool skips_completion_port_on_success() const noexcept {
        return detail::io::skips_on_success(state_);
    }

    /// Cancels the pending operations (CancelIoEx): they complete with
    /// `errc::operation_aborted`, or with their result if they finished first. The socket
    /// stays open (but a cancelled receive may have lost data: usually close next).
    /// Errors: `errc::invalid_handle` when closed.
    void cancel(std::error_code& ec) noexcept { ec = detail::io::cancel_state(state_); }
    /// As above. @throws std::system_error
    void cancel() { detail::throw_if(detail::io::cancel_state(state_), "iocp::socket::cancel"); }

    /// Closes the socket: cancels pending operations (CancelIoEx, then closesocket; they
    /// complete with `errc::operation_aborted`). Closing a closed socket does nothing. The
    /// socket keeps its pool and can be opened again.
    void close(std::error_code& ec) noexcept {
        bound_ = false;
        ec = detail::io::close_state(std::exchange(state_, nullptr));
    }
    /// As above. @throws std::system_error if closesocket reports an error (the socket is
    /// closed anyway).
    void close() {
        std::error_code ec;
        close(ec);
        detail::throw_if(ec, "iocp::socket::close");
    }

private:
    friend class accept_operation;
    friend std::error_code start_recv(socket&, io_operation&,
                                      std::span<const mutable_buffer>) noexcept;
    friend std::error_code start_send(socket&, io_operation&,
                                      std::span<const const_buffer>) noexcept;
    friend std::error_code start_send_all(socket&, send_all_operation&,
                                          std::span<const const_buffer>) noexcept;
    friend std::error_code start_connect(socket&, io_operation&, const endpoint&) noexcept;

    // An accepted connection, already associated with `pool`.
    socket(thread_pool& pool, detail::io::io_state* st) noexcept : pool_(&pool), state_(st) {}

    bool ensure_open(address_family family, std::error_code& ec) noexcept {
        if (state_ == nullptr)
            open(family, ec);
        else
            ec.clear();
        return !ec;
    }

    std::error_code set_int(int level, int name, int value) noexcept {
        if (state_ == nullptr)
            return make_error_code(errc::invalid_handle);
        if (detail::io::native::sock_setopt(native_handle(), level, name, &value, sizeof value) !=
            0)
            return detail::io::native::last_socket_error();
        return {};
    }

    using name_query = int (*)(native_socket_type, sockaddr*, int*) noexcept;
    endpoint query(name_query fn, std::error_code& ec) const noexcept {
        if (state_ == nullptr) {
            ec = make_error_code(errc::invalid_handle);
            return {};
        }
        endpoint e;
        int len = endpoint::capacity();
        if (fn(native_handle(), e.data(), &len) != 0) {
            ec = detail::io::native::last_socket_error();
            return {};
        }
        ec.clear();
        return e;
    }

    std::error_code start(io_operation& op, detail::io::finish_fn finish, std::size_t requested,
                          const detail::io::request& req) noexcept {
        if (pool_ == nullptr)
            return std::make_error_code(std::errc::invalid_argument);
        return detail::io::io_access::start(*pool_, state_, op, finish, requested, req);
    }

    // A receive into 0 bytes (see recv): completes at once, through the port, with 0 bytes.
    std::error_code start_done_at_once(io_operation& op, detail::io::finish_fn finish) noexcept {
        if (pool_ == nullptr)
            return std::make_error_code(std::errc::invalid_argument);
        return detail::io::io_access::start_done_at_once(*pool_, state_, op, finish);
    }

    static bool finish_recv(io_operation* op, std::error_code& ec, std::size_t& bytes) noexcept {
        if (!ec && bytes == 0 && detail::io::io_access::requested(*op) > 0) {
            // The peer closed its sending side, unless our own close or shutdown ended it
            // (Linux: a receive ended by shutdown(SHUT_RDWR) reads 0).
            detail::io::io_state* st = detail::io::io_access::state(*op);
            ec = make_error_code(st != nullptr && st->ours() ? errc::operation_aborted : errc::eof);
        }
        return true;
    }

    static bool finish_connect(io_operation* op, std::error_code& ec, std::size_t&) noexcept {
        if (ec)
            return true;
        detail::io::io_state* st = detail::io::io_access::state(*op);
        // Win32: makes getpeername, shutdown and the like work on the connected socket. Under
        // the state's lock: the owner may be closing the socket on another thread.
        std::lock_guard lock(st->mutex);
        if (st->closed_by_us.load(std::memory_order_seq_cst))
            ec = make_error_code(errc::operation_aborted);
        else
            ec = detail::io::native::after_connect(st->socket());
        return true;
    }

    // The request of a receive or send of `in`; false (nothing built) for no buffer or more
    // than max_buffers. Each buffer and the total are capped at max_transfer (a Winsock
    // buffer's length is a ULONG; Linux reports bytes as an int): a larger request takes
    // what fits, as a partial receive or send does.
    template <class Buffer>
    static bool to_request(std::span<const Buffer> in, detail::io::request::kind what,
                           detail::io::request& req, std::size_t& total) noexcept {
        if (in.empty() || in.size() > max_buffers)
            return false;
        req.what = what;
        req.count = in.size();
        total = 0;
        for (std::size_t i = 0; i < in.size(); ++i) {
            const std::size_t n = (std::min)(in[i].size, max_transfer - total);
            req.bufs[i] = {const_cast<void*>(static_cast<const void*>(in[i].data)), n};
            total += n;
        }
        return true;
    }

    // 2 GiB less 4 KiB per receive or send (see to_request).
    static constexpr std::size_t max_transfer = 0x7FFFF000u;

    thread_pool* pool_ = nullptr;
    detail::io::io_state* state_ = nullptr; // non-null while open
    bool bound_ = false;                    // bind() was called (ConnectEx needs it)
};

inline std::error_code start_recv(socket& s, io_operation& op,
                                  std::span<const mutable_buffer> buffers) noexcept {
    detail::io::request req;
    std::size_t total = 0;
    if (!socket::to_request(buffers, detail::io::request::kind::recv, req, total))
        return std::make_error_code(std::errc::invalid_argument);
    if (total == 0) // asks for nothing: done at once (the kernel would wait for data)
        return s.start_done_at_once(op, &socket::finish_recv);
    return s.start(op, &socket::finish_recv, total, req);
}

inline std::error_code start_recv(socket& s, io_operation& op, mutable_buffer buffer) noexcept {
    return start_recv(s, op, std::span<const mutable_buffer>(&buffer, 1));
}

inline std::error_code start_send(socket& s, io_operation& op,
                                  std::span<const const_buffer> buffers) noexcept {
    detail::io::request req;
    std::size_t total = 0;
    if (!socket::to_request(buffers, detail::io::request::kind::send, req, total))
        return std::make_error_code(std::errc::invalid_argument);
    return s.start(op, nullptr, 0, req);
}

inline std::error_code start_send(socket& s, io_operation& op, const_buffer buffer) noexcept {
    return start_send(s, op, std::span<const const_buffer>(&buffer, 1));
}

inline std::error_code start_send_all(socket& s, send_all_operation& op,
                                      std::span<const const_buffer> buffers) noexcept {
    if (buffers.empty() || buffers.size() > max_buffers)
        return std::make_error_code(std::errc::invalid_argument);
    std::copy(buffers.begin(), buffers.end(), op.buffers_);
    op.count_ = buffers.size();
    op.first_ = 0;
    op.offset_ = 0;
    op.sent_ = 0;
    (void)op.consume(0); // skips empty buffers at the front
    return s.start(op, &send_all_operation::finish, 0, op.remaining());
}

inline std::error_code start_connect(socket& s, io_operation& op, const endpoint& peer) noexcept {
    std::error_code ec;
    // An unspecified peer (a default endpoint, what a failed query returns) is refused: Linux's
    // connect(2) reads AF_UNSPEC as "dissolve the association" and returns 0, so the connect
    // would report success on a socket that is connected to nothing.
    if (s.pool_ == nullptr || !peer.is_specified())
        return std::make_error_code(std::errc::invalid_argument);
    if (!s.ensure_open(peer.family(), ec))
        return ec;
    if (detail::io::native::connect_needs_bind && !s.bound_) {
        // ConnectEx needs a bound socket.
        s.bind(endpoint::any(peer.family(), 0), ec);
        if (ec)
            return ec;
    }
    detail::io::request req;
    req.what = detail::io::request::kind::connect;
    req.peer = &peer;
    return s.start(op, &socket::finish_connect, 0, req);
}

} // namespace iocp

#endif // IOCP_HAS_IO
