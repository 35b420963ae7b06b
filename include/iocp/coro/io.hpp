#pragma once
/// @file
/// Every I/O operation of `iocp::file`, `iocp::socket` and `iocp::acceptor` as an awaitable:
/// `async_recv`, `async_send`, `async_send_all`, `async_read_at`, `async_write_at`,
/// `async_connect`, `async_accept`.
///
/// @code
/// iocp::task<> echo(iocp::socket conn) {
///     char buf[4096];
///     for (;;) {
///         auto [ec, n] = co_await iocp::async_recv(conn, iocp::buffer(buf));
///         if (ec) co_return;                                   // eof, reset, aborted...
///         co_await iocp::async_send_all(conn, iocp::buffer(buf, n)).or_throw();
///     }
/// }
/// @endcode
///
/// - Results: `co_await` gives an `iocp::io_result` `{std::error_code ec, std::size_t bytes}`
///   (`async_connect`: a `std::error_code`; `async_accept`: an `iocp::accept_result` with the
///   socket and the peer's endpoint). `.or_throw()` on the awaitable gives the throwing variant:
///   the bytes (connect: nothing; accept: `std::pair<socket, endpoint>`), or
///   `std::system_error` with the same code. The codes are those of the `start_*` functions and
///   the handler-based calls (`errc::eof`, `errc::operation_aborted`, `errc::closed`, ...).
/// - The awaitable *is* the operation (an `iocp::io_operation`), living in the coroutine frame:
///   no allocation per awaited operation. It must be awaited where it is made (`co_await
///   iocp::async_recv(...)`): it cannot be moved.
/// - Where it resumes: on the pool worker that ran the completion, inside it (no extra hop).
///   When the completion came so fast that it ran before the `co_await` had finished
///   suspending (a send with room, data already there: a worker may run the completion while
///   the awaiting thread is still in await_suspend), the coroutine does not suspend: it goes on
///   at once on the thread that awaited (a worker, unless the coroutine ran elsewhere, as the
///   start of a `sync_wait`ed task does). Never inside the start call itself, never twice.
///   When nothing could be started (an argument refused, or the pool shut down for good) or
///   the stop token was already stopped, the `co_await` resumes at once, on its own thread.
/// - Cancellation: the last argument is an optional `std::stop_token`. A stop request cancels
///   this one operation (Win32: CancelIoEx with its OVERLAPPED; io_uring: an ASYNC_CANCEL of it;
///   epoll: it leaves its queue); the others of the object go on. It resumes exactly once: with
///   `errc::operation_aborted` if the cancel came first, with its own result if the I/O had
///   finished. The resumption is never inline inside `request_stop()`: it comes through the
///   pool's port, on a worker (`request_stop()` only asks; the completion, if it runs at the
///   same moment, waits for that short request to return before it resumes). A token already
///   stopped starts nothing: `errc::operation_aborted` at once. A cancelled receive may have
///   lost data.
///   A timeout: a `std::stop_source` stopped by a `pool.sleep_for` in another task.
/// - Shutdown: `join()`/`stop()` cancel the pending operations of every file and socket: the
///   coroutine resumes on a worker with `errc::operation_aborted`; operations started after
///   the cancel pass get `errc::closed` (on a worker), and after the pool has stopped for good
///   `errc::closed` at once. Every suspended coroutine is resumed exactly once on every path.
///
/// Thread safety: as the `start_*` functions: the object must stay open (or be closed by its
/// owner, which cancels), the buffers valid, until the `co_await` resumes.

#include "../config.hpp"

#if IOCP_HAS_IO

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stop_token>
#include <system_error>
#include <utility>

#include "../acceptor.hpp"
#include "../buffer.hpp"
#include "../detail/pool/coro_resume.hpp"
#include "../endpoint.hpp"
#include "../error.hpp"
#include "../file.hpp"
#include "../io_operation.hpp"
#include "../socket.hpp"

