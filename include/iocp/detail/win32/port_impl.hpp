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

inline DWORD to_wait_ms(std::chrono::milliseconds timeout) noexcept {
    if (timeout.count() <= 0)
        return 0;
    if (timeout == infinite || timeout.count() >= static_cast<std::int64_t>(INFINITE))
        return INFINITE;
    return static_cast<DWORD>(timeout.count());
}

// A packet we post carries its result in OVERLAPPED::Internal, where the kernel keeps an
// NTSTATUS for real I/O, so that get and get_many read both kinds the same way. A posted
// failure is an NTSTATUS with the "customer" bit set (the kernel never produces those): the
// facility says which category the low 16 bits belong to.
inline constexpr std::uintptr_t posted_error_mask = 0xE0000000u; // severity error + customer
inline constexpr std::uintptr_t facility_system = 1;
inline constexpr std::uintptr_t facility_iocp = 2;

inline std::uintptr_t encode_posted(const std::error_code& result) noexcept {
    if (!result)
        return 0; // STATUS_SUCCESS
    std::uintptr_t facility =
        result.category() == ::iocp::category() ? facility_iocp : facility_system;
    return posted_error_mask | (facility << 16) |
           (static_cast<std::uintptr_t>(result.value()) & 0xFFFFu);
}

using rtl_nt_status_to_dos_error_fn = ULONG(WINAPI*)(LONG);

inline ULONG nt_status_to_win32(LONG status) noexcept {
    // Looked up once rather than linked, so that users need not add ntdll to their link line.
    static const auto fn = reinterpret_cast<rtl_nt_status_to_dos_error_fn>(reinterpret_cast<void*>(
        ::GetProcAddress(::GetModuleHandleW(L"ntdll.dll"), "RtlNtStatusToDosError")));
    return fn != nullptr ? fn(status) : ERROR_MR_MID_NOT_FOUND;
}

// The result stored in a dequeued OVERLAPPED: a posted code, or the kernel's NTSTATUS.
inline std::error_code decode_status(std::uintptr_t internal) noexcept {
    auto status = static_cast<std::uint32_t>(internal);
    if ((status & posted_error_mask) == posted_error_mask) {
        int value = static_cast<int>(status & 0xFFFFu);
        if (((status >> 16) & 0xFFFu) == facility_iocp)
            return {value, ::iocp::category()};
        return {value, std::system_category()};
    }
    if (static_cast<std::int32_t>(status) >= 0)
        return {}; // NT_SUCCESS (success and informational statuses)
    return {static_cast<int>(nt_status_to_win32(static_cast<LONG>(status))),
            std::system_category()};
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

    port_impl() noexcept = default;

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

    std::error_code post(overlapped* ov, void* key, std::size_t bytes,
                         std::error_code result) const noexcept {
        HANDLE port = handle();
        if (port == nullptr)
            return make_error_code(errc::closed);
        if (fault_injection::fail_port_post())
            return {ERROR_NO_SYSTEM_RESOURCES, std::system_category()};
        if (ov != nullptr)
            ov->Internal = encode_posted(result);
        if (!::PostQueuedCompletionStatus(port, static_cast<DWORD>(bytes),
                                          reinterpret_cast<ULONG_PTR>(key), ov))
            return last_error();
        return {};
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
    HANDLE handle() const noexcept { return handle_.load(std::memory_order_acquire); }
    HANDLE take() noexcept { return handle_.exchange(nullptr, std::memory_order_acq_rel); }

    static std::size_t get_one(HANDLE port, packet_sink out, std::chrono::milliseconds timeout,
                               std::error_code& ec) noexcept {
        DWORD bytes = 0;
        ULONG_PTR key = 0;
        OVERLAPPED* ov = nullptr;
        BOOL ok = ::GetQueuedCompletionStatus(port, &bytes, &key, &ov, to_wait_ms(timeout));
        DWORD error = ok ? 0 : ::GetLastError();
        if (ov == nullptr && !ok) {
            ec = wait_error(error); // nothing dequeued: timeout, closed, or a bad port
            return 0;
        }
        // Dequeued. FALSE with an OVERLAPPED is that I/O's failure, not the port's.
        raw_packet p{ov, reinterpret_cast<void*>(key), bytes, {}};
        if (!ok)
            p.error.assign(static_cast<int>(error), std::system_category());
        else if (ov != nullptr)
            p.error = decode_status(ov->Internal);
        out.put(0, p);
        ec.clear();
        return 1;
    }

    static std::size_t get_batch(HANDLE port, packet_sink out, std::size_t capacity,
                                 std::chrono::milliseconds timeout, std::error_code& ec) noexcept {
        // 64 entries per call bounds the stack use; callers that want more call again.
        OVERLAPPED_ENTRY entries[64];
        ULONG n = static_cast<ULONG>((std::min)(capacity, std::size(entries)));
        ULONG removed = 0;
        if (!::GetQueuedCompletionStatusEx(port, entries, n, &removed, to_wait_ms(timeout),
                                           FALSE)) {
            // Never read `removed` here: Wine reports 1 entry on an empty port's failure.
            ec = wait_error(::GetLastError());
            return 0;
        }
        for (ULONG i = 0; i < removed; ++i) {
            OVERLAPPED* ov = entries[i].lpOverlapped;
            // Each entry's own status lives in its OVERLAPPED, as an NTSTATUS.
            out.put(i, raw_packet{ov, reinterpret_cast<void*>(entries[i].lpCompletionKey),
                                  entries[i].dwNumberOfBytesTransferred,
                                  ov != nullptr ? decode_status(ov->Internal) : std::error_code{}});
        }
        ec.clear();
        return removed;
    }

    std::atomic<HANDLE> handle_{nullptr};
};

} // namespace iocp::detail::win32
