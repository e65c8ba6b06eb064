/*
 * The docs name files, functions, tests and make targets for the reader to
 * find: tools/check_docs.py checks that each one exists, and this test runs
 * it as part of `make check`, so a rename that leaves a chapter behind
 * fails here rather than in a reader's hands.
 */
#include "test.h"

TEST(docs_name_only_what_exists)
{
    /* The script takes the tree's root as its argument. */
    test_tool("python3 tools/check_docs.py . 2>&1", " 0 missing");
}
