# weft — one Makefile for the library, the tests, the examples and the benchmarks.
#
#   make                 build/libweft.a, build/libweft.so, examples, benchmarks
#   make check           the test suite (last line: "N passed, N failed")
#   make demo            something worth seeing
#   make bench           each benchmark beside its peer, with the ratio
#   make check-model     the scheduler's protocols, model-checked with Spin
#   make check-all       the whole matrix (what CI runs)
#   make deps            install missing Debian packages
#   make install         PREFIX=/usr/local DESTDIR= (library, header, weft.pc, man pages)
#
# Knobs: BUILD (output dir), CTX=asm|fcontext (context switch), SAN=asan|tsan|ubsan,
# CROSS=aarch64-linux-gnu- | x86_64-w64-mingw32- (cross build), CC.

BUILD   ?= build
comma   := ,
CROSS   ?=
CTX     ?= asm
SAN     ?=
PREFIX  ?= /usr/local
DESTDIR ?=

ifeq ($(origin CC),default)
CC := $(CROSS)gcc
endif
AR := $(CROSS)ar

TARGET := $(shell $(CC) -dumpmachine 2>/dev/null)
ifneq ($(findstring mingw,$(TARGET)),)
  OS := windows
else
  OS := linux
endif
ifneq ($(findstring x86_64,$(TARGET)),)
  CPU := x86_64
else ifneq ($(findstring aarch64,$(TARGET)),)
  CPU := aarch64
else
  CPU := other
endif

VERSION_MAJOR := $(shell sed -n 's/^\#define WEFT_VERSION_MAJOR \([0-9]*\)/\1/p' include/weft.h)
VERSION       := $(shell sed -n 's/^\#define WEFT_VERSION_STRING "\(.*\)"/\1/p' include/weft.h)

CFLAGS_BASE := -std=gnu11 -g -Wall -Wextra -Wno-unused-parameter -Iinclude -Isrc
OPT         ?= -O2
CFLAGS      ?=
LIB_CFLAGS  := -DWEFT_BUILDING -fvisibility=hidden
LDLIBS      :=

ifeq ($(SAN),asan)
  SANFLAGS := -fsanitize=address -fno-omit-frame-pointer
else ifeq ($(SAN),tsan)
  SANFLAGS := -fsanitize=thread
else ifeq ($(SAN),ubsan)
  SANFLAGS := -fsanitize=undefined -fno-sanitize-recover=undefined -DWEFT_SAN_UBSAN
endif

