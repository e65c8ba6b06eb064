/*
 * src/arch's fifth duty (see arch.h): walking a stack without resuming it.
 *
 * Three starting points, one output: an array of program counters, innermost
 * first. Every pc but a signal frame's first one is a return address, i.e.
 * one past the call instruction; weft__unwind_symbol looks up pc - 1 for
 * those so that a call at the very end of a function is not attributed to
 * the next one.
 *
 * The implementation (unwind_posix.c) rides on libunwind's local unwinder,
 * which reads the DWARF CFI of every object in the process. On a build
 * without an unwinder every call returns -ENOTSUP.
 */
#ifndef WEFT_UNWIND_H
#define WEFT_UNWIND_H

#include "arch.h"

#include <stddef.h>
#include <stdint.h>

/* A context suspended by weft__ctx_switch (its saved sp): first pc is the
 * return address into whoever called the switch. The caller guarantees the
 * context is not resumed during the walk. Returns the count, or -ENOTSUP
 * for a switch implementation whose frame layout we do not know. */
int weft__unwind_ctx(const weft__ctx *ctx, void **pcs, int max);

/* From a signal handler's third argument (a ucontext_t): the first pc is the
 * interrupted instruction itself (a fault, or where an async signal hit). */
int weft__unwind_signal(void *uctx, void **pcs, int max);

/* The same, for stacks that may be very deep (an overflow's recursion):
 * keep the innermost nhead pcs in head and the outermost ntail in tail,
 * (at most 64), walking at most limit frames. Returns the number of frames walked; the
 * tail then holds its last min(total - nhead, ntail) frames, oldest last. */
int weft__unwind_signal_ends(void *uctx, void **head, int nhead, void **tail, int ntail,
                             int limit);

/* The calling thread's own stack, leaving out this call and `skip` more. */
int weft__unwind_self(void **pcs, int max, int skip);

/* Name of the function containing pc (already adjusted by the caller),
 * and pc's offset in it. 0, or -ENOENT when no symbol covers pc. */
int weft__unwind_symbol(const void *pc, char *buf, size_t len, uintptr_t *off);

/* Symbols for signal handlers. weft__unwind_symbol goes through libunwind,
 * which allocates (it reads the ELF file behind the pc each time): in a
 * crash inside malloc that deadlocks. So while a runtime runs, the symbol
 * tables of every object loaded at its start are mapped read-only, once
 * (weft__unwind_prepare); weft__unwind_symbol_safe then only reads memory:
 * no lock, no allocation, no system call. Objects loaded later get their
 * name and offset, without a function name. Returns 0 with *obj set (and
 * buf filled, or empty when no symbol covers pc), -ENOENT if pc is in no
 * known object. */
void weft__unwind_prepare(void);
void weft__unwind_release(void);
int  weft__unwind_symbol_safe(const void *pc, char *buf, size_t len, uintptr_t *off,
                              const char **obj, uintptr_t *obj_off);

/* File name of the loaded object (executable or library) holding pc, or
 * NULL. Not for signal handlers: it takes the dynamic loader's lock. */
const char *weft__unwind_object(const void *pc);

#endif
