// A test program that crashes on purpose. ctest runs it with WILL_FAIL: the run passes only if
// the crash makes the process exit with a failure status. Under Wine that is not a given (Wine
// sometimes exits 0 after an unhandled exception); test_main's filter makes it so, and this
// probe proves the filter works.

#include <gtest/gtest.h>

TEST(crash_probe, an_access_violation_fails_the_test_program) {
    volatile int* volatile null = nullptr;
    *null = 1; // the crash
    FAIL() << "still running after writing through a null pointer";
}
