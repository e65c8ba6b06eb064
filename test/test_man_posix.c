/*
 * The manual pages (man/man3, man/man7) are the reference a C programmer
 * reads first: tools/check_man.sh checks that every public function has a
 * page, that every page renders without a groff warning, and that the
 * pages name only pages and files that exist. This test runs it as part of
 * `make check`, so a call added to include/weft.h without a page fails
 * here. The script also checks build/libweft.so's exports when that has
 * been built.
 */
#include "test.h"

TEST(man_pages_cover_the_api)
{
    test_tool("bash tools/check_man.sh . 2>&1", " 0 problems");
}
