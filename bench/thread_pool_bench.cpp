// iocp::thread_pool against the pools users pick today, same workloads, one binary, 2 workers.
//
//   W1  one producer posts 2,000,000 empty tasks; tasks/s until all have run
//   W2  post one task and wait for it, repeated; round trip p50 / p99 (blocking and spinning
//       waiter)
//   W3  100,000 submit() with futures, then get() them all (each pool's own future: iocp::future
//       for iocp, std::future from a packaged_task for the others)
//   W4  two producers, 1,000,000 tasks each
//   W5  burst start: an idle pool receives one task per worker, and each task waits until all
//       have started; p50 / p99 time from the first post until the last task started (the
//       producer sleeps meanwhile, leaving the workers the cores). A pool
//       that hands a whole burst to one worker serialises it: its tasks then give up waiting
//       after 50 ms, and the sample says so (the "serialised" counter).
//
// IOCP_BENCH_NOISY=1 in the environment adds a noisy neighbour: one CPU-bound thread per core
// runs beside every workload, as on a user's machine that is never idle.
//
// Every peer runs the same task body: count down a shared latch (the last one wakes the
// producer). Run: build/release/bench/thread_pool_bench (see bench/README.md).

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "iocp/port.hpp"
#include "iocp/thread_pool.hpp"
#include "plain_pool.hpp"

#ifdef IOCP_BENCH_ASIO
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/thread_pool.hpp>
#endif
#ifdef IOCP_BENCH_TBB
#include <tbb/global_control.h>
#include <tbb/task_arena.h>
#endif
#ifdef IOCP_BENCH_MOODYCAMEL
#include <concurrentqueue/concurrentqueue.h>
#endif

namespace {

constexpr std::size_t workers = 2;
constexpr std::int64_t w1_tasks = 2'000'000;
constexpr std::int64_t w3_tasks = 100'000;
constexpr std::int64_t w4_tasks_per_producer = 1'000'000;

// The one shared piece of every task: the last to finish wakes the waiting producer.
struct latch {
    std::atomic<std::int64_t> remaining{0};
    std::atomic<bool> done{false};

