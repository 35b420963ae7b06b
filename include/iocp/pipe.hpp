#pragma once
/// @file
/// Named pipes, the classic IOCP IPC server: `iocp::named_pipe_server` keeps N instances
/// listening (CreateNamedPipe + an overlapped ConnectNamedPipe each) and hands every client to
/// your handler as an `iocp::named_pipe`; `named_pipe::connect` is the client side (CreateFile,
/// waiting a bounded time for a busy pipe). Reads and writes complete on a `thread_pool`, with
/// the errors sockets have: the other end's close is `errc::eof` for a read (ERROR_BROKEN_PIPE)
/// and `errc::connection_reset` for a write (ERROR_NO_DATA, as EPIPE on Linux); our own `close`
/// or `cancel` is `errc::operation_aborted`.
///
/// @code
/// iocp::thread_pool pool(4);
/// iocp::named_pipe_server server(pool, L"\\\\.\\pipe\\my-service");
/// server.listen([](std::error_code ec, iocp::named_pipe client) {
///     if (ec) return;                          // an instance could not be replaced
///     auto conn = std::make_shared<iocp::named_pipe>(std::move(client));
///     static char buf[512];                    // (one per connection in a real server)
///     conn->read(iocp::buffer(buf), [conn](std::error_code ec, std::size_t n) {
///         if (ec) return;                      // errc::eof: the client closed its end
///         conn->write_all(iocp::buffer(buf, n), [conn](std::error_code, std::size_t) {});
///     });
/// });
///
/// iocp::named_pipe client(pool);
/// client.connect(L"\\\\.\\pipe\\my-service", std::chrono::seconds(5));
/// @endcode
///
/// Win32 only (`IOCP_HAS_IOCP`). On Linux the same API over Unix-domain stream sockets would
/// need Unix-domain addresses in the I/O layer's sockets (it has IPv4 and IPv6 only); it is not
/// provided: use `iocp::socket` over loopback TCP there.

#include "config.hpp"

#if IOCP_HAS_IOCP || defined(IOCP_DOXYGEN) // the API docs show the Win32-only API too

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "buffer.hpp"
#include "detail/io/handler_op.hpp"
#include "detail/io/io_state.hpp"
#include "detail/io/skip_on_success.hpp"
#include "detail/io/start.hpp"
#include "detail/time.hpp"
#include "detail/win32/windows.hpp"
#include "error.hpp"
#include "io_operation.hpp"
#include "thread_pool.hpp"
#include "unique_handle.hpp"

namespace iocp {

class named_pipe;

/// An operation that writes a whole buffer, starting a new write after each partial one (a
/// pipe in byte mode may take fewer bytes than offered: PIPE_NOWAIT, a full buffer). Derive
/// from it for `iocp::start_write_all`; the completion function receives the total written
/// (also on error: what was written before the error).
class write_all_operation : public io_operation {
protected:
    /// An idle operation that calls `handler` when everything was written or writing failed.
    explicit write_all_operation(handler_fn handler) noexcept : io_operation(handler) {}
    ~write_all_operation() = default;

private:
    friend std::error_code start_write_all(named_pipe&, write_all_operation&,
                                           const_buffer) noexcept;

    // 2 GiB less 4 KiB per WriteFile: it takes a DWORD.
    static constexpr std::size_t max_write = 0x7FFFF000u;

    detail::io::request remaining() const noexcept {
        detail::io::request req;
        req.what = detail::io::request::kind::write_at; // pipes ignore the offset
        req.bufs[0] = {const_cast<char*>(static_cast<const char*>(buffer_.data)) + written_,
                       (std::min)(buffer_.size - written_, max_write)};
        req.count = 1;
        return req;
    }

    static bool finish(io_operation* op, std::error_code& ec, std::size_t& bytes) noexcept {
        auto* self = static_cast<write_all_operation*>(op);
        self->written_ += bytes;
        if (!ec && self->written_ < self->buffer_.size) {
            if (bytes == 0)
                ec = std::make_error_code(std::errc::io_error); // no progress: never loop
            else if (detail::io::io_access::restart(*op, ec, self->remaining()))
                return false; // the rest is on its way
        }
        bytes = self->written_;
        return true;
    }

