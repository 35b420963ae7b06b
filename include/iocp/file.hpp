#pragma once
/// @file
/// `iocp::file`: a file opened for overlapped I/O, whose reads and writes at explicit offsets
/// complete on a `thread_pool`.
///
/// @code
/// iocp::thread_pool pool(4);
/// iocp::file in(pool, "input.bin", iocp::file_mode::read);
/// std::vector<char> chunk(64 * 1024);
/// in.read_at(0, iocp::buffer(chunk), [&](std::error_code ec, std::size_t n) {
///     if (ec == iocp::errc::eof) { /* nothing at that offset */ }
///     else if (!ec) { /* chunk[0, n) holds the data */ }
/// });
/// @endcode
///
/// Each handler-based call allocates one small operation object (recycled per thread, so a
/// handler that starts the next read on its worker allocates nothing). `iocp::start_read_at`
/// and `iocp::start_write_at` take an `iocp::io_operation` of your own instead and allocate
/// nothing at all. Completions arrive through the pool's port, or, on a file that opted in to
/// `skip_completion_port_on_success()`, a call Windows completes at once through the pool's own
/// queue; either way a handler never runs inside the call that started it.
///
/// Available wherever `IOCP_HAS_IO` is 1. On Linux files are opened with open(2) (O_CLOEXEC)
/// and read and written through the I/O backend: io_uring's READ/WRITE at the offset, or with
/// epoll (which cannot watch regular files) a pread/pwrite on the backend's own threads.

#include "config.hpp"

#if IOCP_HAS_IO

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>

#include "buffer.hpp"
#include "detail/io/handler_op.hpp"
#include "detail/io/io_state.hpp"
#include "detail/io/skip_on_success.hpp"
#include "detail/io/start.hpp"
#include "error.hpp"
#include "io_operation.hpp"
#include "thread_pool.hpp"
#include "unique_handle.hpp"

namespace iocp {

/// How `file::open` opens a file: an access (`read`, `write` or both) combined with `|` with
/// what to do about a file that exists or not.
enum class file_mode : unsigned {
    read = 1,       ///< read access
    write = 2,      ///< write access
    read_write = 3, ///< both
    create = 4,     ///< create the file if it does not exist
    truncate = 8,   ///< empty the file if it exists (needs `write`: see `file::open`)
    exclusive = 16, ///< with `create`: fail (ERROR_FILE_EXISTS) if the file exists
};

/// Combines file modes.
constexpr file_mode operator|(file_mode a, file_mode b) noexcept {
    return static_cast<file_mode>(static_cast<unsigned>(a) | static_cast<unsigned>(b));
}

/// True if `mode` includes every bit of `flag`.
constexpr bool has_mode(file_mode mode, file_mode flag) noexcept {
    return (static_cast<unsigned>(mode) & static_cast<unsigned>(flag)) ==
           static_cast<unsigned>(flag);
}

class file;

/// Starts an overlapped read of up to `buffer.size` bytes at `offset` into `buffer`, with
/// your own operation object (no allocation). Completes `op` exactly once on a worker of the
/// file's pool with the bytes read, or `errc::eof` when `offset` is at or past the end of the
/// file (whether Windows reports it at once or in the packet; a read of 0 bytes is never eof: it
/// completes with 0 bytes), `errc::operation_aborted`
/// after `cancel`/`close`, `errc::invalid_handle` if the file is not open,
/// `std::errc::permission_denied` for a read through a file opened without read access (or a
/// write without write access: Win32's ERROR_ACCESS_DENIED; Linux's EBADF, which the library
/// reports the same way), `errc::closed` while the pool shuts down. At most 2 GiB are read
/// per call.
/// @returns an error only if nothing was started: the file has no pool, or `offset` (or
/// `offset` + the size) lies above INT64_MAX, an offset no file can have and that Windows
/// would read as "append" or "current position" (`std::errc::invalid_argument`), or its pool
/// has shut down for good (`errc::closed`); `op` is then not completed.
std::error_code start_read_at(file& f, io_operation& op, std::uint64_t offset,
                              mutable_buffer buffer) noexcept;

/// Starts an overlapped write of `buffer` at `offset` with your own operation object, as
/// `start_read_at` does (same completion rules, same returned errors).
std::error_code start_write_at(file& f, io_operation& op, std::uint64_t offset,
                               const_buffer buffer) noexcept;

/// A file opened for overlapped I/O and associated with a `thread_pool`.
///
/// Lifetime: the pool must outlive the file. Destroying or closing the file cancels its
/// pending operations: each still completes exactly once, on the pool, with
/// `errc::operation_aborted` (or its result, if it finished first); the memory the kernel
/// writes to stays valid because each operation object lives until its completion. The
/// buffers are yours: they must stay valid until the completion. If the pool shuts down
/// while the file is open, its pending operations are cancelled the same way, new ones
/// complete with `errc::closed`, and once the pool has joined they fail to start (the
/// handler-based calls throw).
///
/// Thread safety: `read_at`, `write_at`, `size`, `cancel` and the `start_*` functions may run
/// concurrently with each other (many reads and writes in flight from several threads is the
/// point). `open`, `assign`, `close`, assignment and destruction change the object and must
/// not overlap any other call on it.
class file {
public:
    /// A closed file without a pool: it can only be assigned to.
    file() noexcept = default;

