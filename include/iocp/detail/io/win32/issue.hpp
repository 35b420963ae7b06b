#pragma once
// Issuing a request on Win32: the overlapped call (ReadFile, WriteFile, WSARecv, WSASend,
// ConnectEx, AcceptEx, or any call of iocp::overlapped_handle) under the start guard, what the
// call returned (call_status: pending, done at once, failed, finished without a packet), and
// the accept slot AcceptEx fills.

#include <climits>
#include <system_error>

#include "../../../endpoint.hpp"
#include "../../../io_operation.hpp"
#include "../io_state.hpp"
#include "../op_core.hpp"
#include "native.hpp"

namespace iocp::detail::io::win32 {

// 0 when the I/O is pending or already done (either way a packet will come, unless the handle
// skips the port on success: call_status below tells the two apart), the Win32 or WSA error
// otherwise. ERROR_IO_PENDING and WSA_IO_PENDING are the same number (997).
inline DWORD pending_or_error(DWORD error) noexcept {
    return error == ERROR_IO_PENDING ? 0 : error;
}
// For the BOOL-returning calls (ReadFile, WriteFile, AcceptEx, ConnectEx).
inline DWORD issue_result(BOOL ok) noexcept { return ok ? 0 : pending_or_error(::GetLastError()); }
// For the int-returning Winsock calls (WSARecv, WSASend: 0 or SOCKET_ERROR).
inline DWORD wsa_issue_result(int rc) noexcept {
    return rc == 0 ? 0 : pending_or_error(static_cast<DWORD>(::WSAGetLastError()));
}

// --- What a call returned, and skip-on-success ------------------------------------------
// (The generic initiator, iocp::overlapped_handle, and the per-handle opt-in of
// FILE_SKIP_COMPLETION_PORT_ON_SUCCESS, skip_on_success.hpp, both need more than "0 or the
// error": whether the call finished at once, and whether the kernel queues a packet for it.)

// An overlapped call's return, as the start guard sees it.
struct call_status {
    enum class kind : unsigned char {
        pending,  // ERROR_IO_PENDING: the kernel's packet comes later
        done,     // succeeded at once: a packet comes unless the handle skips the port on success
        failed,   // failed at once (`error`): the kernel queues no packet (a stray is dropped)
        finished, // succeeded at once and the kernel queues no packet whatever the handle's mode
                  // (ConnectNamedPipe's ERROR_PIPE_CONNECTED); `bytes` transferred
    };
    kind what = kind::pending;
    DWORD error = 0;
    std::size_t bytes = 0;
};

// The old spelling: 0 (pending or done: a packet comes either way) or the error.
inline call_status to_status(DWORD error) noexcept {
    return error == 0 ? call_status{} : call_status{call_status::kind::failed, error, 0};
}
inline call_status to_status(call_status s) noexcept { return s; }

// The result of a BOOL-returning call, telling "done at once" from "pending".
inline call_status bool_status(BOOL ok) noexcept {
    if (ok)
        return {call_status::kind::done, 0, 0};
    const DWORD error = ::GetLastError();
    if (error == ERROR_IO_PENDING)
        return {};
    return {call_status::kind::failed, error, 0};
}
// The same for the int-returning Winsock calls (0 or SOCKET_ERROR).
inline call_status wsa_status(int rc) noexcept {
    if (rc == 0)
        return {call_status::kind::done, 0, 0};
    const auto error = static_cast<DWORD>(::WSAGetLastError());
    if (error == WSA_IO_PENDING)
        return {};
    return {call_status::kind::failed, error, 0};
}

// The completion key of a completion that succeeded at once on a handle that skips the port
// on success: the start path queues it in the pool's own queue (no port call), where failures
// go through the port (see deliver in start.hpp). Like posted_completion_key, "one of ours".
inline constexpr unsigned char skipped_completion_tag = 0;
inline void* skipped_completion_key() noexcept {
    return const_cast<unsigned char*>(&skipped_completion_tag);
}

// What an accept_operation keeps for AcceptEx: the socket accepted into and the addresses.
struct accept_slot {
    // AcceptEx wants room for each address plus 16 bytes.
    static constexpr DWORD address_space = sizeof(sockaddr_in6) + 16;
    SOCKET accepted = INVALID_SOCKET; // accepting into; ours until success
    char addresses[2 * address_space];

    void discard() noexcept { close_socket(std::exchange(accepted, INVALID_SOCKET)); }
    void drop(std::size_t) noexcept { discard(); }

