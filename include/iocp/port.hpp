#pragma once
/// @file
/// `iocp::port<Key>`: an RAII I/O completion port with a typed per-handle key.
///
/// @code
/// iocp::port<connection> port;                  // concurrency = number of processors
/// port.associate(socket_handle, &conn);         // completions of that handle carry &conn
/// port.post(&op, &conn, 0);                     // queue a packet by hand
/// if (auto p = port.get(std::chrono::milliseconds(100))) {
///     if (p->error) { /* that operation failed; the port is fine */ }
/// }
///
/// iocp::port<std::uintptr_t> queue;             // integral keys travel as values (a WPARAM,
/// queue.post(nullptr, request_code);            // a ULONG_PTR request code), no casts
/// @endcode
///
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <system_error>
#include <type_traits>

#include "config.hpp"
#include "detail/backend.hpp"
#include "error.hpp"
#include "overlapped.hpp"

namespace iocp {

/// One dequeued completion packet.
///
/// `error` is the result of the packet's own operation (an I/O that failed, or a failure
/// posted by `post_failure`). It says nothing about the port, which keeps working.
template <class Key>
struct packet {
    /// The completion key type: `Key*`, or `Key` itself for an integral or enumeration `Key`.
    using key_type = detail::completion_key_t<Key>;

    overlapped* ov = nullptr; ///< the OVERLAPPED given to the I/O or post, as given (may be null)
    key_type key{};           ///< the key given to associate() or post(), as given
    std::size_t bytes = 0;    ///< bytes transferred
    std::error_code error;    ///< the operation's result; empty on success
};

/// An I/O completion port whose completion keys are `Key*` (the per-handle data), or values of
/// `Key` when it is an integral or enumeration type (`port<std::uintptr_t>`, `port<WPARAM>`).
///
/// Dequeuing has four outcomes, never confused: a packet whose I/O succeeded; a packet whose
/// I/O failed (`packet::error` set, the port is fine); a timeout (`errc::timed_out`, nothing
/// dequeued); the port was closed (`errc::closed`, also when another thread closes it while
/// this one waits).
///
/// What a caller hands in as an OVERLAPPED pointer or a key comes back out of get/get_many
/// bit for bit, and the port neither reads nor writes through it (post of
/// `reinterpret_cast<iocp::overlapped*>(-1)` as a shutdown marker is fine) — the one exception
/// is `post_failure`, which documents the two fields it writes.
///
/// Timeouts are any `std::chrono::duration` (integral or floating-point), rounded up to whole
/// milliseconds: zero or negative polls; `iocp::infinite`, or anything of
/// `detail::max_finite_wait` (0xFFFFFFFE ms, about 49.7 days) or more — `hours::max()`,
/// `steady_clock::duration::max()`, a floating-point infinity — waits without a limit. No value
/// overflows. (A NaN polls.)
///
/// Thread safety: `associate`, `post`, `get`, `get_many` and `close` may be called from any
/// number of threads at once. Construction, moves and destruction must not race other calls.
/// On the Win32 backend `close()` racing another thread's call has the kernel's semantics: a
/// waiter wakes with `errc::closed`, but a call that read the handle just before it was closed
/// may reach a new object that reused the handle value. Close a port shared with other threads
/// only once they are done with it, or waiting in get (thread_pool closes its port only after
/// joining its workers).
template <class Key = void>
class port {
    using impl_type = detail::port_impl;
    using native_handle_type_for_io = typename impl_type::io_handle_type;
    using socket_type = typename impl_type::socket_type;

public:
    /// What a completion key is: `Key*`, or `Key` for an integral or enumeration `Key`.
    using key_type = detail::completion_key_t<Key>;
    /// What get and get_many return.
    using packet_type = packet<Key>;
    /// `HANDLE` on the Win32 backend; an opaque pointer on the POSIX backend.
    using native_handle_type = typename impl_type::native_handle_type;

    /// The most packets one get_many call returns, on every backend (a larger span is filled
    /// up to this; call again for more). GetQueuedCompletionStatusEx takes its entries on the
    /// stack, and the user-space port does the same so that both behave alike.
    static constexpr std::size_t max_batch = detail::max_dequeue_batch;
    /// The largest byte count a packet carries (a DWORD on Win32); post refuses more.
    static constexpr std::size_t max_bytes = detail::max_packet_bytes;
    /// The largest concurrency limit (a DWORD on Win32); larger requests are clamped to it.
    static constexpr std::size_t max_concurrency = detail::max_port_concurrency;
    /// The one key value the port keeps for its own packets (on 64-bit targets no address
    /// can have it). associate, post and post_failure refuse it with
    /// `std::errc::invalid_argument`; only an integral key can spell it.
    static constexpr std::uintptr_t reserved_key = detail::reserved_key_value;

