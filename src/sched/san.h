/*
 * Telling the sanitizers and valgrind about stack switches.
 *
 * AddressSanitizer keeps shadow state per stack (and "fake stacks" for
 * detect_stack_use_after_return); ThreadSanitizer keeps a shadow call stack
 * and vector clock per thread of control. Neither can see a switch made by
 * our assembly, so around every switch we announce it:
 *
 *   ASan:  __sanitizer_start_switch_fiber(&save, new_bottom, new_size) just
 *          before, __sanitizer_finish_switch_fiber(save, &old_bottom,
 *          &old_size) just after, on the new stack. A NULL save slot on the
 *          last switch away from a dying fiber frees its fake stack.
 *   TSan:  one __tsan_create_fiber per fiber, __tsan_switch_to_fiber before
 *          each switch, __tsan_destroy_fiber when it is freed.
 *
 * Valgrind is told about each stack when it is carved (stack.c).
 * In a normal build all of this compiles to nothing.
 */
#ifndef WEFT_SAN_H
#define WEFT_SAN_H

#include <stddef.h>

#if defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define WEFT_ASAN 1
#  endif
#  if __has_feature(thread_sanitizer)
#    define WEFT_TSAN 1
#  endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#  define WEFT_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#  define WEFT_TSAN 1
#endif

#ifdef WEFT_ASAN
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old, size_t *size_old);
#define san_asan_start(save, bottom, size) __sanitizer_start_switch_fiber((save), (bottom), (size))
#define san_asan_finish(save, bottom, size) __sanitizer_finish_switch_fiber((save), (bottom), (size))
#else
#define san_asan_start(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#define san_asan_finish(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#endif

#ifdef WEFT_TSAN
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
void __tsan_set_fiber_name(void *fiber, const char *name);
#define san_tsan_current() __tsan_get_current_fiber()
#define san_tsan_create() __tsan_create_fiber(0)
#define san_tsan_destroy(f) __tsan_destroy_fiber(f)
#define san_tsan_switch(f) __tsan_switch_to_fiber((f), 0)
#else
#define san_tsan_current() ((void *)0)
#define san_tsan_create() ((void *)0)
#define san_tsan_destroy(f) ((void)(f))
#define san_tsan_switch(f) ((void)(f))
#endif

#endif
