#include "iocp/overlapped_handle.hpp"

#include <gtest/gtest.h>

#include "iocp/config.hpp"

// Win32 only, as the header (Linux has no OVERLAPPED to hand to an arbitrary call). Every test
// runs under Wine; the one that needs a behaviour Wine lacks skips with the reason.
#if IOCP_HAS_IOCP

#include <winioctl.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "iocp/io_operation.hpp"
#include "iocp/thread_pool.hpp"
#include "iocp/unique_handle.hpp"
#include "support/platform.hpp"
#include "support/waiting.hpp"

#ifndef FSCTL_PIPE_LISTEN // not in every MinGW-w64 <winioctl.h>; the value is the SDK's
#define FSCTL_PIPE_LISTEN CTL_CODE(FILE_DEVICE_NAMED_PIPE, 2, METHOD_BUFFERED, FILE_ANY_ACCESS)
#endif

using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

using iocp_test::await;

// A name no other test program (or run) uses at the same time.
std::wstring pipe_name(const char* what) {
    static std::atomic<int> serial{0};
    std::string s = R"(\\.\pipe\iocp_ovh_test_)" + std::to_string(::GetCurrentProcessId()) + "_" +
                    what + "_" + std::to_string(serial++);
    return {s.begin(), s.end()};
}

iocp::unique_handle make_server_pipe(const std::wstring& name, DWORD instances = 8) {
    return iocp::unique_handle(::CreateNamedPipeW(
        name.c_str(), PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED,
        PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS, instances,
        4096, 4096, 0, nullptr));
}

iocp::unique_handle open_client_pipe(const std::wstring& name) {
    return iocp::unique_handle(::CreateFileW(name.c_str(), GENERIC_READ | GENERIC_WRITE, 0, nullptr,
                                             OPEN_EXISTING, FILE_FLAG_OVERLAPPED, nullptr));
}

// A fresh path in the temporary directory, removed at the end of the test.
class temp_path {
public:
    explicit temp_path(const std::string& name) {
        path_ = fs::temp_directory_path() /
                ("iocp_ovh_test_" + std::to_string(::GetCurrentProcessId()) + "_" + name);
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    temp_path(const temp_path&) = delete;
    temp_path& operator=(const temp_path&) = delete;
    ~temp_path() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    const fs::path& get() const { return path_; }

private:
    fs::path path_;
};

iocp::unique_handle open_file(const fs::path& p, DWORD disposition = OPEN_ALWAYS) {
    return iocp::unique_handle(
        ::CreateFileW(p.c_str(), GENERIC_READ | GENERIC_WRITE,
                      FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, nullptr, disposition,
                      FILE_ATTRIBUTE_NORMAL | FILE_FLAG_OVERLAPPED, nullptr));
}

// What a handler saw.
struct outcome {
    std::error_code ec;
    std::size_t bytes = 0;
    std::thread::id thread;
};

// Every handler reports here exactly once (ran) or is destroyed unrun (abandoned).
struct io_ledger {
    std::atomic<int> ran{0};
    std::atomic<int> abandoned{0};
    std::atomic<int> aborted{0};
};

class counted_handler {
public:
    counted_handler(io_ledger& l, std::shared_ptr<std::promise<outcome>> p = nullptr)
        : ledger_(&l), done_(std::move(p)) {}
    counted_handler(counted_handler&& o) noexcept
        : ledger_(std::exchange(o.ledger_, nullptr)), done_(std::move(o.done_)) {}
    counted_handler& operator=(counted_handler&&) = delete;
    ~counted_handler() {
        if (ledger_ != nullptr)
            ++ledger_->abandoned;
    }
    void operator()(std::error_code ec, std::size_t bytes) {
        io_ledger* l = std::exchange(ledger_, nullptr);
        if (ec == iocp::errc::operation_aborted)
            ++l->aborted;
        ++l->ran;
        if (done_)
            done_->set_value({ec, bytes, std::this_thread::get_id()});
    }

private:
    io_ledger* ledger_;
    std::shared_ptr<std::promise<outcome>> done_;
};

// A handler that hands its outcome to a future.
struct promised {
    std::shared_ptr<std::promise<outcome>> p = std::make_shared<std::promise<outcome>>();
    std::future<outcome> f = p->get_future();
};

auto listen_call() {
    return [](HANDLE h, OVERLAPPED* ov) {
        DWORD unused = 0;
        return iocp::call_result::from_bool(
            ::DeviceIoControl(h, FSCTL_PIPE_LISTEN, nullptr, 0, nullptr, 0, &unused, ov));
    };
}

} // namespace