# ------------------------------------------------------------- sources
ifeq ($(OS),windows)
  PLAT_SRC := src/sched/platform_win32.c src/arch/stack_win32.c $(wildcard src/sched/*_win32.c src/io/*_win32.c src/io/iocp.c src/arch/unwind_win32.c)
  LDLIBS   += -lws2_32 -lmswsock -lsynchronization
  # C99 printf (%zu, %lld) instead of msvcrt's; and the tests' pthreads
  # (threads that poke the runtime from outside) from a static winpthreads.
  CFLAGS_BASE += -D__USE_MINGW_ANSI_STDIO=1
  TEST_LDLIBS := -static -lpthread
  EXE      := .exe
  DLL      := weft.dll
else
  PLAT_SRC := src/sched/platform_posix.c src/arch/stack.c $(wildcard src/sched/*_posix.c src/io/*_posix.c src/io/epoll.c src/io/uring.c src/arch/*_posix.c)
  # libunwind walks suspended fibers (src/arch/unwind_posix.c)
  LDLIBS   += -pthread -lunwind
  # tests name functions through dladdr as well as the symbol table
  TEST_LDFLAGS := -rdynamic
  # test/fault_posix.c: the library's calls to these reach the test's
  # __wrap_* first, which fail them on demand (test/fault.h). GNU ld only,
  # on the test binary only: the library is linked as it ships.
  FAULT_WRAP := mmap madvise pthread_create epoll_ctl eventfd accept accept4 \
                io_uring_queue_init_params io_uring_submit io_uring_wait_cqe_timeout io_uring_get_events
  TEST_LDFLAGS += $(addprefix -Wl$(comma)--wrap=,$(FAULT_WRAP))
  EXE      :=
  DLL      := libweft.so
  LIB_CFLAGS += -fPIC
endif

# Context switch: our assembly where we have it, Boost.Context otherwise.
ifeq ($(CTX),fcontext)
  SWITCH_SRC := src/arch/switch_fcontext.c
else ifeq ($(OS)-$(CPU),linux-x86_64)
  SWITCH_SRC := src/arch/switch_x86_64_sysv_elf_gas.S src/arch/switch_x86_64_sysv.c
else ifeq ($(OS)-$(CPU),linux-aarch64)
  SWITCH_SRC := src/arch/switch_arm64_aapcs_elf_gas.S src/arch/switch_arm64_aapcs.c
else ifeq ($(OS)-$(CPU),windows-x86_64)
  SWITCH_SRC := src/arch/switch_x86_64_ms_pe_gas.S src/arch/switch_x86_64_ms.c
else
  SWITCH_SRC := src/arch/switch_fcontext.c
endif
# Boost.Context: Debian ships the unversioned libboost_context.so only with the
# -dev package of the build architecture; a multiarch runtime package (arm64)
# has just the versioned file, which the linker takes by its full name.
BOOST_CONTEXT_SO := $(firstword $(wildcard /usr/lib/$(TARGET)/libboost_context.so.*))
ifeq ($(CROSS),)
  BOOST_CONTEXT := -lboost_context
else ifneq ($(BOOST_CONTEXT_SO),)
  BOOST_CONTEXT := -l:$(notdir $(BOOST_CONTEXT_SO))
else
  BOOST_CONTEXT := -lboost_context
endif
ifneq ($(filter src/arch/switch_fcontext.c,$(SWITCH_SRC)),)
  LDLIBS += $(BOOST_CONTEXT)
endif

ifeq ($(OS),linux)
  # io_uring through liburing when its header is there (make deps installs it)
  ifneq ($(wildcard src/io/uring.c),)
    LDLIBS += -luring
  endif
endif

COMMON_SRC := src/runtime.c $(filter-out %_posix.c %_win32.c,$(wildcard src/sched/*.c)) \
              $(filter-out src/io/epoll.c src/io/uring.c src/io/iocp.c %_posix.c %_win32.c,$(wildcard src/io/*.c)) \
              $(filter-out src/arch/stack.c src/arch/stack_win32.c src/arch/switch_% %_posix.c %_win32.c,$(wildcard src/arch/*.c))
LIB_SRC := $(sort $(COMMON_SRC) $(PLAT_SRC)) $(SWITCH_SRC)
LIB_OBJ := $(patsubst %,$(BUILD)/obj/%.o,$(LIB_SRC))
PIC_OBJ := $(patsubst %,$(BUILD)/pic/%.o,$(LIB_SRC))

TEST_SRC := $(wildcard test/*.c)
ifeq ($(OS),windows)
  TEST_SRC := $(filter-out $(wildcard test/*_posix.c),$(TEST_SRC))
else
  TEST_SRC := $(filter-out $(wildcard test/*_win32.c),$(TEST_SRC))
endif
TEST_OBJ := $(patsubst %,$(BUILD)/obj/%.o,$(TEST_SRC))
TEST_BIN := $(BUILD)/test/weft-test$(EXE)

EXAMPLES := $(patsubst examples/%.c,$(BUILD)/examples/%$(EXE),$(wildcard examples/*.c))
BENCHES  := $(patsubst bench/%.c,$(BUILD)/bench/%$(EXE),$(filter-out bench/peer_%.c,$(wildcard bench/*.c)))
ifeq ($(OS),windows)
  BENCHES :=   # the benchmarks and their peers (Go, epoll, threads) are measured on Linux
  # the other examples use POSIX signals, signalfd and rlimits
  EXAMPLES := $(filter %/fibers$(EXE) %/echo_server$(EXE),$(EXAMPLES))
endif

ALL_CFLAGS := $(CFLAGS_BASE) $(OPT) $(SANFLAGS) $(CFLAGS)

.PHONY: all lib soak check check-fcontext check-aarch64 check-windows check-asan check-tsan \
        check-ubsan check-valgrind check-model check-all bench demo deps install uninstall clean tests
.SUFFIXES:

all: lib $(EXAMPLES) $(BENCHES) $(TEST_BIN)
lib: $(BUILD)/libweft.a $(if $(filter windows,$(OS)),$(BUILD)/$(DLL),$(BUILD)/$(DLL))
tests: $(TEST_BIN)

$(BUILD)/obj/%.c.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LIB_CFLAGS) -MMD -MP -c $< -o $@
$(BUILD)/obj/%.S.o: %.S
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LIB_CFLAGS) -MMD -MP -c $< -o $@
$(BUILD)/pic/%.c.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LIB_CFLAGS) -fPIC -MMD -MP -c $< -o $@
$(BUILD)/pic/%.S.o: %.S
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LIB_CFLAGS) -fPIC -MMD -MP -c $< -o $@

# Tests, examples and benchmarks are not part of the library: default visibility.
$(BUILD)/obj/test/%.c.o: test/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libweft.a: $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

ifeq ($(OS),windows)
$(BUILD)/$(DLL): $(PIC_OBJ)
	$(CC) -shared -static-libgcc $(SANFLAGS) -o $@ $^ -Wl,--out-implib,$(BUILD)/libweft.dll.a $(LDLIBS)
else
$(BUILD)/$(DLL): $(PIC_OBJ)
	$(CC) -shared $(SANFLAGS) -Wl,-soname,libweft.so.$(VERSION_MAJOR) -o $@.$(VERSION) $^ $(LDLIBS)
	ln -sf libweft.so.$(VERSION) $@.$(VERSION_MAJOR)
	ln -sf libweft.so.$(VERSION) $@
endif

$(TEST_BIN): $(TEST_OBJ) $(BUILD)/libweft.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(TEST_LDFLAGS) -o $@ $(TEST_OBJ) $(BUILD)/libweft.a $(LDLIBS) $(TEST_LDLIBS)

$(BUILD)/examples/%$(EXE): examples/%.c $(BUILD)/libweft.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libweft.a $(LDLIBS)

$(BUILD)/bench/%$(EXE): bench/%.c $(BUILD)/libweft.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libweft.a $(LDLIBS) $(BENCH_LDLIBS)

# bench_switch measures our switch against Boost's in the same binary.
$(BUILD)/bench/bench_switch$(EXE): BENCH_LDLIBS = $(BOOST_CONTEXT)

-include $(LIB_OBJ:.o=.d) $(PIC_OBJ:.o=.d) $(TEST_OBJ:.o=.d)

# ---------------------------------------------------------------- checks
# TEST_ARGS: names (substrings) to run; TEST_RUN: a wrapper (qemu, valgrind, wine).
TEST_RUN  ?=
TEST_ARGS ?=

# The examples too: test_examples_posix.c runs them.
check: deps-check $(TEST_BIN) $(EXAMPLES)
	$(TEST_RUN) $(TEST_BIN) $(TEST_ARGS)

check-fcontext:
	$(MAKE) CTX=fcontext BUILD=build/fcontext check

check-asan: deps-clang
	$(MAKE) CC=clang SAN=asan BUILD=build/asan check
# TSan maps a trace of its own per fiber (256 KiB each): a million of them do not
# fit ("ThreadSanitizer failed to allocate ... TracePart"), so the heavy test skips.
# Its mappings do not merge either: the 100,000-fiber stress test peaked at 63,857
# of the default vm.max_map_count of 65,530, and one run died allocating a shadow
# stack (ENOMEM). Under TSan the stress test runs 50,000 fibers, and the slower
# clock (spawning 100,000 took over a minute there) gets twice the time limits.
check-tsan: deps-clang
	$(MAKE) CC=clang SAN=tsan BUILD=build/tsan TEST_RUN="env WEFT_TEST_HEAVY=0 WEFT_STRESS_SECONDS=3 WEFT_STRESS_FIBERS=50000 WEFT_TEST_TIME_SCALE=2" check
check-ubsan: deps-clang
	$(MAKE) CC=clang SAN=ubsan BUILD=build/ubsan check

# valgrind: no sanitizer, -O1 keeps it fast enough; the runner scales timeouts.
check-valgrind: deps-valgrind
	$(MAKE) BUILD=build/valgrind OPT=-O1 tests $(patsubst $(BUILD)/%,build/valgrind/%,$(EXAMPLES))
	WEFT_TEST_TIME_SCALE=20 WEFT_TEST_HEAVY=0 WEFT_STRESS_SECONDS=1 WEFT_STRESS_FIBERS=5000 valgrind -q --error-exitcode=99 --leak-check=full \
	    --errors-for-leak-kinds=definite --suppressions=test/valgrind.supp \
	    build/valgrind/test/weft-test $(TEST_ARGS)

# qemu-user runs the arm64 binary with the multiarch libraries of this system
# (-L /: /lib/ld-linux-aarch64.so.1 and /usr/lib/aarch64-linux-gnu, where
# libboost-context and libunwind for arm64 live). The cross toolchain's own
# sysroot (/usr/aarch64-linux-gnu) lacks those, and under qemu 7.2 a fork()
# there hangs the child. Heavy tests (a million fibers) are skipped: emulated,
# they take minutes.
check-aarch64: deps-aarch64
	$(MAKE) CROSS=aarch64-linux-gnu- BUILD=build/aarch64 TEST_RUN="env WEFT_TEST_QEMU=1 WEFT_TEST_TIME_SCALE=10 WEFT_TEST_HEAVY=0 WEFT_STRESS_SECONDS=2 WEFT_STRESS_FIBERS=20000 qemu-aarch64 -L /" check

check-windows: deps-windows
	@if [ -f src/sched/platform_win32.c ]; then \
	  $(MAKE) CROSS=x86_64-w64-mingw32- BUILD=build/windows all && \
	  WINEPREFIX=$(CURDIR)/build/wineprefix WINEDEBUG=-all WEFT_TEST_TIME_SCALE=10 wine build/windows/test/weft-test.exe $(TEST_ARGS); \
	else echo "check-windows: the Windows port is not in this tree yet"; exit 1; fi

# The wake-up, wait-claim and mutex protocols as Promela models, each run
# as written (no error allowed) and with a fence or a step deleted (Spin
# must find the bug): docs/model-checking.md. About a minute of CPU.
check-model: deps-model
	@bash model/check.sh $(BUILD)

CHECK_ALL := check check-model check-fcontext check-asan check-ubsan check-tsan check-valgrind check-aarch64 \
             $(if $(wildcard src/sched/platform_win32.c),check-windows)
check-all:
	@set -e; for t in $(CHECK_ALL); do echo "=== make $$t"; $(MAKE) --no-print-directory $$t; done

bench: deps-bench all
	bash bench/run.sh $(BUILD)

# Stress, not the unit suite: 10,000 connections for SOAK_SECONDS (default 60),
# zero errors, RSS printed every second (bench/io_soak.c); then the random-
# operation stress (test_chan.c) and the I/O cancel stress (test_io_stress_posix.c),
# which `make check` runs for a few seconds each, for SOAK_SECONDS each.
SOAK_SECONDS ?= 60
soak: $(BUILD)/bench/io_soak$(EXE) $(TEST_BIN)
	SOAK_SECONDS=$(SOAK_SECONDS) $(BUILD)/bench/io_soak
	WEFT_STRESS_SECONDS=$(SOAK_SECONDS) WEFT_IO_STRESS_SECONDS=$(SOAK_SECONDS) WEFT_TEST_TIME_SCALE=$$(( $(SOAK_SECONDS) / 10 + 1 )) \
	    $(TEST_BIN) -j 1 stress_100k io_cancel_stress

# The network demo (tools/demo.sh) when the I/O examples exist; the fiber demo before.
demo: deps-demo all
	@if [ -f tools/demo.sh ]; then bash tools/demo.sh $(BUILD); else $(BUILD)/examples/fibers; fi

# ------------------------------------------------------------------ deps
# Debian packages, per target: each target installs only what it needs, when
# it is missing (tools/deps.sh: as root it runs apt-get; otherwise it names the
# apt-get command on one line and lets the target run with what is there).
# `make deps` installs every set at once (CI). groff-base: the man-page
# check (tools/check_man.sh) renders every page.
DEPS_BUILD    := gcc make libc6-dev libunwind-dev liburing-dev libboost-context-dev
DEPS_CHECK    := $(DEPS_BUILD) gdb python3 cmake pkgconf groff-base
DEPS_DEMO     := $(DEPS_BUILD) python3
DEPS_BENCH    := $(DEPS_BUILD) golang-go wrk curl python3
DEPS_CLANG    := $(DEPS_CHECK) clang libclang-rt-14-dev
DEPS_VALGRIND := $(DEPS_CHECK) valgrind
DEPS_AARCH64  := $(DEPS_CHECK) gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user \
                 libunwind-dev:arm64 liburing-dev:arm64 libboost-context1.74.0:arm64
DEPS_WINDOWS  := $(DEPS_BUILD) mingw-w64 wine64
DEPS_MODEL    := spin gcc
DEPS_ALL      := $(sort $(DEPS_CHECK) $(DEPS_DEMO) $(DEPS_BENCH) $(DEPS_CLANG) $(DEPS_VALGRIND) \
                        $(DEPS_AARCH64) $(DEPS_WINDOWS) $(DEPS_MODEL))

deps:
	@bash tools/deps.sh $(DEPS_ALL)
# deps-check installs $(DEPS_CHECK), deps-aarch64 $(DEPS_AARCH64), ...
deps-%:
	@bash tools/deps.sh --quiet $(DEPS_$(shell echo $* | tr a-z A-Z))

# --------------------------------------------------------------- install
# The dynamic linker must find what install put: ldconfig refreshes its cache
# when installing for this machine as root (DESTDIR empty); a prefix outside
# its search path is named, with what to do about it.
INSTALL_FILES := include/weft.h lib/libweft.a lib/libweft.so.$(VERSION) lib/libweft.so.$(VERSION_MAJOR) \
                 lib/libweft.so lib/pkgconfig/weft.pc lib/cmake/weft/weft-config.cmake \
                 lib/cmake/weft/weft-config-version.cmake \
                 $(patsubst man/%,share/man/%,$(wildcard man/man3/*.3 man/man7/*.7))
SUBST := sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' \
             -e 's|@VERSION_MAJOR@|$(VERSION_MAJOR)|' -e 's|@LIBS@|$(LDLIBS)|'
install: lib
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/lib/cmake/weft
	install -m 644 include/weft.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(BUILD)/libweft.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/libweft.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libweft.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libweft.so.$(VERSION_MAJOR)
	ln -sf libweft.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libweft.so
	$(SUBST) weft.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/weft.pc
	$(SUBST) -e 's|@LIBS_CMAKE@|$(subst $(eval) ,;,$(strip $(LDLIBS)))|' cmake/weft-config.cmake.in \
	    > $(DESTDIR)$(PREFIX)/lib/cmake/weft/weft-config.cmake
	$(SUBST) cmake/weft-config-version.cmake.in > $(DESTDIR)$(PREFIX)/lib/cmake/weft/weft-config-version.cmake
	install -d $(DESTDIR)$(PREFIX)/share/man/man3 $(DESTDIR)$(PREFIX)/share/man/man7
	install -m 644 man/man3/*.3 $(DESTDIR)$(PREFIX)/share/man/man3/
	install -m 644 man/man7/*.7 $(DESTDIR)$(PREFIX)/share/man/man7/
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then \
	    ldconfig; \
	    ldconfig -p | grep -q "$(PREFIX)/lib/libweft.so.$(VERSION_MAJOR)" || \
	    echo "install: $(PREFIX)/lib is not where the dynamic linker looks: add it to /etc/ld.so.conf.d/ and run ldconfig, or link with -Wl,-rpath,$(PREFIX)/lib"; \
	fi

uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/,$(INSTALL_FILES))
	-rmdir $(DESTDIR)$(PREFIX)/lib/cmake/weft 2>/dev/null
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then ldconfig; fi

clean:
	rm -rf build
