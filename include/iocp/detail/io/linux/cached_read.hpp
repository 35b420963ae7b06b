#pragma once
// A read_at served straight from the page cache, on the issuing thread, by both Linux backends
// (their issue_now): a cached read then costs one preadv2 and no handoff to a reaper, a file
// thread or the ring. A read that would block goes to the backend as before.

#include <climits>
#include <cstddef>
#include <cstdint>

#include <sys/uio.h>

#include "backend.hpp"

namespace iocp::detail::io::lnx {

// A read_at served from the page cache without blocking: true with `res` set when the read
// finished whole (every byte asked, or a short count that ends at the end of the file), false
// when it would block (a page not cached: EAGAIN) or read only part of what the cache holds.
// TRICKY: a partial RWF_NOWAIT read cannot be told from the end of the file without another
// call, and read_at never returns a short count mid-file; such a read is dropped and done again
// whole by the backend (a file thread, or the ring; the bytes read here are overwritten with
// the same bytes).
inline bool read_cached(linux_op& op, int& res) noexcept {
#if defined(RWF_NOWAIT)
    const unsigned count = op.iov_count == 0 ? 1u : op.iov_count;
    if (count > max_buffers || op.offset > static_cast<std::uint64_t>(INT64_MAX))
        return false; // run_file_op reports the error
    std::size_t asked = 0;
    for (unsigned i = 0; i < count; ++i)
        asked += op.iov[i].iov_len;
    const ::ssize_t n = ::preadv2(op.fd, op.iov, static_cast<int>(count),
                                  static_cast<::off_t>(op.offset), RWF_NOWAIT);
    if (n < 0)
        return false; // EAGAIN (not cached), EOPNOTSUPP (no RWF_NOWAIT here), ...: a file thread
    if (static_cast<std::size_t>(n) == asked || n == 0) {
        // n == 0: at or past the end (RWF_NOWAIT fails with EAGAIN rather than return 0 for
        // uncached data).
        res = n > static_cast<::ssize_t>(INT_MAX) ? INT_MAX : static_cast<int>(n);
        return true;
    }
    return false;
#else
    (void)op;
    (void)res;
    return false;
#endif
}

} // namespace iocp::detail::io::lnx