// --- The I/O object ---------------------------------------------------------------------------

TEST(overlapped_handle_test, default_constructed_is_closed_and_refuses_to_start) {
    iocp::overlapped_handle h;
    EXPECT_FALSE(h.is_open());
    EXPECT_EQ(h.native_handle(), INVALID_HANDLE_VALUE);
    EXPECT_EQ(h.pool(), nullptr);
    io_ledger l;
    EXPECT_THROW(h.start(listen_call(), counted_handler(l)), std::system_error);
    EXPECT_EQ(l.ran, 0);
    EXPECT_EQ(l.abandoned, 1); // the handler was destroyed unrun
    std::error_code ec;
    h.cancel(ec);
    EXPECT_EQ(ec, iocp::errc::invalid_handle);
    h.close(ec); // closing a closed handle does nothing
    EXPECT_FALSE(ec);
}

TEST(overlapped_handle_test, assign_refuses_empty_and_already_associated_handles) {
    iocp::thread_pool pool(1);
    iocp::overlapped_handle h(pool);
    std::error_code ec;
    h.assign(iocp::unique_handle(), ec);
    EXPECT_EQ(ec, iocp::errc::invalid_handle);
    const std::wstring name = pipe_name("assoc");
    iocp::unique_handle raw = make_server_pipe(name);
    ASSERT_TRUE(raw);
    HANDLE dup = nullptr;
    ASSERT_TRUE(::DuplicateHandle(::GetCurrentProcess(), raw.get(), ::GetCurrentProcess(), &dup, 0,
                                  FALSE, DUPLICATE_SAME_ACCESS));
    h.assign(std::move(raw), ec);
    ASSERT_FALSE(ec) << ec.message();
    EXPECT_TRUE(h.is_open());
    // The same file object through another handle: the port association is per file object.
    iocp::overlapped_handle second(pool);
    second.assign(iocp::unique_handle(dup), ec);
    EXPECT_TRUE(ec);
    EXPECT_FALSE(second.is_open());
}

TEST(overlapped_handle_test, moves_keep_the_handle_and_its_pending_calls) {
    iocp::thread_pool pool(2);
    const std::wstring name = pipe_name("move");
    iocp::overlapped_handle a(pool, make_server_pipe(name));
    io_ledger l;
    promised done;
    a.start(listen_call(), counted_handler(l, done.p));
    iocp::overlapped_handle b(std::move(a));
    EXPECT_FALSE(a.is_open()); // NOLINT(bugprone-use-after-move): moved-from state is specified
    EXPECT_TRUE(b.is_open());
    iocp::overlapped_handle c;
    c = std::move(b);
    iocp::unique_handle client = open_client_pipe(name);
    ASSERT_TRUE(client);
    outcome o = await(std::move(done.f), "the listen");
    EXPECT_FALSE(o.ec) << o.ec.message();
    EXPECT_EQ(l.ran, 1);
}

// --- Examples that run under Wine: DeviceIoControl, LockFileEx, ReadDirectoryChangesW ------------

// DeviceIoControl on a pipe: FSCTL_PIPE_LISTEN (what ConnectNamedPipe sends) pends until a
// client opens the pipe, then completes through the port.
TEST(overlapped_handle_test, device_io_control_on_a_pipe_completes_when_a_client_connects) {
    iocp::thread_pool pool(2);
    const std::wstring name = pipe_name("listen");
    iocp::overlapped_handle server(pool, make_server_pipe(name));
    io_ledger l;
    promised done;
    server.start(listen_call(), counted_handler(l, done.p));
    EXPECT_EQ(done.f.wait_for(50ms), std::future_status::timeout); // pending: nobody came yet
    iocp::unique_handle client = open_client_pipe(name);
    ASSERT_TRUE(client) << ::GetLastError();
    outcome o = await(std::move(done.f), "the listen");
    EXPECT_FALSE(o.ec) << o.ec.message();
    EXPECT_NE(o.thread, std::this_thread::get_id());
    pool.join();
    EXPECT_EQ(l.ran, 1);
    EXPECT_EQ(l.abandoned, 0);
}

