/*
 * include/weft.h stands alone: a program that includes nothing else can
 * use every constant and type the calls take (POLLIN for weft_wait_fd,
 * struct iovec, ssize_t, socklen_t...), in strict ISO C and in C++, with
 * every warning an error.
 */
#define _GNU_SOURCE
#include "test.h"

#include <unistd.h>

static void compile(const char *compiler, const char *std, const char *ext)
{
    char have[64];
    snprintf(have, sizeof have, "command -v %s >/dev/null 2>&1", compiler);
    if (system(have) != 0)
        test_skip("%s is not installed", compiler);
    char src[] = "/tmp/weft-header-XXXXXX";
    int fd = mkstemp(src);
    ASSERT(fd >= 0);
    static const char prog[] =
        "#include <weft.h>\n"
        "static int use(int fd) {\n"
        "    struct iovec v = { 0, 0 };\n"
        "    ssize_t n = weft_readv(fd, &v, 1);\n"
        "    socklen_t len = 0;\n"
        "    (void)len;\n"
        "    weft_case c = { 0, WEFT_RECV, 0, 0 };\n"
        "    (void)c;\n"
        "    return (int)n + weft_wait_fd(fd, POLLIN | POLLOUT) + WEFT_SELECT_MAX;\n"
        "}\n"
        "int main(void) { return use(0) > 0; }\n";
    ASSERT_EQ(write(fd, prog, sizeof prog - 1), (ssize_t)(sizeof prog - 1));
    close(fd);
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "%s -x %s -std=%s -Wall -Wextra -Werror -pedantic -Iinclude -fsyntax-only %s 2>&1 "
             "&& echo compiled", compiler, ext, std, src);
    test_tool(cmd, "compiled");
    unlink(src);
}

TEST(header_stands_alone_c11) { compile("cc", "c11", "c"); }
TEST(header_stands_alone_c99) { compile("cc", "c99", "c"); }
TEST(header_stands_alone_cxx) { compile("c++", "c++11", "c++"); }
