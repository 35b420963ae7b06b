#pragma once
// The Win32 backend's port: the kernel's I/O completion port.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <system_error>
#include <utility>

#include "../../error.hpp"
#include "../fault_injection.hpp"
#include "../packet.hpp"
#include "windows.hpp"

namespace iocp::detail::win32 {

inline std::error_code last_error() noexcept {
    return {static_cast<int>(::GetLastError()), std::system_category()};
}

// A wait's timeout for the kernel: wait_timeout's 0 (poll), its finite values (at most
// max_finite_wait, which is below INFINITE), or INFINITE.
inline DWORD to_wait_ms(std::chrono::milliseconds timeout) noexcept {
    const std::chrono::milliseconds t = wait_timeout(timeout);
    if (t == infinite)
        return INFINITE;
    return static_cast<DWORD>(t.count());
}

// The completion key of every packet post_failure queues (see stamp_posted_failure).
inline constexpr ULONG_PTR posted_failure_key = reserved_key_value;

using rtl_nt_status_to_dos_error_fn = ULONG(WINAPI*)(LONG);

inline ULONG nt_status_to_win32(LONG status) noexcept {
    // Looked up once rather than linked, so that users need not add ntdll to their link line.
    static const auto fn = reinterpret_cast<rtl_nt_status_to_dos_error_fn>(reinterpret_cast<void*>(
        ::GetProcAddress(::GetModuleHandleW(L"ntdll.dll"), "RtlNtStatusToDosError")));
    return fn != nullptr ? fn(status) : ERROR_MR_MID_NOT_FOUND;
}

// An I/O's result from the NTSTATUS the kernel reports for it (OVERLAPPED_ENTRY::Internal, the
// IO_STATUS_BLOCK status that NtRemoveIoCompletionEx fills, on Windows and on Wine).
inline std::error_code status_error(ULONG_PTR internal) noexcept {
    const auto status = static_cast<LONG>(static_cast<std::uint32_t>(internal));
    if (status >= 0)
        return {}; // NT_SUCCESS: success and informational statuses (a post is STATUS_SUCCESS)
    return {static_cast<int>(nt_status_to_win32(status)), std::system_category()};
}

// A dequeued packet, with the result of one that post_failure queued unpacked from where
// post_failure put it (only those packets' OVERLAPPEDs are read: the library wrote them).
inline raw_packet unpack(OVERLAPPED* ov, ULONG_PTR key, DWORD bytes,
                         std::error_code error) noexcept {
    if (key != posted_failure_key || ov == nullptr)
        return raw_packet{ov, reinterpret_cast<void*>(key), bytes, error};
    const auto* category = reinterpret_cast<const std::error_category*>(ov->Internal);
    // The value travelled as the byte count: C++20 converts it back to int modulo 2^32.
    const auto value = static_cast<int>(static_cast<std::uint32_t>(bytes));
    return raw_packet{ov, reinterpret_cast<void*>(ov->InternalHigh), 0, {value, *category}};
}

// Outcome of a failed wait that dequeued nothing.
inline std::error_code wait_error(DWORD error) noexcept {
    if (error == WAIT_TIMEOUT)
        return make_error_code(errc::timed_out);
    if (error == ERROR_ABANDONED_WAIT_0)
        return make_error_code(errc::closed); // the port was closed under us
    return {static_cast<int>(error), std::system_category()};
}

class port_impl {
public:
    using native_handle_type = HANDLE;
    using io_handle_type = HANDLE;
    // A Winsock SOCKET is a kernel handle; associate takes it as one.
    using socket_type = SOCKET;
    static io_handle_type socket_as_handle(socket_type s) noexcept {
        return reinterpret_cast<io_handle_type>(s);
    }

    port_impl() noexcept = default;

    // `concurrency`: 0 = the number of processors (the kernel's own default).
    port_impl(unsigned concurrency, std::error_code& ec) noexcept {
        HANDLE h = ::CreateIoCompletionPort(INVALID_HANDLE_VALUE, nullptr, 0, concurrency);
        if (h == nullptr) {
            ec = last_error();
            return;
        }
        handle_.store(h, std::memory_order_relaxed);
        ec.clear();
    }

    port_impl(port_impl&& other) noexcept : handle_(other.take()) {}
    port_impl& operator=(port_impl&& other) noexcept {
        if (this != &other) {
            close();
            handle_.store(other.take(), std::memory_order_relaxed);
        }
        return *this;
    }
    ~port_impl() { close(); }

    bool is_open() const noexcept { return handle() != nullptr; }
    native_handle_type native_handle() const noexcept { return handle(); }

    std::error_code associate(io_handle_type h, void* key) const noexcept {
        HANDLE port = handle();
        if (port == nullptr)
            return make_error_code(errc::closed);
        if (h == nullptr || h == INVALID_HANDLE_VALUE)
            return make_error_code(errc::invalid_handle);
        if (::CreateIoCompletionPort(h, port, reinterpret_cast<ULONG_PTR>(key), 0) != port)
            return last_error();
        return {};
    }

