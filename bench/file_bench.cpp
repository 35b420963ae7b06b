// File reads on Linux: `iocp::file::read_at` on io_uring and on epoll (where file I/O runs as
// blocking preadv on the backend's file threads) against the `pread` loop users write on a
// plain pool (bench/plain_pool.hpp), all on the same number of threads, in one run.
//
//   file_bench [--threads N] [--seconds S] [--repeat R] [--depth Q] [--file-mib M]
//              [--dir PATH] [--peers a,b,...]
//
// Workloads, on one file of M MiB (256 by default) made and read once first, so that every
// read is served from the page cache:
//   random 4 KiB:     reads of 4 KiB at random 4 KiB-aligned offsets;
//   sequential 1 MiB: reads of 1 MiB at consecutive offsets, wrapping at the end.
// Q reads are in flight at any time (8 by default): iocp keeps Q read_at calls pending, each
// completion starting the next; the plain pool keeps Q tasks queued, each doing one pread and
// posting the next. `pread_loop` is the floor: N threads calling pread back to back, no pool.
// Each peer runs in a child process (this binary with `--run`), because iocp's I/O backend is
// chosen once per process (IOCP_IO_BACKEND). The order of the peers rotates each repetition;
// the table shows the median and the range.

#include <iocp/config.hpp>

#if IOCP_HAS_IO && !IOCP_HAS_IOCP

#include <iocp/file.hpp>
#include <iocp/thread_pool.hpp>

#include "plain_pool.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace {

using clock_type = std::chrono::steady_clock;

struct options {
    std::size_t threads = 2;
    double seconds = 1.0;
    int repeat = 3;
    std::size_t depth = 8;
    std::uint64_t file_mib = 256;
    std::string dir = "/tmp";
    std::string peers = "iocp-io_uring,iocp-epoll,pread_plain_pool,pread_loop";
    std::string run;      // child: the peer to run
    std::string workload; // child: "random" or "sequential"
    std::string path;     // child: the file
};

struct result {
    std::uint64_t reads = 0;
    std::uint64_t bytes = 0;
    double seconds = 0;
    bool ok = true;
};

// The offsets each reader visits: random 4 KiB-aligned, or consecutive 1 MiB blocks shared by
// every reader (one atomic counter).
class offsets {
public:
    offsets(bool random, std::uint64_t file_size, std::size_t block)
        : random_(random), blocks_(file_size / block), block_(block) {}

    std::uint64_t next(std::uint64_t& seed) noexcept {
        if (!random_)
            return (sequence_.fetch_add(1, std::memory_order_relaxed) % blocks_) * block_;
        seed ^= seed << 13; // xorshift64
        seed ^= seed >> 7;
        seed ^= seed << 17;
        return (seed % blocks_) * block_;
    }

private:
    bool random_;
    std::uint64_t blocks_;
    std::size_t block_;
    std::atomic<std::uint64_t> sequence_{0};
};

// Counts the readers still running; the last one to finish wakes the waiter.
class countdown {
public:
    explicit countdown(std::size_t n) : left_(n) {}
    void done() {
        std::lock_guard lock(mutex_);
        if (--left_ == 0)
            cv_.notify_all();
    }
    void wait() {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [this] { return left_ == 0; });
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    std::size_t left_;
};

// One reader of the iocp peer: a buffer and a read_at always pending until `stop`.
struct iocp_reader {
    iocp::file* file = nullptr;
    offsets* where = nullptr;
    std::atomic<bool>* stop = nullptr;
    countdown* finished = nullptr;
    std::vector<char> buffer;
    std::uint64_t seed = 0;
    std::uint64_t reads = 0;
    std::uint64_t bytes = 0;
    bool ok = true;

    void start() {
        file->read_at(where->next(seed), iocp::buffer(buffer),
                      [this](std::error_code ec, std::size_t n) {
                          if (ec || n != buffer.size()) {
                              ok = false;
                              finished->done();
                              return;
                          }
                          ++reads;
                          bytes += n;
                          if (stop->load(std::memory_order_relaxed)) {
                              finished->done();
                              return;
                          }
                          start();
                      });
    }
};

