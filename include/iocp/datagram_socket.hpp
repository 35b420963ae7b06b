#pragma once
/// @file
/// `iocp::datagram_socket`: a UDP socket (IPv4 or IPv6) whose sends and receives complete on a
/// `thread_pool`, one datagram per operation.
///
/// @code
/// iocp::thread_pool pool(4);
/// iocp::datagram_socket server(pool, iocp::endpoint::loopback(iocp::address_family::ipv4, 0));
/// char in[1500];
/// server.recv_from(iocp::buffer(in), [&](std::error_code ec, std::size_t n,
///                                        const iocp::endpoint& sender) {
///     if (ec == std::errc::message_size) return;  // longer than `in`: its first bytes are in it
///     if (!ec)                                     // echo it back (in must outlive the send)
///         server.send_to(iocp::buffer(in, n), sender, [](std::error_code, std::size_t) {});
/// });
/// @endcode
///
/// The name: the library names an object by what it is (`socket` for a TCP stream, `acceptor`,
/// `file`), without Asio's protocol namespaces (`ip::udp::socket`); "datagram socket" is Asio's
/// own word for the class behind `udp::socket` (`basic_datagram_socket`) and Winsock's
/// (`SOCK_DGRAM`).
///
/// Datagrams, not a stream: each receive takes exactly one datagram (never part of one, never
/// two), each send sends its buffers as one datagram, and a 0-byte datagram is a datagram (not
/// eof). UDP does not retransmit or slow a sender down: a datagram the receiver's buffer
/// (SO_RCVBUF) cannot hold is dropped by the kernel, silently, even on loopback.
///
/// A datagram longer than the receive buffers is reported as `std::errc::message_size` with
/// `bytes` = the size of the buffers: they hold its first bytes, the rest is lost (the next
/// receive gets the next datagram), and `recv_from` still reports the sender. How each system
/// says it, all mapped by the library's error tables to that one code:
/// - Windows: WSARecvFrom, "WSAEMSGSIZE: the message was too large to fit into the specified
///   buffer and (for unreliable protocols only) any trailing portion of the message that did not
///   fit into the buffer has been discarded". A receive that was pending gets a completion
///   packet with ERROR_MORE_DATA (the NTSTATUS STATUS_BUFFER_OVERFLOW) and the bytes that fit;
///   one that finds the datagram already queued fails at once with WSAEMSGSIZE and a packet is
///   queued as well (a warning status, not an error: measured under Wine 8, as Windows does for
///   warnings), which the start guard delivers once.
/// - Linux: recvmsg succeeds with the bytes that fit and sets MSG_TRUNC in msg_flags
///   (recvmsg(2)); io_uring writes the flags back into the operation's msghdr as recvmsg(2) does.
///
/// ICMP "port unreachable": Windows reports one that answers a send as WSAECONNRESET on the
/// socket's next receive, even on an unconnected socket whose next datagram comes from anyone
/// else: one peer that went away would break a server's receive loop. The library turns that
/// off on every datagram socket it opens, with `WSAIoctl(SIO_UDP_CONNRESET, FALSE)` (Microsoft's
/// "Winsock IOCTLs" reference: "SIO_UDP_CONNRESET ... If this value is set to FALSE, the
/// WSAECONNRESET error is not reported"; KB 263823), so receives never fail for it; turn it back
/// on yourself with the same ioctl on `native_handle()` if you want the report. Wine 8 accepts
/// the ioctl as a stub, and its sockets (the host's) never report the error on an unconnected
/// socket anyway. Linux never reports it on an unconnected socket (udp(7): only with
/// IP_RECVERR); on a connected one a later receive or send reports `errc::connection_refused`
/// (ECONNREFUSED).
///
/// Costs: as `iocp::socket` (one small recycled operation object per handler-based call; none
/// with the `start_*` functions and your own operation). Completions always go through the
/// pool's port: a handler never runs inside the call that started it.
///
/// Available wherever `IOCP_HAS_IO` is 1: WSASendTo / WSARecvFrom on Windows; on Linux
/// sendmsg / recvmsg with msg_name through io_uring or epoll.

#include "config.hpp"

#if IOCP_HAS_IO

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>
#include <type_traits>
#include <utility>