namespace iocp {

/// The result of an awaited read, write, receive or send.
struct io_result {
    std::error_code ec; ///< empty on success
    std::size_t bytes;  ///< bytes transferred (send_all: sent before an error)
};

/// The result of an awaited accept.
struct accept_result {
    std::error_code ec; ///< empty on success
    socket conn;        ///< the connection (closed on error), on the acceptor's pool
    endpoint peer;      ///< the peer's address
};

namespace detail::coro {

// The operation and its resumption, common to every awaitable. `Base` is io_operation or one
// of its kinds (send_all_operation, accept_operation); `Derived` starts it (start()) and may
// take more out of it when it completes (on_done()).
template <class Base, class Derived>
class io_awaitable : public Base {
public:
    io_awaitable(const io_awaitable&) = delete;
    io_awaitable& operator=(const io_awaitable&) = delete;

    bool await_ready() const noexcept { return false; }

    bool await_suspend(std::coroutine_handle<> h) noexcept {
        handle_ = h;
        if (token_.stop_requested()) {
            ec_ = make_error_code(errc::operation_aborted);
            return false; // nothing started
        }
        if (std::error_code ec = static_cast<Derived*>(this)->start()) {
            ec_ = ec;
            return false; // nothing started, nothing will complete
        }
        // TRICKY: from here a worker may be completing the operation. The stop callback is
        // registered now (it may run the cancel inline, here, if stop was requested meanwhile);
        // the gate keeps the completion from resuming (and freeing) the frame under us.
        if (token_.stop_possible())
            stop_.arm(token_, &io_awaitable::cancel, this);
        return gate_.suspend();
    }

protected:
    explicit io_awaitable(std::stop_token token) noexcept
        : Base(&io_awaitable::completed), token_(std::move(token)) {
        this->set_abandon(&io_awaitable::abandoned);
    }
    ~io_awaitable() = default;

    // For await_resume: the stop callback is gone (it may still be registered when the
    // completion came before await_suspend ended).
    void end_wait() noexcept { stop_.disarm(); }

    std::error_code ec_;
    std::size_t bytes_ = 0;

private:
    // The stop request (detail::stop_registration runs it at most once, and never after
    // disarm() returned).
    static void cancel(void* self) noexcept {
        io::io_access::cancel(*static_cast<io_awaitable*>(self));
    }

    static io_awaitable* self_of(io_operation* op) noexcept {
        return static_cast<io_awaitable*>(static_cast<Base*>(op));
    }

    // The completion, on a worker: resume the coroutine right here.
    static void completed(io_operation* op, const std::error_code& ec, std::size_t bytes) noexcept {
        io_awaitable* self = self_of(op);
        self->ec_ = ec;
        self->bytes_ = bytes;
        static_cast<Derived*>(self)->on_done();
        self->resume();
    }

    // Destroy mode (the pool's final drain; its shutdown rules this out for a started
    // operation): resume on the draining thread with errc::closed rather than leave the
    // coroutine suspended for ever.
    static void abandoned(io_operation* op) noexcept {
        io_awaitable* self = self_of(op);
        self->ec_ = make_error_code(errc::closed);
        self->bytes_ = 0;
        self->resume();
    }

    void resume() noexcept {
        if (!gate_.complete())
            return; // await_suspend is still running: it resumes
        // TRICKY: disarm() waits for a cancel running on another thread (it reads this operation
        // and its file's state: both alive until this handler returns).
        stop_.disarm();
        resume_loop(handle_);
    }