    /// Creates a port that releases at most `concurrency` threads at once: 0 = the number of
    /// processors, as in Win32; 1 serialises the consumers; values above `max_concurrency` are
    /// clamped to it (a limit above the number of consumer threads never binds).
    /// @throws std::system_error if the port cannot be created.
    explicit port(std::size_t concurrency = 0) {
        std::error_code ec;
        impl_ = impl_type(clamp_concurrency(concurrency), ec);
        detail::throw_if(ec, "iocp::port: cannot create the completion port");
    }

    /// As above; on failure `ec` is set and the port is closed.
    port(std::size_t concurrency, std::error_code& ec) noexcept
        : impl_(clamp_concurrency(concurrency), ec) {}

    /// Takes `other`'s port; `other` is closed afterwards.
    port(port&&) noexcept = default;
    /// Closes the port held so far, then takes `other`'s.
    port& operator=(port&&) noexcept = default;
    port(const port&) = delete;
    port& operator=(const port&) = delete;

    /// Closes the port. Packets still queued are dropped: drain first if they own memory.
    ~port() = default;

    /// True until `close()` (or a move from this object).
    bool is_open() const noexcept { return impl_.is_open(); }

    /// The underlying port.
    native_handle_type native_handle() const noexcept { return impl_.native_handle(); }

    /// Binds `handle` to this port: completions of overlapped I/O on it are queued here
    /// carrying `key`. The POSIX backend only checks that the handle is open.
    /// Errors: `errc::invalid_handle` for an empty handle, the OS error for a closed or bogus
    /// one or a handle already bound to a port, `errc::closed` for a closed port,
    /// `std::errc::invalid_argument` for `reserved_key`. Thread safety: any thread.
    void associate(native_handle_type_for_io handle, key_type key, std::error_code& ec) noexcept {
        ec =
            is_reserved(key) ? invalid_argument() : impl_.associate(handle, detail::erase_key(key));
    }
    /// As above. @throws std::system_error
    void associate(native_handle_type_for_io handle, key_type key) {
        std::error_code ec;
        associate(handle, key, ec);
        detail::throw_if(ec, "iocp::port::associate");
    }

    /// Binds a Winsock `SOCKET` (Windows only; elsewhere a socket is a descriptor and the
    /// overload above takes it). `INVALID_SOCKET` is `errc::invalid_handle`; otherwise errors
    /// as above (`std::errc::invalid_argument` for `reserved_key`).
    void associate(socket_type socket, key_type key, std::error_code& ec) noexcept
        requires(!std::is_same_v<socket_type, native_handle_type_for_io>) {
        ec = is_reserved(key)
                 ? invalid_argument()
                 : impl_.associate(impl_type::socket_as_handle(socket), detail::erase_key(key));
    }
    /// As above. @throws std::system_error
    void associate(socket_type socket,
                   key_type key) requires(!std::is_same_v<socket_type, native_handle_type_for_io>) {
        std::error_code ec;
        associate(socket, key, ec);
        detail::throw_if(ec, "iocp::port::associate");
    }

    /// Queues a packet as if an I/O on `ov` completed successfully with `bytes`. Like
    /// PostQueuedCompletionStatus, it neither reads nor writes `*ov` or the key: any values
    /// (null, `(overlapped*)-1`, a sentinel's address) come back from get unchanged.
    /// Errors: `std::errc::invalid_argument` if `bytes > max_bytes` (refused on every backend
    /// rather than truncated to a DWORD on one) or `key` is `reserved_key`, `errc::closed`, or the
    /// OS error (PostQueuedCompletionStatus can fail when the system is out of memory; the packet
    /// is then not queued). Thread safety: any thread.
    void post(overlapped* ov, key_type key, std::size_t bytes, std::error_code& ec) noexcept {
        if (bytes > max_bytes || is_reserved(key)) {
            ec = invalid_argument();
            return;
        }
        ec = impl_.post(ov, detail::erase_key(key), bytes);
    }
    /// As above. @throws std::system_error
    void post(overlapped* ov, key_type key = {}, std::size_t bytes = 0) {
        std::error_code ec;
        post(ov, key, bytes, ec);
        detail::throw_if(ec, "iocp::port::post");
    }