#include "buffer.hpp"
#include "detail/io/handler_op.hpp"
#include "detail/io/io_state.hpp"
#include "detail/io/net.hpp"
#include "detail/io/start.hpp"
#include "endpoint.hpp"
#include "error.hpp"
#include "io_operation.hpp"
#include "socket.hpp" // native_socket_type
#include "thread_pool.hpp"

namespace iocp {

class datagram_socket;
class recv_from_operation;

/// The largest UDP payload of one datagram to an address of `family`, in bytes: 65507 for IPv4
/// (65535 less the 20-byte IP header and the 8-byte UDP header), 65527 for IPv6 (65535 less the
/// UDP header: IPv6's payload length does not count its own header; jumbograms aside).
constexpr std::size_t max_datagram_size(address_family family) noexcept {
    return family == address_family::ipv6 ? 65527 : 65507;
}

/// Starts receiving one datagram into up to `max_buffers` buffers (filled in order) with your own
/// operation, which also receives the sender's address (`op.sender()`). Completes `op` exactly
/// once on a worker of the socket's pool with the datagram's size in bytes (0 for an empty
/// datagram); `std::errc::message_size` when the datagram was longer than the buffers (they hold
/// its first bytes, `bytes` is their size, the rest is lost); `errc::operation_aborted` after
/// `cancel`/`close` or at pool shutdown; `errc::invalid_handle` if the socket is not open;
/// `errc::closed` while the pool shuts down; `errc::connection_refused` on a connected socket
/// whose peer has no socket (Linux). Thread safety: several receives may be pending at once
/// (each datagram goes to one of them).
/// @returns an error only if nothing was started: `std::errc::invalid_argument` (no buffer, more
/// than `max_buffers`, or a socket without a pool) or `errc::closed` (the pool has shut down for
/// good); `op` is then not completed.
std::error_code start_recv_from(datagram_socket& s, recv_from_operation& op,
                                std::span<const mutable_buffer> buffers) noexcept;
/// As above, one buffer.
std::error_code start_recv_from(datagram_socket& s, recv_from_operation& op,
                                mutable_buffer buffer) noexcept;

/// Starts sending `buffers` (at most `max_buffers`, gathered in order) as one datagram to
/// `destination`, with your own operation. `destination` is read during this call only. The
/// completion reports the bytes sent (all of them: a datagram is never sent in part); the
/// system's error otherwise (`std::errc::message_size` if the kernel refuses its size).
/// @returns an error only if nothing was started: as `start_recv_from`, and
/// `std::errc::message_size` for more than `max_datagram_size(destination.family())` bytes,
/// `std::errc::invalid_argument` for an unspecified destination.
std::error_code start_send_to(datagram_socket& s, io_operation& op,
                              std::span<const const_buffer> buffers,
                              const endpoint& destination) noexcept;
/// As above, one buffer.
std::error_code start_send_to(datagram_socket& s, io_operation& op, const_buffer buffer,
                              const endpoint& destination) noexcept;

/// Starts receiving one datagram on a connected socket (from its peer only: the kernel drops
/// the others). Same completion rules and returned errors as `start_recv_from`.
std::error_code start_recv(datagram_socket& s, io_operation& op,
                           std::span<const mutable_buffer> buffers) noexcept;
/// As above, one buffer.
std::error_code start_recv(datagram_socket& s, io_operation& op, mutable_buffer buffer) noexcept;

/// Starts sending one datagram to a connected socket's peer. Same completion rules and returned
/// errors as `start_send_to` (the limit is that of the socket's family). On a socket that is
/// not connected: the system's error in the completion (WSAENOTCONN on Windows; Wine 8 says
/// WSAEINVAL; EDESTADDRREQ on Linux).
std::error_code start_send(datagram_socket& s, io_operation& op,
                           std::span<const const_buffer> buffers) noexcept;
/// As above, one buffer.
std::error_code start_send(datagram_socket& s, io_operation& op, const_buffer buffer) noexcept;

/// The operation of one receive with its sender's address (WSARecvFrom / recvmsg with
/// msg_name). Derive from it for `iocp::start_recv_from`.
class recv_from_operation : public io_operation {
public:
    /// After the completion: who sent the datagram (also with `std::errc::message_size`);
    /// after any other error, the unspecified endpoint.
    const endpoint& sender() const noexcept { return sender_; }

protected:
    /// An idle operation that calls `handler` when a datagram arrived or receiving failed.
    explicit recv_from_operation(handler_fn handler) noexcept : io_operation(handler) {}
    ~recv_from_operation() = default;

private:
    friend std::error_code start_recv_from(datagram_socket&, recv_from_operation&,
                                           std::span<const mutable_buffer>) noexcept;
    friend class datagram_socket;

