#pragma once
// Issuing a request on Linux: the request is copied into the operation's linux_op and handed
// to the backend; the backend's on_complete (on its own thread) becomes a port packet, so the
// handler runs on a pool worker exactly as a Win32 completion does.

#include <cstring>
#include <system_error>

#include <sys/socket.h>

#include "../../../endpoint.hpp"
#include "../../../io_operation.hpp"
#include "../io_state.hpp"
#include "../op_core.hpp"
#include "native.hpp"

namespace iocp::detail::io::lnx {

// What an accept_operation keeps on Linux: nothing (the backend writes the peer into the
// linux_op and returns the new descriptor as the result).
struct accept_slot {
    void discard() noexcept {}
    // A successful accept nobody will take: its result is the new descriptor.
    static void drop(std::size_t bytes) noexcept { ::close(static_cast<int>(bytes)); }

    // After a successful accept: the result (`bytes`) is the new descriptor; it joins a new
    // state on `pool`. The peer is what the backend wrote into the linux_op, the local
    // address is asked of the socket.
    io_state* take(op_core& c, std::size_t bytes, thread_pool& pool, io_state& listener,
                   endpoint& local, endpoint& remote, std::error_code& ec) noexcept {
        const int fd = static_cast<int>(bytes);
        const linux_op& lop = c.lop;
        remote = endpoint(reinterpret_cast<const sockaddr*>(&lop.addr), lop.addr_len);
        local = endpoint();
        ::sockaddr_storage a{};
        ::socklen_t len = sizeof a;
        if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
            local = endpoint(reinterpret_cast<const sockaddr*>(&a), len);
        io_state* st = open_state(pool, fd, handle_kind::socket, listener.family, ec);
        if (ec)
            ::close(fd);
        return st;
    }
};

// What a recv_from_operation keeps on Linux: nothing (recvmsg writes the sender into the
// linux_op's addr, its length into msg.msg_namelen).
struct from_slot {
    // After a completed recv_from: the sender (unspecified if the kernel gave no address).
    static endpoint sender(const op_core& c) noexcept {
        const linux_op& lop = c.lop;
        return {reinterpret_cast<const sockaddr*>(&lop.addr), lop.msg.msg_namelen};
    }
};

// After a completed recv or recv_from on a datagram socket: whether recvmsg reported MSG_TRUNC
// in msg_flags (the datagram was longer than the buffers: they hold its first bytes, the rest
// is lost; recvmsg(2), udp(7)). Linux reports it as a successful receive with the flag.
inline bool datagram_truncated(const op_core& c) noexcept {
    return (c.lop.msg.msg_flags & MSG_TRUNC) != 0;
}

// A completion that moved at least this many bytes is posted as any packet is, waking an idle
// worker, rather than kept for the worker that reaped or caused it (`local`, which wakes
// nobody). Local suits short handlers: the worker is back for the packet within microseconds,
// sooner than a sleeper could wake. But a transfer this large was, or will be, a long call on a
// worker (a file read served from the page cache inside its start call copies 64 KiB in about
// 5 us, 1 MiB in 70-100 us), and local packets then wait for that one worker while another
// sleeps (measured: 8 reads of 1 MiB in flight on 2 workers kept 1.3 cores busy, 0.63-0.69x
// pread tasks on a plain pool).
inline constexpr std::size_t local_completion_max_bytes = std::size_t{64} * 1024;

// The completion from the backend: a packet for the pool, with the layer's own key.
inline void on_backend_complete(linux_op* l, int res) noexcept {
    io_operation* self = static_cast<op_core::linux_slot*>(l)->self;
    completion result{{}, 0, posted_completion_key()};
    if (res < 0)
        result.error.assign(-res, std::system_category());
    else
        result.bytes = static_cast<std::size_t>(res);
    thread_pool* pool = self->pool();
    std::error_code ec;
    // Local: a worker of the pool that reaped this (or caused it) takes it itself next.
    if (result.bytes < local_completion_max_bytes)
        pool_io_access::post_completion_local(*pool, self, result, ec);
    else
        pool->post_completion(self, result, ec);
    if (ec) {
        // TRICKY: only when the pool cannot take a packet at all (out of memory for its
        // backlog too): every operation in flight is counted, so the pool has not closed its
        // completions. Rather than lose the completion, run it here, on the backend's thread.
        static_cast<operation*>(self)->complete(pool, result);
    }
}

inline bool issue(io_operation& op, op_core& c, io_state&, int fd, const request& req,
                  completion&) noexcept {
    op_core::linux_slot& l = c.lop;
    l.self = &op;
    l.fd = fd;
    l.offset = req.offset;
    l.iov_count = static_cast<unsigned>(req.count);
    for (std::size_t i = 0; i < req.count; ++i)
        l.iov[i] = ::iovec{req.bufs[i].data, req.bufs[i].size};
    l.msg = ::msghdr{};
    l.msg.msg_iov = l.iov;
    l.msg.msg_iovlen = req.count;
    l.addr_len = 0;
    switch (req.what) {
    case request::kind::read_at: l.what = linux_op::kind::read_at; break;
    case request::kind::write_at: l.what = linux_op::kind::write_at; break;
    case request::kind::recv: l.what = linux_op::kind::recv; break;
    case request::kind::send: l.what = linux_op::kind::send; break;
    case request::kind::connect:
        l.what = linux_op::kind::connect;
        std::memcpy(&l.addr, req.peer->data(), static_cast<std::size_t>(req.peer->size()));
        l.addr_len = static_cast<::socklen_t>(req.peer->size());
        break;
    case request::kind::accept:
        l.what = linux_op::kind::accept;
        l.addr_len = sizeof l.addr;
        break;
    case request::kind::recv_from:
        l.what = linux_op::kind::recv_from;
        l.addr_len = sizeof l.addr;
        break;
    case request::kind::send_to:
        l.what = linux_op::kind::send_to;
        std::memcpy(&l.addr, req.peer->data(), static_cast<std::size_t>(req.peer->size()));
        l.addr_len = static_cast<::socklen_t>(req.peer->size());
        break;
    }
    l.on_complete = &on_backend_complete;
    l.next = nullptr;
    l.backend_data = nullptr;
    // TRICKY: in_kernel before the hand-over: the backend may complete the operation on its
    // thread before issue() returns, and from then on the operation is not ours to touch.
    c.ph.store(phase::in_kernel, std::memory_order_release);
    int res = 0;
    if (instance().issue_now(l, res)) {
        // Finished at once (epoll): delivered as a reaped completion, through the port, so the
        // handler still never runs inside its start call.
        on_backend_complete(&l, res);
    }
    return true;
}

inline std::error_code prepare_listener(io_state&) noexcept { return {}; }
// Before bind: SO_REUSEADDR, so that a server restarted while its old connections sit in
// TIME_WAIT can bind its port again (on Linux it does not let two listeners share a port).
inline void before_listen_bind(socket_type s) noexcept {
    const int on = 1;
    (void)::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
}

} // namespace iocp::detail::io::lnx
