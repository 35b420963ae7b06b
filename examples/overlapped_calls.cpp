// Any overlapped Win32 call on the pool, through iocp::overlapped_handle: watches a directory
// with ReadDirectoryChangesW while it creates a file there, locks a byte range of that file with
// LockFileEx, and marks it sparse with DeviceIoControl(FSCTL_SET_SPARSE). Each completion
// arrives once, on a worker. Windows only (runs as a test under Wine).
//
//   overlapped_calls [directory]      (default: a new directory in %TEMP%)

#include <iocp/iocp.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <string>
#include <system_error>
#include <utility>

namespace fs = std::filesystem;

namespace {

// Starts `call` on `h` and waits for its completion (a real program would go on working).
template <class Call>
std::pair<std::error_code, std::size_t> run(iocp::overlapped_handle& h, Call call) {
    std::promise<std::pair<std::error_code, std::size_t>> done;
    h.start(call, [&](std::error_code ec, std::size_t bytes) { done.set_value({ec, bytes}); });
    auto f = done.get_future();
    if (f.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
        std::fprintf(stderr, "no completion within 30 s\n");
        std::exit(1);
    }
    return f.get();
}

iocp::unique_handle open(const fs::path& p, DWORD access, DWORD disposition, DWORD flags) {
    return iocp::unique_handle(
        ::CreateFileW(p.c_str(), access, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                      nullptr, disposition, flags | FILE_FLAG_OVERLAPPED, nullptr));
}

} // namespace

int main(int argc, char** argv) {
    const fs::path dir =
        argc > 1 ? fs::path(argv[1])
                 : fs::temp_directory_path() /
                       ("iocp_overlapped_calls_" + std::to_string(::GetCurrentProcessId()));
    fs::create_directories(dir);
    iocp::thread_pool pool(2);

    // ReadDirectoryChangesW pends until something changes; the file created below is the change.
    iocp::overlapped_handle watch(
        pool, open(dir, FILE_LIST_DIRECTORY, OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS));
    alignas(DWORD) char changes[4096];
    std::promise<std::pair<std::error_code, std::size_t>> changed;
    watch.start(
        [&](HANDLE h, OVERLAPPED* ov) {
            return iocp::call_result::from_bool(
                ::ReadDirectoryChangesW(h, changes, sizeof changes, FALSE,
                                        FILE_NOTIFY_CHANGE_FILE_NAME, nullptr, ov, nullptr));
        },
        [&](std::error_code ec, std::size_t bytes) {
            changed.set_value({ec, bytes});
        });

    const fs::path file = dir / "data.bin";
    iocp::overlapped_handle data(pool, open(file, GENERIC_READ | GENERIC_WRITE, CREATE_ALWAYS, 0));
    auto [watch_ec, watch_bytes] = changed.get_future().get();
    if (watch_ec || watch_bytes == 0) {
        std::fprintf(stderr, "ReadDirectoryChangesW: %s\n", watch_ec.message().c_str());
        return 1;
    }
    const auto* info = reinterpret_cast<const FILE_NOTIFY_INFORMATION*>(changes);
    std::printf("ReadDirectoryChangesW: action %lu on a name of %lu bytes\n", info->Action,
                info->FileNameLength);

    // LockFileEx and FSCTL_SET_SPARSE may complete at once; Wine then queues no packet where
    // Windows does. With the port skipped on success neither system queues one, and the library
    // delivers the result itself: the same program runs on both.
    data.skip_completion_port_on_success();
    auto [lock_ec, lock_bytes] = run(data, [](HANDLE h, OVERLAPPED* ov) {
        return iocp::call_result::from_bool(
            ::LockFileEx(h, LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0, 16, 0, ov));
    });
    std::printf("LockFileEx: %s\n", lock_ec ? lock_ec.message().c_str() : "locked");
    (void)lock_bytes;
    auto [sparse_ec, sparse_bytes] = run(data, [](HANDLE h, OVERLAPPED* ov) {
        DWORD unused = 0;
        return iocp::call_result::from_bool(
            ::DeviceIoControl(h, FSCTL_SET_SPARSE, nullptr, 0, nullptr, 0, &unused, ov));
    });
    std::printf("DeviceIoControl(FSCTL_SET_SPARSE): %s\n",
                sparse_ec ? sparse_ec.message().c_str() : "done");
    (void)sparse_bytes;

    data.close();
    watch.close();
    pool.join();
    std::error_code ignored;
    if (argc <= 1)
        fs::remove_all(dir, ignored);
    return lock_ec || sparse_ec ? 1 : 0;
}
