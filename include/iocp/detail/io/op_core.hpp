#pragma once
// The backend-neutral pieces every I/O operation carries, and the description of one call
// (`request`) that the public objects (file, socket, acceptor) build once and each backend
// issues its own way: Win32 in win32/issue.hpp (ReadFile, WSARecv, AcceptEx, ...), Linux in
// linux/issue.hpp (a linux_op handed to the io_uring or epoll backend).

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <system_error>

#include "../../buffer.hpp"
#include "../../config.hpp"
#include "../../operation.hpp"

#if !IOCP_WINDOWS
#include "linux/backend.hpp"
#endif

namespace iocp {
class io_operation;
class endpoint;
class thread_pool;
} // namespace iocp

namespace iocp::detail::io {

struct io_state;

enum class handle_kind : unsigned char { file, socket };

// How file::open asks for a file (the bits of iocp::file_mode, decoded).
struct open_flags {
    bool read, write, create, truncate, exclusive;
};

// What one issue does: the neutral description of a read, write, receive, send, connect or
// accept. Lives on the start path's stack: every backend copies what it needs before issue()
// returns (Win32: WSABUFs are captured by the call; Linux: into the operation's linux_op).
struct request {
    // recv_from / send_to: a datagram with its address (a datagram_socket's receive and send
    // without a default peer use them; connected ones use recv / send).
    enum class kind : unsigned char {
        read_at,
        write_at,
        recv,
        send,
        connect,
        accept,
        recv_from,
        send_to
    };
    struct buf {
        void* data;
        std::size_t size;
    };
    kind what = kind::read_at;
    std::uint64_t offset = 0;       // read_at / write_at
    buf bufs[max_buffers]{};        // read_at / write_at use bufs[0]
    std::size_t count = 0;          // buffers in use
    const endpoint* peer = nullptr; // connect; send_to: the destination
    void* accept_slot = nullptr;    // accept: the backend's accept_slot in the accept_operation
    void* from_slot = nullptr;      // recv_from: the backend's from_slot in the operation
};

// Work an operation does on its completion before the user's function sees it (update the
// accept context, map a 0-byte receive to eof, continue a partial send). Returns false when
// the operation was started again and is still in flight.
using finish_fn = bool (*)(io_operation* op, std::error_code& ec, std::size_t& bytes) noexcept;

// The start guard. Where a start stands between its call and its completion:
//   issuing        the call is under way in the start path
//   in_kernel      the call returned pending or done: the backend's completion comes later
//   early_packet   (Win32) the kernel's packet came before the call returned: the packet's
//                  worker left the operation (and its result) to the start path, which posts it
//   failed_sync    the call failed at once: the start path posts the failure, and a
//                  kernel packet for this start is a stray, dropped
//   stray_dropped  such a stray came and was dropped
//   idle           completed (or never started)
// On Linux a backend never completes inside issue() and every completion is posted by this
// layer, so only idle, in_kernel and failed_sync occur there.
enum class phase : unsigned char {
    idle,
    issuing,
    in_kernel,
    early_packet,
    failed_sync,
    stray_dropped
};

// The library's bookkeeping of one operation, private to io_operation (reached through
// io_access). One set per operation object, reused by each start.
struct op_core {
    finish_fn finish = nullptr; // set by each start
    io_state* state = nullptr;  // holds a reference while in flight
    thread_pool* pool = nullptr;
    std::size_t requested = 0; // bytes asked for (a 0-byte result of a non-empty read = eof)
    std::atomic<phase> ph{phase::idle};
    std::error_code early_error; // a kernel packet's result, kept while phase is early_packet
    std::size_t early_bytes = 0;
#if !IOCP_WINDOWS
    // What the Linux backend works on while the operation is in flight, and its owner (the
    // backend's completion hands back the linux_op; the derived type leads back to us).
    struct linux_slot : lnx::linux_op {
        io_operation* self = nullptr;
    };
    linux_slot lop;
#endif
};

} // namespace iocp::detail::io

namespace iocp::detail::io {

// The completion key of the completions the library posts itself (an operation that failed at
// once, a packet that came before its start call returned, every Linux completion). Win32
// kernel packets carry the handle's key, its io_state: the key tells the two apart (the start
// guard in io_operation).
inline constexpr unsigned char posted_completion_tag = 0;
inline void* posted_completion_key() noexcept {
    return const_cast<unsigned char*>(&posted_completion_tag);
}

} // namespace iocp::detail::io
