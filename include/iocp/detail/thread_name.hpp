#pragma once
// Naming the calling thread, best effort (a debugger and `top -H` show it).

#include <string>

#include "../config.hpp"

#if IOCP_WINDOWS
#include "win32/windows.hpp"
#else
#include <pthread.h>
#endif

namespace iocp::detail {

inline void set_current_thread_name(const std::string& name) noexcept {
#if IOCP_WINDOWS
    // SetThreadDescription exists from Windows 10 1607; look it up rather than require it.
    using set_description_fn = HRESULT(WINAPI*)(HANDLE, PCWSTR);
    static const auto fn = reinterpret_cast<set_description_fn>(reinterpret_cast<void*>(
        ::GetProcAddress(::GetModuleHandleW(L"kernel32.dll"), "SetThreadDescription")));
    if (fn == nullptr)
        return;
    std::wstring wide(name.begin(), name.end()); // thread names are ASCII here
    fn(::GetCurrentThread(), wide.c_str());
#elif defined(__linux__)
    // Linux limits names to 15 characters plus the terminator.
    ::pthread_setname_np(::pthread_self(), name.substr(0, 15).c_str());
#else
    (void)name;
#endif
}

} // namespace iocp::detail