    const_buffer buffer_{};
    std::size_t written_ = 0;
};

/// Starts an overlapped read (ReadFile) of up to `buffer.size` bytes with your own operation
/// (no allocation). Completes `op` exactly once on a worker of the pipe's pool with the bytes
/// read; `errc::eof` when the other end closed (ERROR_BROKEN_PIPE) and nothing is left to
/// read; `errc::operation_aborted` after `cancel`/`close` or at pool shutdown;
/// `errc::invalid_handle` if the pipe is not open; `errc::closed` while the pool shuts down.
/// A read of a 0-byte write of the other end completes with 0 bytes (not eof).
/// @returns an error only if nothing was started: `std::errc::invalid_argument` for a pipe
/// without a pool, `errc::closed` when the pool has shut down for good.
std::error_code start_read(named_pipe& p, io_operation& op, mutable_buffer buffer) noexcept;

/// Starts one overlapped write (WriteFile) of `buffer`; the completion reports the bytes the
/// write took. `errc::connection_reset` when the other end has closed (ERROR_NO_DATA). Same
/// rules and returned errors as `start_read`.
std::error_code start_write(named_pipe& p, io_operation& op, const_buffer buffer) noexcept;

/// Starts writing all of `buffer`, continuing after partial writes; the completion reports the
/// total written. Same rules and returned errors as `start_write`.
std::error_code start_write_all(named_pipe& p, write_all_operation& op,
                                const_buffer buffer) noexcept;

/// One connected end of a named pipe: a server instance handed over by `named_pipe_server`, or
/// a client opened by `connect`. Byte mode, duplex, overlapped, associated with a pool.
///
/// Lifetime: the pool must outlive the pipe. Closing or destroying it cancels the pending
/// operations (CancelIoEx, then CloseHandle): each completes once with
/// `errc::operation_aborted` (or its result); the other end's reads then end with `errc::eof`.
/// Data written and not yet read by the other end stays readable by it. If the pool shuts
/// down, pending operations are cancelled and waited for, as for sockets.
///
/// Thread safety: `read`, `write`, `write_all`, the `start_*` functions and `cancel` may run
/// concurrently with each other (keep one write pending at a time if the order of the bytes
/// matters); `connect`, `assign`, `close`, assignment and destruction must not overlap any
/// other call on the object.
class named_pipe {
public:
    /// A closed pipe without a pool: it can only be assigned to.
    named_pipe() noexcept = default;

    /// A closed pipe whose operations will run on `pool` (`connect` opens it).
    explicit named_pipe(thread_pool& pool) noexcept : pool_(&pool) {}

    /// Takes over `other`'s handle, pool and pending operations.
    named_pipe(named_pipe&& other) noexcept
        : pool_(other.pool_), state_(std::exchange(other.state_, nullptr)) {}

    /// Closes this pipe (cancelling its operations), then takes over `other`'s.
    named_pipe& operator=(named_pipe&& other) noexcept {
        if (this != &other) {
            (void)detail::io::close_state(std::exchange(state_, nullptr));
            pool_ = other.pool_;
            state_ = std::exchange(other.state_, nullptr);
        }
        return *this;
    }

    named_pipe(const named_pipe&) = delete;
    named_pipe& operator=(const named_pipe&) = delete;

    /// Closes the pipe, cancelling pending operations (they still complete, aborted).
    ~named_pipe() { (void)detail::io::close_state(state_); }

