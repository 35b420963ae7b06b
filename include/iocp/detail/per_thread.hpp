#pragma once
// per_thread<T>(): one T per thread (per fiber on Windows), created on first use and destroyed
// when its thread (or fiber) ends. The library's one per-thread cache mechanism: the work-item
// block cache, the I/O operation cache and the POSIX port's thread binding all use it.
//
// Windows: the objects live in Fiber Local Storage, not in a C++ thread_local.
// - With MinGW-w64 (emulated TLS on winpthreads) the storage of a thread_local can be freed
//   before its destructor runs at thread exit, and that destructor then reads freed memory.
// - FLS values belong to a fiber: a thread that runs several fibers has one value per fiber,
//   and deleting a fiber runs the callback on that fiber's value. A thread_local that caches
//   what FLS frees would point at freed memory once the fiber that created it is deleted; so
//   nothing caches the FLS value: every call reads it (FlsGetValue reads the current fiber's
//   block: no system call).
// - One FLS slot for the whole library, owned by an inline variable that frees it (FlsFree,
//   which runs the callback on every fiber's value) when the module unloads: a DLL that
//   left its slot allocated would leave Windows a callback into unloaded code.
// Elsewhere a thread_local does the job, with a replacement for an object reached after its
// thread destroyed it (see per_thread below).

#include <atomic>
#include <cstddef>
#include <new>

#include "../config.hpp"

#if IOCP_WINDOWS
#include "win32/windows.hpp"
#endif

namespace iocp::detail {

#if IOCP_WINDOWS

// The per-fiber table of objects: one entry per type that asked, destroyed in reverse order of
// their type numbers when the fiber (or its thread) ends or the slot is freed.
struct fiber_locals {
    // Types that use per_thread (3 today); a type beyond this gets the fallback below.
    static constexpr std::size_t capacity = 8;

    void* objects[capacity] = {};
    void (*destroyers[capacity])(void*) noexcept = {};

    fiber_locals() = default;
    fiber_locals(const fiber_locals&) = delete;
    fiber_locals& operator=(const fiber_locals&) = delete;
    ~fiber_locals() {
        for (std::size_t i = capacity; i-- > 0;)
            if (objects[i] != nullptr)
                destroyers[i](objects[i]);
    }
};

// Owns the library's FLS slot from static initialisation to module unload.
class fls_slot {
public:
    fls_slot() noexcept : index_(::FlsAlloc(&fls_slot::destroy)) {}
    fls_slot(const fls_slot&) = delete;
    fls_slot& operator=(const fls_slot&) = delete;
    ~fls_slot() {
        const DWORD index = index_.exchange(FLS_OUT_OF_INDEXES, std::memory_order_acq_rel);
        if (index != FLS_OUT_OF_INDEXES)
            ::FlsFree(index);
    }

    // The current fiber's table, created on first use; nullptr when there is no slot (none
    // could be allocated, or the module is unloading) or no memory.
    fiber_locals* get() noexcept {
        const DWORD index = index_.load(std::memory_order_acquire);
        if (index == FLS_OUT_OF_INDEXES)
            return nullptr;
        if (auto* locals = static_cast<fiber_locals*>(::FlsGetValue(index)))
            return locals;
        auto* locals = new (std::nothrow) fiber_locals;
        if (locals != nullptr && !::FlsSetValue(index, locals)) {
            delete locals;
            return nullptr;
        }
        return locals;
    }

private:
    static void WINAPI destroy(void* p) noexcept { delete static_cast<fiber_locals*>(p); }

    std::atomic<DWORD> index_;
};

// TRICKY: an inline variable, so that it is initialised before any static defined after this
// header's inclusion in a translation unit (a user's static thread_pool, say) and destroyed
// after it: that pool's workers still find the slot while the pool's destructor joins them.
inline fls_slot library_fls_slot;

inline std::size_t next_per_thread_type() noexcept {
    static std::atomic<std::size_t> next{0};
    return next.fetch_add(1, std::memory_order_relaxed);
}

template <class T>
std::size_t per_thread_type() noexcept {
    static const std::size_t id = next_per_thread_type();
    return id;
}

template <class T>
void destroy_per_thread(void* p) noexcept {
    delete static_cast<T*>(p);
}

template <class T>
T& per_thread() {
    const std::size_t id = per_thread_type<T>();
    fiber_locals* locals = library_fls_slot.get();
    if (locals == nullptr || id >= fiber_locals::capacity) {
        // No slot (or the module is unloading): the object then lives as long as the process,
        // one per thread (a bounded leak beats a crash at thread exit). The thread_local is a
        // plain pointer: nothing runs at thread exit.
        thread_local T* leaked = nullptr;
        if (leaked == nullptr)
            leaked = new T();
        return *leaked;
    }
    if (locals->objects[id] == nullptr) {
        locals->objects[id] = new T();
        locals->destroyers[id] = &destroy_per_thread<T>;
    }
    return *static_cast<T*>(locals->objects[id]);
}

#else

// TRICKY: a thread's objects can be reached after their destructors ran. The main thread's
// thread_locals are destroyed when main returns, before static objects (C++ [basic.start.term]),
// and a static pool, port or socket (or one a static object owns) still dequeues, makes work
// items and frees operations on that thread from its destructor. Using the destroyed object
// then is undefined (the port's binding released its shared_ptr a second time). So a destroyed
// object is replaced by a fresh one on the heap, never destroyed (one per type and thread).
// On the main thread it lives until the process ends. On another thread it is reached only
// from a user's thread_local destroyed after ours that still uses the library, and it leaks
// when that thread ends (a replacement port binding then keeps its port's state, and, if the
// thread was between two dequeues, one of its active slots). The flag and the pointer are
// trivial, so they stay usable after every non-trivial thread_local of the thread is gone.
template <class T>
T& per_thread() {
    thread_local constinit bool destroyed = false;
    thread_local constinit T* after_destruction = nullptr;
    if (destroyed) {
        if (after_destruction == nullptr)
            after_destruction = new T();
        return *after_destruction;
    }
    struct holder {
        T value;
        holder() = default;
        holder(const holder&) = delete;
        holder& operator=(const holder&) = delete;
        // Before `value`'s own destructor: what it calls already gets the replacement.
        ~holder() { destroyed = true; }
    };
    thread_local holder instance;
    return instance.value;
}

#endif

} // namespace iocp::detail
