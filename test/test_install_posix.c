/*
 * make install, used from outside the tree: tools/check_install.sh installs
 * this build's library into a temporary prefix, builds an example against
 * it with pkg-config and with CMake's find_package(weft) (shared and
 * static), runs each, and checks that make uninstall removes every file.
 */
#define _GNU_SOURCE
#include "test.h"

#include <limits.h>
#include <stdbool.h>
#include <libgen.h>
#include <sys/wait.h>
#include <unistd.h>

TEST_TIMEOUT(install_then_build_out_of_tree, 120)
{
    /* The example is built with the host's cc against this build's library:
     * meaningful for a native, uninstrumented build only. */
    bool emulated = test_under_qemu();
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(WEFT_SAN_UBSAN)
    bool sanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
    bool sanitized = true;
#else
    bool sanitized = false;
#endif
#else
    bool sanitized = false;
#endif
    if (emulated || sanitized || RUNNING_ON_VALGRIND) {
        test_skip("a cross, sanitized or valgrind build");
    }
    if (system("command -v cmake >/dev/null 2>&1 && command -v pkg-config >/dev/null 2>&1") != 0) {
        test_skip("cmake or pkg-config is not installed");
    }
    /* this binary is BUILD/test/weft-test: install that BUILD */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    ASSERT_GT(n, 0);
    exe[n] = 0;
    char *build = dirname(dirname(exe));
    char cmd[PATH_MAX + 64], out[16384] = "";
    snprintf(cmd, sizeof cmd, "bash tools/check_install.sh '%s' 2>&1", build);
    FILE *p = popen(cmd, "r");
    ASSERT(p != NULL);
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = 0;
    int st = pclose(p);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        test_fail(__FILE__, __LINE__, "tools/check_install.sh failed:\n%s", out);
    ASSERT_CONTAINS(out, "check_install: ok");
}
