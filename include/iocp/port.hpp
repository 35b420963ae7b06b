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
/// @endcode

#include <chrono>
#include <cstddef>
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
    overlapped* ov = nullptr; ///< the OVERLAPPED of the operation (may be null for posts)
    Key* key = nullptr;       ///< the key given to associate() or post()
    std::size_t bytes = 0;    ///< bytes transferred
    std::error_code error;    ///< the operation's result; empty on success
};

/// An I/O completion port whose completion keys are `Key*`.
///
/// Dequeuing has four outcomes, never confused: a packet whose I/O succeeded; a packet whose
/// I/O failed (`packet::error` set, the port is fine); a timeout (`errc::timed_out`, nothing
/// dequeued); the port was closed (`errc::closed`, also when another thread closes it while
/// this one waits).
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

public:
    /// The pointee type of completion keys.
    using key_type = Key;
    /// What get and get_many return.
    using packet_type = packet<Key>;
    /// `HANDLE` on the Win32 backend; an opaque pointer on the POSIX backend.
    using native_handle_type = typename impl_type::native_handle_type;

    /// Creates a port that releases at most `concurrency` threads at once (0 = the number of
    /// processors, as in Win32).
    /// @throws std::system_error if the port cannot be created.
    explicit port(unsigned concurrency = 0) {
        std::error_code ec;
        impl_ = impl_type(concurrency, ec);
        detail::throw_if(ec, "iocp::port: cannot create the completion port");
    }

    /// As above; on failure `ec` is set and the port is closed.
    port(unsigned concurrency, std::error_code& ec) noexcept : impl_(concurrency, ec) {}

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
    /// one or a handle already bound to a port, `errc::closed` for a closed port.
    void associate(native_handle_type_for_io handle, Key* key, std::error_code& ec) noexcept {
        ec = impl_.associate(handle, erase(key));
    }
    /// As above. @throws std::system_error
    void associate(native_handle_type_for_io handle, Key* key) {
        detail::throw_if(impl_.associate(handle, erase(key)), "iocp::port::associate");
    }

    /// Queues a packet as if an I/O on `ov` completed successfully with `bytes`. `ov` may be
    /// null; if not, its `Internal` field is overwritten (it carries the result).
    /// Errors: `errc::closed`, or the OS error (PostQueuedCompletionStatus can fail when the
    /// system is out of memory; the packet is then not queued).
    void post(overlapped* ov, Key* key, std::size_t bytes, std::error_code& ec) noexcept {
        ec = impl_.post(ov, erase(key), bytes, {});
    }
    /// As above. @throws std::system_error
    void post(overlapped* ov, Key* key = nullptr, std::size_t bytes = 0) {
        detail::throw_if(impl_.post(ov, erase(key), bytes, {}), "iocp::port::post");
    }

    /// Queues a packet that completes `ov` with the error `failure`: how an initiator delivers
    /// an immediate failure through the port, so that no handler runs inside the call that
    /// started its operation. On Win32, `failure` must be a system-category code or an
    /// `iocp::errc` code below 65536, and it travels in `ov->Internal`: an OVERLAPPED must not
    /// be queued twice at once with different results (as for real I/O).
    void post_failure(overlapped* ov, Key* key, std::error_code failure,
                      std::error_code& ec) noexcept {
        ec = ov == nullptr ? std::make_error_code(std::errc::invalid_argument)
                           : impl_.post(ov, erase(key), 0, failure);
    }
    /// As above. @throws std::system_error
    void post_failure(overlapped* ov, Key* key, std::error_code failure) {
        std::error_code ec;
        post_failure(ov, key, failure, ec);
        detail::throw_if(ec, "iocp::port::post_failure");
    }

    /// Dequeues one packet, waiting at most `timeout` (`iocp::infinite` for no limit).
    /// Returns the packet, or nothing with `ec` set to `errc::timed_out`, `errc::closed` or
    /// another error of the port itself.
    std::optional<packet_type> get(std::chrono::milliseconds timeout,
                                   std::error_code& ec) noexcept {
        packet_type p;
        if (impl_.get(detail::packet_sink::to(&p), 1, timeout, ec) == 0)
            return std::nullopt;
        return p;
    }
    /// As above, but a timeout returns nothing and any other failure throws.
    /// @throws std::system_error when the port is closed or broken.
    std::optional<packet_type> get(std::chrono::milliseconds timeout = infinite) {
        std::error_code ec;
        auto p = get(timeout, ec);
        if (ec && ec != errc::timed_out)
            throw std::system_error(ec, "iocp::port::get");
        return p;
    }

    /// Dequeues up to `out.size()` packets (at most 64 per call on Win32), waiting at most
    /// `timeout` for the first. Returns how many were stored at the front of `out`; 0 with
    /// `ec` set as for `get` when nothing was dequeued.
    std::size_t get_many(std::span<packet_type> out, std::chrono::milliseconds timeout,
                         std::error_code& ec) noexcept {
        if (out.empty()) {
            ec = std::make_error_code(std::errc::invalid_argument);
            return 0;
        }
        return impl_.get(detail::packet_sink::to(out.data()), out.size(), timeout, ec);
    }
    /// As above; a timeout returns 0 and any other failure throws.
    /// @throws std::system_error when the port is closed or broken, or `out` is empty.
    std::size_t get_many(std::span<packet_type> out, std::chrono::milliseconds timeout = infinite) {
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
    static void* erase(Key* key) noexcept {
        return const_cast<void*>(static_cast<const volatile void*>(key));
    }

    impl_type impl_;
};

} // namespace iocp