    /// Queues a packet that completes `ov` with the error `failure` (0 bytes): how an initiator
    /// delivers an immediate failure through the port, so that no handler runs inside the call
    /// that started its operation. get/get_many hand back `ov`, `key` and `failure` exactly
    /// (same category, same value; any category).
    ///
    /// `ov` must not be null and must not be in flight (no I/O pending on it, not queued by
    /// another post): to carry the result, this overwrites `ov->Internal` and
    /// `ov->InternalHigh` — the status and byte-count fields the kernel fills for a completed
    /// I/O — on every backend; `Offset`, `OffsetHigh` and `hEvent` are left alone.
    /// Errors: `std::errc::invalid_argument` for a null `ov` or `reserved_key`, otherwise as
    /// `post`.
    /// Thread safety: any thread.
    void post_failure(overlapped* ov, key_type key, std::error_code failure,
                      std::error_code& ec) noexcept {
        if (ov == nullptr || is_reserved(key))
            ec = invalid_argument();
        else if (!failure)
            ec = impl_.post(ov, detail::erase_key(key), 0); // "no error" is a plain completion
        else
            ec = impl_.post_failure(ov, detail::erase_key(key), failure);
    }
    /// As above. @throws std::system_error
    void post_failure(overlapped* ov, key_type key, std::error_code failure) {
        std::error_code ec;
        post_failure(ov, key, failure, ec);
        detail::throw_if(ec, "iocp::port::post_failure");
    }

    /// Dequeues one packet, waiting at most `timeout` (any duration; see the class comment for
    /// how zero, negative and huge values behave; `iocp::infinite` for no limit).
    /// Returns the packet, or nothing with `ec` set to `errc::timed_out`, `errc::closed` or
    /// another error of the port itself. Thread safety: any thread.
    template <class Rep, class Period>
    std::optional<packet_type> get(std::chrono::duration<Rep, Period> timeout,
                                   std::error_code& ec) noexcept {
        packet_type p;
        if (impl_.get(detail::packet_sink::to(&p), 1, detail::wait_timeout(timeout), ec) == 0)
            return std::nullopt;
        return p;
    }
    /// As above, but a timeout returns nothing and any other failure throws.
    /// @throws std::system_error when the port is closed or broken.
    template <class Rep = std::chrono::milliseconds::rep, class Period = std::milli>
    std::optional<packet_type> get(std::chrono::duration<Rep, Period> timeout = infinite) {
        std::error_code ec;
        auto p = get(timeout, ec);
        if (ec && ec != errc::timed_out)
            throw std::system_error(ec, "iocp::port::get");
        return p;
    }

    /// Dequeues up to `min(out.size(), max_batch)` packets, waiting at most `timeout` (as for
    /// get) for the first. Returns how many were stored at the front of `out`; 0 with `ec` set
    /// as for `get` when nothing was dequeued, or to `std::errc::invalid_argument` when `out`
    /// is empty. Thread safety: any thread.
    template <class Rep, class Period>
    std::size_t get_many(std::span<packet_type> out, std::chrono::duration<Rep, Period> timeout,
                         std::error_code& ec) noexcept {
        if (out.empty()) {
            ec = std::make_error_code(std::errc::invalid_argument);
            return 0;
        }
        return impl_.get(detail::packet_sink::to(out.data()), (std::min)(out.size(), max_batch),
                         detail::wait_timeout(timeout), ec);
    }
    /// As above; a timeout returns 0 and any other failure throws.
    /// @throws std::system_error when the port is closed or broken, or `out` is empty.
    template <class Rep = std::chrono::milliseconds::rep, class Period = std::milli>
    std::size_t get_many(std::span<packet_type> out,
                         std::chrono::duration<Rep, Period> timeout = infinite) {
        std::error_code ec;
        std::size_t n = get_many(out, timeout, ec);
        if (ec && ec != errc::timed_out)
            throw std::system_error(ec, "iocp::port::get_many");
        return n;
    }

    /// Closes the port. Threads waiting in get/get_many return `errc::closed`, later calls
    /// fail with `errc::closed`. Closing a closed port does nothing.
    void close(std::error_code& ec) noexcept { ec = impl_.close(); }
    /// As above. @throws std::system_error if the OS fails to close the handle.
    void close() { detail::throw_if(impl_.close(), "iocp::port::close"); }

private:
    static bool is_reserved(key_type key) noexcept {
        return reinterpret_cast<std::uintptr_t>(detail::erase_key(key)) == reserved_key;
    }

    static std::error_code invalid_argument() noexcept {
        return std::make_error_code(std::errc::invalid_argument);
    }

    static unsigned clamp_concurrency(std::size_t concurrency) noexcept {
        return static_cast<unsigned>((std::min)(concurrency, max_concurrency));
    }

    impl_type impl_;
};

} // namespace iocp
