// A user's program: creates a completion port, posts a packet and gets it back. Built by the
// find_package and add_subdirectory consumer projects; exits 0 when everything round-trips.

#include <iocp/iocp.hpp>

#include <chrono>
#include <cstdio>
#include <exception>

int main() {
    try {
        iocp::port<> port;
        iocp::overlapped ov{};
        int key = 7;
        port.post(&ov, &key, 42);

        auto packet = port.get(std::chrono::seconds(10));
        if (!packet || packet->ov != &ov || packet->key != &key || packet->bytes != 42 ||
            packet->error) {
            std::fprintf(stderr, "consumer: the posted packet did not come back intact\n");
            return 1;
        }
        if (port.get(std::chrono::milliseconds(0))) {
            std::fprintf(stderr, "consumer: an empty port returned a packet\n");
            return 1;
        }
        port.close();
        std::printf("consumer: iocp %d.%d.%d works\n", IOCP_VERSION_MAJOR, IOCP_VERSION_MINOR,
                    IOCP_VERSION_PATCH);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "consumer: %s\n", e.what());
        return 1;
    }
}
