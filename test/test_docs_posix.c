/*
 * The docs name files, functions, tests and make targets for the reader to
 * find: tools/check_docs.py checks that each one exists, and this test runs
 * it as part of `make check`, so a rename that leaves a chapter behind
 * fails here rather than in a reader's hands.
 */
#define _GNU_SOURCE
#include "test.h"

#include <sys/wait.h>
#include <unistd.h>

TEST(docs_name_only_what_exists)
{
    /* The tests run from the top of the tree (make check); the script takes
     * the tree's root as its argument. */
    ASSERT_EQ(access("tools/check_docs.py", R_OK), 0);
    char out[8192] = "";
    FILE *p = popen("python3 tools/check_docs.py . 2>&1", "r");
    ASSERT(p != NULL);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int st = pclose(p);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        test_fail(__FILE__, __LINE__, "tools/check_docs.py found names that do not exist:\n%s", out);
    ASSERT_CONTAINS(out, " 0 missing");
}
