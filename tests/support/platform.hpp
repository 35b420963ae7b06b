#pragma once
// What the tests need to know about where they run.

#include "iocp/config.hpp"

// IOCP_TEST_TSAN: the test runs under ThreadSanitizer (GCC says so with __SANITIZE_THREAD__,
// Clang with __has_feature). Its runtime replaces the global operator new (allocation counts
// do not link there) and runs everything several times slower (stresses count fewer rounds).
#if defined(__SANITIZE_THREAD__)
#define IOCP_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define IOCP_TEST_TSAN 1
#endif
#endif

#if IOCP_WINDOWS
#include "iocp/detail/win32/windows.hpp"
#endif

namespace iocp_test {

// True under Wine, which differs from Windows in a few IOCP behaviours (WIN32-NOTES.md):
// tests of those skip there, and the POSIX backend proves the behaviour instead.
inline bool running_under_wine() noexcept {
#if IOCP_WINDOWS
    HMODULE ntdll = ::GetModuleHandleW(L"ntdll.dll");
    return ntdll != nullptr && ::GetProcAddress(ntdll, "wine_get_version") != nullptr;
#else
    return false;
#endif
}

// Stresses divide their rounds by this under TSan, which runs everything several times slower.
#if defined(IOCP_TEST_TSAN)
inline constexpr int tsan_divisor = 4;
#else
inline constexpr int tsan_divisor = 1;
#endif

// Smaller counts under Wine, where every IOCP call is a round trip to wineserver.
inline int scaled(int native_count, int wine_count) noexcept {
    return running_under_wine() ? wine_count : native_count;
}

} // namespace iocp_test

// Skips a test of a kernel-IOCP behaviour that Wine does not implement.
#define IOCP_SKIP_UNDER_WINE_IF_NATIVE(reason)                                                     \
    do {                                                                                           \
        if (IOCP_HAS_IOCP && ::iocp_test::running_under_wine())                                    \
            GTEST_SKIP() << "Wine does not implement this IOCP behaviour (" reason                 \
                            "); the POSIX backend variant of this test proves it";                 \
    } while (0)