    void reset(std::int64_t n) {
        remaining.store(n);
        done.store(false);
    }
    void count_down() noexcept {
        if (remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            done.store(true, std::memory_order_release);
            done.notify_one();
        }
    }
    void wait() const noexcept { done.wait(false, std::memory_order_acquire); }
};

// --- peers: each posts a callable and can make a future ---------------------------------------

// iocp::thread_pool with its defaults (SpinMicroseconds < 0) or with the given idle spin.
template <int SpinMicroseconds>
struct iocp_pool_peer {
    static iocp::thread_pool_options options() {
        iocp::thread_pool_options o;
        o.threads = workers;
        if (SpinMicroseconds >= 0)
            o.spin = std::chrono::microseconds(SpinMicroseconds);
        return o;
    }
    iocp::thread_pool pool{options()};
    template <class F>
    void post(F&& f) {
        pool.post(std::forward<F>(f));
    }
    template <class F>
    auto submit(F&& f) {
        return pool.submit(std::forward<F>(f));
    }
};
using iocp_peer = iocp_pool_peer<-1>;
using iocp_no_spin_peer = iocp_pool_peer<0>; // idle workers go straight to sleep on the port

struct plain_peer {
    iocp_bench::plain_pool pool{workers};
    template <class F>
    void post(F&& f) {
        pool.post(std::forward<F>(f));
    }
    template <class F>
    auto submit(F&& f) {
        // std::function needs a copyable callable: the usual shared packaged_task.
        using R = std::invoke_result_t<F&>;
        auto task = std::make_shared<std::packaged_task<R()>>(std::forward<F>(f));
        auto future = task->get_future();
        pool.post([task] { (*task)(); });
        return future;
    }
};

#ifdef IOCP_BENCH_ASIO
struct asio_pool_peer {
    asio::thread_pool pool{workers};
    ~asio_pool_peer() { pool.join(); }
    template <class F>
    void post(F&& f) {
        asio::post(pool, std::forward<F>(f));
    }
    template <class F>
    auto submit(F&& f) {
        using R = std::invoke_result_t<F&>;
        std::packaged_task<R()> task(std::forward<F>(f));
        auto future = task.get_future();
        asio::post(pool, std::move(task));
        return future;
    }
};

struct asio_io_context_peer {
    asio::io_context context{static_cast<int>(workers)};
    asio::executor_work_guard<asio::io_context::executor_type> guard{context.get_executor()};
    std::vector<std::thread> threads;
    asio_io_context_peer() {
        for (std::size_t i = 0; i < workers; ++i)
            threads.emplace_back([this] { context.run(); });
    }
    ~asio_io_context_peer() {
        guard.reset();
        for (auto& t : threads)
            t.join();
    }
    template <class F>
    void post(F&& f) {
        asio::post(context, std::forward<F>(f));
    }
    template <class F>
    auto submit(F&& f) {
        using R = std::invoke_result_t<F&>;
        std::packaged_task<R()> task(std::forward<F>(f));
        auto future = task.get_future();
        asio::post(context, std::move(task));
        return future;
    }
};
#endif

#ifdef IOCP_BENCH_TBB
struct tbb_peer {
    // The producer thread plus two workers; without this TBB's market has one worker on a
    // two-core machine.
    tbb::global_control parallelism{tbb::global_control::max_allowed_parallelism, workers + 1};
    tbb::task_arena arena{static_cast<int>(workers), 0}; // no slot reserved for the producer
    template <class F>
    void post(F&& f) {
        arena.enqueue(std::forward<F>(f));
    }
    template <class F>
    auto submit(F&& f) {
        using R = std::invoke_result_t<F&>;
        auto task = std::make_shared<std::packaged_task<R()>>(std::forward<F>(f));
        auto future = task->get_future();
        arena.enqueue([task] { (*task)(); });
        return future;
    }
};
#endif

#ifdef IOCP_BENCH_MOODYCAMEL
// The floor: a lock-free queue handing function pointers to two consumers that spin. Not a
// usable pool (no sleeping, no futures); what moving a task between threads costs at least.
struct floor_peer {
    struct task {
        void (*fn)(void*);
        void* arg;
    };
    moodycamel::ConcurrentQueue<task> queue;
    std::atomic<bool> stopping{false};
    std::vector<std::thread> threads;
    floor_peer() {
        for (std::size_t i = 0; i < workers; ++i)
            threads.emplace_back([this] {
                moodycamel::ConsumerToken token(queue);
                task batch[64];
                while (!stopping.load(std::memory_order_relaxed)) {
                    std::size_t n = queue.try_dequeue_bulk(token, batch, 64);
                    for (std::size_t k = 0; k < n; ++k)
                        batch[k].fn(batch[k].arg);
                }
            });
    }
    ~floor_peer() {
        stopping = true;
        for (auto& t : threads)
            t.join();
    }
    // Only the latch task is supported: the floor moves two pointers, nothing more.
    void post_count_down(latch& l) {
        thread_local moodycamel::ProducerToken* token = nullptr;
        thread_local floor_peer* token_owner = nullptr;
        if (token_owner != this) {
            delete token;
            token = new moodycamel::ProducerToken(queue);
            token_owner = this;
        }
        queue.enqueue(*token, task{[](void* p) { static_cast<latch*>(p)->count_down(); }, &l});
    }
};
#endif

template <class Peer>
Peer& peer_instance() {
    // One pool per peer for the whole run: start-up is not what is measured.
    static Peer peer;
    return peer;
}

template <class Peer>
void post_count_down(Peer& peer, latch& l) {
#ifdef IOCP_BENCH_MOODYCAMEL
    if constexpr (std::is_same_v<Peer, floor_peer>) {
        peer.post_count_down(l);
        return;
    } else
#endif
    {
        peer.post([&l] { l.count_down(); });
    }
}

// --- W1 / W4: throughput ----------------------------------------------------------------------

// For our pool: the completion-port calls (wake-ups posted, blocking waits, polls) per item,
// which on Win32 are PostQueuedCompletionStatus / GetQueuedCompletionStatusEx calls.
template <class Peer>
struct port_call_counter {
    explicit port_call_counter(Peer&) {}
    void report(benchmark::State&, std::int64_t) {}
};

template <int SpinMicroseconds>
struct port_call_counter<iocp_pool_peer<SpinMicroseconds>> {
    iocp_pool_peer<SpinMicroseconds>& peer;
    iocp::thread_pool_stats before;
    explicit port_call_counter(iocp_pool_peer<SpinMicroseconds>& p)
        : peer(p), before(p.pool.stats()) {}
    void report(benchmark::State& state, std::int64_t items) {
        auto after = peer.pool.stats();
        auto per_item = [&](std::uint64_t a, std::uint64_t b) {
            return static_cast<double>(a - b) / static_cast<double>(items);
        };
        state.counters["wakeups_per_item"] = per_item(after.wakeups, before.wakeups);
        state.counters["sleeps_per_item"] = per_item(after.sleeps, before.sleeps);
        state.counters["port_calls_per_item"] =
            per_item(after.wakeups + after.sleeps + after.port_polls,
                     before.wakeups + before.sleeps + before.port_polls);
    }
};

template <class Peer>
void throughput(benchmark::State& state, int producers, std::int64_t per_producer) {
    Peer& peer = peer_instance<Peer>();
    port_call_counter<Peer> calls(peer);
    latch l;
    for (auto _ : state) {
        l.reset(producers * per_producer);
        std::vector<std::thread> extra;
        for (int p = 1; p < producers; ++p)
            extra.emplace_back([&] {
                for (std::int64_t i = 0; i < per_producer; ++i)
                    post_count_down(peer, l);
            });
        for (std::int64_t i = 0; i < per_producer; ++i)
            post_count_down(peer, l);
        for (auto& t : extra)
            t.join();
        l.wait();
    }
    state.SetItemsProcessed(state.iterations() * producers * per_producer);
    calls.report(state, state.iterations() * producers * per_producer);
}

template <class Peer>
void BM_W1_one_producer(benchmark::State& state) {
    throughput<Peer>(state, 1, w1_tasks);
}

template <class Peer>
void BM_W4_two_producers(benchmark::State& state) {
    throughput<Peer>(state, 2, w4_tasks_per_producer);
}

// --- W2: round trip latency -------------------------------------------------------------------

template <class Peer, bool spin>
void BM_W2_round_trip(benchmark::State& state) {
    Peer& peer = peer_instance<Peer>();
    std::vector<double> samples;
    samples.reserve(static_cast<std::size_t>(state.max_iterations));
    for (auto _ : state) {
        auto start = std::chrono::steady_clock::now();
        if constexpr (spin) {
            std::atomic<bool> ran{false};
            peer.post([&ran] { ran.store(true, std::memory_order_release); });
            while (!ran.load(std::memory_order_acquire)) {
            }
        } else {
            std::promise<void> ran;
            auto f = ran.get_future();
            peer.post([&ran] { ran.set_value(); });
            f.wait();
        }
        samples.push_back(
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
                .count());
    }
    std::sort(samples.begin(), samples.end());
    auto at = [&](double q) { return samples[static_cast<std::size_t>(q * (samples.size() - 1))]; };
    state.counters["p50_us"] = at(0.50);
    state.counters["p99_us"] = at(0.99);
}

// --- W3: submit with futures ------------------------------------------------------------------

template <class Peer>
void BM_W3_submit_futures(benchmark::State& state) {
    Peer& peer = peer_instance<Peer>();
    // Each peer's own future: std::future for the others, iocp::future for iocp's submit.
    std::vector<decltype(peer.submit([] { return 0; }))> futures;
    futures.reserve(w3_tasks);
    for (auto _ : state) {
        futures.clear();
        for (std::int64_t i = 0; i < w3_tasks; ++i)
            futures.push_back(peer.submit([i] { return static_cast<int>(i); }));
        std::int64_t sum = 0;
        for (auto& f : futures)
            sum += f.get();
        benchmark::DoNotOptimize(sum);
    }
    state.SetItemsProcessed(state.iterations() * w3_tasks);
}

// --- W5: burst start latency -----------------------------------------------------------------

template <class Peer>
void BM_W5_burst_start(benchmark::State& state) {
    using clock = std::chrono::steady_clock;
    Peer& peer = peer_instance<Peer>();
    // How long a task waits for the rest of its burst before it gives up (a serialising pool
    // would otherwise never finish the benchmark).
    constexpr auto give_up = std::chrono::milliseconds(50);
    std::vector<double> samples;
    samples.reserve(static_cast<std::size_t>(state.max_iterations));
    std::int64_t serialised = 0;
    // Outside the loop: the last task's notify may still touch the latch after the producer
    // has seen it open.
    latch finished;
    for (auto _ : state) {
        // Let every worker go idle (past any spin) first: the burst must find them asleep.
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        std::atomic<std::size_t> started{0};
        std::atomic<bool> all_started{false};
        std::atomic<clock::rep> last_start{0};
        finished.reset(static_cast<std::int64_t>(workers));
        const auto t0 = clock::now();
        for (std::size_t i = 0; i < workers; ++i)
            peer.post([&] {
                if (started.fetch_add(1, std::memory_order_acq_rel) + 1 == workers) {
                    last_start.store(clock::now().time_since_epoch().count());
                    all_started.store(true, std::memory_order_release);
                }
                const auto deadline = clock::now() + give_up;
                while (!all_started.load(std::memory_order_acquire) && clock::now() < deadline) {
                }
                finished.count_down();
            });
        // The producer sleeps until the burst is over rather than spin: the burst is N tasks
        // for N idle cores. A spinning producer would hold one of them, and the sample would
        // be the scheduler's time slice instead (measured on 2 vCPUs: ~1.9 ms p50 for every
        // peer once both workers were last run on one CPU, the second queued behind the first
        // task's wait while the producer spun on the other).
        finished.wait();
        const clock::time_point t1{clock::duration(last_start.load())};
        samples.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
        if (t1 - t0 >= give_up)
            ++serialised;
    }
    std::sort(samples.begin(), samples.end());
    auto at = [&](double q) { return samples[static_cast<std::size_t>(q * (samples.size() - 1))]; };
    state.counters["p50_us"] = at(0.50);
    state.counters["p99_us"] = at(0.99);
    state.counters["serialised"] = static_cast<double>(serialised);
}

// --- noisy neighbour ---------------------------------------------------------------------------

// With IOCP_BENCH_NOISY=1: one CPU-bound thread per core for the whole run, at normal priority.
class noisy_neighbour {
public:
    noisy_neighbour() {
        const char* v = std::getenv("IOCP_BENCH_NOISY");
        if (v == nullptr || *v == '\0' || *v == '0')
            return;
        const unsigned n = (std::max)(1u, std::thread::hardware_concurrency());
        for (unsigned i = 0; i < n; ++i)
            threads_.emplace_back([this] {
                std::uint64_t x = 0;
                while (!stop_.load(std::memory_order_relaxed))
                    benchmark::DoNotOptimize(x += x * 31 + 7);
            });
    }
    ~noisy_neighbour() {
        stop_.store(true);
        for (auto& t : threads_)
            t.join();
    }
    noisy_neighbour(const noisy_neighbour&) = delete;
    noisy_neighbour& operator=(const noisy_neighbour&) = delete;

private:
    std::atomic<bool> stop_{false};
    std::vector<std::thread> threads_;
};

const noisy_neighbour neighbour;

// --- the raw port: post/get with no pool around it ---------------------------------------------

void BM_W1_raw_port(benchmark::State& state) {
    iocp::port<> port(workers);
    latch l;
    std::atomic<bool> stopping{false};
    std::vector<std::thread> consumers;
    for (std::size_t i = 0; i < workers; ++i)
        consumers.emplace_back([&] {
            iocp::packet<void> packets[16];
            std::error_code ec;
            while (!stopping.load(std::memory_order_relaxed)) {
                std::size_t n = port.get_many(packets, std::chrono::milliseconds(10), ec);
                for (std::size_t k = 0; k < n; ++k)
                    static_cast<latch*>(packets[k].key)->count_down();
            }
        });
    for (auto _ : state) {
        l.reset(w1_tasks);
        for (std::int64_t i = 0; i < w1_tasks; ++i)
            port.post(nullptr, &l, 0);
        l.wait();
    }
    stopping = true;
    for (auto& t : consumers)
        t.join();
    state.SetItemsProcessed(state.iterations() * w1_tasks);
}

} // namespace