// DeviceIoControl on a file: FSCTL_SET_SPARSE completes at once. Under Wine no packet is
// queued for it where Windows queues one; with skip-on-success set neither queues one and the
// library delivers the result: the same program completes once on both.
TEST(overlapped_handle_test, device_io_control_fsctl_on_a_file_completes_once) {
    temp_path tmp("sparse.bin");
    iocp::thread_pool pool(2);
    iocp::overlapped_handle f(pool, open_file(tmp.get()));
    f.skip_completion_port_on_success();
    EXPECT_TRUE(f.skips_completion_port_on_success());
    io_ledger l;
    promised done;
    f.start(
        [](HANDLE h, OVERLAPPED* ov) {
            DWORD unused = 0;
            return iocp::call_result::from_bool(
                ::DeviceIoControl(h, FSCTL_SET_SPARSE, nullptr, 0, nullptr, 0, &unused, ov));
        },
        counted_handler(l, done.p));
    outcome o = await(std::move(done.f), "FSCTL_SET_SPARSE");
    EXPECT_FALSE(o.ec) << o.ec.message();
    EXPECT_NE(o.thread, std::this_thread::get_id());
    BY_HANDLE_FILE_INFORMATION info{};
    ASSERT_TRUE(::GetFileInformationByHandle(f.native_handle(), &info));
    // Wine 8 accepts FSCTL_SET_SPARSE and does nothing (its file systems have no sparse flag).
    if (!iocp_test::running_under_wine()) {
        EXPECT_NE(info.dwFileAttributes & FILE_ATTRIBUTE_SPARSE_FILE, 0u);
    }
    pool.join();
    EXPECT_EQ(l.ran, 1);
}

namespace {
auto lock_call(DWORD flags, DWORD bytes) {
    return [flags, bytes](HANDLE h, OVERLAPPED* ov) {
        // The range starts at the OVERLAPPED's offset: 0 (the library zeroes it).
        return iocp::call_result::from_bool(::LockFileEx(h, flags, 0, bytes, 0, ov));
    };
}
} // namespace

// LockFileEx: an uncontended lock completes at once (under Wine with no packet at all, hence
// skip-on-success: see the test above); a conflicting one with LOCKFILE_FAIL_IMMEDIATELY fails
// at once, and that failure is delivered through the pool, not inside the start call.
TEST(overlapped_handle_test, lock_file_ex_locks_and_reports_a_conflict) {
    temp_path tmp("lock.bin");
    iocp::thread_pool pool(2);
    iocp::overlapped_handle a(pool, open_file(tmp.get()));
    iocp::overlapped_handle b(pool, open_file(tmp.get()));
    a.skip_completion_port_on_success();
    b.skip_completion_port_on_success();
    io_ledger l;
    promised locked;
    a.start(lock_call(LOCKFILE_EXCLUSIVE_LOCK, 16), counted_handler(l, locked.p));
    outcome o = await(std::move(locked.f), "the lock");
    ASSERT_FALSE(o.ec) << o.ec.message();

    promised refused;
    b.start(lock_call(LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 16),
            counted_handler(l, refused.p));
    o = await(std::move(refused.f), "the conflicting lock");
    EXPECT_EQ(o.ec, std::error_code(ERROR_LOCK_VIOLATION, std::system_category()))
        << o.ec.message();
    EXPECT_NE(o.thread, std::this_thread::get_id());

    ASSERT_TRUE(::UnlockFile(a.native_handle(), 0, 0, 16, 0));
    promised second;
    b.start(lock_call(LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 16),
            counted_handler(l, second.p));
    o = await(std::move(second.f), "the lock after the unlock");
    EXPECT_FALSE(o.ec) << o.ec.message();
    pool.join();
    EXPECT_EQ(l.ran, 3);
}

// A lock that has to wait pends and completes when the holder unlocks. Wine 8 returns
// ERROR_IO_PENDING for it and then never completes it (measured: no packet after the unlock).
TEST(overlapped_handle_test, lock_file_ex_waits_for_the_holder) {
    if (iocp_test::running_under_wine())
        GTEST_SKIP() << "Wine 8 never completes a LockFileEx that had to wait (no packet after "
                        "the unlock); Windows does";
    temp_path tmp("lock_wait.bin");
    iocp::thread_pool pool(2);
    iocp::overlapped_handle a(pool, open_file(tmp.get()));
    iocp::overlapped_handle b(pool, open_file(tmp.get()));
    io_ledger l;
    promised locked;
    a.start(lock_call(LOCKFILE_EXCLUSIVE_LOCK, 16), counted_handler(l, locked.p));
    ASSERT_FALSE(await(std::move(locked.f), "the lock").ec);
    promised waited;
    b.start(lock_call(LOCKFILE_EXCLUSIVE_LOCK, 16), counted_handler(l, waited.p));
    EXPECT_EQ(waited.f.wait_for(50ms), std::future_status::timeout);
    ASSERT_TRUE(::UnlockFile(a.native_handle(), 0, 0, 16, 0));
    EXPECT_FALSE(await(std::move(waited.f), "the waiting lock").ec);
    pool.join();
    EXPECT_EQ(l.ran, 2);
}

