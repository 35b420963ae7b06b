#pragma once
/// @file
/// `iocp::acceptor`: a listening TCP socket whose accepts (AcceptEx) complete on a
/// `thread_pool`, handing over connected `iocp::socket`s.
///
/// @code
/// iocp::thread_pool pool(4);
/// iocp::acceptor listener(pool, iocp::endpoint::any(iocp::address_family::ipv4, 8080));
/// std::function<void()> accept_next = [&] {
///     listener.accept([&](std::error_code ec, iocp::socket conn, iocp::endpoint peer) {
///         if (ec == iocp::errc::operation_aborted) return;     // listener closed
///         if (ec == std::errc::too_many_files_open ||
///             ec == std::errc::too_many_files_open_in_system) { // see below
///             pool.post_after(std::chrono::milliseconds(100), [&] { accept_next(); });
///             return;
///         }
///         if (!ec) serve(std::move(conn), peer);
///         accept_next();
///     });
/// };
/// accept_next();
/// @endcode
///
/// Out of descriptors: on Linux an accept that finds the process (EMFILE) or the system
/// (ENFILE) out of descriptors completes with that error (`== std::errc::too_many_files_open`
/// / `too_many_files_open_in_system`) and leaves the client in the listen backlog (accept(2)),
/// so the next accept fails the same way at once: a loop that accepts again at once on every
/// error spins until a descriptor is freed. Wait before accepting again on those two errors,
/// as above; the waiting client is accepted once a descriptor is free.
///
/// Available wherever `IOCP_HAS_IO` is 1 (Win32: AcceptEx; Linux: accept4 through io_uring or
/// epoll).

#include "config.hpp"

#if IOCP_HAS_IO

#include <cstddef>
#include <exception>
#include <system_error>
#include <type_traits>
#include <utility>

#include "detail/io/handler_op.hpp"
#include "detail/io/io_state.hpp"
#include "detail/io/net.hpp"
#include "detail/io/start.hpp"
#include "endpoint.hpp"
#include "error.hpp"
#include "io_operation.hpp"
#include "socket.hpp"
#include "thread_pool.hpp"

namespace iocp {

class acceptor;
class accept_operation;

/// Starts accepting one connection with your own operation object (no allocation besides
/// the accepted socket's own state). Completes `op` exactly once on a worker of the
/// acceptor's pool: on success `op.take_socket()` returns the connection and
/// `op.remote_endpoint()` the peer; `errc::operation_aborted` after `cancel`/`close` (a
/// connection accepted but not yet delivered when the acceptor closes is closed too);
/// `errc::invalid_handle` if the acceptor is not open; `errc::closed` while the pool shuts
/// down. A connection that fails before it is handed over is skipped and the accept goes on,
/// as servers want: on Windows every per-connection AcceptEx failure (a client that reset,
/// ERROR_NETNAME_DELETED, WSAECONNRESET, Wine's ERROR_UNEXP_NET_ERR...); on Linux ECONNABORTED.
/// Linux queues a connection that its client resets after the handshake as an ordinary one:
/// it is accepted, and its first receive reports `errc::connection_reset`.
/// @returns an error only if nothing was started: `std::errc::invalid_argument` (no pool) or
/// `errc::closed` (the pool has shut down for good).
std::error_code start_accept(acceptor& a, accept_operation& op) noexcept;

/// The operation of one accept (AcceptEx): it creates the socket to accept into, updates its
/// context (SO_UPDATE_ACCEPT_CONTEXT) and decodes both endpoints (GetAcceptExSockaddrs).
class accept_operation : public io_operation {
public:
    /// After a successful completion: the accepted connection, associated with the
    /// acceptor's pool. Later calls (and calls after a failure) return a closed socket.
    socket take_socket() noexcept {
        thread_pool* p = pool();
        detail::io::io_state* st = std::exchange(accepted_state_, nullptr);
        if (p == nullptr)
            return {};
        if (st == nullptr)
            return socket(*p);
        return {*p, st};
    }

    /// After a successful completion: the local address of the connection.
    const endpoint& local_endpoint() const noexcept { return local_; }

    /// After a successful completion: the peer's address.
    const endpoint& remote_endpoint() const noexcept { return remote_; }

protected:
    /// An idle operation that calls `handler` when a connection was accepted or accepting
    /// failed.
    explicit accept_operation(handler_fn handler) noexcept : io_operation(handler) {}

    /// Closes a connection that was accepted but never taken.
    ~accept_operation() { discard_result(); }

private:
    friend std::error_code start_accept(acceptor&, accept_operation&) noexcept;

    void discard_result() noexcept {
        (void)detail::io::close_state(std::exchange(accepted_state_, nullptr));
        slot_.discard();
    }

    detail::io::request accept_request() noexcept {
        detail::io::request req;
        req.what = detail::io::request::kind::accept;
        req.accept_slot = &slot_;
        return req;
    }

