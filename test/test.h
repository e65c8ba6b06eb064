/*
 * The test harness: one runner binary, each test in a child process with a
 * timeout, assertions that print both sides. See runner.c.
 *
 *   TEST(name) { ... }                       a test (registered at startup)
 *   TEST_TIMEOUT(name, seconds) { ... }      one with its own time limit
 *   test_skip(fmt, ...)                      end the test as skipped, saying why
 *   ASSERT(cond)  ASSERT_EQ(a, b)  ASSERT_NE(a, b)  ASSERT_LT/LE/GT/GE(a, b)
 *   ASSERT_STR_EQ(a, b)  ASSERT_CONTAINS(haystack, needle)
 *   test_run(fn, arg)      weft_run(NULL, fn, arg, &ret), asserting success
 *   test_child(fn, arg, &sig, out, outsz)    run fn in a grandchild (crash tests)
 *   test_tool(cmd, expect)   a tools/ script exits 0 and prints expect (POSIX)
 */
#ifndef WEFT_TEST_H
#define WEFT_TEST_H

#include "weft.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* RUNNING_ON_VALGRIND: tests whose premise valgrind's one-thread-at-a-time
 * scheduling or its own descriptors break skip themselves there. */
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

/* mingw's C99 printf (__USE_MINGW_ANSI_STDIO) checks as gnu_printf */
#ifdef __MINGW_PRINTF_FORMAT
#define TEST_PRINTF_ __MINGW_PRINTF_FORMAT
#else
#define TEST_PRINTF_ printf
#endif

/* The Windows CRT has no setenv; its _putenv_s always overwrites, which is
 * what the tests ask for. */
#ifdef _WIN32
#define setenv(name, value, overwrite) _putenv_s((name), (value))
#endif

typedef void (*test_fn)(void);
void test_register(const char *name, test_fn fn, int timeout_s, const char *file);
_Noreturn void test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(TEST_PRINTF_, 3, 4)));
/* The test cannot run here (no io_uring, under valgrind, a cross build...):
 * say why and end it as skipped, which the runner counts apart from passed.
 * Only from the test's own process (not a fiber's grandchild of test_child). */
#define TEST_SKIP_STATUS 77
_Noreturn void test_skip(const char *fmt, ...) __attribute__((format(TEST_PRINTF_, 1, 2)));
double test_time_scale(void);   /* WEFT_TEST_TIME_SCALE: slower environments */
int test_under_qemu(void);       /* WEFT_TEST_QEMU set (check-aarch64): the binary is emulated */
unsigned long long test_cpu_time_us(void);   /* user + system CPU time of this process */
/* A deadline for weft_deadline, ms from now. */
static inline int64_t ms_from_now(unsigned ms) { return (int64_t)(weft_now() + ms * 1000000ull); }

#define TEST_TIMEOUT(name, secs)                                                    \
    static void test_##name(void);                                                  \
    __attribute__((constructor)) static void test_reg_##name(void)                  \
    { test_register(#name, test_##name, (secs), __FILE__); }                         \
    static void test_##name(void)
#define TEST(name) TEST_TIMEOUT(name, 30)

#define ASSERT(c) do { if (!(c)) test_fail(__FILE__, __LINE__, "ASSERT(%s)", #c); } while (0)
#define ASSERT_CMP_(a, op, b) do {                                                   \
        long long a_ = (long long)(a), b_ = (long long)(b);                           \
        if (!(a_ op b_))                                                              \
            test_fail(__FILE__, __LINE__, "ASSERT(%s %s %s): %lld vs %lld",           \
                      #a, #op, #b, a_, b_);                                           \
    } while (0)
#define ASSERT_EQ(a, b) ASSERT_CMP_(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_CMP_(a, !=, b)
#define ASSERT_LT(a, b) ASSERT_CMP_(a, <, b)
#define ASSERT_LE(a, b) ASSERT_CMP_(a, <=, b)
#define ASSERT_GT(a, b) ASSERT_CMP_(a, >, b)
#define ASSERT_GE(a, b) ASSERT_CMP_(a, >=, b)
#define ASSERT_PTR_EQ(a, b) do { const void *a_ = (a), *b_ = (b);                     \
        if (a_ != b_) test_fail(__FILE__, __LINE__, "ASSERT(%s == %s): %p vs %p",     \
                                #a, #b, a_, b_); } while (0)
#define ASSERT_STR_EQ(a, b) do { const char *a_ = (a), *b_ = (b);                     \
        if (!a_ || !b_ || strcmp(a_, b_))                                             \
            test_fail(__FILE__, __LINE__, "ASSERT_STR_EQ(%s, %s): \"%s\" vs \"%s\"",  \
                      #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); } while (0)
#define ASSERT_CONTAINS(h, n) do { const char *h_ = (h), *n_ = (n);                   \
        if (!h_ || !strstr(h_, n_))                                                   \
            test_fail(__FILE__, __LINE__, "ASSERT_CONTAINS(%s, \"%s\"): got \"%s\"",  \
                      #h, n_, h_ ? h_ : "(null)"); } while (0)

/* weft_run(NULL, fn, arg) and assert it returned 0; the main fiber's result. */
void *test_run(void *(*fn)(void *), void *arg);
void *test_run_cfg(const weft_config *cfg, void *(*fn)(void *), void *arg);

/* Run fn(arg) in a separate process. Returns its exit status (>= 0) or
 * -signal if a signal killed it; its stderr and stdout go to out. */
int test_child(void (*fn)(void *), void *arg, char *out, size_t outsz);

/* In a process a test forks itself: die when the test's process does. */
void die_with_parent(void);

/* The built example build/examples/NAME into out, found from the test
 * binary's own path; fails the test if it is not there (POSIX only). */
void example_path(const char *name, char *out, size_t cap);
/* POSIX: run a checking script of tools/ through the shell, from the top
 * of the tree (where make check runs the tests); the test fails with the
 * script's output unless it exits 0 and prints expect. */
void test_tool(const char *cmd, const char *expect);

#endif
