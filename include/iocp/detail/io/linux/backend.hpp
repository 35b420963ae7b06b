#pragma once
// The contract between the backend-neutral I/O layer (detail/io/) and the Linux backends below
// it (uring_backend.hpp: io_uring through liburing; epoll_backend.hpp: readiness, then the
// non-blocking call). The layer embeds one linux_op in every io_operation, fills it, and hands it
// to backend::issue(); the backend calls on_complete exactly once, on the thread that reaps it
// (a pool worker in poll(), or the backend's own thread), never inside issue(), and the layer
// turns that into a port packet (pool.post_completion), the path Windows completions take.
//
// The namespace is `lnx`, not `linux`: GCC and Clang predefine `linux` as a macro in the GNU
// dialects (-std=gnu++20), which would rename the namespace silently.

#include "../../../config.hpp"
#include "../../posix/completion_poller.hpp"

#include <cstdint>
#include <system_error>

#include <sys/socket.h>
#include <sys/uio.h>

namespace iocp::detail::io::lnx {

/// The most buffers one recv/send carries: the layer refuses more (errc::invalid_argument) before
/// anything is issued, so a backend never sees iov_count > max_buffers.
inline constexpr unsigned max_buffers = 8;

// One operation in flight on a Linux backend; embedded in every io_operation on Linux.
struct linux_op {
    // recv_from / send_to: datagrams with an address (recvmsg / sendmsg with msg_name = addr).
    enum class kind : unsigned char {
        read_at,
        write_at,
        recv,
        send,
        accept,
        connect,
        recv_from,
        send_to
    };
    kind what{};
    int fd = -1;
    std::uint64_t offset = 0;   // read_at / write_at (the layer refuses offsets > INT64_MAX)
    ::iovec iov[max_buffers]{}; // recv / send (read_at / write_at use iov[0])
    unsigned iov_count = 0;
    // For recvmsg / sendmsg; lives as long as the op. The backend builds it from iov (and, for
    // recv_from / send_to, msg_name = &addr); after a recv or recv_from completes, msg_flags is
    // what recvmsg reported (MSG_TRUNC: the datagram was longer than the buffers, its tail is
    // lost) and, for recv_from, msg_namelen the sender's address length.
    ::msghdr msg{};
    ::sockaddr_storage addr{}; // connect / send_to: the peer; accept / recv_from: receives the peer
    ::socklen_t addr_len = 0;  // connect / send_to: the peer's length; accept: set by the backend
    // Called exactly once per issue(), never inside issue() itself, on the reaping thread:
    // res >= 0 is the result (bytes; accept: the new fd, CLOEXEC set), res < 0 is -errno
    // (-ECANCELED after cancel). After it returns the backend never touches the op again
    // (the callee may free or reuse the op inside on_complete).
    // send: the layer always asks MSG_NOSIGNAL semantics; a backend never raises SIGPIPE.
    // A send may complete with fewer bytes than asked (a partial send); the layer continues.
    void (*on_complete)(linux_op* op, int res) noexcept = nullptr;
    linux_op* next = nullptr;     // the backend's intrusive link
    void* backend_data = nullptr; // the backend's scratch word
};

// Every backend is also the completion_poller of the pools that use it: their idle workers
// reap its completions (poll), so a completion reaches the thread that runs it without a
// handoff. Its own thread ("watchdog") only reaps when no worker does (all busy, or none yet).
class backend : public posix::completion_poller {
public:
    backend() = default;
    backend(const backend&) = delete;
    backend& operator=(const backend&) = delete;
    virtual ~backend() = default;
    virtual const char* name() const noexcept = 0;       // "io_uring" or "epoll"
    virtual std::error_code attach(int fd) noexcept = 0; // an fd joins (sockets and files)
    virtual void detach(int fd) noexcept = 0;            // before close(fd): no event for it after
    virtual void issue(linux_op& op) noexcept = 0;       // hands op over; completes it once later
    // Every op of fd completes (-ECANCELED unless it finished first), soon.
    virtual void cancel(int fd) noexcept = 0;
    // As issue(), except that an operation finished at once may be returned instead: true with
    // its result in `res`, and then on_complete is never called for this issue. The layer uses
    // it to deliver such a result from the issuing thread: a send with room (both backends), a
    // recv with data (epoll), a read_at the page cache holds (both, cached_read.hpp).
    virtual bool issue_now(linux_op& op, int& res) noexcept {
        (void)res;
        issue(op);
        return false;
    }
    // Cancels the one operation `op` (issued, on_complete not yet returned): it completes once,
    // with -ECANCELED unless it finished (or finishes) first; the fd's other ops go on. An op
    // that already completed is left alone (the call does nothing). Never completes op inside
    // this call.
    virtual void cancel(linux_op& op) noexcept = 0;
};

// The process-wide backend, chosen once at first use (defined in select.hpp):
// IOCP_IO_BACKEND=epoll|io_uring in the environment forces one (io_uring unavailable -> epoll,
// silently; iocp::io_backend_name() tells which); otherwise io_uring when liburing was compiled
// in (IOCP_HAS_LIBURING) and io_uring_queue_init works (ENOSYS/EPERM/... -> epoll). Never
// destroyed (a backend's threads live until the process ends). try_instance returns nullptr with
// the reason when none can be started (the first I/O object's open then fails with it);
// instance() is for handles already attached.
backend* try_instance(std::error_code& ec) noexcept;
backend& instance() noexcept;

} // namespace iocp::detail::io::lnx
