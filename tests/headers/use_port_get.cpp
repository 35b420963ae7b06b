// Instantiates what a user's program instantiates, so that the compiler's optimisers see the
// library's code at every level (see CMakeLists.txt). Compiled, never run: each function only
// has to be emitted, with external linkage so that no level can drop it. Only long-standing
// public calls appear here; the tests, built at -O0, -O2 and -O3 by the CI configurations,
// instantiate everything else.
//
// One call alone in its translation unit: GCC's inliner decides per caller and GCC reports a
// warning once per source location, so a warning that needs this callee inlined into a small
// caller (the -Wdangling-pointer false positive GCC 12 reported in the POSIX port's get at
// -O1 and -Os) shows only when nothing else in the unit reaches the same code first.
#include <iocp/port.hpp>

#include <chrono>

namespace header_check {

bool port_get_now() {
    iocp::port<> port;
    iocp::overlapped ov{};
    port.post(&ov, nullptr, 4);
    return port.get(std::chrono::milliseconds(0)).has_value();
}

} // namespace header_check