result run_iocp(const options& o, bool random, std::size_t block) {
    iocp::thread_pool_options po;
    po.threads = o.threads;
    iocp::thread_pool pool(po);
    iocp::file file(pool, o.path, iocp::file_mode::read);
    offsets where(random, file.size(), block);
    std::atomic<bool> stop{false};
    countdown finished(o.depth);
    std::vector<iocp_reader> readers(o.depth);
    const auto start = clock_type::now();
    for (std::size_t i = 0; i < readers.size(); ++i) {
        readers[i] = iocp_reader{&file,
                                 &where,
                                 &stop,
                                 &finished,
                                 std::vector<char>(block),
                                 0x9E3779B97F4A7C15ull * (i + 1)};
    }
    for (auto& r : readers)
        r.start();
    std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
    stop = true;
    finished.wait();
    result res;
    res.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
    for (const auto& r : readers) {
        res.reads += r.reads;
        res.bytes += r.bytes;
        res.ok = res.ok && r.ok;
    }
    pool.join();
    return res;
}

std::uint64_t size_of(int fd) {
    const ::off_t end = ::lseek(fd, 0, SEEK_END);
    return end < 0 ? 0 : static_cast<std::uint64_t>(end);
}

// The plain pool: each task does one pread and posts the next; `depth` tasks in flight.
result run_plain_pool(const options& o, bool random, std::size_t block) {
    const int fd = ::open(o.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return {0, 0, 0, false};
    offsets where(random, size_of(fd), block);
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> reads{0};
    std::atomic<bool> ok{true};
    countdown finished(o.depth);
    struct reader {
        std::vector<char> buffer;
        std::uint64_t seed;
    };
    std::vector<reader> readers;
    for (std::size_t i = 0; i < o.depth; ++i)
        readers.push_back({std::vector<char>(block), 0x9E3779B97F4A7C15ull * (i + 1)});
    const auto start = clock_type::now();
    {
        iocp_bench::plain_pool pool(o.threads);
        std::function<void(reader*)> step = [&](reader* r) {
            const ::ssize_t n =
                ::pread(fd, r->buffer.data(), block, static_cast<::off_t>(where.next(r->seed)));
            if (n != static_cast<::ssize_t>(block)) {
                ok = false;
                finished.done();
                return;
            }
            reads.fetch_add(1, std::memory_order_relaxed);
            if (stop.load(std::memory_order_relaxed)) {
                finished.done();
                return;
            }
            pool.post([&step, r] { step(r); });
        };
        for (auto& r : readers)
            pool.post([&step, r = &r] { step(r); });
        std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
        stop = true;
        finished.wait();
    }
    result res;
    res.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
    res.reads = reads.load();
    res.bytes = res.reads * block;
    res.ok = ok.load();
    ::close(fd);
    return res;
}

// The floor: `threads` threads calling pread back to back.
result run_pread_loop(const options& o, bool random, std::size_t block) {
    const int fd = ::open(o.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return {0, 0, 0, false};
    offsets where(random, size_of(fd), block);
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> reads{0};
    std::atomic<bool> ok{true};
    const auto start = clock_type::now();
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < o.threads; ++t) {
        threads.emplace_back([&, t] {
            std::vector<char> buffer(block);
            std::uint64_t seed = 0x9E3779B97F4A7C15ull * (t + 1);
            std::uint64_t n = 0;
            while (!stop.load(std::memory_order_relaxed)) {
                if (::pread(fd, buffer.data(), block, static_cast<::off_t>(where.next(seed))) !=
                    static_cast<::ssize_t>(block)) {
                    ok = false;
                    break;
                }
                ++n;
            }
            reads += n;
        });
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
    stop = true;
    for (auto& t : threads)
        t.join();
    result res;
    res.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
    res.reads = reads.load();
    res.bytes = res.reads * block;
    res.ok = ok.load();
    ::close(fd);
    return res;
}

// The child: run one peer, print "reads bytes seconds ok backend".
int run_child(const options& o) {
    const bool random = o.workload == "random";
    const std::size_t block = random ? std::size_t{4096} : std::size_t{1} << 20;
    result r;
    std::string backend = "-";
    try {
        if (o.run.rfind("iocp-", 0) == 0) {
            r = run_iocp(o, random, block);
            backend = iocp::io_backend_name();
        } else if (o.run == "pread_plain_pool") {
            r = run_plain_pool(o, random, block);
        } else if (o.run == "pread_loop") {
            r = run_pread_loop(o, random, block);
        } else {
            return 2;
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "file_bench: %s: %s\n", o.run.c_str(), e.what());
        return 1;
    }
    std::printf("%llu %llu %.6f %d %s\n", static_cast<unsigned long long>(r.reads),
                static_cast<unsigned long long>(r.bytes), r.seconds, r.ok ? 1 : 0, backend.c_str());
    return 0;
}

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "file_bench: %s: %s\n", what, std::strerror(errno));
    std::exit(1);
}