    static bool finish(io_operation* op, std::error_code& ec, std::size_t& bytes) noexcept;

    detail::io::native::from_slot slot_; // where the backend writes the sender
    endpoint sender_;
};

namespace detail::io {

// What a receive-from handler gets besides the error and the size: the sender, copied out of
// the operation before it is freed.
template <>
struct handler_args<recv_from_operation> {
    std::size_t bytes;
    endpoint sender;
    handler_args(recv_from_operation& op, std::size_t n) noexcept : bytes(n), sender(op.sender()) {}
    template <class Handler>
    void call(Handler& h, const std::error_code& ec) {
        if constexpr (std::is_invocable_v<Handler&, const std::error_code&, std::size_t,
                                          const endpoint&>)
            h(ec, bytes, sender);
        else
            h(ec, bytes);
    }
};

} // namespace detail::io

/// A UDP socket associated with a `thread_pool`.
///
/// Lifetime: the pool must outlive the socket. Closing or destroying the socket cancels its
/// pending operations (CancelIoEx, then closesocket; on Linux the backend's cancel, then
/// close(2)): each completes exactly once, on the pool, with `errc::operation_aborted` (or its
/// result, if it finished first). The buffers are yours and must stay valid until the
/// completion. If the pool shuts down while the socket is open, its pending operations are
/// cancelled the same way, new ones complete with `errc::closed`, and once the pool has joined
/// they fail to start (the handler-based calls throw).
///
/// Thread safety: `send_to`, `recv_from`, `send`, `recv`, `cancel`, the option setters, the
/// endpoint queries and the `start_*` functions may run concurrently with each other (several
/// receives pending and several senders at once is the usual server). `open`, `bind`,
/// `connect`, `close`, assignment and destruction must not overlap any other call on it.
/// Datagrams sent by pending sends may leave in any order.
class datagram_socket {
public:
    /// A closed socket without a pool: it can only be assigned to.
    datagram_socket() noexcept = default;

    /// A closed socket whose operations will run on `pool` (`open`, `bind` or `send_to` opens
    /// it).
    explicit datagram_socket(thread_pool& pool) noexcept : pool_(&pool) {}

    /// An open, unbound socket of `family` (a send binds it to an ephemeral port).
    /// @throws std::system_error
    datagram_socket(thread_pool& pool, address_family family) : pool_(&pool) { open(family); }

    /// A socket bound to `local` (port 0: the system picks one, see `local_endpoint`).
    /// @throws std::system_error
    datagram_socket(thread_pool& pool, const endpoint& local) : pool_(&pool) { bind(local); }

    /// Takes over `other`'s handle, pool and pending operations.
    datagram_socket(datagram_socket&& other) noexcept
        : pool_(other.pool_), state_(std::exchange(other.state_, nullptr)) {}

    /// Closes this socket (cancelling its operations), then takes over `other`'s.
    datagram_socket& operator=(datagram_socket&& other) noexcept {
        if (this != &other) {
            (void)detail::io::close_state(std::exchange(state_, nullptr));
            pool_ = other.pool_;
            state_ = std::exchange(other.state_, nullptr);
        }
        return *this;
    }

    datagram_socket(const datagram_socket&) = delete;
    datagram_socket& operator=(const datagram_socket&) = delete;

    /// Closes the socket, cancelling pending operations (they still complete, aborted).
    ~datagram_socket() { (void)detail::io::close_state(state_); }