    std::coroutine_handle<> handle_;
    std::stop_token token_;
    stop_registration stop_;
    resume_gate gate_;
};

// How each transfer starts. `Object` is the file or socket, `Buffer` its buffer type.
struct recv_kind {
    using object = socket;
    using buffer = mutable_buffer;
    using base = io_operation;
    static std::error_code start(socket& s, io_operation& op, std::span<const mutable_buffer> b,
                                 std::uint64_t) noexcept {
        return start_recv(s, op, b);
    }
};
struct send_kind {
    using object = socket;
    using buffer = const_buffer;
    using base = io_operation;
    static std::error_code start(socket& s, io_operation& op, std::span<const const_buffer> b,
                                 std::uint64_t) noexcept {
        return start_send(s, op, b);
    }
};
struct send_all_kind {
    using object = socket;
    using buffer = const_buffer;
    using base = send_all_operation;
    static std::error_code start(socket& s, send_all_operation& op, std::span<const const_buffer> b,
                                 std::uint64_t) noexcept {
        return start_send_all(s, op, b);
    }
};
struct read_at_kind {
    using object = file;
    using buffer = mutable_buffer;
    using base = io_operation;
    static std::error_code start(file& f, io_operation& op, std::span<const mutable_buffer> b,
                                 std::uint64_t offset) noexcept {
        return start_read_at(f, op, offset, b[0]);
    }
};
struct write_at_kind {
    using object = file;
    using buffer = const_buffer;
    using base = io_operation;
    static std::error_code start(file& f, io_operation& op, std::span<const const_buffer> b,
                                 std::uint64_t offset) noexcept {
        return start_write_at(f, op, offset, b[0]);
    }
};

/// A read, write, receive or send in a coroutine (see coro/io.hpp).
template <class Kind, bool Throw>
class transfer_awaitable final
    : public io_awaitable<typename Kind::base, transfer_awaitable<Kind, Throw>> {
    using base = io_awaitable<typename Kind::base, transfer_awaitable<Kind, Throw>>;
    using buffer_type = typename Kind::buffer;

public:
    transfer_awaitable(typename Kind::object& obj, std::span<const buffer_type> buffers,
                       std::uint64_t offset, std::stop_token token) noexcept
        : base(token), obj_(&obj), buffers_(buffers), offset_(offset),
          token_copy_(std::move(token)) {}
    transfer_awaitable(typename Kind::object& obj, buffer_type one, std::uint64_t offset,
                       std::stop_token token) noexcept
        : base(token), obj_(&obj), one_(one), buffers_(&one_, 1), offset_(offset),
          token_copy_(std::move(token)) {}

    /// The throwing variant: `co_await` gives the bytes or throws `std::system_error`.
    transfer_awaitable<Kind, true> or_throw() && noexcept {
        if (buffers_.data() == &one_)
            return {*obj_, one_, offset_, take_token()};
        return {*obj_, buffers_, offset_, take_token()};
    }

    /// The result (see coro/io.hpp).
    auto await_resume() {
        this->end_wait();
        if constexpr (Throw) {
            detail::throw_if(this->ec_, "iocp::async I/O");
            return this->bytes_;
        } else {
            return io_result{this->ec_, this->bytes_};
        }
    }

private:
    template <class, class>
    friend class io_awaitable;
    template <class, bool>
    friend class transfer_awaitable;

    std::error_code start() noexcept { return Kind::start(*obj_, *this, buffers_, offset_); }
    void on_done() noexcept {}
    std::stop_token take_token() noexcept { return std::move(token_copy_); }

    typename Kind::object* obj_;
    buffer_type one_{};
    std::span<const buffer_type> buffers_;
    std::uint64_t offset_;
    std::stop_token token_copy_; // handed to the awaitable or_throw() makes
};

/// A connect in a coroutine (see coro/io.hpp).
template <bool Throw>
class connect_awaitable final : public io_awaitable<io_operation, connect_awaitable<Throw>> {
    using base = io_awaitable<io_operation, connect_awaitable<Throw>>;

public:
    connect_awaitable(socket& s, const endpoint& peer, std::stop_token token) noexcept
        : base(token), sock_(&s), peer_(peer), token_copy_(std::move(token)) {}

    /// The throwing variant: `co_await` throws `std::system_error` on error.
    connect_awaitable<true> or_throw() && noexcept {
        return {*sock_, peer_, std::move(token_copy_)};
    }

    /// The result (see coro/io.hpp).
    auto await_resume() {
        this->end_wait();
        if constexpr (Throw)
            detail::throw_if(this->ec_, "iocp::async_connect");
        else
            return this->ec_;
    }

private:
    template <class, class>
    friend class io_awaitable;

    std::error_code start() noexcept { return start_connect(*sock_, *this, peer_); }
    void on_done() noexcept {}

    socket* sock_;
    endpoint peer_; // copied: the caller's may be a temporary of an earlier statement
    std::stop_token token_copy_;
};

/// An accept in a coroutine (see coro/io.hpp).
template <bool Throw>
class accept_awaitable final : public io_awaitable<accept_operation, accept_awaitable<Throw>> {
    using base = io_awaitable<accept_operation, accept_awaitable<Throw>>;

public:
    accept_awaitable(acceptor& a, std::stop_token token) noexcept
        : base(token), acceptor_(&a), token_copy_(std::move(token)) {}

