// Skipping the port on success (FILE_SKIP_COMPLETION_PORT_ON_SUCCESS), measured: named-pipe
// reads that find their data waiting, with the port (one packet per read) and with the mode set
// (the library delivers the result through the pool's own queue). Reports reads/s of each, their
// ratio from the same run, and the port packets each read cost. Win32 backend only.
//
//   skip_on_success_bench [--reads N] [--repeat R]
//
// Under Wine the packet counts are exact, the times are Wine's (every call is a wineserver
// round trip): compare the packets, and the ratio only as Wine's.

#include <iocp/detail/io/win32/skip_on_success.hpp>
#include <iocp/iocp.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <string>
#include <vector>

namespace {

struct read_op : iocp::io_operation {
    char buf[64] = {};
    std::promise<std::size_t>* done = nullptr;
    read_op() : io_operation(&read_op::on_done) {}
    static void on_done(iocp::io_operation* base, const std::error_code& ec,
                        std::size_t bytes) noexcept {
        auto* self = static_cast<read_op*>(base);
        self->done->set_value(ec ? 0 : bytes);
    }
};

struct result {
    double reads_per_second = 0;
    double packets_per_read = 0;
};

result run(bool skip, int reads, int round) {
    iocp::thread_pool pool(2);
    const std::string name = R"(\\.\pipe\iocp_skip_bench_)" +
                             std::to_string(::GetCurrentProcessId()) + "_" + std::to_string(round) +
                             (skip ? "_skip" : "_port");
    const std::wstring wname(name.begin(), name.end());
    iocp::named_pipe server(pool);
    server.assign(iocp::unique_handle(::CreateNamedPipeW(
        wname.c_str(), PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED,
        PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT, 1, 65536, 65536, 0, nullptr)));
    iocp::named_pipe client(pool);
    client.connect(wname, std::chrono::seconds(5));
    if (skip)
        server.skip_completion_port_on_success();
    const char message[64] = "a message that is already waiting when the read starts";
    read_op op;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < reads; ++i) {
        std::promise<std::error_code> wrote;
        client.write_all(iocp::buffer(message, sizeof message),
                         [&](std::error_code ec, std::size_t) { wrote.set_value(ec); });
        if (wrote.get_future().get()) {
            std::fprintf(stderr, "write failed\n");
            std::exit(1);
        }
        std::promise<std::size_t> done;
        op.done = &done;
        if (iocp::start_read(server, op, iocp::buffer(op.buf, sizeof op.buf)) ||
            done.get_future().get() != sizeof message) {
            std::fprintf(stderr, "read failed\n");
            std::exit(1);
        }
    }
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    const std::uint64_t saved =
        iocp::detail::io::win32::skipped_packets(iocp::detail::io::io_access::state(op));
    client.close();
    server.close();
    pool.join();
    return {reads / took.count(), 1.0 - static_cast<double>(saved) / reads};
}

} // namespace

int main(int argc, char** argv) {
    int reads = 2000;
    int repeat = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--reads") == 0)
            reads = std::max(1, std::atoi(argv[i + 1]));
        else if (std::strcmp(argv[i], "--repeat") == 0)
            repeat = std::max(1, std::atoi(argv[i + 1]));
    }
    std::vector<result> port, skip;
    for (int r = 0; r < repeat; ++r) { // alternating, so that drift hits both alike
        port.push_back(run(false, reads, r));
        skip.push_back(run(true, reads, r));
    }
    auto median = [](std::vector<result> v) {
        std::sort(v.begin(), v.end(), [](const result& a, const result& b) {
            return a.reads_per_second < b.reads_per_second;
        });
        return v[v.size() / 2];
    };
    const result p = median(port);
    const result s = median(skip);
    std::printf("named-pipe reads with data waiting, %d reads, median of %d\n\n", reads, repeat);
    std::printf("mode                 reads/s   port packets/read   vs port\n");
    std::printf("port (default)  %12.0f   %17.2f   %7.2fx\n", p.reads_per_second,
                p.packets_per_read, 1.0);
    std::printf("skip on success %12.0f   %17.2f   %7.2fx\n", s.reads_per_second,
                s.packets_per_read, s.reads_per_second / p.reads_per_second);
    return 0;
}