    /// Creates an overlapped UDP socket of `family`, associates it with the pool and, on
    /// Windows, turns SIO_UDP_CONNRESET off (see the file comment). A socket that was open is
    /// closed first.
    /// Errors: the system's (WSAEAFNOSUPPORT when the family is unavailable, the WSAIoctl's);
    /// `std::errc::invalid_argument` without a pool.
    void open(address_family family, std::error_code& ec) noexcept {
        close(ec);
        if (pool_ == nullptr) {
            ec = std::make_error_code(std::errc::invalid_argument);
            return;
        }
        namespace native = detail::io::native;
        const int af = native_family(family);
        native_socket_type s = native::make_udp_socket(af, ec);
        if (ec)
            return;
        if ((ec = native::prepare_datagram(s))) {
            native::close_socket(s);
            return;
        }
        state_ = detail::io::open_state(*pool_, native::from_socket(s),
                                        detail::io::handle_kind::socket, af, ec);
        if (ec)
            native::close_socket(s);
    }
    /// As above. @throws std::system_error
    void open(address_family family) {
        std::error_code ec;
        open(family, ec);
        detail::throw_if(ec, "iocp::datagram_socket::open");
    }

    /// True while a socket is held.
    bool is_open() const noexcept { return state_ != nullptr; }

    /// The SOCKET (INVALID_SOCKET, or -1 on Linux, when closed), still owned by this object.
    native_socket_type native_handle() const noexcept {
        return state_ != nullptr ? state_->socket() : detail::io::native::invalid_socket;
    }

    /// The pool the socket's operations complete on (nullptr when default-constructed).
    thread_pool* pool() const noexcept { return pool_; }

    /// Binds the socket to a local address (opening it for that family if closed).
    /// Errors: the system's (WSAEADDRINUSE / EADDRINUSE...); `std::errc::invalid_argument` for
    /// an unspecified endpoint.
    void bind(const endpoint& local, std::error_code& ec) noexcept {
        if (!local.is_specified()) {
            ec = std::make_error_code(std::errc::invalid_argument);
            return;
        }
        if (!ensure_open(local.family(), ec))
            return;
        if (detail::io::native::sock_bind(native_handle(), local.data(), local.size()) != 0)
            ec = detail::io::native::last_socket_error();
    }
    /// As above. @throws std::system_error
    void bind(const endpoint& local) {
        std::error_code ec;
        bind(local, ec);
        detail::throw_if(ec, "iocp::datagram_socket::bind");
    }

    /// Sets the default peer (connect on a datagram socket: no handshake, it completes at once,
    /// so it is a plain call, not an operation): `send`/`recv` then need no address, and the
    /// kernel delivers only that peer's datagrams. Opens a closed socket for `peer`'s family.
    /// Connecting again changes the peer.
    /// Errors: the system's (WSAEADDRNOTAVAIL / ENETUNREACH...); `std::errc::invalid_argument`
    /// for an unspecified endpoint.
    void connect(const endpoint& peer, std::error_code& ec) noexcept {
        if (!peer.is_specified()) {
            ec = std::make_error_code(std::errc::invalid_argument);
            return;
        }
        if (!ensure_open(peer.family(), ec))
            return;
        if (detail::io::native::sock_connect(native_handle(), peer.data(), peer.size()) != 0)
            ec = detail::io::native::last_socket_error();
    }
    /// As above. @throws std::system_error
    void connect(const endpoint& peer) {
        std::error_code ec;
        connect(peer, ec);
        detail::throw_if(ec, "iocp::datagram_socket::connect");
    }

    /// The local address (getsockname). Errors: `errc::invalid_handle` when closed, the
    /// system's (WSAEINVAL when not bound).
    endpoint local_endpoint(std::error_code& ec) const noexcept {
        return query(&detail::io::native::sock_name, ec);
    }
    /// As above. @throws std::system_error
    endpoint local_endpoint() const {
        std::error_code ec;
        endpoint e = local_endpoint(ec);
        detail::throw_if(ec, "iocp::datagram_socket::local_endpoint");
        return e;
    }

    /// The default peer (getpeername). Errors: `errc::invalid_handle` when closed, the system's
    /// (WSAENOTCONN / ENOTCONN when not connected).
    endpoint remote_endpoint(std::error_code& ec) const noexcept {
        return query(&detail::io::native::sock_peer, ec);
    }
    /// As above. @throws std::system_error
    endpoint remote_endpoint() const {
        std::error_code ec;
        endpoint e = remote_endpoint(ec);
        detail::throw_if(ec, "iocp::datagram_socket::remote_endpoint");
        return e;
    }

