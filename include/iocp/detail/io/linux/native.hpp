#pragma once
// The Linux half of the per-handle work: a handle is a file descriptor, it joins the process's
// Linux backend (io_uring or epoll, select.hpp), is cancelled through it and closed after
// that; errno values read through errno_table.hpp. The neutral layer (io_state.hpp) reaches
// this as detail::io::native.

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <system_error>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../../error.hpp"
#include "../../../thread_pool.hpp"
#include "../op_core.hpp"
#include "backend.hpp"
#include "errno_table.hpp"
#include "select.hpp"

namespace iocp::detail::io::lnx {

using handle_type = int;
using socket_type = int;

inline handle_type invalid_handle() noexcept { return -1; }
inline bool valid(handle_type h) noexcept { return h >= 0; }
inline socket_type as_socket(handle_type h) noexcept { return h; }
inline handle_type from_socket(socket_type s) noexcept { return s; }
inline constexpr socket_type invalid_socket = -1;

// Nothing beyond the neutral fields.
struct state_extra {};

inline std::error_code errno_code(int e) noexcept { return {e, std::system_category()}; }
inline std::error_code last_errno() noexcept { return errno_code(errno); }

// The fd joins the backend (it need not join the pool: completions reach the pool as posted
// packets, see issue.hpp), and the pool's idle workers start reaping the backend's completions
// themselves (completion_poller.hpp; once per pool, later calls change nothing).
// A descriptor that is not open (never opened, or closed already) is refused here with EBADF
// (errc::invalid_handle), before any backend sees it: io_uring would only fail each operation.
inline std::error_code attach(thread_pool& pool, handle_type h, void*, handle_kind,
                              state_extra&) noexcept {
    if (::fcntl(h, F_GETFD) == -1)
        return last_errno();
    std::error_code ec;
    backend* b = try_instance(ec);
    if (b == nullptr)
        return ec; // no backend could be started (EMFILE, EAGAIN for its thread, ...)
    pool_io_access::set_completion_poller(pool, b);
    return b->attach(h);
}

// Every pending operation of `h` completes with -ECANCELED (unless it finished first).
inline void cancel_all(handle_type h) noexcept { instance().cancel(h); }
inline std::error_code cancel(handle_type h) noexcept {
    instance().cancel(h);
    return {};
}
// The one operation `op` completes with -ECANCELED (unless it finished first); the others of
// its descriptor go on.
inline void cancel_one(handle_type, linux_op& op) noexcept { instance().cancel(op); }

// TRICKY: called after cancel_all and before ::close: neither io_uring nor epoll notices a
// close by itself (an orphan io_uring recv keeps the file open and eats the peer's next
// bytes; epoll keeps reporting a closed fd's events), see LINUX-IO-NOTES 4 and 6.
inline void detach(handle_type h) noexcept { instance().detach(h); }

inline std::error_code close(handle_type h, handle_kind) noexcept {
    // close(2): the descriptor is gone even when it reports EINTR; never retry.
    if (::close(h) != 0 && errno != EINTR)
        return last_errno();
    return {};
}

inline std::error_code translate(const std::error_code& e, bool ours) noexcept {
    return translate_errno(e, ours);
}

inline bool is_per_connection_error(const std::error_code& ec) noexcept {
    if (ec == make_error_code(errc::connection_reset))
        return true;
    return ec.category() == std::system_category() && is_per_connection_errno(ec.value());
}

// A new TCP socket, close-on-exec. Blocking: io_uring needs nothing else (FAST_POLL), and the
// epoll backend makes the descriptors it is given non-blocking itself in attach().
inline socket_type make_tcp_socket(int family, std::error_code& ec) noexcept {
    const int s = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
    if (s < 0)
        ec = last_errno();
    else
        ec.clear();
    return s;
}
// A new UDP socket, close-on-exec (blocking, as make_tcp_socket).
inline socket_type make_udp_socket(int family, std::error_code& ec) noexcept {
    const int s = ::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, IPPROTO_UDP);
    if (s < 0)
        ec = last_errno();
    else
        ec.clear();
    return s;
}
// Nothing to set on a new datagram socket: Linux never reports an ICMP "port unreachable" on an
// unconnected UDP socket (udp(7), without IP_RECVERR), the behaviour Windows has to be told.
inline std::error_code prepare_datagram(socket_type) noexcept { return {}; }
inline void close_socket(socket_type s) noexcept {
    if (s >= 0)
        ::close(s);
}
inline std::error_code last_socket_error() noexcept { return last_errno(); }

