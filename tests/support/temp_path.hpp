#pragma once
// A file name in the temporary directory that no other test process uses at the same time:
// ctest runs two test programs at once (often the same test on two backends), so a name needs
// the process id; a thread id alone repeats across processes.

#include <filesystem>
#include <string>

#include "iocp/config.hpp"

#if IOCP_WINDOWS
#include "iocp/detail/win32/windows.hpp"
#else
#include <unistd.h>
#endif

namespace iocp_test {

// <temp>/iocp_<program>_<process id>_<name>
inline std::filesystem::path temp_path(const std::string& program, const std::string& name) {
#if IOCP_WINDOWS
    const unsigned long pid = ::GetCurrentProcessId();
#else
    const unsigned long pid = static_cast<unsigned long>(::getpid());
#endif
    return std::filesystem::temp_directory_path() /
           ("iocp_" + program + "_" + std::to_string(pid) + "_" + name);
}

} // namespace iocp_test
