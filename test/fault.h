/*
 * Faults injected on purpose (Linux, test binary only).
 *
 * The test binary links build/libweft.a statically, and the Makefile passes
 * GNU ld `--wrap=SYMBOL` for each call below on the test binary's link line
 * only: the library's references to SYMBOL reach __wrap_SYMBOL in
 * fault_posix.c, which either fails the call as armed or passes it to libc
 * through __real_SYMBOL. The library itself is built and behaves exactly as
 * it ships. io_uring_enter is a raw system call inside liburing (a shared
 * library, out of --wrap's reach), so the liburing entry points weft calls
 * stand in for it: io_uring_queue_init_params, io_uring_submit,
 * io_uring_wait_cqe_timeout and io_uring_get_events (src/io/uring.c).
 *
 *   fault_arm("mmap", ENOMEM, 1, 1)    the next mmap fails with ENOMEM
 *   fault_arm("epoll_ctl", EMFILE, 3, 2)  the 3rd and 4th calls from now fail
 *   fault_arm("eventfd", EMFILE, 1, FAULT_ALWAYS)   every call fails
 *   fault_disarm_all()                 back to normal (tests start that way)
 *   fault_hits("mmap")                 calls failed on purpose so far
 *
 * Disarmed, a wrapper costs one relaxed atomic load. Wrappers use atomics
 * only: they are thread-safe and async-signal-safe, like the calls they wrap.
 * The liburing wrappers report a failure as liburing does, -err.
 */
#ifndef WEFT_TEST_FAULT_H
#define WEFT_TEST_FAULT_H

#define FAULT_ALWAYS 0xffffffffu

/* Fail `count` calls of `name` with errno `err`, starting with the nth call
 * (1: the next one) from now. 0, or -EINVAL for a name not wrapped. */
int fault_arm(const char *name, int err, unsigned nth, unsigned count);
void fault_disarm(const char *name);
void fault_disarm_all(void);
unsigned fault_hits(const char *name);

#endif
