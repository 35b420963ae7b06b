#pragma once
// A connected TCP pair on the loopback address, made with the coroutine API (the user trials'
// fixture: the client side is connected, the server side accepted, both on `pool`).

#include "iocp/acceptor.hpp"
#include "iocp/coro/io.hpp"
#include "iocp/coro/sync_wait.hpp"
#include "iocp/coro/task.hpp"
#include "iocp/coro/when_all.hpp"
#include "iocp/endpoint.hpp"
#include "iocp/socket.hpp"
#include "iocp/thread_pool.hpp"

#include <utility>

namespace iocp_test {

struct socket_pair {
    iocp::socket client;
    iocp::socket server;
};

// Throws std::system_error if the accept or the connect fails.
inline socket_pair make_socket_pair(iocp::thread_pool& pool) {
    iocp::acceptor listener(pool, iocp::endpoint::loopback(iocp::address_family::ipv4, 0));
    auto run = [&]() -> iocp::task<socket_pair> {
        socket_pair p{iocp::socket(pool), iocp::socket()};
        auto accept = [&]() -> iocp::task<iocp::socket> {
            co_return (co_await iocp::async_accept(listener).or_throw()).first;
        };
        auto connect = [&]() -> iocp::task<> {
            co_await iocp::async_connect(p.client, listener.local_endpoint()).or_throw();
        };
        auto [server, unused] = co_await iocp::when_all(accept(), connect());
        p.server = std::move(server);
        co_return p;
    };
    return iocp::sync_wait(run());
}

} // namespace iocp_test