    /// Connects to the pipe `name` (its full name, as `L"\\\\.\\pipe\\my-service"` in C++, or
    /// with a server's name in place of the dot) as a
    /// client: CreateFile, and while every instance is busy (ERROR_PIPE_BUSY) WaitNamedPipe and
    /// try again, for at most `timeout` in all (`iocp::infinite`: no limit; zero or negative:
    /// one try). Blocks the calling thread meanwhile (Windows has
    /// no overlapped form of either call): keep `timeout` short when called on a worker. A pipe
    /// that was open is closed first.
    /// Errors: `errc::timed_out` if no instance became free in time; the system's:
    /// ERROR_FILE_NOT_FOUND (`== std::errc::no_such_file_or_directory`) when no server has the
    /// name (reported at once, not waited for), ERROR_ACCESS_DENIED, ...;
    /// `std::errc::invalid_argument` without a pool or for an empty name.
    void connect(const std::wstring& name, std::chrono::milliseconds timeout,
                 std::error_code& ec) noexcept {
        close(ec);
        if (pool_ == nullptr || name.empty()) {
            ec = std::make_error_code(std::errc::invalid_argument);
            return;
        }
        // Saturating: `iocp::infinite` (milliseconds::max()) would overflow steady_clock's
        // nanoseconds into a deadline in the past.
        const auto deadline = detail::deadline_after<std::chrono::steady_clock>(
            std::chrono::steady_clock::now(), timeout);
        for (;;) {
            HANDLE h = ::CreateFileW(name.c_str(), GENERIC_READ | GENERIC_WRITE, 0, nullptr,
                                     OPEN_EXISTING, FILE_FLAG_OVERLAPPED, nullptr);
            if (h != INVALID_HANDLE_VALUE) {
                adopt(h, ec);
                return;
            }
            const DWORD error = ::GetLastError();
            if (error != ERROR_PIPE_BUSY) {
                ec.assign(static_cast<int>(error), std::system_category());
                return;
            }
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) {
                ec = make_error_code(errc::timed_out);
                return;
            }
            // Waits for an instance to listen, in slices: WaitNamedPipe's timeout is a DWORD
            // (and NMPWAIT_USE_DEFAULT_WAIT is 0), and Wine returns at once where Windows waits.
            const auto slice = (std::min)(left, std::chrono::milliseconds(wait_slice_ms));
            if (!::WaitNamedPipeW(name.c_str(), static_cast<DWORD>(slice.count()))) {
                const DWORD wait_error = ::GetLastError();
                if (wait_error != ERROR_SEM_TIMEOUT && wait_error != ERROR_PIPE_BUSY &&
                    wait_error != ERROR_FILE_NOT_FOUND) {
                    ec.assign(static_cast<int>(wait_error), std::system_category());
                    return;
                }
                // Not waited (Wine), or the server is between instances: do not spin.
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
        }
    }
    /// As above. @throws std::system_error
    void connect(const std::wstring& name, std::chrono::milliseconds timeout) {
        std::error_code ec;
        connect(name, timeout, ec);
        detail::throw_if(ec, "iocp::named_pipe::connect");
    }

    /// Takes ownership of a pipe end opened with FILE_FLAG_OVERLAPPED and associates it with
    /// the pool; a pipe that was open is closed first. On failure `handle` is closed.
    /// Errors: as `overlapped_handle::assign`.
    void assign(unique_handle handle, std::error_code& ec) noexcept {
        close(ec);
        if (pool_ == nullptr) {
            ec = std::make_error_code(std::errc::invalid_argument);
            return;
        }
        adopt(handle.release(), ec);
    }
    /// As above. @throws std::system_error
    void assign(unique_handle handle) {
        std::error_code ec;
        assign(std::move(handle), ec);
        detail::throw_if(ec, "iocp::named_pipe::assign");
    }

    /// True while a pipe end is held.
    bool is_open() const noexcept { return state_ != nullptr; }

    /// The handle (INVALID_HANDLE_VALUE when closed), still owned by this object.
    HANDLE native_handle() const noexcept {
        return state_ != nullptr ? state_->get() : INVALID_HANDLE_VALUE;
    }

    /// The pool the pipe's operations complete on (nullptr when default-constructed).
    thread_pool* pool() const noexcept { return pool_; }

    /// Reads up to `buffer.size` bytes; calls `handler(std::error_code, std::size_t bytes)`
    /// once, on a worker, never inside this call. Errors as `start_read`. The buffer must stay
    /// valid until the handler runs; an exception from the handler goes to the pool's handler.
    /// @throws std::system_error if nothing could be started (see `start_read`; the handler is
    /// then destroyed without running), `std::bad_alloc`.
    template <class Handler>
    void read(mutable_buffer buffer, Handler&& handler) {
        detail::io::start_handler_op<io_operation>(
            std::forward<Handler>(handler), "iocp::named_pipe::read",
            [&](io_operation& op) { return start_read(*this, op, buffer); });
    }