// Runs this binary as a child for one (peer, workload) and parses its line.
result spawn_child(const std::string& self, const options& o, const std::string& peer,
                   const std::string& workload) {
    std::vector<std::string> args = {self,
                                     "--run",
                                     peer,
                                     "--workload",
                                     workload,
                                     "--file",
                                     o.path,
                                     "--threads",
                                     std::to_string(o.threads),
                                     "--seconds",
                                     std::to_string(o.seconds),
                                     "--depth",
                                     std::to_string(o.depth)};
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e)
        if (std::strncmp(*e, "IOCP_IO_BACKEND=", 16) != 0)
            env.emplace_back(*e);
    if (peer.rfind("iocp-", 0) == 0)
        env.push_back("IOCP_IO_BACKEND=" + peer.substr(5));
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0)
        fail("pipe2");
    posix_spawn_file_actions_t actions;
    ::posix_spawn_file_actions_init(&actions);
    ::posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    std::vector<char*> argv;
    for (auto& a : args)
        argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (auto& e : env)
        envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, self.c_str(), &actions, nullptr, argv.data(), envp.data());
    ::posix_spawn_file_actions_destroy(&actions);
    ::close(out[1]);
    if (rc != 0) {
        errno = rc;
        fail("posix_spawn");
    }
    std::string line;
    char c = 0;
    while (::read(out[0], &c, 1) == 1 && c != '\n')
        line += c;
    ::close(out[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    result r;
    int ok = 0;
    std::string backend;
    std::istringstream in(line);
    in >> r.reads >> r.bytes >> r.seconds >> ok >> backend;
    r.ok = ok == 1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (peer.rfind("iocp-", 0) == 0 && backend != peer.substr(5)) {
        std::fprintf(stderr, "file_bench: %s ran on %s\n", peer.c_str(), backend.c_str());
        r.ok = false;
    }
    if (!r.ok || r.seconds <= 0) {
        std::fprintf(stderr, "file_bench: %s failed (%s)\n", peer.c_str(), line.c_str());
        std::exit(1);
    }
    return r;
}

// Makes the file (if it is not there with the right size) and reads it once into the cache.
void prepare_file(const std::string& path, std::uint64_t bytes) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        fail("open");
    std::vector<char> chunk(std::size_t{1} << 20);
    if (size_of(fd) != bytes) {
        if (::ftruncate(fd, 0) != 0)
            fail("ftruncate");
        for (std::uint64_t off = 0; off < bytes; off += chunk.size()) {
            std::fill(chunk.begin(), chunk.end(), static_cast<char>('a' + (off >> 20) % 26));
            if (::pwrite(fd, chunk.data(), chunk.size(), static_cast<::off_t>(off)) !=
                static_cast<::ssize_t>(chunk.size()))
                fail("pwrite");
        }
    }
    for (std::uint64_t off = 0; off < bytes; off += chunk.size())
        (void)::pread(fd, chunk.data(), chunk.size(), static_cast<::off_t>(off));
    ::close(fd);
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::stringstream in(s);
    std::string part;
    while (std::getline(in, part, sep))
        if (!part.empty())
            out.push_back(part);
    return out;
}

} // namespace