    // After a successful AcceptEx: makes the socket a full one, reads both addresses and gives
    // the socket to a new state on `pool`. Runs on the listener's state lock.
    io_state* take(op_core&, std::size_t, thread_pool& pool, io_state& listener, endpoint& local,
                   endpoint& remote, std::error_code& ec) noexcept {
        SOCKET ls = listener.socket();
        if (::setsockopt(accepted, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT,
                         reinterpret_cast<const char*>(&ls), sizeof ls) != 0) {
            ec = last_wsa_error();
            return nullptr;
        }
        std::error_code lec;
        LPFN_GETACCEPTEXSOCKADDRS get = detail::win32::load_get_accept_ex_sockaddrs(
            ls, listener.extra.get_accept_ex_sockaddrs, lec);
        local = endpoint();
        remote = endpoint();
        if (!lec) {
            sockaddr* l = nullptr;
            sockaddr* r = nullptr;
            int l_len = 0;
            int r_len = 0;
            get(addresses, 0, address_space, address_space, &l, &l_len, &r, &r_len);
            local = endpoint(l, static_cast<std::size_t>(l_len));
            remote = endpoint(r, static_cast<std::size_t>(r_len));
        }
        io_state* st =
            open_state(pool, from_socket(accepted), handle_kind::socket, listener.family, ec);
        if (!ec)
            accepted = INVALID_SOCKET; // owned by its state now
        return st;
    }
};

// What a recv_from_operation keeps for WSARecvFrom: the sender's address and its length, which
// the kernel writes when the datagram arrives, so they live in the operation (WSARecvFrom:
// lpFrom and lpFromlen must stay valid until the overlapped operation completes).
struct from_slot {
    SOCKADDR_STORAGE address{};
    INT length = 0;