    /// Writes `buffer` with one WriteFile; calls `handler(std::error_code, std::size_t bytes)`
    /// with what it took. Same rules as `read`; errors as `start_write`.
    template <class Handler>
    void write(const_buffer buffer, Handler&& handler) {
        detail::io::start_handler_op<io_operation>(
            std::forward<Handler>(handler), "iocp::named_pipe::write",
            [&](io_operation& op) { return start_write(*this, op, buffer); });
    }

    /// Writes all of `buffer` (sockets' `send_all`), continuing after partial writes; calls
    /// `handler(std::error_code, std::size_t total)` once. Same rules as `read`.
    template <class Handler>
    void write_all(const_buffer buffer, Handler&& handler) {
        detail::io::start_handler_op<write_all_operation>(
            std::forward<Handler>(handler), "iocp::named_pipe::write_all",
            [&](write_all_operation& op) { return start_write_all(*this, op, buffer); });
    }

    /// Cancels the pending operations (CancelIoEx): they complete with
    /// `errc::operation_aborted`, or their result if they finished first. The pipe stays open.
    /// Errors: `errc::invalid_handle` when closed.
    void cancel(std::error_code& ec) noexcept { ec = detail::io::cancel_state(state_); }
    /// As above. @throws std::system_error
    void cancel() {
        detail::throw_if(detail::io::cancel_state(state_), "iocp::named_pipe::cancel");
    }

    /// As `overlapped_handle::skip_completion_port_on_success`: a read that finds data waiting
    /// (or a write that fits) then completes without a port packet. Set it before starting any
    /// operation.
    void skip_completion_port_on_success(std::error_code& ec) noexcept {
        ec = detail::io::enable_skip_on_success(state_);
    }
    /// As above. @throws std::system_error
    void skip_completion_port_on_success() {
        detail::throw_if(detail::io::enable_skip_on_success(state_),
                         "iocp::named_pipe::skip_completion_port_on_success");
    }
    /// Whether completions that succeed at once skip the port (see above).
    bool skips_completion_port_on_success() const noexcept {
        return detail::io::skips_on_success(state_);
    }

    /// Closes the pipe end: pending operations complete with `errc::operation_aborted`; the
    /// other end's reads end with `errc::eof`. Closing a closed pipe does nothing.
    void close(std::error_code& ec) noexcept {
        ec = detail::io::close_state(std::exchange(state_, nullptr));
    }
    /// As above. @throws std::system_error if CloseHandle fails (the pipe is closed anyway).
    void close() {
        std::error_code ec;
        close(ec);
        detail::throw_if(ec, "iocp::named_pipe::close");
    }

private:
    friend class named_pipe_server;
    friend std::error_code start_read(named_pipe&, io_operation&, mutable_buffer) noexcept;
    friend std::error_code start_write(named_pipe&, io_operation&, const_buffer) noexcept;
    friend std::error_code start_write_all(named_pipe&, write_all_operation&,
                                           const_buffer) noexcept;

    // The longest single WaitNamedPipe of connect (ms): short enough that the total stays
    // close to the caller's timeout.
    static constexpr long wait_slice_ms = 50;
    // 2 GiB less 4 KiB per ReadFile/WriteFile (a DWORD).
    static constexpr std::size_t max_transfer = 0x7FFFF000u;

    void adopt(HANDLE h, std::error_code& ec) noexcept {
        state_ = detail::io::open_state(*pool_, h, detail::io::handle_kind::file, 0, ec);
        if (ec)
            detail::io::native::close_unowned(h);
    }

    std::error_code start(io_operation& op, detail::io::finish_fn finish, std::size_t requested,
                          const detail::io::request& req) noexcept {
        if (pool_ == nullptr)
            return std::make_error_code(std::errc::invalid_argument);
        return detail::io::io_access::start(*pool_, state_, op, finish, requested, req);
    }

