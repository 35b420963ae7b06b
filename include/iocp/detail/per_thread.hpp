#pragma once
// per_thread<T>(): one T per thread, created on first use and destroyed when the thread exits.
//
// Why not a plain `thread_local T` with a destructor: with MinGW-w64 (emulated TLS on
// winpthreads) the thread's TLS block can be freed before the C++ thread_local destructors
// run, and a destructor that reads its object then reads freed memory. So on Windows the
// object lives on the heap, the thread_local is a trivially destructible pointer, and Fiber
// Local Storage (whose callback Windows runs at thread exit, with the value it stored itself)
// destroys it. Elsewhere a thread_local owner does the same job.

#include "../config.hpp"

#if IOCP_WINDOWS
#include "win32/windows.hpp"
#endif

namespace iocp::detail {

#if IOCP_WINDOWS

template <class T>
void WINAPI destroy_per_thread(void* p) noexcept {
    delete static_cast<T*>(p);
}

template <class T>
T& per_thread() {
    thread_local T* instance = nullptr;
    if (instance != nullptr)
        return *instance;
    static const DWORD index = ::FlsAlloc(&destroy_per_thread<T>);
    instance = new T();
    if (index == FLS_OUT_OF_INDEXES || !::FlsSetValue(index, instance)) {
        // No slot: the object then lives as long as the process (a bounded leak per thread
        // beats a crash at thread exit).
    }
    return *instance;
}

#else

template <class T>
T& per_thread() {
    thread_local T instance;
    return instance;
}

#endif

} // namespace iocp::detail
