// An application queues requests to a pool of workers on a completion port; the workers
// process them; the application shuts the pool down cleanly, nothing lost.
//
//   work_queue [requests] [workers]
//
// Prints what happened and exits with 0 when every request was processed exactly once.

#include <iocp/thread_pool.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <string>
#include <vector>

namespace {

// What a request carries: here a number to check for primality, the kind of CPU-bound job
// an application hands to a pool rather than doing inline.
struct request {
    int id;
    unsigned long long number;
};

bool is_prime(unsigned long long n) {
    if (n < 2)
        return false;
    for (unsigned long long d = 2; d * d <= n; ++d)
        if (n % d == 0)
            return false;
    return true;
}

} // namespace

int main(int argc, char** argv) {
    const int requests = argc > 1 ? std::atoi(argv[1]) : 1000;
    const std::size_t workers = argc > 2 ? static_cast<std::size_t>(std::atoi(argv[2])) : 0;
    if (requests <= 0) {
        std::fprintf(stderr, "usage: work_queue [requests > 0] [workers]\n");
        return 2;
    }

    std::atomic<int> processed{0};
    std::atomic<int> primes{0};
    std::atomic<int> failures{0};

    iocp::thread_pool_options options;
    options.threads = workers; // 0: one per processor
    options.thread_name = "work-queue";
    options.exception_handler = [&](std::exception_ptr) { ++failures; };
    iocp::thread_pool pool(options);
    std::printf("pool: %zu workers\n", pool.size());

    // 1. Fire-and-forget requests, as a classic IOCP request queue's QueueRequest does.
    for (int i = 0; i < requests; ++i) {
        request r{i, 1'000'000'007ULL + 2ULL * static_cast<unsigned long long>(i)};
        pool.post([r, &processed, &primes] {
            if (is_prime(r.number))
                ++primes;
            ++processed;
        });
    }

    // 2. Requests whose answer the application needs back: futures.
    std::vector<std::future<unsigned long long>> answers;
    for (int i = 0; i < 10; ++i)
        answers.push_back(pool.submit([i] {
            unsigned long long sum = 0;
            for (int k = 0; k <= 1000 * (i + 1); ++k)
                sum += static_cast<unsigned long long>(k);
            return sum;
        }));

    // 3. A delayed request.
    std::promise<void> reminded;
    pool.post_after(std::chrono::milliseconds(20), [&] { reminded.set_value(); });

    bool answers_ok = true;
    for (int i = 0; i < 10; ++i) {
        const unsigned long long n = 1000ULL * static_cast<unsigned long long>(i + 1);
        answers_ok = answers_ok && answers[static_cast<std::size_t>(i)].get() == n * (n + 1) / 2;
    }
    reminded.get_future().wait();

    // 4. Clean shutdown: queued work runs, then the workers stop (the destructor would too).
    pool.join();
    std::error_code refused;
    pool.post([] {}, refused);

    std::printf("processed %d of %d requests (%d primes), futures %s, timer ran, "
                "post after join: %s\n",
                processed.load(), requests, primes.load(), answers_ok ? "ok" : "WRONG",
                refused.message().c_str());
    const bool ok =
        processed == requests && answers_ok && failures == 0 && refused == iocp::errc::closed;
    return ok ? 0 : 1;
}