    /// A closed file whose operations will run on `pool`.
    explicit file(thread_pool& pool) noexcept : pool_(&pool) {}

    /// Opens `path` (see `open`).
    /// @throws std::system_error naming the path: ERROR_FILE_NOT_FOUND / ERROR_PATH_NOT_FOUND
    /// for a missing file (`== std::errc::no_such_file_or_directory`), ERROR_ACCESS_DENIED
    /// (`== std::errc::permission_denied`), ERROR_FILE_EXISTS with `exclusive`, ...
    file(thread_pool& pool, const std::filesystem::path& path, file_mode mode) : pool_(&pool) {
        open(path, mode);
    }

    /// Takes ownership of a handle opened with FILE_FLAG_OVERLAPPED and associates it with
    /// `pool`. @throws std::system_error as `assign`.
    file(thread_pool& pool, unique_handle handle) : pool_(&pool) { assign(std::move(handle)); }

    /// Takes over `other`'s handle, pool and pending operations.
    file(file&& other) noexcept
        : pool_(other.pool_), state_(std::exchange(other.state_, nullptr)) {}

    /// Closes this file (cancelling its operations), then takes over `other`'s.
    file& operator=(file&& other) noexcept {
        if (this != &other) {
            (void)detail::io::close_state(std::exchange(state_, nullptr));
            pool_ = other.pool_;
            state_ = std::exchange(other.state_, nullptr);
        }
        return *this;
    }

    file(const file&) = delete;
    file& operator=(const file&) = delete;

    /// Closes the file, cancelling pending operations (they still complete, aborted).
    ~file() { (void)detail::io::close_state(state_); }

    /// Opens (or creates, per `mode`) `path` for overlapped I/O and associates it with the
    /// pool. A file that was open is closed first. Sharing: others may read, write and delete
    /// the file meanwhile.
    /// Errors: the system's (ERROR_FILE_NOT_FOUND, ERROR_PATH_NOT_FOUND, ERROR_ACCESS_DENIED,
    /// ERROR_FILE_EXISTS, ERROR_SHARING_VIOLATION...); `std::errc::invalid_argument` if
    /// `mode` has no access bit, has `truncate` without `write`, or the file has no pool; on
    /// Linux EISDIR for a directory and ESPIPE for a FIFO or socket (refused at once: a FIFO is
    /// never waited for in open(2)).
    void open(const std::filesystem::path& path, file_mode mode, std::error_code& ec) noexcept {
        close(ec);
        // `truncate` without `write` is refused on every backend, before anything is opened:
        // Linux's open(2) empties a file opened O_RDONLY | O_TRUNC (POSIX leaves it
        // unspecified), and so does Wine 8's CreateFileW (measured), destroying a file its
        // caller asked only to read, while Microsoft's CreateFileW documentation requires
        // GENERIC_WRITE for TRUNCATE_EXISTING.
        if (pool_ == nullptr ||
            (!has_mode(mode, file_mode::read) && !has_mode(mode, file_mode::write)) ||
            (has_mode(mode, file_mode::truncate) && !has_mode(mode, file_mode::write))) {
            ec = std::make_error_code(std::errc::invalid_argument);
            return;
        }
        const detail::io::open_flags flags{
            has_mode(mode, file_mode::read), has_mode(mode, file_mode::write),
            has_mode(mode, file_mode::create), has_mode(mode, file_mode::truncate),
            has_mode(mode, file_mode::exclusive)};
        native_handle_type h = detail::io::native::open_file(path, flags, ec);
        if (ec)
            return;
        adopt(h, ec);
    }
    /// As above. @throws std::system_error whose message names the path.
    void open(const std::filesystem::path& path, file_mode mode) {
        std::error_code ec;
        open(path, mode, ec);
        if (ec)
            throw std::system_error(ec, describe("iocp::file::open: cannot open ", path));
    }

    /// Takes ownership of `handle` (opened with FILE_FLAG_OVERLAPPED) and associates it with
    /// the pool; a file that was open is closed first. On failure `handle` is closed.
    /// Errors: `errc::invalid_handle` for an empty handle, the system's for a bogus one or one
    /// already associated with a port, `std::errc::invalid_argument` without a pool; on Linux
    /// EISDIR for a directory and ESPIPE for a pipe or socket (no offsets to read at).
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
        detail::throw_if(ec, "iocp::file::assign");
    }

