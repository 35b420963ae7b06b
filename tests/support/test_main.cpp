// The test programs' main. On Windows it makes every crash fail the run: Wine sometimes exits
// with status 0 after an unhandled exception, so the filter terminates with a non-zero code.

#include <gtest/gtest.h>

#include <cstdio>

#include "iocp/config.hpp"

#if IOCP_WINDOWS
#include "iocp/detail/win32/windows.hpp"

namespace {

LONG WINAPI terminate_on_crash(EXCEPTION_POINTERS* info) {
    std::fprintf(stderr, "unhandled exception 0x%08lx: terminating with exit code 3\n",
                 info != nullptr && info->ExceptionRecord != nullptr
                     ? static_cast<unsigned long>(info->ExceptionRecord->ExceptionCode)
                     : 0ul);
    std::fflush(stderr);
    ::TerminateProcess(::GetCurrentProcess(), 3);
    return EXCEPTION_EXECUTE_HANDLER;
}

} // namespace
#endif

int main(int argc, char** argv) {
#if IOCP_WINDOWS
    ::SetUnhandledExceptionFilter(&terminate_on_crash);
    // No error dialogs: a crash must end the process, not wait for a click.
    ::SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX);
#endif
    ::testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
