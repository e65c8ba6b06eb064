/*
 * The manual pages (man/man3, man/man7) are the reference a C programmer
 * reads first: tools/check_man.sh checks that every public function has a
 * page, that every page renders without a groff warning, and that the
 * pages name only pages and files that exist. This test runs it as part of
 * `make check`, so a call added to include/weft.h without a page fails
 * here.
 */
#define _GNU_SOURCE
#include "test.h"

#include <sys/wait.h>
#include <unistd.h>

TEST(man_pages_cover_the_api)
{
    /* The tests run from the top of the tree (make check); the script takes
     * the tree's root, and checks build/libweft.so's exports too when that
     * has been built. */
    ASSERT_EQ(access("tools/check_man.sh", R_OK), 0);
    char out[16384] = "";
    FILE *p = popen("bash tools/check_man.sh . 2>&1", "r");
    ASSERT(p != NULL);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int st = pclose(p);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        test_fail(__FILE__, __LINE__, "tools/check_man.sh found problems:\n%s", out);
    ASSERT_CONTAINS(out, " 0 problems");
}