    /// Sets the receive buffer size (SO_RCVBUF) in bytes: how many bytes of datagrams (each
    /// charged with the kernel's overhead too) wait for a receive before new ones are dropped.
    /// Linux caps it at net.core.rmem_max (and doubles the value for its bookkeeping).
    void set_receive_buffer_size(int bytes, std::error_code& ec) noexcept {
        ec = set_int(SOL_SOCKET, SO_RCVBUF, bytes);
    }
    /// As above. @throws std::system_error
    void set_receive_buffer_size(int bytes) {
        detail::throw_if(set_int(SOL_SOCKET, SO_RCVBUF, bytes),
                         "iocp::datagram_socket::set_receive_buffer_size");
    }

    /// Sets the send buffer size (SO_SNDBUF) in bytes.
    void set_send_buffer_size(int bytes, std::error_code& ec) noexcept {
        ec = set_int(SOL_SOCKET, SO_SNDBUF, bytes);
    }
    /// As above. @throws std::system_error
    void set_send_buffer_size(int bytes) {
        detail::throw_if(set_int(SOL_SOCKET, SO_SNDBUF, bytes),
                         "iocp::datagram_socket::set_send_buffer_size");
    }

    /// Allows (true) sending to a broadcast address (SO_BROADCAST).
    void set_broadcast(bool on, std::error_code& ec) noexcept {
        ec = set_int(SOL_SOCKET, SO_BROADCAST, on ? 1 : 0);
    }
    /// As above. @throws std::system_error
    void set_broadcast(bool on) {
        detail::throw_if(set_int(SOL_SOCKET, SO_BROADCAST, on ? 1 : 0),
                         "iocp::datagram_socket::set_broadcast");
    }

    /// Receives one datagram into `buffer`; calls `handler(std::error_code, std::size_t bytes,
    /// const iocp::endpoint& sender)` or `handler(std::error_code, std::size_t bytes)` once, on
    /// a worker, never inside this call. Errors in the handler: as `start_recv_from`
    /// (`std::errc::message_size` for a datagram longer than the buffer, `errc::
    /// operation_aborted` after `cancel`/`close`...). The buffer must stay valid until the
    /// handler runs. An exception from the handler goes to the pool's exception handler.
    /// @throws std::system_error if the socket has no pool or the buffers are bad (`std::errc::
    /// invalid_argument`: none, or more than `max_buffers`), or the pool has shut down
    /// (`errc::closed`): the handler is then destroyed without running. `std::bad_alloc`.
    template <class Handler>
    void recv_from(mutable_buffer buffer, Handler&& handler) {
        recv_from(std::span<const mutable_buffer>(&buffer, 1), std::forward<Handler>(handler));
    }
    /// As above, scattering into up to `max_buffers` buffers (in order).
    template <class Handler>
    void recv_from(std::span<const mutable_buffer> buffers, Handler&& handler) {
        detail::io::start_handler_op<recv_from_operation>(
            std::forward<Handler>(handler), "iocp::datagram_socket::recv_from",
            [&](recv_from_operation& op) { return start_recv_from(*this, op, buffers); });
    }

    /// Sends `buffer` as one datagram to `destination` (opening a closed socket for its family;
    /// an unbound socket gets an ephemeral port); calls `handler(std::error_code, std::size_t
    /// bytes)` once, on a worker, never inside this call. Errors in the handler: the system's.
    /// @throws std::system_error as `recv_from`, and `std::errc::message_size` for more than
    /// `max_datagram_size(destination.family())` bytes, `std::errc::invalid_argument` for an
    /// unspecified destination, or the error of opening the socket.
    template <class Handler>
    void send_to(const_buffer buffer, const endpoint& destination, Handler&& handler) {
        send_to(std::span<const const_buffer>(&buffer, 1), destination,
                std::forward<Handler>(handler));
    }
    /// As above, gathering up to `max_buffers` buffers (in order) into one datagram.
    template <class Handler>
    void send_to(std::span<const const_buffer> buffers, const endpoint& destination,
                 Handler&& handler) {
        detail::io::start_handler_op<io_operation>(
            std::forward<Handler>(handler), "iocp::datagram_socket::send_to",
            [&](io_operation& op) { return start_send_to(*this, op, buffers, destination); });
    }