// ReadDirectoryChangesW: pends until something changes in the directory, then reports the
// FILE_NOTIFY_INFORMATION records in the buffer.
TEST(overlapped_handle_test, read_directory_changes_reports_a_new_file) {
    temp_path dir("watched");
    fs::create_directories(dir.get());
    iocp::thread_pool pool(2);
    iocp::overlapped_handle watch(
        pool, iocp::unique_handle(::CreateFileW(
                  dir.get().c_str(), FILE_LIST_DIRECTORY,
                  FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, nullptr, OPEN_EXISTING,
                  FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OVERLAPPED, nullptr)));
    alignas(DWORD) static char changes[4096];
    io_ledger l;
    promised done;
    watch.start(
        [](HANDLE h, OVERLAPPED* ov) {
            return iocp::call_result::from_bool(
                ::ReadDirectoryChangesW(h, changes, sizeof changes, FALSE,
                                        FILE_NOTIFY_CHANGE_FILE_NAME, nullptr, ov, nullptr));
        },
        counted_handler(l, done.p));
    EXPECT_EQ(done.f.wait_for(50ms), std::future_status::timeout);
    {
        iocp::unique_handle created(::CreateFileW((dir.get() / "new.txt").c_str(), GENERIC_WRITE, 0,
                                                  nullptr, CREATE_ALWAYS, 0, nullptr));
        ASSERT_TRUE(created);
    }
    outcome o = await(std::move(done.f), "the change");
    ASSERT_FALSE(o.ec) << o.ec.message();
    ASSERT_GE(o.bytes, sizeof(FILE_NOTIFY_INFORMATION));
    const auto* info = reinterpret_cast<const FILE_NOTIFY_INFORMATION*>(changes);
    EXPECT_EQ(info->Action, static_cast<DWORD>(FILE_ACTION_ADDED));
    EXPECT_EQ(std::wstring(info->FileName, info->FileNameLength / sizeof(WCHAR)), L"new.txt");
    watch.close();
    pool.join();
    EXPECT_EQ(l.ran, 1);
}

// --- What the library guarantees for every start ----------------------------------------------

// A call that fails at once completes through the pool, never inside the start call: started
// from the only worker of a one-thread pool, its handler can run only once that worker is free
// again, so it must find the start returned.
TEST(overlapped_handle_test, an_immediate_failure_is_delivered_through_the_pool) {
    temp_path tmp("fail.bin");
    iocp::thread_pool pool(1);
    iocp::overlapped_handle f(pool, open_file(tmp.get()));
    io_ledger l;
    promised done;
    std::atomic<bool> returned{false};
    std::atomic<bool> ran_inside{false};
    pool.post([&, p = done.p] {
        f.start(
            [](HANDLE h, OVERLAPPED* ov) {
                DWORD unused = 0;
                // A control code no file system knows.
                return iocp::call_result::from_bool(
                    ::DeviceIoControl(h, CTL_CODE(0x8123, 0x923, METHOD_BUFFERED, FILE_ANY_ACCESS),
                                      nullptr, 0, nullptr, 0, &unused, ov));
            },
            [&, p](std::error_code ec, std::size_t bytes) {
                ran_inside = !returned.load();
                ++l.ran;
                p->set_value({ec, bytes, std::this_thread::get_id()});
            });
        returned = true;
    });
    outcome o = await(std::move(done.f), "the failed call");
    EXPECT_TRUE(o.ec);
    EXPECT_EQ(o.ec.category(), std::system_category());
    EXPECT_FALSE(ran_inside);
    pool.join();
    EXPECT_EQ(l.ran, 1);
}

