// A UDP echo server and its clients in one program, on one pool: the server keeps several
// receives pending and sends every datagram back to whoever sent it; each client sends numbered
// datagrams one at a time and checks each echo.
//
//   udp_echo [--clients C] [--datagrams N] [--ipv6] [--threads T]
//
// Exits with 0 when every client got every datagram back intact. This is the example's test.
//
// UDP delivers no more than "at most once": a datagram that finds the receiver's buffer full is
// dropped, on loopback too. Each client here has one datagram in flight, so at most C datagrams
// wait in any buffer, far below its size, and loopback loses nothing. A client on a real network
// would resend after a timeout (`pool.post_after`) and drop duplicate echoes by their number.

#include <iocp/datagram_socket.hpp>
#include <iocp/thread_pool.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <vector>

namespace {

// The server: `slots` receives pending at once, each with its own buffer. A slot receives, sends
// the datagram back from the same buffer, then receives again.
class echo_server {
public:
    static constexpr std::size_t slots = 4;

    echo_server(iocp::thread_pool& pool, const iocp::endpoint& local) : socket_(pool, local) {}

    iocp::endpoint local_endpoint() const { return socket_.local_endpoint(); }

    void start() {
        for (std::size_t i = 0; i < slots; ++i)
            receive(i);
    }

    // Closes the socket under the lock the slots restart under (close must not overlap another
    // call on the socket); the pending receives end with errc::operation_aborted.
    void stop() {
        std::lock_guard lock(mutex_);
        stopping_ = true;
        socket_.close();
    }

private:
    struct slot {
        std::array<char, 2048> data{};
        iocp::endpoint client;
    };

    void receive(std::size_t i) {
        socket_.recv_from(iocp::buffer(slots_[i].data), [this, i](std::error_code ec, std::size_t n,
                                                                  const iocp::endpoint& from) {
            if (ec == iocp::errc::operation_aborted)
                return; // stopped
            if (ec) {
                // std::errc::message_size: longer than our buffer, its tail lost; not echoed.
                std::fprintf(stderr, "server: recv_from: %s\n", ec.message().c_str());
                return restart(i);
            }
            slots_[i].client = from;
            socket_.send_to(iocp::buffer(slots_[i].data.data(), n), slots_[i].client,
                            [this, i](std::error_code ec, std::size_t) {
                                if (ec)
                                    std::fprintf(stderr, "server: send_to: %s\n",
                                                 ec.message().c_str());
                                restart(i);
                            });
        });
    }

    void restart(std::size_t i) {
        std::lock_guard lock(mutex_);
        if (!stopping_)
            receive(i);
    }

    iocp::datagram_socket socket_;
    std::array<slot, slots> slots_;
    std::mutex mutex_;
    bool stopping_ = false;
};

// One client: its own socket; sends datagram k ("client c datagram k" and a tail of k % 512
// bytes, so that sizes vary), waits for its echo, compares, sends k + 1.
class echo_client : public std::enable_shared_from_this<echo_client> {
public:
    echo_client(iocp::thread_pool& pool, iocp::address_family family, int id, int count,
                const iocp::endpoint& server)
        : socket_(pool, iocp::endpoint::loopback(family, 0)), id_(id), count_(count),
          server_(server) {}

    std::future<std::error_code> result() { return done_.get_future(); }

    void send_next() {
        out_ = "client " + std::to_string(id_) + " datagram " + std::to_string(sent_) + " ";
        out_.append(static_cast<std::size_t>(sent_ % 512), static_cast<char>('a' + sent_ % 26));
        // Two operations per round, and the next round starts when both handlers have run:
        // the echo may come back before the send's handler runs, and out_ must stay untouched
        // until then.
        parts_.store(2);
        auto self = shared_from_this();
        socket_.recv_from(iocp::buffer(in_), [self](std::error_code ec, std::size_t n,
                                                    const iocp::endpoint& from) {
            if (ec)
                return self->finish(ec);
            if (from != self->server_ || std::string(self->in_.data(), n) != self->out_)
                return self->finish(std::make_error_code(std::errc::bad_message));
            self->part_done();
        });
        socket_.send_to(iocp::buffer(out_), server_, [self](std::error_code ec, std::size_t) {
            if (ec)
                return self->finish(ec);
            self->part_done();
        });
    }

private:
    void part_done() {
        if (parts_.fetch_sub(1) != 1)
            return; // the other handler of this round finishes it
        if (++sent_ == count_)
            return finish({});
        send_next();
    }

    void finish(std::error_code ec) {
        if (!finished_.exchange(true))
            done_.set_value(ec);
    }

    iocp::datagram_socket socket_;
    const int id_;
    const int count_;
    const iocp::endpoint server_;
    int sent_ = 0;
    std::string out_;
    std::array<char, 2048> in_{};
    std::atomic<int> parts_{0}; // handlers of this round still to run
    std::promise<std::error_code> done_;
    std::atomic<bool> finished_{false};
};

int number(const char* text) {
    char* end = nullptr;
    const long v = std::strtol(text, &end, 10);
    if (end == text || *end != '\0' || v < 1 || v > 100000) {
        std::fprintf(stderr, "udp_echo: '%s' is not a number from 1 to 100000\n", text);
        std::exit(2);
    }
    return static_cast<int>(v);
}

} // namespace

int main(int argc, char** argv) {
    int clients = 8;
    int datagrams = 200;
    int threads = 2;
    iocp::address_family family = iocp::address_family::ipv4;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--clients") == 0 && i + 1 < argc)
            clients = number(argv[++i]);
        else if (std::strcmp(argv[i], "--datagrams") == 0 && i + 1 < argc)
            datagrams = number(argv[++i]);
        else if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = number(argv[++i]);
        else if (std::strcmp(argv[i], "--ipv6") == 0)
            family = iocp::address_family::ipv6;
        else {
            std::fprintf(stderr,
                         "usage: udp_echo [--clients C] [--datagrams N] [--ipv6] [--threads T]\n");
            return 2;
        }
    }
    try {
        iocp::thread_pool pool(static_cast<unsigned>(threads));
        echo_server server(pool, iocp::endpoint::loopback(family, 0));
        server.start();
        std::vector<std::shared_ptr<echo_client>> all;
        std::vector<std::future<std::error_code>> results;
        for (int c = 0; c < clients; ++c) {
            all.push_back(
                std::make_shared<echo_client>(pool, family, c, datagrams, server.local_endpoint()));
            results.push_back(all.back()->result());
            all.back()->send_next();
        }
        int failed = 0;
        for (int c = 0; c < clients; ++c) {
            if (results[c].wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
                std::fprintf(stderr, "client %d: no echo within 60 s (a datagram was lost)\n", c);
                // Not a return: the pool's destructor would wait for the lost echo's receive.
                std::fflush(stderr);
                std::_Exit(1);
            }
            if (const std::error_code ec = results[c].get()) {
                std::fprintf(stderr, "client %d: %s\n", c, ec.message().c_str());
                ++failed;
            }
        }
        server.stop();
        pool.join();
        std::printf("udp_echo: %d clients x %d datagrams echoed over %s, %d failed\n", clients,
                    datagrams, family == iocp::address_family::ipv6 ? "IPv6" : "IPv4", failed);
        return failed == 0 ? 0 : 1;
    } catch (const std::system_error& e) {
        std::fprintf(stderr, "udp_echo: %s (%s)\n", e.what(), e.code().message().c_str());
        return 1;
    }
}
