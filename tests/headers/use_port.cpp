// Instantiates what a user's program instantiates, so that the compiler's optimisers see the
// library's code at every level (see CMakeLists.txt). Compiled, never run: each function only
// has to be emitted, with external linkage so that no level can drop it. Only long-standing
// public calls appear here; the tests, built at -O0, -O2 and -O3 by the CI configurations,
// instantiate everything else.
//
// The port with a typed key, every way of dequeuing.
#include <iocp/port.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <span>
#include <system_error>

namespace header_check {

struct connection {
    int id = 0;
};

bool port_get_finite(iocp::port<connection>& port) {
    return port.get(std::chrono::milliseconds(10)).has_value();
}

bool port_get_infinite(iocp::port<connection>& port) {
    std::error_code ec;
    return port.get(iocp::infinite, ec).has_value();
}

std::size_t port_get_many(iocp::port<connection>& port) {
    std::array<iocp::packet<connection>, 4> packets{};
    std::error_code ec;
    return port.get_many(std::span(packets), std::chrono::milliseconds(0), ec);
}

std::size_t use_port() {
    iocp::port<connection> port;
    connection conn;
    iocp::overlapped ov{};
    port.post(&ov, &conn, 4);
    std::error_code ec;
    port.post(nullptr, &conn, 0, ec);
    std::size_t n = port_get_finite(port) ? 1 : 0;
    n += port_get_infinite(port) ? 1 : 0;
    n += port_get_many(port);
    port.close(ec);
    return n;
}

} // namespace header_check