    /// Receives one datagram from the connected peer; calls `handler(std::error_code,
    /// std::size_t bytes)`. Same rules as `recv_from`.
    template <class Handler>
    void recv(mutable_buffer buffer, Handler&& handler) {
        recv(std::span<const mutable_buffer>(&buffer, 1), std::forward<Handler>(handler));
    }
    /// As above, scattering into up to `max_buffers` buffers (in order).
    template <class Handler>
    void recv(std::span<const mutable_buffer> buffers, Handler&& handler) {
        detail::io::start_handler_op<io_operation>(
            std::forward<Handler>(handler), "iocp::datagram_socket::recv",
            [&](io_operation& op) { return start_recv(*this, op, buffers); });
    }

    /// Sends one datagram to the connected peer; calls `handler(std::error_code, std::size_t
    /// bytes)`. Same rules as `send_to`.
    template <class Handler>
    void send(const_buffer buffer, Handler&& handler) {
        send(std::span<const const_buffer>(&buffer, 1), std::forward<Handler>(handler));
    }
    /// As above, gathering up to `max_buffers` buffers (in order) into one datagram.
    template <class Handler>
    void send(std::span<const const_buffer> buffers, Handler&& handler) {
        detail::io::start_handler_op<io_operation>(
            std::forward<Handler>(handler), "iocp::datagram_socket::send",
            [&](io_operation& op) { return start_send(*this, op, buffers); });
    }

    /// Cancels the pending operations: they complete with `errc::operation_aborted`, or with
    /// their result if they finished first. The socket stays open; a datagram that arrives
    /// after the cancel waits for the next receive. Errors: `errc::invalid_handle` when closed.
    void cancel(std::error_code& ec) noexcept { ec = detail::io::cancel_state(state_); }
    /// As above. @throws std::system_error
    void cancel() {
        detail::throw_if(detail::io::cancel_state(state_), "iocp::datagram_socket::cancel");
    }

    /// Closes the socket: pending operations complete with `errc::operation_aborted`. Closing a
    /// closed socket does nothing. The socket keeps its pool and can be opened again.
    void close(std::error_code& ec) noexcept {
        ec = detail::io::close_state(std::exchange(state_, nullptr));
    }
    /// As above. @throws std::system_error if closesocket reports an error (closed anyway).
    void close() {
        std::error_code ec;
        close(ec);
        detail::throw_if(ec, "iocp::datagram_socket::close");
    }

private:
    friend class recv_from_operation;
    friend std::error_code start_recv_from(datagram_socket&, recv_from_operation&,
                                           std::span<const mutable_buffer>) noexcept;
    friend std::error_code start_send_to(datagram_socket&, io_operation&,
                                         std::span<const const_buffer>, const endpoint&) noexcept;
    friend std::error_code start_recv(datagram_socket&, io_operation&,
                                      std::span<const mutable_buffer>) noexcept;
    friend std::error_code start_send(datagram_socket&, io_operation&,
                                      std::span<const const_buffer>) noexcept;

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

    address_family family() const noexcept {
        return state_ != nullptr && state_->family == native_family(address_family::ipv6)
                   ? address_family::ipv6
                   : address_family::ipv4;
    }

    std::error_code start(io_operation& op, detail::io::finish_fn finish, std::size_t requested,
                          const detail::io::request& req) noexcept {
        if (pool_ == nullptr)
            return std::make_error_code(std::errc::invalid_argument);
        return detail::io::io_access::start(*pool_, state_, op, finish, requested, req);
    }

    // A receive's completion: a datagram cut to the buffers is an error on both backends
    // (Win32: the error table's message_size; Linux: MSG_TRUNC), with the buffers' size as the
    // bytes (they are full: on Win32 the immediate-failure path reports no count).
    static bool finish_recv(io_operation* op, std::error_code& ec, std::size_t& bytes) noexcept {
        if (!ec && detail::io::native::datagram_truncated(detail::io::io_access::core(*op)))
            ec = std::make_error_code(std::errc::message_size);
        if (ec == std::errc::message_size)
            bytes = detail::io::io_access::requested(*op);
        return true;
    }