// Iterations are fixed so that every peer does the same work; medians come from repetitions.
#define IOCP_BENCH_PEER(Peer, label)                                                               \
    BENCHMARK_TEMPLATE(BM_W1_one_producer, Peer)                                                   \
        ->Name("BM_thread_pool_W1_one_producer/" label)                                            \
        ->Iterations(1)                                                                            \
        ->Repetitions(5)                                                                           \
        ->UseRealTime()                                                                            \
        ->Unit(benchmark::kMillisecond);                                                           \
    BENCHMARK_TEMPLATE(BM_W2_round_trip, Peer, false)                                              \
        ->Name("BM_thread_pool_W2_round_trip_blocking/" label)                                     \
        ->Iterations(20000)                                                                        \
        ->Repetitions(3)                                                                           \
        ->UseRealTime();                                                                           \
    BENCHMARK_TEMPLATE(BM_W2_round_trip, Peer, true)                                               \
        ->Name("BM_thread_pool_W2_round_trip_spinning/" label)                                     \
        ->Iterations(20000)                                                                        \
        ->Repetitions(3)                                                                           \
        ->UseRealTime();                                                                           \
    BENCHMARK_TEMPLATE(BM_W3_submit_futures, Peer)                                                 \
        ->Name("BM_thread_pool_W3_submit_futures/" label)                                          \
        ->Iterations(1)                                                                            \
        ->Repetitions(5)                                                                           \
        ->UseRealTime()                                                                            \
        ->Unit(benchmark::kMillisecond);                                                           \
    BENCHMARK_TEMPLATE(BM_W4_two_producers, Peer)                                                  \
        ->Name("BM_thread_pool_W4_two_producers/" label)                                           \
        ->Iterations(1)                                                                            \
        ->Repetitions(5)                                                                           \
        ->UseRealTime()                                                                            \
        ->Unit(benchmark::kMillisecond);                                                           \
    BENCHMARK_TEMPLATE(BM_W5_burst_start, Peer)                                                    \
        ->Name("BM_thread_pool_W5_burst_start/" label)                                             \
        ->Iterations(200)                                                                          \
        ->Repetitions(3)                                                                           \
        ->UseRealTime()