// Opens a file with open(2), close-on-exec, created with mode 0666 (less the umask) as
// Windows creates files readable and writable. The modes map as CreateFileW's dispositions:
// create -> O_CREAT, exclusive -> O_EXCL, truncate -> O_TRUNC. Blocking descriptor: reads and
// writes go through the backend (io_uring reads files itself; epoll runs them on its threads).
// Whether `fd` can be an iocp::file, which reads and writes at offsets: a directory cannot
// (open(2) opens one for reading, and pread says EISDIR only at the first read; CreateFileW
// refuses it), nor can a pipe or socket (no offsets: ESPIPE; io_uring would read one as a stream
// and wait for data where epoll's pread fails at once). Both backends then refuse alike.
inline bool check_file(handle_type fd, std::error_code& ec) noexcept {
    struct ::stat st {};
    if (::fstat(fd, &st) != 0) {
        ec = last_errno();
        return false;
    }
    if (S_ISDIR(st.st_mode)) {
        ec = errno_code(EISDIR);
        return false;
    }
    if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) {
        ec = errno_code(ESPIPE);
        return false;
    }
    ec.clear();
    return true;
}

inline handle_type open_file(const std::filesystem::path& path, open_flags f,
                             std::error_code& ec) noexcept {
    int flags = O_CLOEXEC | (f.read && f.write ? O_RDWR : f.write ? O_WRONLY : O_RDONLY);
    if (f.create)
        flags |= O_CREAT;
    if (f.create && f.exclusive)
        flags |= O_EXCL;
    if (f.truncate)
        flags |= O_TRUNC;
    // O_NONBLOCK for the open alone: opening a FIFO for reading waits in open(2) until a
    // writer opens it, for writing until a reader does (fifo(7)), and a FIFO is refused
    // below anyway; without it such an open would block the caller for ever. With it, a
    // FIFO without a reader fails with ENXIO (open(2)), reported as the FIFO it is. Regular
    // files ignore the flag; it is cleared again before the descriptor is handed out.
    int fd;
    do
        fd = ::open(path.c_str(), flags | O_NONBLOCK, 0666);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        ec = last_errno();
        struct ::stat st {};
        if (errno == ENXIO && ::stat(path.c_str(), &st) == 0 && S_ISFIFO(st.st_mode))
            ec = errno_code(ESPIPE);
        return fd;
    }
    if (!check_file(fd, ec) || ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) {
        if (!ec)
            ec = last_errno();
        ::close(fd);
        return -1;
    }
    return fd;
}

inline std::uint64_t file_size(handle_type h, std::error_code& ec) noexcept {
    struct ::stat st {};
    if (::fstat(h, &st) != 0) {
        ec = last_errno();
        return 0;
    }
    ec.clear();
    return static_cast<std::uint64_t>(st.st_size);
}

// Closes a descriptor no state took.
inline void close_unowned(handle_type h) noexcept {
    if (valid(h))
        ::close(h);
}

// The socket calls file::, socket:: and acceptor:: make, in one spelling for both backends.
inline constexpr int shut_receive = SHUT_RD, shut_send = SHUT_WR, shut_both = SHUT_RDWR;
inline int sock_bind(socket_type s, const sockaddr* a, int len) noexcept {
    return ::bind(s, a, static_cast<::socklen_t>(len));
}
inline int sock_listen(socket_type s, int backlog) noexcept { return ::listen(s, backlog); }
inline int sock_name(socket_type s, sockaddr* a, int* len) noexcept {
    auto n = static_cast<::socklen_t>(*len);
    const int rc = ::getsockname(s, a, &n);
    *len = static_cast<int>(n);
    return rc;
}
inline int sock_peer(socket_type s, sockaddr* a, int* len) noexcept {
    auto n = static_cast<::socklen_t>(*len);
    const int rc = ::getpeername(s, a, &n);
    *len = static_cast<int>(n);
    return rc;
}
inline int sock_setopt(socket_type s, int level, int name, const void* v, int len) noexcept {
    return ::setsockopt(s, level, name, v, static_cast<::socklen_t>(len));
}
inline int sock_shutdown(socket_type s, int how) noexcept { return ::shutdown(s, how); }
// connect(2) on a datagram socket: sets the default peer at once (no handshake, never blocks).
inline int sock_connect(socket_type s, const sockaddr* a, int len) noexcept {
    return ::connect(s, a, static_cast<::socklen_t>(len));
}
inline int sock_linger(socket_type s, bool on, int seconds) noexcept {
    ::linger l{};
    l.l_onoff = on ? 1 : 0;
    l.l_linger = seconds;
    return ::setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}
// A connected socket needs nothing more on Linux.
inline std::error_code after_connect(socket_type) noexcept { return {}; }
// connect(2) binds an unbound socket itself.
inline constexpr bool connect_needs_bind = false;

} // namespace iocp::detail::io::lnx