int main(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const auto arg = [&](const char* name) {
            return std::strcmp(argv[i], name) == 0 && i + 1 < argc;
        };
        if (arg("--threads"))
            o.threads = static_cast<std::size_t>(std::max(1, std::atoi(argv[++i])));
        else if (arg("--seconds"))
            o.seconds = std::atof(argv[++i]);
        else if (arg("--repeat"))
            o.repeat = std::max(1, std::atoi(argv[++i]));
        else if (arg("--depth"))
            o.depth = static_cast<std::size_t>(std::max(1, std::atoi(argv[++i])));
        else if (arg("--file-mib"))
            o.file_mib = static_cast<std::uint64_t>(std::max(2, std::atoi(argv[++i])));
        else if (arg("--dir"))
            o.dir = argv[++i];
        else if (arg("--peers"))
            o.peers = argv[++i];
        else if (arg("--run"))
            o.run = argv[++i];
        else if (arg("--workload"))
            o.workload = argv[++i];
        else if (arg("--file"))
            o.path = argv[++i];
        else {
            std::fprintf(stderr,
                         "usage: file_bench [--threads N] [--seconds S] [--repeat R] [--depth Q] "
                         "[--file-mib M] [--dir PATH] [--peers a,b,...]\n"
                         "peers: iocp-io_uring iocp-epoll pread_plain_pool pread_loop\n");
            return 2;
        }
    }
    if (!o.run.empty())
        return run_child(o);

    char self[4096];
    const ::ssize_t len = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0)
        fail("readlink /proc/self/exe");
    const std::string self_path(self, static_cast<std::size_t>(len));
    o.path = o.dir + "/iocp_file_bench.dat";
    prepare_file(o.path, o.file_mib << 20);

    const std::vector<std::string> peers = split(o.peers, ',');
    std::printf("file reads from the page cache (%llu MiB file), %zu threads, %zu reads in "
                "flight, %.1f s per run, median of %d (min..max)\n\n",
                static_cast<unsigned long long>(o.file_mib), o.threads, o.depth, o.seconds,
                o.repeat);
    std::printf("%-18s %-18s %12s %23s %13s\n", "workload", "peer", "median", "range",
                "vs plain pool");
    for (const char* workload : {"random", "sequential"}) {
        const bool random = std::strcmp(workload, "random") == 0;
        std::vector<std::vector<double>> values(peers.size());
        for (int r = 0; r < o.repeat; ++r) {
            for (std::size_t k = 0; k < peers.size(); ++k) {
                const std::size_t i = (k + static_cast<std::size_t>(r)) % peers.size();
                const result res = spawn_child(self_path, o, peers[i], workload);
                values[i].push_back(random
                                        ? static_cast<double>(res.reads) / res.seconds
                                        : static_cast<double>(res.bytes) / 1048576.0 / res.seconds);
            }
        }
        std::vector<double> medians;
        double plain = 0;
        for (std::size_t i = 0; i < peers.size(); ++i) {
            std::sort(values[i].begin(), values[i].end());
            medians.push_back(values[i][values[i].size() / 2]);
            if (peers[i] == "pread_plain_pool")
                plain = medians.back();
        }
        for (std::size_t i = 0; i < peers.size(); ++i) {
            char range[64];
            std::snprintf(range, sizeof range, "%.0f..%.0f", values[i].front(), values[i].back());
            std::printf("%-18s %-18s %12.0f %23s",
                        i == 0 ? (random ? "random 4 KiB" : "seq 1 MiB") : "", peers[i].c_str(),
                        medians[i], range);
            if (plain > 0)
                std::printf(" %12.2fx\n", medians[i] / plain);
            else
                std::printf(" %13s\n", "-");
        }
        std::printf("%-18s %s\n", "", random ? "(reads/s)" : "(MiB/s)");
        std::fflush(stdout);
    }
    ::unlink(o.path.c_str());
    return 0;
}

#else

#include <cstdio>

int main() {
    std::puts("file_bench needs the Linux I/O backends");
    return 0;
}

#endif