// call_result::failed / finished: what a call whose "failure" is a success reports, and the
// failures of a call given by its code.
TEST(overlapped_handle_test, finished_and_failed_results_complete_once_through_the_pool) {
    iocp::thread_pool pool(2);
    const std::wstring name = pipe_name("connected");
    iocp::overlapped_handle server(pool, make_server_pipe(name));
    iocp::unique_handle client = open_client_pipe(name); // before ConnectNamedPipe
    ASSERT_TRUE(client);
    io_ledger l;
    promised connected;
    server.start(
        [](HANDLE h, OVERLAPPED* ov) {
            if (::ConnectNamedPipe(h, ov))
                return iocp::call_result::done();
            const DWORD e = ::GetLastError();
            return e == ERROR_PIPE_CONNECTED ? iocp::call_result::finished()
                                             : iocp::call_result::failed(e);
        },
        counted_handler(l, connected.p));
    outcome o = await(std::move(connected.f), "ConnectNamedPipe");
    EXPECT_FALSE(o.ec) << o.ec.message();
    promised failed;
    server.start([](HANDLE, OVERLAPPED*) { return iocp::call_result::failed(ERROR_NOT_SUPPORTED); },
                 counted_handler(l, failed.p));
    o = await(std::move(failed.f), "the failure");
    EXPECT_EQ(o.ec, std::error_code(ERROR_NOT_SUPPORTED, std::system_category()));
    pool.join();
    EXPECT_EQ(l.ran, 2);
}

TEST(overlapped_handle_test, a_closed_handle_completes_with_invalid_handle) {
    iocp::thread_pool pool(2);
    iocp::overlapped_handle h(pool);
    io_ledger l;
    promised done;
    bool called = false;
    h.start(
        [&](HANDLE, OVERLAPPED*) {
            called = true;
            return iocp::call_result::pending();
        },
        counted_handler(l, done.p));
    EXPECT_EQ(await(std::move(done.f), "the start").ec, iocp::errc::invalid_handle);
    EXPECT_FALSE(called);
    pool.join();
    EXPECT_EQ(l.ran, 1);
}

// cancel(op) cancels that call and no other (CancelIoEx with its OVERLAPPED).
TEST(overlapped_handle_test, cancel_of_one_operation_leaves_the_others) {
    iocp::thread_pool pool(2);
    const std::wstring name = pipe_name("cancel_one");
    iocp::overlapped_handle server(pool, make_server_pipe(name));
    iocp::unique_handle client = open_client_pipe(name);
    ASSERT_TRUE(client);
    struct read_op : iocp::io_operation {
        char buf[16] = {};
        std::promise<outcome> done;
        read_op() : io_operation(&read_op::on_done) {}
        static void on_done(iocp::io_operation* base, const std::error_code& ec,
                            std::size_t n) noexcept {
            static_cast<read_op*>(base)->done.set_value({ec, n, std::this_thread::get_id()});
        }
    };
    read_op first;
    read_op second;
    auto read_into = [](read_op& op) {
        return [&op](HANDLE h, OVERLAPPED* ov) {
            return iocp::call_result::from_bool(::ReadFile(h, op.buf, sizeof op.buf, nullptr, ov));
        };
    };
    ASSERT_FALSE(iocp::start_overlapped(server, first, read_into(first)));
    ASSERT_FALSE(iocp::start_overlapped(server, second, read_into(second)));
    server.cancel(first);
    outcome o = await(first.done.get_future(), "the cancelled read");
    EXPECT_EQ(o.ec, iocp::errc::operation_aborted) << o.ec.message();
    auto f2 = second.done.get_future();
    EXPECT_EQ(f2.wait_for(50ms), std::future_status::timeout); // still pending
    DWORD written = 0;
    OVERLAPPED ov{};
    ov.hEvent = ::CreateEventW(nullptr, TRUE, FALSE, nullptr);
    if (!::WriteFile(client.get(), "hello", 5, nullptr, &ov)) {
        ASSERT_EQ(::GetLastError(), static_cast<DWORD>(ERROR_IO_PENDING));
    }
    ASSERT_TRUE(::GetOverlappedResult(client.get(), &ov, &written, TRUE));
    ::CloseHandle(ov.hEvent);
    o = await(std::move(f2), "the other read");
    EXPECT_FALSE(o.ec) << o.ec.message();
    EXPECT_EQ(o.bytes, 5u);
    EXPECT_EQ(std::string(second.buf, 5), "hello");
    std::error_code ec;
    server.cancel(first, ec); // completed: nothing to cancel, not an error
    EXPECT_FALSE(ec);
}