    endpoint sender(const op_core&) const noexcept {
        return {reinterpret_cast<const sockaddr*>(&address),
                static_cast<std::size_t>(length < 0 ? 0 : length)};
    }
};

// Win32 reports a truncated datagram as an error (WSAEMSGSIZE, or ERROR_MORE_DATA through the
// port), which the error table maps: nothing to read from the operation.
inline bool datagram_truncated(const op_core&) noexcept { return false; }

// recv_from / send_to: WSARecvFrom / WSASendTo. The WSABUFs and the destination address are
// captured by the call (as for WSARecv/WSASend); the sender's address is written later, into
// the operation's from_slot.
inline call_status issue_datagram_call(io_operation& op, HANDLE h, const request& req) noexcept {
    auto* ov = reinterpret_cast<OVERLAPPED*>(static_cast<overlapped*>(&op));
    WSABUF bufs[max_buffers];
    for (std::size_t i = 0; i < req.count; ++i) {
        bufs[i].buf = static_cast<char*>(req.bufs[i].data);
        bufs[i].len = static_cast<ULONG>(req.bufs[i].size);
    }
    const auto n = static_cast<DWORD>(req.count);
    if (req.what == request::kind::send_to)
        return wsa_status(::WSASendTo(as_socket(h), bufs, n, nullptr, 0, req.peer->data(),
                                      req.peer->size(), ov, nullptr));
    auto* slot = static_cast<from_slot*>(req.from_slot);
    slot->address = SOCKADDR_STORAGE{};
    slot->length = static_cast<INT>(sizeof slot->address);
    DWORD flags = 0;
    return wsa_status(::WSARecvFrom(as_socket(h), bufs, n, nullptr, &flags,
                                    reinterpret_cast<sockaddr*>(&slot->address), &slot->length, ov,
                                    nullptr));
}

inline call_status issue_call(io_operation& op, io_state& st, HANDLE h,
                              const request& req) noexcept {
    auto* ov = reinterpret_cast<OVERLAPPED*>(static_cast<overlapped*>(&op));
    switch (req.what) {
    case request::kind::read_at:
    case request::kind::write_at: {
        set_offset(*static_cast<overlapped*>(&op), req.offset);
        const auto n = static_cast<DWORD>(req.bufs[0].size);
        return bool_status(req.what == request::kind::read_at
                               ? ::ReadFile(h, req.bufs[0].data, n, nullptr, ov)
                               : ::WriteFile(h, req.bufs[0].data, n, nullptr, ov));
    }
    case request::kind::recv:
    case request::kind::send: {
        // The WSABUF array is captured by the call (the provider copies it before
        // returning), so it may live on this stack; the flags are in and out.
        WSABUF bufs[max_buffers];
        for (std::size_t i = 0; i < req.count; ++i) {
            bufs[i].buf = static_cast<char*>(req.bufs[i].data);
            bufs[i].len = static_cast<ULONG>(req.bufs[i].size);
        }
        const auto n = static_cast<DWORD>(req.count);
        DWORD flags = 0;
        return wsa_status(req.what == request::kind::recv
                              ? ::WSARecv(as_socket(h), bufs, n, nullptr, &flags, ov, nullptr)
                              : ::WSASend(as_socket(h), bufs, n, nullptr, 0, ov, nullptr));
    }
    case request::kind::connect: {
        std::error_code ec;
        LPFN_CONNECTEX connect_ex =
            detail::win32::load_connect_ex(as_socket(h), st.extra.connect_ex, ec);
        if (ec)
            return to_status(static_cast<DWORD>(ec.value()));
        return bool_status(
            connect_ex(as_socket(h), req.peer->data(), req.peer->size(), nullptr, 0, nullptr, ov));
    }
    case request::kind::accept: {
        auto* slot = static_cast<accept_slot*>(req.accept_slot);
        std::error_code ec;
        slot->accepted = make_tcp_socket(st.family, ec);
        if (ec)
            return to_status(static_cast<DWORD>(ec.value()));
        LPFN_ACCEPTEX accept_ex =
            detail::win32::load_accept_ex(as_socket(h), st.extra.accept_ex, ec);
        if (ec)
            return to_status(static_cast<DWORD>(ec.value()));
        DWORD bytes = 0;
        return bool_status(accept_ex(as_socket(h), slot->accepted, slot->addresses, 0,
                                     accept_slot::address_space, accept_slot::address_space, &bytes,
                                     ov));
    }
    case request::kind::recv_from:
    case request::kind::send_to: return issue_datagram_call(op, h, req);
    }
    return to_status(ERROR_INVALID_PARAMETER);
}

// Issues the call under the start guard. True: the kernel owns the operation now (do not
// touch it). False: `posted` holds the completion the caller must deliver (the call's failure,
// its result when it finished at once with no packet to come, or the result of a kernel packet
// that came before the call returned).
// `call()` makes the overlapped call and returns a call_status, or 0 (pending or done) or the
// error. `skip`: the handle skips the port on success (FILE_SKIP_COMPLETION_PORT_ON_SUCCESS), so
// a call done at once queues no packet; `ov` is then read for the bytes (the kernel wrote them
// to InternalHigh before the call returned, and no packet will hand the operation on).
template <class Call>
bool issue_guarded(op_core& c, Call&& call, completion& posted, bool skip = false,
                   const OVERLAPPED* ov = nullptr) noexcept {
    using kind = call_status::kind;
    c.ph.store(phase::issuing, std::memory_order_release);
    call_status r = to_status(call());
    if (r.what == kind::done && skip && ov != nullptr) {
        r.what = kind::finished;
        r.bytes = static_cast<std::size_t>(ov->InternalHigh);
        posted.key = skipped_completion_key();
    }
    const bool packet = r.what == kind::pending || r.what == kind::done;
    phase expected = phase::issuing;
    // TRICKY: from here on, if a packet is to come, `op` belongs to the kernel: once the
    // phase says in_kernel another worker may complete, free or restart it at any time.
    if (c.ph.compare_exchange_strong(expected, packet ? phase::in_kernel : phase::failed_sync,
                                     std::memory_order_acq_rel, std::memory_order_acquire)) {
        if (packet)
            return true;
        if (r.error != 0)
            posted.error.assign(static_cast<int>(r.error), std::system_category());
        posted.bytes = r.bytes;
        return false;
    }
    // early_packet: the kernel's packet came first and left its result to us.
    if (packet) {
        posted.error = c.early_error;
        posted.bytes = c.early_bytes;
    } else {
        // The early packet was a stray of a call that failed (or finished) at once: nothing
        // else is pending, so the call's own answer is the one to deliver.
        if (r.error != 0)
            posted.error.assign(static_cast<int>(r.error), std::system_category());
        posted.bytes = r.bytes;
    }
    return false;
}

inline bool issue(io_operation& op, op_core& c, io_state& st, HANDLE h, const request& req,
                  completion& posted) noexcept {
    // Read before the call: once the call is issued the state is only borrowed.
    const bool skip = st.extra.skip_on_success.load(std::memory_order_relaxed);
    return issue_guarded(
        c, [&] { return issue_call(op, st, h, req); }, posted, skip,
        reinterpret_cast<const OVERLAPPED*>(static_cast<const overlapped*>(&op)));
}

// A listening socket loads the extension functions at once, so that a provider without them
// fails in acceptor::open rather than in the first accept.
inline std::error_code prepare_listener(io_state& st) noexcept {
    std::error_code ec;
    (void)detail::win32::load_accept_ex(st.socket(), st.extra.accept_ex, ec);
    if (!ec)
        (void)detail::win32::load_get_accept_ex_sockaddrs(st.socket(),
                                                          st.extra.get_accept_ex_sockaddrs, ec);
    return ec;
}
// Before bind: nothing on Windows (SO_REUSEADDR there lets another process steal the port).
inline void before_listen_bind(socket_type) noexcept {}

} // namespace iocp::detail::io::win32
