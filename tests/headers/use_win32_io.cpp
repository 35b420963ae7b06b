// Instantiates the Win32-only I/O objects as a user's program would (see use_io.cpp): any
// overlapped call on a handle, and named pipes. Compiled, never run.
#include <iocp/config.hpp>

#if IOCP_HAS_IOCP

#include <iocp/overlapped_handle.hpp>
#include <iocp/pipe.hpp>
#include <iocp/thread_pool.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <system_error>
#include <utility>

namespace header_check {

void use_win32_io(iocp::thread_pool& pool) {
    static char data[16];
    iocp::overlapped_handle h(pool);
    h.start(
        [](HANDLE handle, OVERLAPPED* ov) {
            return iocp::call_result::from_bool(::ReadFile(handle, data, sizeof data, nullptr, ov));
        },
        [](std::error_code, std::size_t) {});
    iocp::named_pipe_server server(pool, L"\\\\.\\pipe\\header-check");
    server.listen([](std::error_code, iocp::named_pipe client) {
        auto conn = std::make_shared<iocp::named_pipe>(std::move(client));
        conn->read(iocp::buffer(data, sizeof data), [conn](std::error_code, std::size_t) {});
        conn->write_all(iocp::buffer(data, sizeof data), [conn](std::error_code, std::size_t) {});
    });
    iocp::named_pipe client(pool);
    client.connect(L"\\\\.\\pipe\\header-check", std::chrono::seconds(1));
    client.write(iocp::buffer(data, sizeof data), [](std::error_code, std::size_t) {});
}

} // namespace header_check

#endif