    thread_pool* pool_ = nullptr;
    detail::io::io_state* state_ = nullptr; // non-null while open
};

inline std::error_code start_read(named_pipe& p, io_operation& op, mutable_buffer buffer) noexcept {
    detail::io::request req;
    req.what = detail::io::request::kind::read_at; // pipes ignore the offset
    req.bufs[0] = {buffer.data, (std::min)(buffer.size, named_pipe::max_transfer)};
    req.count = 1;
    return p.start(op, nullptr, req.bufs[0].size, req);
}

inline std::error_code start_write(named_pipe& p, io_operation& op, const_buffer buffer) noexcept {
    detail::io::request req;
    req.what = detail::io::request::kind::write_at;
    req.bufs[0] = {const_cast<void*>(buffer.data),
                   (std::min)(buffer.size, named_pipe::max_transfer)};
    req.count = 1;
    return p.start(op, nullptr, 0, req);
}

inline std::error_code start_write_all(named_pipe& p, write_all_operation& op,
                                       const_buffer buffer) noexcept {
    op.buffer_ = buffer;
    op.written_ = 0;
    return p.start(op, &write_all_operation::finish, 0, op.remaining());
}

/// How a `named_pipe_server` creates its instances (CreateNamedPipe's parameters).
struct named_pipe_server_options {
    /// Instances kept listening at any time (each with a ConnectNamedPipe pending), 1 to
    /// `max_listening`; more take a burst of clients without ERROR_PIPE_BUSY. Connected
    /// instances do not count: there is no limit on them (PIPE_UNLIMITED_INSTANCES).
    std::size_t listening = 4;
    /// The most instances `listening` may ask for (the system's own limit is 254 instances).
    static constexpr std::size_t max_listening = 64;
    /// Bytes the system reserves for what clients write to an instance (advisory).
    DWORD in_buffer_size = 4096;
    /// Bytes the system reserves for what an instance writes to its client (advisory).
    DWORD out_buffer_size = 4096;
    /// Refuse clients on other machines (PIPE_REJECT_REMOTE_CLIENTS).
    bool reject_remote_clients = true;
};

/// The server side of a named pipe: keeps `listening` instances with a ConnectNamedPipe
/// pending and calls your handler with each client that connects, then replaces that instance
/// so that as many listen again.
///
/// The first instance is created with FILE_FLAG_FIRST_PIPE_INSTANCE: if another process
/// already owns the name, `listen` fails (ERROR_ACCESS_DENIED) rather than sharing it. A client
/// that connects between CreateNamedPipe and ConnectNamedPipe (ERROR_PIPE_CONNECTED) is taken
/// like any other; one that goes away before it is taken (ERROR_NO_DATA) is skipped.
///
/// Lifetime: the pool must outlive the server. `close()` (or the destructor) cancels the
/// listening instances; connections already handed over are yours and stay open. At pool
/// shutdown the listening instances are cancelled like any pending I/O and the server stops.
///
/// Thread safety: `close` and `listening` may be called from any thread, also from the
/// connection handler; `listen` once, before anything else.
class named_pipe_server {
public:
    /// A server for the pipe `name` (its full name, as `L"\\\\.\\pipe\\my-service"` in C++), not
    /// listening yet.
    named_pipe_server(thread_pool& pool, std::wstring name, named_pipe_server_options options = {})
        : pool_(&pool), name_(std::move(name)), options_(options) {
        options_.listening = std::clamp<std::size_t>(options_.listening, 1,
                                                     named_pipe_server_options::max_listening);
    }

    named_pipe_server(const named_pipe_server&) = delete;
    named_pipe_server& operator=(const named_pipe_server&) = delete;

    /// Stops listening (see `close`).
    ~named_pipe_server() { close(); }