    // The request of a receive or send of `in`: false (nothing built) for no buffer or more than
    // max_buffers. `total` is the sum of the sizes (a datagram is at most 64 KiB; larger
    // buffers are only room).
    template <class Buffer>
    static bool to_request(std::span<const Buffer> in, detail::io::request::kind what,
                           detail::io::request& req, std::size_t& total) noexcept {
        if (in.empty() || in.size() > max_buffers)
            return false;
        req.what = what;
        req.count = in.size();
        total = 0;
        for (std::size_t i = 0; i < in.size(); ++i) {
            // Each buffer's length is a ULONG on Win32 and the total an int on Linux: capped as
            // iocp::socket caps them; no datagram comes near.
            const std::size_t n = (std::min)(in[i].size, max_transfer - total);
            req.bufs[i] = {const_cast<void*>(static_cast<const void*>(in[i].data)), n};
            total += n;
        }
        return true;
    }

    // 2 GiB less 4 KiB per receive (see iocp::socket).
    static constexpr std::size_t max_transfer = 0x7FFFF000u;

    thread_pool* pool_ = nullptr;
    detail::io::io_state* state_ = nullptr; // non-null while open
};

inline bool recv_from_operation::finish(io_operation* op, std::error_code& ec,
                                        std::size_t& bytes) noexcept {
    auto* self = static_cast<recv_from_operation*>(op);
    (void)datagram_socket::finish_recv(op, ec, bytes);
    self->sender_ = !ec || ec == std::errc::message_size
                        ? self->slot_.sender(detail::io::io_access::core(*op))
                        : endpoint();
    return true;
}

inline std::error_code start_recv_from(datagram_socket& s, recv_from_operation& op,
                                       std::span<const mutable_buffer> buffers) noexcept {
    detail::io::request req;
    std::size_t total = 0;
    if (!datagram_socket::to_request(buffers, detail::io::request::kind::recv_from, req, total))
        return std::make_error_code(std::errc::invalid_argument);
    op.sender_ = endpoint();
    req.from_slot = &op.slot_;
    return s.start(op, &recv_from_operation::finish, total, req);
}

inline std::error_code start_recv_from(datagram_socket& s, recv_from_operation& op,
                                       mutable_buffer buffer) noexcept {
    return start_recv_from(s, op, std::span<const mutable_buffer>(&buffer, 1));
}

inline std::error_code start_send_to(datagram_socket& s, io_operation& op,
                                     std::span<const const_buffer> buffers,
                                     const endpoint& destination) noexcept {
    detail::io::request req;
    std::size_t total = 0;
    if (!destination.is_specified() ||
        !datagram_socket::to_request(buffers, detail::io::request::kind::send_to, req, total))
        return std::make_error_code(std::errc::invalid_argument);
    if (total > max_datagram_size(destination.family()))
        return std::make_error_code(std::errc::message_size);
    if (s.pool_ == nullptr)
        return std::make_error_code(std::errc::invalid_argument);
    std::error_code ec;
    if (!s.ensure_open(destination.family(), ec))
        return ec;
    req.peer = &destination;
    return s.start(op, nullptr, 0, req);
}

inline std::error_code start_send_to(datagram_socket& s, io_operation& op, const_buffer buffer,
                                     const endpoint& destination) noexcept {
    return start_send_to(s, op, std::span<const const_buffer>(&buffer, 1), destination);
}

inline std::error_code start_recv(datagram_socket& s, io_operation& op,
                                  std::span<const mutable_buffer> buffers) noexcept {
    detail::io::request req;
    std::size_t total = 0;
    if (!datagram_socket::to_request(buffers, detail::io::request::kind::recv, req, total))
        return std::make_error_code(std::errc::invalid_argument);
    return s.start(op, &datagram_socket::finish_recv, total, req);
}

inline std::error_code start_recv(datagram_socket& s, io_operation& op,
                                  mutable_buffer buffer) noexcept {
    return start_recv(s, op, std::span<const mutable_buffer>(&buffer, 1));
}

inline std::error_code start_send(datagram_socket& s, io_operation& op,
                                  std::span<const const_buffer> buffers) noexcept {
    detail::io::request req;
    std::size_t total = 0;
    if (!datagram_socket::to_request(buffers, detail::io::request::kind::send, req, total))
        return std::make_error_code(std::errc::invalid_argument);
    if (total > max_datagram_size(s.family()))
        return std::make_error_code(std::errc::message_size);
    return s.start(op, nullptr, 0, req);
}

inline std::error_code start_send(datagram_socket& s, io_operation& op,
                                  const_buffer buffer) noexcept {
    return start_send(s, op, std::span<const const_buffer>(&buffer, 1));
}

} // namespace iocp

#endif // IOCP_HAS_IO
