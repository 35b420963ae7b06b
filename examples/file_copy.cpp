// Copies a file with overlapped I/O on the pool, several reads in flight at once: each of
// `slots` buffers takes the next chunk, reads it, writes it to the same offset of the copy,
// and takes the next chunk, until the whole file is copied.
//
//   file_copy <source> <destination> [--slots N] [--chunk BYTES] [--verify]
//
// --verify reads both files back and compares them (the example's test copies its own
// executable this way). Exits with 0 on success.

#include <iocp/file.hpp>
#include <iocp/thread_pool.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <vector>

namespace {

// The copy: shared by every slot. Chunks are handed out by an atomic cursor.
class copier {
public:
    copier(iocp::thread_pool& pool, const char* from, const char* to, std::size_t chunk)
        : source_(pool, from, iocp::file_mode::read),
          target_(pool, to,
                  iocp::file_mode::write | iocp::file_mode::create | iocp::file_mode::truncate),
          size_(source_.size()), chunk_(chunk) {}

    std::uint64_t size() const { return size_; }

    // Starts `slots` read-write loops and waits until all have finished.
    std::error_code run(std::size_t slots) {
        std::vector<std::unique_ptr<slot>> all;
        for (std::size_t i = 0; i < slots; ++i)
            all.push_back(std::make_unique<slot>(*this, chunk_));
        active_ = slots;
        for (auto& s : all)
            s->next();
        std::unique_lock lock(mutex_);
        done_.wait(lock, [&] { return active_ == 0; });
        return error_;
    }

private:
    // One buffer going round: read a chunk, write it, take the next chunk.
    struct slot {
        slot(copier& c, std::size_t chunk) : owner(c), buffer(chunk) {}
        copier& owner;
        std::vector<char> buffer;
        std::uint64_t offset = 0; // of the chunk being copied
        std::size_t length = 0;   // its length
        std::size_t done = 0;     // bytes of it read (then written) so far

        void next() {
            offset = owner.cursor_.fetch_add(buffer.size());
            if (offset >= owner.size_ || owner.failed_.load())
                return owner.slot_finished({});
            length = static_cast<std::size_t>(
                (std::min<std::uint64_t>)(buffer.size(), owner.size_ - offset));
            done = 0;
            read();
        }

        void read() {
            owner.source_.read_at(offset + done, iocp::buffer(buffer.data() + done, length - done),
                                  [this](std::error_code ec, std::size_t n) {
                                      if (ec) // eof too: the file shrank while we copied
                                          return owner.slot_finished(ec);
                                      done += n;
                                      if (done < length)
                                          return read(); // a short read: get the rest
                                      done = 0;
                                      write();
                                  });
        }

        void write() {
            owner.target_.write_at(offset + done, iocp::buffer(buffer.data() + done, length - done),
                                   [this](std::error_code ec, std::size_t n) {
                                       if (ec)
                                           return owner.slot_finished(ec);
                                       done += n;
                                       if (done < length)
                                           return write();
                                       next();
                                   });
        }
    };

    void slot_finished(std::error_code ec) {
        std::lock_guard lock(mutex_);
        if (ec && !error_) {
            error_ = ec;
            failed_ = true;
        }
        if (--active_ == 0)
            done_.notify_all();
    }

    iocp::file source_;
    iocp::file target_;
    std::uint64_t size_;
    std::size_t chunk_;
    std::atomic<std::uint64_t> cursor_{0};
    std::atomic<bool> failed_{false};
    std::mutex mutex_;
    std::condition_variable done_;
    std::size_t active_ = 0;
    std::error_code error_;
};

bool same_contents(const char* a, const char* b) {
    std::ifstream fa(a, std::ios::binary);
    std::ifstream fb(b, std::ios::binary);
    return fa && fb &&
           std::equal(std::istreambuf_iterator<char>(fa), std::istreambuf_iterator<char>(),
                      std::istreambuf_iterator<char>(fb), std::istreambuf_iterator<char>());
}

} // namespace

int main(int argc, char** argv) {
    const char* from = nullptr;
    const char* to = nullptr;
    std::size_t slots = 8;
    std::size_t chunk = std::size_t{256} * 1024;
    bool verify = false;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--slots") == 0 && i + 1 < argc)
            slots = static_cast<std::size_t>(std::atoi(argv[++i]));
        else if (std::strcmp(argv[i], "--chunk") == 0 && i + 1 < argc)
            chunk = static_cast<std::size_t>(std::atoll(argv[++i]));
        else if (std::strcmp(argv[i], "--verify") == 0)
            verify = true;
        else if (from == nullptr)
            from = argv[i];
        else if (to == nullptr)
            to = argv[i];
        else
            from = nullptr, i = argc; // too many arguments
    }
    if (from == nullptr || to == nullptr || slots == 0 || chunk == 0) {
        std::fprintf(stderr, "usage: file_copy <source> <destination> [--slots N] [--chunk "
                             "BYTES] [--verify]\n");
        return 2;
    }

    try {
        iocp::thread_pool pool(2);
        copier copy(pool, from, to, chunk);
        const auto started = std::chrono::steady_clock::now();
        if (std::error_code ec = copy.run(slots)) {
            std::fprintf(stderr, "file_copy: %s\n", ec.message().c_str());
            return 1;
        }
        const double seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        std::printf("copied %llu bytes with %zu reads of %zu bytes in flight: %.3f s\n",
                    static_cast<unsigned long long>(copy.size()), slots, chunk, seconds);
    } catch (const std::system_error& e) {
        std::fprintf(stderr, "file_copy: %s\n", e.what());
        return 1;
    }
    if (verify) {
        if (!same_contents(from, to)) {
            std::fprintf(stderr, "file_copy: the copy differs from the source\n");
            return 1;
        }
        std::printf("verified: the copy is identical\n");
    }
    return 0;
}
