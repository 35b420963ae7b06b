// Instantiates what a user's program instantiates, so that the compiler's optimisers see the
// library's code at every level (see CMakeLists.txt). Compiled, never run: each function only
// has to be emitted, with external linkage so that no level can drop it. Only long-standing
// public calls appear here; the tests, built at -O0, -O2 and -O3 by the CI configurations,
// instantiate everything else.
//
// The I/O objects wherever they exist (the Win32 backend; Linux, io_uring and epoll): their
// handler operations are templates too.
#include <iocp/config.hpp>

#if IOCP_HAS_IO

#include <iocp/acceptor.hpp>
#include <iocp/buffer.hpp>
#include <iocp/datagram_socket.hpp>
#include <iocp/endpoint.hpp>
#include <iocp/file.hpp>
#include <iocp/socket.hpp>
#include <iocp/thread_pool.hpp>

#include <cstddef>
#include <system_error>

namespace header_check {

void use_io(iocp::thread_pool& pool) {
    static char data[16];
    iocp::file f(pool, "header_check.bin", iocp::file_mode::read);
    f.read_at(0, iocp::buffer(data, sizeof data), [](std::error_code, std::size_t) {});
    iocp::acceptor listener(pool, iocp::endpoint::loopback(iocp::address_family::ipv4, 0));
    listener.accept([](std::error_code, iocp::socket, iocp::endpoint) {});
    iocp::socket s(pool, iocp::address_family::ipv4);
    s.connect(iocp::endpoint::loopback(iocp::address_family::ipv4, 1), [](std::error_code) {});
    s.send_all(iocp::buffer(data, sizeof data), [](std::error_code, std::size_t) {});
    s.recv(iocp::buffer(data, sizeof data), [](std::error_code, std::size_t) {});
    iocp::datagram_socket d(pool, iocp::endpoint::loopback(iocp::address_family::ipv4, 0));
    d.recv_from(iocp::buffer(data, sizeof data),
                [](std::error_code, std::size_t, const iocp::endpoint&) {});
    d.send_to(iocp::buffer(data, sizeof data), d.local_endpoint(),
              [](std::error_code, std::size_t) {});
}

} // namespace header_check

#endif