    /// Starts listening: calls `handler(std::error_code, iocp::named_pipe client)` on a worker
    /// for each client that connects (concurrently, on several workers, for several clients),
    /// with an empty error and the connected instance. With an error (and an empty pipe) when
    /// the server could not replace an instance (CreateNamedPipe failed): one listening
    /// instance fewer from then on. Not called for the cancellation of `close` or shutdown.
    /// An exception from the handler goes to the pool's exception handler.
    /// Errors: the system's for the first instance (ERROR_ACCESS_DENIED: the name is taken,
    /// ERROR_INVALID_NAME...); `std::errc::invalid_argument` if already listening or closed;
    /// `errc::closed` if the pool has shut down.
    template <class Handler>
    void listen(Handler&& handler, std::error_code& ec) {
        auto c = std::make_shared<core_of<std::decay_t<Handler>>>(std::forward<Handler>(handler));
        c->pool = pool_;
        c->name = name_;
        c->options = options_;
        {
            std::lock_guard lock(mutex_);
            if (core_ != nullptr || closed_) {
                ec = std::make_error_code(std::errc::invalid_argument);
                return;
            }
            core_ = c;
        }
        ec.clear();
        for (std::size_t i = 0; i < options_.listening; ++i) {
            auto* l = new listener(c);
            std::unique_lock lock(c->mutex);
            c->live.push_back(l);
            ec = l->arm(lock, i == 0);
            if (ec) {
                l->remove(lock);
                lock.unlock();
                delete l;
                if (i == 0)
                    return; // nobody listens: the caller hears why
                ec.clear();
                break; // some listen: serve with those
            }
        }
    }
    /// As above. @throws std::system_error
    template <class Handler>
    void listen(Handler&& handler) {
        std::error_code ec;
        listen(std::forward<Handler>(handler), ec);
        detail::throw_if(ec, "iocp::named_pipe_server::listen");
    }

    /// The instances listening now (a ConnectNamedPipe pending or being replaced).
    std::size_t listening() const {
        std::shared_ptr<core> c = current();
        if (c == nullptr)
            return 0;
        std::lock_guard lock(c->mutex);
        return c->live.size();
    }

    /// Stops listening: cancels every listening instance (each completes aborted, and is
    /// closed and freed on a worker). Clients already handed over stay connected; a client
    /// whose connection completes after this call is closed, not handed over (a handler call
    /// already under way on a worker may still be running when this returns). Does not wait;
    /// calling it again does nothing.
    void close() noexcept {
        std::shared_ptr<core> c;
        {
            std::lock_guard lock(mutex_);
            closed_ = true;
            c = core_; // kept: listening() counts the instances still winding down
        }
        if (c == nullptr)
            return;
        std::lock_guard lock(c->mutex);
        c->closed = true;
        for (listener* l : c->live)
            (void)detail::io::cancel_state(l->instance.state_);
    }

private:
    struct listener;

    // What the listeners share: the handler, and the list close() cancels.
    struct core {
        thread_pool* pool = nullptr;
        std::wstring name;
        named_pipe_server_options options;
        std::mutex mutex;
        bool closed = false;         // under mutex
        std::vector<listener*> live; // under mutex
        virtual void call(std::error_code ec, named_pipe p) = 0;
        core() = default;
        core(const core&) = delete;
        core& operator=(const core&) = delete;
        virtual ~core() = default;
    };
    template <class Handler>
    struct core_of final : core {
        explicit core_of(Handler h) : handler(std::move(h)) {}
        void call(std::error_code ec, named_pipe p) override { handler(ec, std::move(p)); }
        Handler handler;
    };

    // One listening instance: its pipe end and the ConnectNamedPipe operation, reused for each
    // instance that replaces it. Owns itself: freed when it stops (closed, shut down, failed).
    struct listener final : io_operation {
        explicit listener(std::shared_ptr<core> c)
            : io_operation(&listener::on_connected), owner(std::move(c)) {
            instance.pool_ = owner->pool;
            set_abandon(&listener::abandon);
        }

        std::shared_ptr<core> owner;
        named_pipe instance;