    /// True while a handle is held.
    bool is_open() const noexcept { return state_ != nullptr; }

    /// The handle (INVALID_HANDLE_VALUE, or -1 on Linux, when closed), still owned by the file.
    native_handle_type native_handle() const noexcept {
        return state_ != nullptr ? state_->get() : detail::io::native::invalid_handle();
    }

    /// The pool the file's operations complete on (nullptr for a default-constructed file).
    thread_pool* pool() const noexcept { return pool_; }

    /// The file's size in bytes. Errors: `errc::invalid_handle` when closed, or the system's.
    std::uint64_t size(std::error_code& ec) const noexcept {
        if (state_ == nullptr) {
            ec = make_error_code(errc::invalid_handle);
            return 0;
        }
        return detail::io::native::file_size(native_handle(), ec);
    }
    /// As above. @throws std::system_error
    std::uint64_t size() const {
        std::error_code ec;
        std::uint64_t n = size(ec);
        detail::throw_if(ec, "iocp::file::size");
        return n;
    }

    /// Reads up to `buffer.size` bytes at `offset`; calls `handler(std::error_code, std::size_t
    /// bytes)` once, on a worker of the pool, never inside this call. `errc::eof` when
    /// `offset` is at or past the end of the file (a 0-byte read is never eof: it completes
    /// with 0 bytes); a read that straddles the end returns
    /// fewer bytes. The buffer must stay valid until the handler runs. An exception from the
    /// handler goes to the pool's exception handler.
    /// @throws std::system_error (`errc::closed`) if the pool has already shut down, or
    /// `std::errc::invalid_argument` if the file has no pool or the range lies above
    /// INT64_MAX (see `start_read_at`): the handler is then destroyed without running.
    /// `std::bad_alloc` if the operation cannot be allocated.
    template <class Handler>
    void read_at(std::uint64_t offset, mutable_buffer buffer, Handler&& handler) {
        detail::io::start_handler_op<io_operation>(
            std::forward<Handler>(handler), "iocp::file::read_at",
            [&](io_operation& op) { return start_read_at(*this, op, offset, buffer); });
    }

    /// Writes `buffer` at `offset` (extending the file if needed); calls `handler(std::
    /// error_code, std::size_t bytes)` once, on a worker. Same rules and errors as `read_at`.
    template <class Handler>
    void write_at(std::uint64_t offset, const_buffer buffer, Handler&& handler) {
        detail::io::start_handler_op<io_operation>(
            std::forward<Handler>(handler), "iocp::file::write_at",
            [&](io_operation& op) { return start_write_at(*this, op, offset, buffer); });
    }

    /// Opts in to skipping the completion port on success (Win32:
    /// SetFileCompletionNotificationModes with FILE_SKIP_COMPLETION_PORT_ON_SUCCESS |
    /// FILE_SKIP_SET_EVENT_ON_HANDLE): a read or write the kernel completes at once (Windows often
    /// does for cached data; Wine 8 never does for files) then queues no packet, and the library
    /// delivers its result through the pool's own queue instead — still exactly once, on a worker,
    /// never inside the start call, but without the port's post and dequeue. It cannot be undone;
    /// set it before starting any operation. Errors: `errc::invalid_handle` when closed;
    /// `std::errc::device_or_resource_busy` while an operation is in flight; the system's; on Linux
    /// always `std::errc::operation_not_supported` (every completion there is the I/O layer's own:
    /// there is no kernel packet to skip).
    void skip_completion_port_on_success(std::error_code& ec) noexcept {
        ec = detail::io::enable_skip_on_success(state_);
    }
    /// As above. @throws std::system_error
    void skip_completion_port_on_success() {
        detail::throw_if(detail::io::enable_skip_on_success(state_),
                         "iocp::file::skip_completion_port_on_success");
    }
    /// Whether completions that succeed at once skip the port (see above).
    bool skips_completion_port_on_success() const noexcept {
        return detail::io::skips_on_success(state_);
    }

    /// Cancels the pending operations (they complete with `errc::operation_aborted`, or with
    /// their result if they finished first); the file stays open.
    /// Errors: `errc::invalid_handle` when closed.
    void cancel(std::error_code& ec) noexcept { ec = detail::io::cancel_state(state_); }
    /// As above. @throws std::system_error
    void cancel() { detail::throw_if(detail::io::cancel_state(state_), "iocp::file::cancel"); }

    /// Closes the file; pending operations complete with `errc::operation_aborted`. Closing a
    /// closed file does nothing. The file keeps its pool and can be opened again.
    void close(std::error_code& ec) noexcept {
        ec = detail::io::close_state(std::exchange(state_, nullptr));
    }
    /// As above. @throws std::system_error if the system reports an error closing the handle
    /// (the file is closed anyway).
    void close() {
        std::error_code ec;
        close(ec);
        detail::throw_if(ec, "iocp::file::close");
    }

private:
    friend std::error_code start_read_at(file&, io_operation&, std::uint64_t,
                                         mutable_buffer) noexcept;
    friend std::error_code start_write_at(file&, io_operation&, std::uint64_t,
                                          const_buffer) noexcept;

