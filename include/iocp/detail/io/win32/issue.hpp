#pragma once
// Issuing a request on Win32: the overlapped call (ReadFile, WriteFile, WSARecv, WSASend,
// ConnectEx, AcceptEx) under the start guard, and the accept slot AcceptEx fills.

#include <climits>
#include <system_error>

#include "../../../endpoint.hpp"
#include "../../../io_operation.hpp"
#include "../io_state.hpp"
#include "../op_core.hpp"
#include "native.hpp"

namespace iocp::detail::io::win32 {

// 0 when the I/O is pending or already done (either way a packet will come: the library does
// not use skip-on-success), the Win32 or WSA error otherwise. ERROR_IO_PENDING and
// WSA_IO_PENDING are the same number (997).
inline DWORD pending_or_error(DWORD error) noexcept {
    return error == ERROR_IO_PENDING ? 0 : error;
}
// For the BOOL-returning calls (ReadFile, WriteFile, AcceptEx, ConnectEx).
inline DWORD issue_result(BOOL ok) noexcept { return ok ? 0 : pending_or_error(::GetLastError()); }
// For the int-returning Winsock calls (WSARecv, WSASend: 0 or SOCKET_ERROR).
inline DWORD wsa_issue_result(int rc) noexcept {
    return rc == 0 ? 0 : pending_or_error(static_cast<DWORD>(::WSAGetLastError()));
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
inline DWORD issue_datagram_call(io_operation& op, HANDLE h, const request& req) noexcept {
    auto* ov = reinterpret_cast<OVERLAPPED*>(static_cast<overlapped*>(&op));
    WSABUF bufs[max_buffers];
    for (std::size_t i = 0; i < req.count; ++i) {
        bufs[i].buf = static_cast<char*>(req.bufs[i].data);
        bufs[i].len = static_cast<ULONG>(req.bufs[i].size);
    }
    const auto n = static_cast<DWORD>(req.count);
    if (req.what == request::kind::send_to)
        return wsa_issue_result(::WSASendTo(as_socket(h), bufs, n, nullptr, 0, req.peer->data(),
                                            req.peer->size(), ov, nullptr));
    auto* slot = static_cast<from_slot*>(req.from_slot);
    slot->address = SOCKADDR_STORAGE{};
    slot->length = static_cast<INT>(sizeof slot->address);
    DWORD flags = 0;
    return wsa_issue_result(::WSARecvFrom(as_socket(h), bufs, n, nullptr, &flags,
                                          reinterpret_cast<sockaddr*>(&slot->address),
                                          &slot->length, ov, nullptr));
}

inline DWORD issue_call(io_operation& op, io_state& st, HANDLE h, const request& req) noexcept {
    auto* ov = reinterpret_cast<OVERLAPPED*>(static_cast<overlapped*>(&op));
    switch (req.what) {
    case request::kind::read_at:
    case request::kind::write_at: {
        set_offset(*static_cast<overlapped*>(&op), req.offset);
        const auto n = static_cast<DWORD>(req.bufs[0].size);
        return issue_result(req.what == request::kind::read_at
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
        return wsa_issue_result(req.what == request::kind::recv
                                    ? ::WSARecv(as_socket(h), bufs, n, nullptr, &flags, ov, nullptr)
                                    : ::WSASend(as_socket(h), bufs, n, nullptr, 0, ov, nullptr));
    }
    case request::kind::connect: {
        std::error_code ec;
        LPFN_CONNECTEX connect_ex =
            detail::win32::load_connect_ex(as_socket(h), st.extra.connect_ex, ec);
        if (ec)
            return static_cast<DWORD>(ec.value());
        return issue_result(
            connect_ex(as_socket(h), req.peer->data(), req.peer->size(), nullptr, 0, nullptr, ov));
    }
    case request::kind::accept: {
        auto* slot = static_cast<accept_slot*>(req.accept_slot);
        std::error_code ec;
        slot->accepted = make_tcp_socket(st.family, ec);
        if (ec)
            return static_cast<DWORD>(ec.value());
        LPFN_ACCEPTEX accept_ex =
            detail::win32::load_accept_ex(as_socket(h), st.extra.accept_ex, ec);
        if (ec)
            return static_cast<DWORD>(ec.value());
        DWORD bytes = 0;
        return issue_result(accept_ex(as_socket(h), slot->accepted, slot->addresses, 0,
                                      accept_slot::address_space, accept_slot::address_space,
                                      &bytes, ov));
    }
    case request::kind::recv_from:
    case request::kind::send_to: return issue_datagram_call(op, h, req);
    }
    return ERROR_INVALID_PARAMETER;
}

// Issues the call under the start guard. True: the kernel owns the operation now (do not
// touch it). False: `posted` holds the completion the caller must post (the call's failure,
// or the result of a kernel packet that came before the call returned).
// `call()` makes the overlapped call and returns 0 (pending or done) or the error.
template <class Call>
bool issue_guarded(op_core& c, Call&& call, completion& posted) noexcept {
    c.ph.store(phase::issuing, std::memory_order_release);
    const DWORD error = call();
    phase expected = phase::issuing;
    // TRICKY: from here on, if the call returned 0, `op` belongs to the kernel: once the
    // phase says in_kernel another worker may complete, free or restart it at any time.
    if (c.ph.compare_exchange_strong(expected, error == 0 ? phase::in_kernel : phase::failed_sync,
                                     std::memory_order_acq_rel, std::memory_order_acquire)) {
        if (error == 0)
            return true;
        posted.error.assign(static_cast<int>(error), std::system_category());
        return false;
    }
    // early_packet: the kernel's packet came first and left its result to us.
    if (error == 0) {
        posted.error = c.early_error;
        posted.bytes = c.early_bytes;
    } else {
        // The early packet was a stray of the failed call (nothing else is pending).
        posted.error.assign(static_cast<int>(error), std::system_category());
    }
    return false;
}

inline bool issue(io_operation& op, op_core& c, io_state& st, HANDLE h, const request& req,
                  completion& posted) noexcept {
    return issue_guarded(
        c, [&] { return issue_call(op, st, h, req); }, posted);
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
