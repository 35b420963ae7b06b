// The client of echo_server: opens several connections at once, sends a known pattern on each,
// reads the echo back and checks every byte.
//
//   echo_client --port N|- [--clients C] [--bytes B] [--ipv6]
//
// `--port -` reads the server's "listening on port P" line from stdin, so that the two run as
// one pipeline (this is the example's test):
//   echo_server --port 0 --once 8 | echo_client --port - --clients 8
// Exits with 0 when every connection got its bytes back intact.

#include <iocp/socket.hpp>
#include <iocp/thread_pool.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <system_error>
#include <vector>

namespace {

unsigned char pattern(std::size_t connection, std::size_t i) {
    return static_cast<unsigned char>((i * 31 + connection * 17 + (i >> 10)) & 0xFF);
}

// One connection. Sending and receiving run at the same time (one send_all, a chain of
// receives): a client that sent everything before reading could deadlock against a server
// whose replies fill the socket buffers.
class connection : public std::enable_shared_from_this<connection> {
public:
    connection(iocp::thread_pool& pool, std::size_t id, std::size_t bytes)
        : socket_(pool), out_(bytes), in_(bytes) {
        for (std::size_t i = 0; i < bytes; ++i)
            out_[i] = pattern(id, i);
    }

    // Fulfilled once: with nothing when the echo matched, or with the first error.
    std::future<std::error_code> result() { return done_.get_future(); }

    void start(const iocp::endpoint& server) {
        socket_.connect(server, [self = shared_from_this()](std::error_code ec) {
            if (ec)
                return self->finish(ec);
            self->receive();
            self->socket_.send_all(iocp::buffer(self->out_),
                                   [self](std::error_code ec, std::size_t) {
                                       if (ec)
                                           self->finish(ec);
                                   });
        });
    }

private:
    void receive() {
        const std::size_t left = in_.size() - received_;
        socket_.recv(iocp::buffer(in_.data() + received_, (std::min)(left, std::size_t{65536})),
                     [self = shared_from_this()](std::error_code ec, std::size_t n) {
                         if (ec)
                             return self->finish(ec);
                         self->received_ += n;
                         if (self->received_ < self->in_.size())
                             return self->receive();
                         const bool same = self->in_ == self->out_;
                         self->finish(same ? std::error_code{}
                                           : std::make_error_code(std::errc::bad_message));
                     });
    }

    void finish(std::error_code ec) {
        // Both the receive chain and a failed send may report; the first one wins.
        if (!finished_.exchange(true))
            done_.set_value(ec);
    }

    iocp::socket socket_;
    std::vector<unsigned char> out_;
    std::vector<unsigned char> in_;
    std::size_t received_ = 0;
    std::atomic<bool> finished_{false};
    std::promise<std::error_code> done_;
};

int read_port_from_stdin() {
    char line[128];
    while (std::fgets(line, sizeof line, stdin) != nullptr) {
        unsigned port = 0;
        if (std::sscanf(line, "listening on port %u", &port) == 1)
            return static_cast<int>(port);
    }
    return -1;
}

} // namespace

int main(int argc, char** argv) {
    int port = -1;
    bool port_from_stdin = false;
    int clients = 8;
    std::size_t bytes = std::size_t{256} * 1024;
    auto family = iocp::address_family::ipv4;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            ++i;
            if (std::strcmp(argv[i], "-") == 0)
                port_from_stdin = true;
            else
                port = std::atoi(argv[i]);
        } else if (std::strcmp(argv[i], "--clients") == 0 && i + 1 < argc) {
            clients = std::atoi(argv[++i]);
        } else if (std::strcmp(argv[i], "--bytes") == 0 && i + 1 < argc) {
            bytes = static_cast<std::size_t>(std::atoll(argv[++i]));
        } else if (std::strcmp(argv[i], "--ipv6") == 0) {
            family = iocp::address_family::ipv6;
        } else {
            std::fprintf(stderr,
                         "usage: echo_client --port N|- [--clients C] [--bytes B] [--ipv6]\n");
            return 2;
        }
    }
    if (port_from_stdin)
        port = read_port_from_stdin();
    if (port <= 0 || port > 65535 || clients <= 0) {
        std::fprintf(stderr, "echo_client: no valid port / client count\n");
        return 2;
    }

    const auto server = iocp::endpoint::loopback(family, static_cast<std::uint16_t>(port));
    const auto started = std::chrono::steady_clock::now();
    int failures = 0;
    try {
        iocp::thread_pool pool;
        std::vector<std::shared_ptr<connection>> connections;
        std::vector<std::future<std::error_code>> results;
        for (int i = 0; i < clients; ++i) {
            auto c = std::make_shared<connection>(pool, static_cast<std::size_t>(i), bytes);
            results.push_back(c->result());
            c->start(server);
            connections.push_back(std::move(c));
        }
        for (int i = 0; i < clients; ++i) {
            const std::error_code ec = results[static_cast<std::size_t>(i)].get();
            if (ec) {
                ++failures;
                std::fprintf(stderr, "connection %d: %s\n", i, ec.message().c_str());
            }
        }
        connections.clear(); // closes the sockets: the server sees eof and ends its sessions
    } catch (const std::system_error& e) {
        std::fprintf(stderr, "echo_client: %s\n", e.what());
        return 1;
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::printf("%d connections x %zu bytes echoed to %s: %d failed, %.3f s, %.1f MiB/s\n", clients,
                bytes, server.to_string().c_str(), failures, seconds,
                2.0 * clients * static_cast<double>(bytes) / (1024.0 * 1024.0) / seconds);
    return failures == 0 ? 0 : 1;
}