    // Whether an accept that failed with `ec` (as io_operation normalised it) lost only that
    // one connection: the error table decides (a client that reset or aborted before we took
    // it, Wine's ERROR_UNEXP_NET_ERR for the same); our own close or cancel is not one.
    static bool lost_one_connection(const std::error_code& ec) noexcept {
        return detail::io::native::is_per_connection_error(ec);
    }

    static bool finish(io_operation* op, std::error_code& ec, std::size_t& bytes) noexcept {
        auto* self = static_cast<accept_operation*>(op);
        detail::io::io_state* st = detail::io::io_access::state(*op); // the listener
        if (!ec) {
            // Under the listener's lock: its owner may be closing it on another thread, and
            // SO_UPDATE_ACCEPT_CONTEXT (Win32) reads the listening socket.
            std::lock_guard lock(st->mutex);
            if (st->closed_by_us.load(std::memory_order_seq_cst)) {
                ec = make_error_code(errc::operation_aborted);
                self->slot_.drop(bytes); // the connection nobody will take
            }
        }
        if (!ec)
            self->accepted_state_ =
                self->slot_.take(detail::io::io_access::core(*op), bytes, *op->pool(), *st,
                                 self->local_, self->remote_, ec);
        bytes = 0;
        if (!ec)
            return true;
        self->discard_result();
        // A client that reset its connection before we accepted it is not the server's
        // problem: accept the next one instead (unless we are closing).
        if (lost_one_connection(ec)) {
            if (detail::io::io_access::restart(*op, ec, self->accept_request()))
                return false;       // accepting again (or its failure is on its way)
            self->discard_result(); // restart may have created a socket before failing
        }
        return true;
    }

    detail::io::native::accept_slot slot_;           // what the backend accepts into
    detail::io::io_state* accepted_state_ = nullptr; // the connection, until taken
    endpoint local_;
    endpoint remote_;
};

namespace detail::io {

// What an accept handler receives besides the error: the connection (closed on error) and
// the peer's address, taken out of the operation before it is freed.
template <>
struct handler_args<accept_operation> {
    socket conn;
    endpoint peer;
    handler_args(accept_operation& op, std::size_t) noexcept
        : conn(op.take_socket()), peer(op.remote_endpoint()) {}
    template <class Handler>
    void call(Handler& h, const std::error_code& ec) {
        if constexpr (std::is_invocable_v<Handler&, const std::error_code&, socket,
                                          const endpoint&>)
            h(ec, std::move(conn), peer);
        else
            h(ec, std::move(conn));
    }
};

} // namespace detail::io

/// A listening TCP socket associated with a `thread_pool`.
///
/// Lifetime and thread safety: as for `iocp::socket` (the pool must outlive it; closing or
/// destroying it cancels pending accepts, which complete with `errc::operation_aborted`;
/// shutting the pool down cancels them too). `accept`, `start_accept`, `cancel` and
/// `local_endpoint` may run concurrently; `open`, `close`, assignment and destruction must not
/// overlap any other call: an accept loop restarted from its handler and a `close` from
/// another thread need a mutex between them (see examples/echo_server.cpp). Several accepts
/// may be pending at once: that is how a server keeps up with bursts of connections.
class acceptor {
public:
    /// A closed acceptor without a pool.
    acceptor() noexcept = default;

    /// A closed acceptor whose operations will run on `pool`.
    explicit acceptor(thread_pool& pool) noexcept : pool_(&pool) {}

    /// Listens on `local` (see `open`). @throws std::system_error
    acceptor(thread_pool& pool, const endpoint& local, int backlog = SOMAXCONN) : pool_(&pool) {
        open(local, backlog);
    }

    /// Takes over `other`'s socket, pool and pending accepts.
    acceptor(acceptor&& other) noexcept
        : pool_(other.pool_), state_(std::exchange(other.state_, nullptr)) {}

    /// Closes this acceptor (cancelling its accepts), then takes over `other`'s.
    acceptor& operator=(acceptor&& other) noexcept {
        if (this != &other) {
            (void)detail::io::close_state(std::exchange(state_, nullptr));
            pool_ = other.pool_;
            state_ = std::exchange(other.state_, nullptr);
        }
        return *this;
    }

    acceptor(const acceptor&) = delete;
    acceptor& operator=(const acceptor&) = delete;

    /// Closes the acceptor, cancelling pending accepts.
    ~acceptor() { (void)detail::io::close_state(state_); }

