// Instantiates the coroutine layer as a user's program does (see use_io.cpp for why): tasks,
// spawn, sync_wait, when_all, the pool's awaitables and, wherever files and sockets exist, the
// I/O awaitables with a stop token. Compiled, never run.
#include <iocp/coroutine.hpp>

#include <chrono>
#include <cstddef>
#include <stop_token>
#include <system_error>
#include <tuple>
#include <vector>

namespace header_check {

iocp::task<int> coroutine_value(iocp::thread_pool& pool) {
    co_await pool.schedule();
    std::error_code ec = co_await pool.sleep_for(std::chrono::milliseconds(1));
    co_return ec ? 0 : 1;
}

iocp::task<> coroutine_all(iocp::thread_pool& pool) {
    auto [a, b] = co_await iocp::when_all(coroutine_value(pool), coroutine_value(pool));
    std::vector<iocp::task<int>> many;
    many.push_back(coroutine_value(pool));
    std::vector<int> values = co_await iocp::when_all(std::move(many));
    (void)a;
    (void)b;
    (void)values;
}

#if IOCP_HAS_IO
iocp::task<> coroutine_io(iocp::thread_pool& pool, iocp::acceptor& listener, std::stop_token stop) {
    static char data[16];
    auto [ec, conn, peer] = co_await iocp::async_accept(listener, stop);
    (void)peer;
    if (ec)
        co_return;
    iocp::io_result r = co_await iocp::async_recv(conn, iocp::buffer(data, sizeof data), stop);
    std::size_t n = co_await iocp::async_send_all(conn, iocp::buffer(data, r.bytes)).or_throw();
    n += co_await iocp::async_send(conn, iocp::buffer(data, sizeof data)).or_throw();
    iocp::socket out(pool);
    co_await iocp::async_connect(out, listener.local_endpoint()).or_throw();
    iocp::file f(pool, "header_check.bin", iocp::file_mode::read_write);
    n += co_await iocp::async_write_at(f, 0, iocp::buffer(data, n % sizeof data)).or_throw();
    (void)co_await iocp::async_read_at(f, 0, iocp::buffer(data, sizeof data), stop);
}
#endif

int use_coroutine(iocp::thread_pool& pool) {
    iocp::spawn(pool, coroutine_all(pool));
    return iocp::sync_wait(coroutine_value(pool));
}

} // namespace header_check