IOCP_BENCH_PEER(iocp_peer, "iocp");
IOCP_BENCH_PEER(iocp_no_spin_peer, "iocp_spin_0us");
IOCP_BENCH_PEER(plain_peer, "plain_mutex_cv");
#ifdef IOCP_BENCH_ASIO
IOCP_BENCH_PEER(asio_pool_peer, "asio_thread_pool");
IOCP_BENCH_PEER(asio_io_context_peer, "asio_io_context");
#endif
#ifdef IOCP_BENCH_TBB
IOCP_BENCH_PEER(tbb_peer, "tbb_arena_enqueue");
#endif
#ifdef IOCP_BENCH_MOODYCAMEL
BENCHMARK_TEMPLATE(BM_W1_one_producer, floor_peer)
    ->Name("BM_thread_pool_W1_one_producer/floor_moodycamel_spin")
    ->Iterations(1)
    ->Repetitions(5)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_W4_two_producers, floor_peer)
    ->Name("BM_thread_pool_W4_two_producers/floor_moodycamel_spin")
    ->Iterations(1)
    ->Repetitions(5)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
#endif
BENCHMARK(BM_W1_raw_port)
    ->Name("BM_thread_pool_W1_one_producer/raw_port")
    ->Iterations(1)
    ->Repetitions(5)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