    /// The throwing variant: `co_await` gives `std::pair<socket, endpoint>` or throws
    /// `std::system_error`.
    accept_awaitable<true> or_throw() && noexcept { return {*acceptor_, std::move(token_copy_)}; }

    /// The result (see coro/io.hpp).
    auto await_resume() {
        this->end_wait();
        if constexpr (Throw) {
            detail::throw_if(this->ec_, "iocp::async_accept");
            return std::pair<socket, endpoint>(std::move(conn_), peer_);
        } else {
            return accept_result{this->ec_, std::move(conn_), peer_};
        }
    }

private:
    template <class, class>
    friend class io_awaitable;

    std::error_code start() noexcept { return start_accept(*acceptor_, *this); }
    // On the worker, before resuming: the connection and the peer leave the operation.
    void on_done() noexcept {
        if (!this->ec_) {
            conn_ = this->take_socket();
            peer_ = this->remote_endpoint();
        }
    }

    acceptor* acceptor_;
    std::stop_token token_copy_;
    socket conn_;
    endpoint peer_;
};

} // namespace detail::coro

/// Receives into `buffer` (see coro/io.hpp): `co_await` gives `{ec, bytes}`; `errc::eof` when
/// the peer closed its side.
inline detail::coro::transfer_awaitable<detail::coro::recv_kind, false>
async_recv(socket& s, mutable_buffer buffer, std::stop_token stop = {}) noexcept {
    return {s, buffer, 0, std::move(stop)};
}
/// As above, scattering into up to `max_buffers` buffers (the span must outlive the co_await).
inline detail::coro::transfer_awaitable<detail::coro::recv_kind, false>
async_recv(socket& s, std::span<const mutable_buffer> buffers, std::stop_token stop = {}) noexcept {
    return {s, buffers, 0, std::move(stop)};
}

/// One send of `buffer`, which may take fewer bytes than offered (see `async_send_all`).
inline detail::coro::transfer_awaitable<detail::coro::send_kind, false>
async_send(socket& s, const_buffer buffer, std::stop_token stop = {}) noexcept {
    return {s, buffer, 0, std::move(stop)};
}
/// As above, gathering up to `max_buffers` buffers.
inline detail::coro::transfer_awaitable<detail::coro::send_kind, false>
async_send(socket& s, std::span<const const_buffer> buffers, std::stop_token stop = {}) noexcept {
    return {s, buffers, 0, std::move(stop)};
}

/// Sends all of `buffer`, continuing after partial sends: `bytes` is the total sent.
inline detail::coro::transfer_awaitable<detail::coro::send_all_kind, false>
async_send_all(socket& s, const_buffer buffer, std::stop_token stop = {}) noexcept {
    return {s, buffer, 0, std::move(stop)};
}
/// As above, for up to `max_buffers` buffers.
inline detail::coro::transfer_awaitable<detail::coro::send_all_kind, false>
async_send_all(socket& s, std::span<const const_buffer> buffers,
               std::stop_token stop = {}) noexcept {
    return {s, buffers, 0, std::move(stop)};
}

/// Reads into `buffer` at `offset`; `errc::eof` at the end of the file.
inline detail::coro::transfer_awaitable<detail::coro::read_at_kind, false>
async_read_at(file& f, std::uint64_t offset, mutable_buffer buffer,
              std::stop_token stop = {}) noexcept {
    return {f, buffer, offset, std::move(stop)};
}

/// Writes `buffer` at `offset`.
inline detail::coro::transfer_awaitable<detail::coro::write_at_kind, false>
async_write_at(file& f, std::uint64_t offset, const_buffer buffer,
               std::stop_token stop = {}) noexcept {
    return {f, buffer, offset, std::move(stop)};
}

/// Connects `s` to `peer` (opening and binding it as `socket::connect` does): `co_await` gives
/// the `std::error_code` (`errc::connection_refused`, ...).
inline detail::coro::connect_awaitable<false> async_connect(socket& s, const endpoint& peer,
                                                            std::stop_token stop = {}) noexcept {
    return {s, peer, std::move(stop)};
}

/// Accepts a connection: `co_await` gives an `accept_result`.
inline detail::coro::accept_awaitable<false> async_accept(acceptor& a,
                                                          std::stop_token stop = {}) noexcept {
    return {a, std::move(stop)};
}

} // namespace iocp

#endif // IOCP_HAS_IO