    // Largest transfer per call, 2 GiB less 4 KiB: ReadFile/WriteFile take a DWORD; Linux
    // transfers at most this much per read or write (MAX_RW_COUNT, read(2)), and io_uring
    // reports the bytes as an int.
    static constexpr std::size_t max_transfer = 0x7FFFF000u;

    // The largest offset a file can have: Windows' file offsets are signed 64-bit (LARGE_
    // INTEGER). Above it are values the kernel reads as something else: 0xFFFFFFFFFFFFFFFF is
    // "write at the end of the file" (FILE_WRITE_TO_END_OF_FILE), 0xFFFFFFFFFFFFFFFE "at the
    // current position" (FILE_USE_FILE_POINTER_POSITION), the rest ERROR_INVALID_PARAMETER.
    static constexpr std::uint64_t max_offset = 0x7FFFFFFFFFFFFFFFull;

    // Whether `size` bytes at `offset` lie within the offsets a file can have (no overflow).
    static constexpr bool valid_range(std::uint64_t offset, std::uint64_t size) noexcept {
        return offset <= max_offset && size <= max_offset - offset;
    }

    void adopt(native_handle_type h, std::error_code& ec) noexcept {
        if (detail::io::native::valid(h) && !detail::io::native::check_file(h, ec)) {
            detail::io::native::close_unowned(h);
            return;
        }
        state_ = detail::io::open_state(*pool_, h, detail::io::handle_kind::file, 0, ec);
        if (ec)
            detail::io::native::close_unowned(h);
    }

    static std::string describe(const char* what, const std::filesystem::path& path) {
        try {
            return what + path.string();
        } catch (...) {
            return what; // the path has no narrow form
        }
    }

    std::error_code start(io_operation& op, std::size_t requested,
                          const detail::io::request& req) noexcept {
        if (pool_ == nullptr)
            return std::make_error_code(std::errc::invalid_argument);
        return detail::io::io_access::start(*pool_, state_, op, &finish, requested, req);
    }

    // A successful read of 0 bytes into a non-empty buffer is the end of the file, as
    // ERROR_HANDLE_EOF is (that one is mapped with the other errors).
    //
    // A write through a file opened for reading only (or a read through one opened for writing
    // only): Linux's pwrite/pread say EBADF, "fd is not open for writing/reading" (write(2),
    // read(2)), which the error table reads as a handle that is not open; Windows says
    // ERROR_ACCESS_DENIED. The handle is open and we did not close it, so say what Windows says
    // rather than send the user looking for a closed file. (A file closed before the start
    // has no state here and keeps `errc::invalid_handle`; one we closed under the operation
    // reports `errc::operation_aborted`.)
    static bool finish(io_operation* op, std::error_code& ec, std::size_t& bytes) noexcept {
        if (!ec && bytes == 0 && detail::io::io_access::requested(*op) > 0)
            ec = make_error_code(errc::eof);
        if (ec == errc::invalid_handle) {
            const detail::io::io_state* st = detail::io::io_access::state(*op);
            if (st != nullptr && !st->ours())
                ec = std::make_error_code(std::errc::permission_denied);
        }
        return true;
    }

    thread_pool* pool_ = nullptr;
    detail::io::io_state* state_ = nullptr; // non-null while open
};

inline std::error_code start_read_at(file& f, io_operation& op, std::uint64_t offset,
                                     mutable_buffer buffer) noexcept {
    const std::size_t n = (std::min)(buffer.size, file::max_transfer);
    if (!file::valid_range(offset, n))
        return std::make_error_code(std::errc::invalid_argument);
    detail::io::request req;
    req.what = detail::io::request::kind::read_at;
    req.offset = offset;
    req.bufs[0] = {buffer.data, n};
    req.count = 1;
    // Reads into nothing are not eof: only a non-empty read gets the eof check.
    return f.start(op, n, req);
}

inline std::error_code start_write_at(file& f, io_operation& op, std::uint64_t offset,
                                      const_buffer buffer) noexcept {
    const std::size_t n = (std::min)(buffer.size, file::max_transfer);
    if (!file::valid_range(offset, n))
        return std::make_error_code(std::errc::invalid_argument);
    detail::io::request req;
    req.what = detail::io::request::kind::write_at;
    req.offset = offset;
    req.bufs[0] = {const_cast<void*>(buffer.data), n};
    req.count = 1;
    return f.start(op, 0, req);
}

} // namespace iocp

#endif // IOCP_HAS_IO
