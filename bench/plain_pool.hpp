#pragma once
// The pool most code bases write by hand: one mutex, one condition variable, a deque of
// std::function. A benchmark peer, not part of the library.

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace iocp_bench {

class plain_pool {
public:
    explicit plain_pool(std::size_t threads) {
        for (std::size_t i = 0; i < threads; ++i)
            workers_.emplace_back([this] { run(); });
    }
    plain_pool(const plain_pool&) = delete;
    plain_pool& operator=(const plain_pool&) = delete;
    ~plain_pool() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        cv_.notify_all();
        for (auto& t : workers_)
            t.join();
    }

    void post(std::function<void()> f) {
        {
            std::lock_guard lock(mutex_);
            tasks_.push_back(std::move(f));
        }
        cv_.notify_one();
    }

private:
    void run() {
        for (;;) {
            std::function<void()> f;
            {
                std::unique_lock lock(mutex_);
                cv_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
                if (tasks_.empty())
                    return;
                f = std::move(tasks_.front());
                tasks_.pop_front();
            }
            f();
        }
    }

    std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> tasks_;
    bool stopping_ = false;
    std::vector<std::thread> workers_;
};

} // namespace iocp_bench