    // Queues {ov, key, bytes} as it is: neither `ov` nor `key` is dereferenced (classic-style
    // sentinels such as (OVERLAPPED*)-1 are fine). `bytes` <= max_packet_bytes (port checks).
    std::error_code post(overlapped* ov, void* key, std::size_t bytes) const noexcept {
        return post_packet(static_cast<DWORD>(bytes), reinterpret_cast<ULONG_PTR>(key), ov);
    }

    // Queues a packet that completes `ov` (not null, not in flight) with `failure`, category
    // and value exactly (see stamp_posted_failure for the fields it writes).
    std::error_code post_failure(overlapped* ov, void* key,
                                 const std::error_code& failure) const noexcept {
        if (handle() == nullptr)
            return make_error_code(errc::closed);
        stamp_posted_failure(*ov, key, failure.category());
        return post_packet(static_cast<DWORD>(static_cast<std::uint32_t>(failure.value())),
                           posted_failure_key, ov);
    }

    std::size_t get(packet_sink out, std::size_t capacity, std::chrono::milliseconds timeout,
                    std::error_code& ec) const noexcept {
        HANDLE port = handle();
        if (port == nullptr) {
            ec = make_error_code(errc::closed);
            return 0;
        }
        std::size_t n = capacity == 1 ? get_one(port, out, timeout, ec)
                                      : get_batch(port, out, capacity, timeout, ec);
        // Closed by another thread between our load of the handle and the wait.
        if (n == 0 && ec == std::error_code(ERROR_INVALID_HANDLE, std::system_category()) &&
            !is_open())
            ec = make_error_code(errc::closed);
        return n;
    }

    // TRICKY: close() may run while other threads wait on the port (that is how Windows wakes
    // them, with ERROR_ABANDONED_WAIT_0), so the handle is an atomic they read once per call.
    // That makes the read itself safe, not the use: a thread between its read and its call may
    // reach a recycled handle value. port's documentation says so; the pool never does it.
    std::error_code close() noexcept {
        HANDLE h = take();
        if (h != nullptr && !::CloseHandle(h))
            return last_error();
        return {};
    }

private:
    std::error_code post_packet(DWORD bytes, ULONG_PTR key, OVERLAPPED* ov) const noexcept {
        HANDLE port = handle();
        if (port == nullptr)
            return make_error_code(errc::closed);
        if (fault_injection::fail_port_post())
            return {ERROR_NO_SYSTEM_RESOURCES, std::system_category()};
        if (!::PostQueuedCompletionStatus(port, bytes, key, ov))
            return last_error();
        return {};
    }

    HANDLE handle() const noexcept { return handle_.load(std::memory_order_acquire); }
    HANDLE take() noexcept { return handle_.exchange(nullptr, std::memory_order_acq_rel); }

    static std::size_t get_one(HANDLE port, packet_sink out, std::chrono::milliseconds timeout,
                               std::error_code& ec) noexcept {
        DWORD bytes = 0;
        ULONG_PTR key = 0;
        OVERLAPPED* ov = nullptr;
        BOOL ok = ::GetQueuedCompletionStatus(port, &bytes, &key, &ov, to_wait_ms(timeout));
        DWORD last = ok ? 0 : ::GetLastError();
        if (ov == nullptr && !ok) {
            ec = wait_error(last); // nothing dequeued: timeout, closed, or a bad port
            return 0;
        }
        // Dequeued. FALSE with an OVERLAPPED is that I/O's failure, not the port's; TRUE is
        // success (the OVERLAPPED is not read: a posted one may be anything).
        std::error_code error;
        if (!ok)
            error.assign(static_cast<int>(last), std::system_category());
        raw_packet p = unpack(ov, key, bytes, error);
        out.put(0, p);
        ec.clear();
        return 1;
    }

    static std::size_t get_batch(HANDLE port, packet_sink out, std::size_t capacity,
                                 std::chrono::milliseconds timeout, std::error_code& ec) noexcept {
        OVERLAPPED_ENTRY entries[max_dequeue_batch];
        ULONG n = static_cast<ULONG>((std::min)(capacity, max_dequeue_batch));
        ULONG removed = 0;
        if (!::GetQueuedCompletionStatusEx(port, entries, n, &removed, to_wait_ms(timeout),
                                           FALSE)) {
            // Never read `removed` here: Wine reports 1 entry on an empty port's failure.
            ec = wait_error(::GetLastError());
            return 0;
        }
        for (ULONG i = 0; i < removed; ++i) {
            const OVERLAPPED_ENTRY& e = entries[i];
            // Each entry's status is the NTSTATUS in the entry itself, never in its OVERLAPPED
            // (which a poster may have given as any value at all).
            out.put(i, unpack(e.lpOverlapped, e.lpCompletionKey, e.dwNumberOfBytesTransferred,
                              status_error(e.Internal)));
        }
        ec.clear();
        return removed;
    }

    std::atomic<HANDLE> handle_{nullptr};
};

} // namespace iocp::detail::win32