    /// Creates a socket of `local`'s family, binds it to `local` (port 0: the system picks
    /// one, see `local_endpoint`) and listens with `backlog`. An IPv6 acceptor accepts IPv6
    /// only. An acceptor that was open is closed first.
    /// Errors: the system's (WSAEADDRINUSE, WSAEAFNOSUPPORT...); `std::errc::invalid_argument`
    /// without a pool or for an unspecified endpoint.
    void open(const endpoint& local, int backlog, std::error_code& ec) noexcept {
        close(ec);
        if (pool_ == nullptr || !local.is_specified()) {
            ec = std::make_error_code(std::errc::invalid_argument);
            return;
        }
        const int af = native_family(local.family());
        namespace native = detail::io::native;
        native_socket_type s = native::make_tcp_socket(af, ec);
        if (ec)
            return;
        native::before_listen_bind(s);
        // IPv6 only, as documented, on every system: Windows' default, but Linux's dual-stack
        // default (net.ipv6.bindv6only = 0, ipv6(7)) would also take IPv4 clients on `::`.
        const int v6_only = 1;
        if ((af == AF_INET6 &&
             native::sock_setopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &v6_only, sizeof v6_only) != 0) ||
            native::sock_bind(s, local.data(), local.size()) != 0 ||
            native::sock_listen(s, backlog) != 0)
            ec = native::last_socket_error();
        detail::io::io_state* st = nullptr;
        if (!ec)
            st = detail::io::open_state(*pool_, native::from_socket(s),
                                        detail::io::handle_kind::socket, af, ec);
        if (ec) {
            native::close_socket(s);
            return;
        }
        if ((ec = native::prepare_listener(*st))) {
            (void)detail::io::close_state(st); // closes the socket, gives back its reference
            return;
        }
        state_ = st;
    }
    /// As above. @throws std::system_error
    void open(const endpoint& local, int backlog = SOMAXCONN) {
        std::error_code ec;
        open(local, backlog, ec);
        detail::throw_if(ec, "iocp::acceptor::open");
    }

    /// True while listening.
    bool is_open() const noexcept { return state_ != nullptr; }

    /// The listening socket (INVALID_SOCKET, or -1 on Linux, when closed).
    native_socket_type native_handle() const noexcept {
        return state_ != nullptr ? state_->socket() : detail::io::native::invalid_socket;
    }

    /// The pool accepts complete on.
    thread_pool* pool() const noexcept { return pool_; }

    /// The address listened on, with the port the system picked for port 0.
    /// Errors: `errc::invalid_handle` when closed, the system's.
    endpoint local_endpoint(std::error_code& ec) const noexcept {
        if (state_ == nullptr) {
            ec = make_error_code(errc::invalid_handle);
            return {};
        }
        endpoint e;
        int len = endpoint::capacity();
        if (detail::io::native::sock_name(native_handle(), e.data(), &len) != 0) {
            ec = detail::io::native::last_socket_error();
            return {};
        }
        ec.clear();
        return e;
    }
    /// As above. @throws std::system_error
    endpoint local_endpoint() const {
        std::error_code ec;
        endpoint e = local_endpoint(ec);
        detail::throw_if(ec, "iocp::acceptor::local_endpoint");
        return e;
    }

    /// Accepts one connection; calls `handler(std::error_code, iocp::socket)` or
    /// `handler(std::error_code, iocp::socket, iocp::endpoint peer)` once, on a worker of the
    /// pool, never inside this call. The socket is connected and associated with the pool
    /// (closed on error). Errors in the handler: `errc::operation_aborted` (closed or
    /// cancelled), `errc::invalid_handle` (not open), `errc::closed` (pool shutting down),
    /// the system's. An exception from the handler goes to the pool's exception handler.
    /// @throws std::system_error if the acceptor has no pool (`std::errc::invalid_argument`)
    /// or the pool has shut down (`errc::closed`): the handler is then destroyed without
    /// running. `std::bad_alloc`.
    template <class Handler>
    void accept(Handler&& handler) {
        detail::io::start_handler_op<accept_operation>(
            std::forward<Handler>(handler), "iocp::acceptor::accept",
            [&](accept_operation& op) { return start_accept(*this, op); });
    }

    /// Cancels pending accepts (they complete with `errc::operation_aborted`); the acceptor
    /// keeps listening. Errors: `errc::invalid_handle` when closed.
    void cancel(std::error_code& ec) noexcept { ec = detail::io::cancel_state(state_); }
    /// As above. @throws std::system_error
    void cancel() { detail::throw_if(detail::io::cancel_state(state_), "iocp::acceptor::cancel"); }

    /// Stops listening; pending accepts complete with `errc::operation_aborted`. Closing a
    /// closed acceptor does nothing.
    void close(std::error_code& ec) noexcept {
        ec = detail::io::close_state(std::exchange(state_, nullptr));
    }
    /// As above. @throws std::system_error if closesocket reports an error (closed anyway).
    void close() {
        std::error_code ec;
        close(ec);
        detail::throw_if(ec, "iocp::acceptor::close");
    }

private:
    friend std::error_code start_accept(acceptor&, accept_operation&) noexcept;

    thread_pool* pool_ = nullptr;
    detail::io::io_state* state_ = nullptr; // non-null while open
};

inline std::error_code start_accept(acceptor& a, accept_operation& op) noexcept {
    if (a.pool_ == nullptr)
        return std::make_error_code(std::errc::invalid_argument);
    op.discard_result(); // a connection from an earlier use that nobody took
    std::error_code ec = detail::io::io_access::start(
        *a.pool_, a.state_, op, &accept_operation::finish, 0, op.accept_request());
    if (ec)
        op.discard_result(); // nothing started: close the socket it may have created
    return ec;
}

} // namespace iocp

#endif // IOCP_HAS_IO
