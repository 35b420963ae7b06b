// The echo server of echo_server.cpp as coroutines: one task per connection, straight-line code.
//
//   co_echo_server [--port N] [--once N] [--threads N]
//
// Listens on 127.0.0.1, port N (0: the system picks one), prints "listening on port P", and with
// --once N exits after serving N connections (the test pipes it into echo_client).
#include <iocp/coroutine.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <system_error>
#include <vector>

namespace {

// Counts the sessions still to serve; the last one to end wakes main. (A promise, not
// std::latch: libstdc++ 12 on Windows, without a futex, can lose a latch's wake-up.)
struct countdown {
    std::atomic<int> left;
    std::promise<void> zero;
    void count_down() {
        if (left.fetch_sub(1) == 1)
            zero.set_value();
    }
};

// One connection: receive, send it all back, until the client closes (eof).
iocp::task<> session(iocp::socket conn, countdown& finished) {
    std::vector<char> buf(std::size_t{64} * 1024);
    try {
        for (;;) {
            auto [ec, n] = co_await iocp::async_recv(conn, iocp::buffer(buf));
            if (ec == iocp::errc::eof)
                break;
            if (ec)
                throw std::system_error(ec, "recv");
            co_await iocp::async_send_all(conn, iocp::buffer(buf.data(), n)).or_throw();
        }
    } catch (const std::system_error& e) {
        std::fprintf(stderr, "session: %s\n", e.what());
    }
    finished.count_down();
}

// Accepts `count` connections (0: for ever), each served by its own detached task.
iocp::task<> accept_loop(iocp::thread_pool& pool, iocp::acceptor& listener, int count,
                         countdown& finished) {
    for (int served = 0; count == 0 || served < count; ++served) {
        auto [conn, peer] = co_await iocp::async_accept(listener).or_throw();
        iocp::spawn(pool, session(std::move(conn), finished));
    }
}

} // namespace

int main(int argc, char** argv) {
    unsigned port = 0;
    int once = 0;
    std::size_t threads = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--port") == 0)
            port = static_cast<unsigned>(std::atoi(argv[i + 1]));
        else if (std::strcmp(argv[i], "--once") == 0)
            once = std::atoi(argv[i + 1]);
        else if (std::strcmp(argv[i], "--threads") == 0)
            threads = static_cast<std::size_t>(std::atoi(argv[i + 1]));
    }
    try {
        iocp::thread_pool pool(threads);
        iocp::acceptor listener(pool, iocp::endpoint::loopback(iocp::address_family::ipv4,
                                                               static_cast<std::uint16_t>(port)));
        std::printf("listening on port %u\n",
                    static_cast<unsigned>(listener.local_endpoint().port()));
        std::fflush(stdout);
        countdown finished{once > 0 ? once : -1, {}}; // never reached without --once
        iocp::spawn(pool, accept_loop(pool, listener, once, finished));
        finished.zero.get_future().wait();
        pool.join(); // the accept loop and every session have ended
        std::fprintf(stderr, "co_echo_server: served %d connections\n", once);
    } catch (const std::system_error& e) {
        std::fprintf(stderr, "co_echo_server: %s\n", e.what());
        return 1;
    }
}