// cancel() and close() end every pending call, each exactly once, aborted.
TEST(overlapped_handle_test, cancel_and_close_abort_every_pending_call_once) {
    iocp::thread_pool pool(2);
    constexpr int calls = 6;
    io_ledger l;
    for (int round = 0; round < 2; ++round) {
        const std::wstring name = pipe_name("abort");
        iocp::overlapped_handle server(pool, make_server_pipe(name));
        iocp::unique_handle client = open_client_pipe(name);
        ASSERT_TRUE(client);
        static char buf[calls][8];
        std::vector<std::future<outcome>> results;
        for (auto& b : buf) {
            promised p;
            results.push_back(std::move(p.f));
            server.start(
                [&b](HANDLE h, OVERLAPPED* ov) {
                    return iocp::call_result::from_bool(::ReadFile(h, b, sizeof b, nullptr, ov));
                },
                counted_handler(l, p.p));
        }
        if (round == 0)
            server.cancel();
        else
            server.close();
        for (auto& r : results)
            EXPECT_EQ(await(std::move(r), "an aborted read").ec, iocp::errc::operation_aborted);
    }
    pool.join();
    EXPECT_EQ(l.ran, 2 * calls);
    EXPECT_EQ(l.aborted, 2 * calls);
    EXPECT_EQ(l.abandoned, 0);
}

// Shutdown: join() and stop() cancel the handle's pending calls and wait for them; each
// completes exactly once, nothing is abandoned or leaked; a start after shutdown is refused.
TEST(overlapped_handle_test, pool_shutdown_cancels_and_waits_for_pending_calls) {
    for (bool immediate : {false, true}) {
        io_ledger l;
        constexpr int instances = 5;
        const std::wstring name = pipe_name("shutdown");
        std::vector<iocp::overlapped_handle> servers;
        {
            iocp::thread_pool pool(2);
            for (int i = 0; i < instances; ++i) {
                servers.emplace_back(pool, make_server_pipe(name, instances));
                servers.back().start(listen_call(), counted_handler(l));
            }
            if (immediate)
                (void)pool.stop();
            else
                pool.join();
            EXPECT_EQ(l.ran, instances);
            EXPECT_EQ(l.aborted, instances);
            EXPECT_THROW(servers[0].start(listen_call(), counted_handler(l)), std::system_error);
            EXPECT_EQ(l.abandoned, 1); // the refused start's handler, destroyed unrun
            servers.clear();           // the handles go before the pool
        }
        EXPECT_EQ(l.ran + l.abandoned, instances + 1);
    }
}

// Many threads start, cancel and complete calls on shared handles, at random: every start
// completes exactly once, and the pool's join returns (nothing left counted in flight).
TEST(overlapped_handle_test, stress_every_start_completes_exactly_once) {
    const int threads = 4;
    const int per_thread = iocp_test::scaled(400, 60);
    io_ledger l;
    std::atomic<int> started{0};
    {
        iocp::thread_pool pool(3);
        const std::wstring name = pipe_name("stress");
        iocp::overlapped_handle server(pool, make_server_pipe(name));
        iocp::unique_handle client = open_client_pipe(name);
        ASSERT_TRUE(client);
        iocp::overlapped_handle writer(pool, std::move(client));
        std::vector<std::thread> ts;
        for (int t = 0; t < threads; ++t) {
            ts.emplace_back([&, t] {
                std::mt19937 rng(static_cast<unsigned>(t) * 7919u + 1u);
                static char buf[64]; // not per thread: reads may outlive their thread
                for (int i = 0; i < per_thread; ++i) {
                    switch (rng() % 4) {
                    case 0: // a read that waits for the writer, or for a cancel
                        server.start(
                            [](HANDLE h, OVERLAPPED* ov) {
                                return iocp::call_result::from_bool(
                                    ::ReadFile(h, buf, sizeof buf, nullptr, ov));
                            },
                            counted_handler(l));
                        break;
                    case 1: // a write of the client side
                        writer.start(
                            [](HANDLE h, OVERLAPPED* ov) {
                                return iocp::call_result::from_bool(
                                    ::WriteFile(h, "0123456789", 10, nullptr, ov));
                            },
                            counted_handler(l));
                        break;
                    case 2: // a call that fails at once
                        server.start(
                            [](HANDLE, OVERLAPPED*) {
                                return iocp::call_result::failed(ERROR_INVALID_FUNCTION);
                            },
                            counted_handler(l));
                        break;
                    default: server.cancel(); continue;
                    }
                    ++started;
                }
            });
        }
        for (auto& th : ts)
            th.join();
        // Writes may wait for readers and reads for writers: end whatever still waits.
        server.cancel();
        writer.cancel();
        pool.join();
        EXPECT_EQ(l.ran.load(), started.load());
        EXPECT_EQ(l.abandoned.load(), 0);
    }
    EXPECT_GT(started.load(), 0);
}

#endif // IOCP_HAS_IOCP