        // Creates an instance and starts its ConnectNamedPipe. Under the core's lock (close()
        // reads `instance`). An error: nothing was started.
        std::error_code arm(std::unique_lock<std::mutex>&, bool first) noexcept {
            if (owner->closed)
                return make_error_code(errc::operation_aborted);
            DWORD open_mode = PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED;
            if (first)
                open_mode |= FILE_FLAG_FIRST_PIPE_INSTANCE;
            DWORD pipe_mode = PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT;
            if (owner->options.reject_remote_clients)
                pipe_mode |= PIPE_REJECT_REMOTE_CLIENTS;
            HANDLE h = ::CreateNamedPipeW(owner->name.c_str(), open_mode, pipe_mode,
                                          PIPE_UNLIMITED_INSTANCES, owner->options.out_buffer_size,
                                          owner->options.in_buffer_size, 0, nullptr);
            if (h == INVALID_HANDLE_VALUE)
                return {static_cast<int>(::GetLastError()), std::system_category()};
            std::error_code ec;
            instance.adopt(h, ec);
            if (ec)
                return ec;
            return detail::io::io_access::start(
                *owner->pool, instance.state_, *this, nullptr, 0,
                [](HANDLE pipe, OVERLAPPED* ov) -> detail::io::win32::call_status {
                    using kind = detail::io::win32::call_status::kind;
                    if (::ConnectNamedPipe(pipe, ov))
                        return {kind::done, 0, 0};
                    const DWORD e = ::GetLastError();
                    if (e == ERROR_IO_PENDING)
                        return {};
                    // The client came between CreateNamedPipe and ConnectNamedPipe: connected,
                    // and no packet will say so.
                    if (e == ERROR_PIPE_CONNECTED)
                        return {kind::finished, 0, 0};
                    return {kind::failed, e, 0};
                });
        }

        void remove(std::unique_lock<std::mutex>&) noexcept {
            auto& v = owner->live;
            v.erase(std::remove(v.begin(), v.end(), this), v.end());
        }

        static void on_connected(io_operation* base, const std::error_code& ec,
                                 std::size_t) noexcept {
            auto* self = static_cast<listener*>(base);
            std::shared_ptr<core> c = self->owner;
            named_pipe connected;
            std::error_code report;
            bool stop = false;
            {
                std::unique_lock lock(c->mutex);
                std::error_code ignored; // closing an instance nothing is pending on
                if (!ec && !c->closed)
                    connected = std::move(self->instance);
                else
                    // The client left before we took it; our own cancel; or a client that came
                    // as close() ran: after close() no connection is handed over.
                    self->instance.close(ignored);
                // Stops on our own cancel (close, shutdown) and on what is not one client's
                // failure; otherwise listens again at once, before the handler runs, so that as
                // many instances listen while it does.
                const bool one_client = ec == errc::connection_reset || ec == errc::eof;
                if (ec && !one_client) {
                    stop = true;
                    if (ec != errc::operation_aborted && ec != errc::closed)
                        report = ec;
                } else if (std::error_code armed = self->arm(lock, false)) {
                    stop = true;
                    if (armed != errc::operation_aborted && armed != errc::closed)
                        report = armed;
                }
                if (stop) {
                    self->remove(lock);
                    self->instance.close(ignored); // one arm() opened but could not start
                }
            }
            // TRICKY: unless it stopped, `self` is in flight again and may already be running on
            // another worker: only locals from here.
            if (stop)
                delete self;
            try {
                if (connected.is_open())
                    c->call({}, std::move(connected));
                if (report)
                    c->call(report, named_pipe());
            } catch (...) {
                detail::pool_io_access::report_exception(*c->pool, std::current_exception());
            }
        }

        // Destroy mode (a packet left at the pool's final drain): free without running anything.
        static void abandon(io_operation* base) noexcept {
            auto* self = static_cast<listener*>(base);
            {
                std::unique_lock lock(self->owner->mutex);
                self->remove(lock);
            }
            delete self;
        }
    };

    std::shared_ptr<core> current() const {
        std::lock_guard lock(mutex_);
        return core_;
    }

    thread_pool* pool_;
    std::wstring name_;
    named_pipe_server_options options_;
    mutable std::mutex mutex_;
    bool closed_ = false;
    std::shared_ptr<core> core_;
};

} // namespace iocp

#endif // IOCP_HAS_IOCP
