#!/usr/bin/env python3
"""Every name the docs give a reader must exist in the tree.

  tools/check_docs.py [ROOT]

Reads README.md and docs/*.md and checks what they put in `backticks`:

  - a path (src/..., test/..., docs/..., tools/..., bench/..., examples/...,
    include/..., .ci/...): the file or folder exists;
  - a bare file name (sync.c, runq.h, weft.py ...): some file of the tree
    has that name;
  - a C identifier with an underscore, or any name written as a call
    (find_runnable, weft__ready, weft_spawn(), WEFT_PINNED): it occurs as a
    word in the sources (include/, src/, test/, tools/, bench/, examples/,
    the Makefile), or a test of that name is registered (a test of an I/O
    test pair is named with its _epoll / _uring suffix);
  - `make TARGET`: the Makefile has the target;
  - `FILE:NAME` (src/io/epoll.c:epoll_io, sched.c:find_runnable): the file
    exists (a path, or a bare name some file has) and NAME occurs in it.

A name that is not ours (a libc or kernel name, another library's) is
listed in FOREIGN below, once, with where it comes from. Prints each name
that is missing with the file and line that mentions it, and exits 1 if
there is one. Run by `make check` (test/test_docs_posix.c).
"""
import os
import re
import sys

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))

# Names the docs use that are not weft's own, by where they come from.
FOREIGN = {
    # Linux, glibc, POSIX
    "max_map_count", "vm.max_map_count", "nr_open", "MADV_GUARD_INSTALL", "MAP_STACK", "MAP_NORESERVE",
    "PROT_NONE", "MAP_GROWSDOWN", "SA_ONSTACK", "SA_RESTART", "SA_SIGINFO", "SIGSEGV", "SIGQUIT", "SIGURG",
    "SIGPIPE", "SIGBUS", "SIGALRM", "SIGTERM", "SIGINT", "MSG_NOSIGNAL", "MSG_DONTWAIT", "MSG_OOB",
    "MSG_PEEK", "SO_RCVTIMEO", "SO_SNDTIMEO", "SO_REUSEPORT", "SO_ERROR", "SOCK_STREAM", "SOCK_NONBLOCK",
    "SOCK_CLOEXEC", "O_NONBLOCK", "O_CLOEXEC", "EPOLLET", "EPOLLIN", "EPOLLOUT", "EPOLLRDHUP", "EPOLLPRI",
    "EPOLLHUP", "EPOLLERR", "EPOLL_CTL_ADD", "EPOLL_CTL_DEL", "EPOLL_CTL_MOD", "EPOLLEXCLUSIVE",
    "POLLIN", "POLLOUT", "POLLPRI", "POLLRDHUP", "POLLHUP", "POLLERR", "POLLNVAL", "FUTEX_WAIT",
    "FUTEX_WAKE", "FUTEX_PRIVATE_FLAG", "MEMBARRIER_CMD_PRIVATE_EXPEDITED",
    "MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED", "RLIMIT_NOFILE", "RLIMIT_AS", "RLIMIT_NPROC",
    "PR_SET_NAME", "CLOCK_MONOTONIC", "MADV_DONTNEED", "MADV_FREE", "MADV_GUARD_REMOVE", "ss_sp",
    "uc_mcontext", "si_addr", "pthread_create", "pthread_join", "pthread_self", "pthread_sigmask",
    "pthread_attr_setstacksize", "pthread_key_create", "pthread_getspecific", "pthread_setspecific",
    "pthread_mutex_lock", "pthread_cond_wait", "pthread_atfork", "sigaltstack", "sigaction",
    "sigtimedwait", "epoll_wait", "epoll_pwait", "epoll_pwait2", "epoll_ctl", "epoll_create1",
    "io_uring_enter", "io_uring_setup", "io_uring_register", "eventfd", "signalfd", "accept4",
    "getaddrinfo", "getnameinfo", "gethostbyname", "__errno_location", "__thread", "thread_local",
    "errno", "clock_gettime", "sched_yield", "rep_stosq", "rep stosq", "memset", "getcontext",
    "swapcontext", "makecontext", "setjmp", "longjmp", "__builtin_return_address",
    "__builtin_frame_address", "__libc_start_main", "LD_PRELOAD", "fork", "exec", "execve",
    "vfork", "getrlimit", "setrlimit", "prctl", "tgkill", "sched_getaffinity", "sysconf",
    "_SC_NPROCESSORS_ONLN", "SCM_RIGHTS", "SIOCATMARK", "IORING_OP_POLL_ADD", "IORING_OP_READ",
    "IORING_OP_WRITE", "IORING_OP_RECV", "IORING_OP_SEND", "IORING_OP_RECVMSG", "IORING_OP_SENDMSG",
    "IORING_OP_ACCEPT", "IORING_OP_ASYNC_CANCEL", "IORING_OP_READV", "IORING_OP_WRITEV",
    "IORING_OP_TIMEOUT", "IORING_OP_LINK_TIMEOUT", "IORING_OP_MSG_RING", "IORING_OP_NOP",
    "IORING_SETUP_SINGLE_ISSUER", "IORING_SETUP_DEFER_TASKRUN", "IORING_SETUP_COOP_TASKRUN",
    "IORING_SETUP_SQPOLL", "IORING_ENTER_GETEVENTS", "IORING_FEAT_NODROP", "IORING_RECVSEND_POLL_FIRST",
    "IOSQE_ASYNC", "IOSQE_IO_LINK", "ASYNC_CANCEL", "pan.c", "clock_nanosleep", "uv_read_start", "user_data", "io_uring_get_sqe", "io_uring_submit",
    "io_uring_wait_cqe", "io_uring_wait_cqe_timeout", "io_uring_peek_cqe", "io_uring_cqe_seen",
    "io_uring_queue_init", "io_uring_queue_init_params", "io_uring_prep_poll_add",
    "io_uring_prep_cancel", "io_uring_submit_and_wait", "io_uring_submit_and_wait_timeout",
    "kernel.io_uring_disabled", "io_uring_disabled", "SIGSTKSZ", "MINSIGSTKSZ", "AT_MINSIGSTKSZ",
    "_SC_PAGESIZE", "MAP_FIXED", "MAP_PRIVATE", "MAP_ANONYMOUS",
    # Windows
    "STATUS_STACK_OVERFLOW", "STATUS_GUARD_PAGE_VIOLATION", "EXCEPTION_STACK_OVERFLOW",
    "PAGE_GUARD", "SetThreadStackGuarantee", "GetQueuedCompletionStatusEx", "GetQueuedCompletionStatus",
    "PostQueuedCompletionStatus", "CreateIoCompletionPort", "CancelIoEx", "AcceptEx", "ConnectEx",
    "WSARecv", "WSASend", "WSARecvFrom", "WSASendTo", "WSAPoll", "WSABUF", "WSAEWOULDBLOCK",
    "SetFileCompletionNotificationModes", "FILE_SKIP_COMPLETION_PORT_ON_SUCCESS",
    "FILE_SKIP_SET_EVENT_ON_HANDLE", "SO_UPDATE_ACCEPT_CONTEXT", "SO_UPDATE_CONNECT_CONTEXT",
    "WaitOnAddress", "WakeByAddressSingle", "WakeByAddressAll", "VirtualAlloc", "VirtualProtect",
    "VirtualFree", "MEM_RESERVE", "MEM_COMMIT", "MEM_RELEASE", "AddVectoredExceptionHandler",
    "SetUnhandledExceptionFilter", "RtlVirtualUnwind", "RtlLookupFunctionEntry",
    "RtlCaptureContext", "StackBase", "StackLimit", "DeallocationStack", "NtCurrentTeb",
    "GuaranteedStackBytes", "CreateProcess", "SymFromAddr", "SymInitialize", "__chkstk",
    "ws2_32", "_putenv_s", "winpthreads", "mswsock", "NT_TIB", "LLP64", "SOCKET", "INVALID_SOCKET",
    "OVERLAPPED", "ERROR_OPERATION_ABORTED", "ERROR_NETNAME_DELETED",
    # Boost.Context, libunwind, sanitizers, valgrind, gdb, Go
    "jump_fcontext", "make_fcontext", "ontop_fcontext", "fcontext_t", "transfer_t", "unw_get_proc_name",
    "unw_init_local", "unw_init_local2", "unw_step", "unw_get_reg", "unw_set_reg", "unw_getcontext",
    "unw_context_t", "unw_cursor_t", "UNW_INIT_SIGNAL_FRAME", "UNW_REG_IP", "UNW_REG_SP",
    "_Unwind_Backtrace", "__sanitizer_start_switch_fiber", "__sanitizer_finish_switch_fiber",
    "__tsan_switch_to_fiber", "__tsan_create_fiber", "__tsan_destroy_fiber", "__tsan_get_current_fiber",
    "VALGRIND_STACK_REGISTER", "VALGRIND_STACK_DEREGISTER", "RUNNING_ON_VALGRIND",
    "ASAN_OPTIONS", "TSAN_OPTIONS", "UBSAN_OPTIONS", "detect_stack_use_after_return",
    "runqput", "runqget", "runqsteal", "runqgrab", "runnext", "findrunnable", "findRunnable",
    "netpoll", "netpoll_epoll.go", "netpoll_windows.go", "netpollBreak", "proc.go", "runtime2.go",
    "chan.go", "chan_test.go", "select.go", "sema.go", "lock_futex.go", "mgc.go", "GOMAXPROCS", "LockOSThread",
    "sync.Mutex", "starvationThresholdNs", "mutexStarving", "mutexWoken", "mutexLocked",
    "sysmon", "spinning", "nmspinning", "wakep", "schedule", "gopark", "goready",
    "uv_close", "uv__io_poll", "uv_run", "SO_REUSEADDR", "TCP_NODELAY", "IPPROTO_TCP",
    "IPPROTO_MPTCP", "IPPROTO_SCTP", "SOCK_SEQPACKET", "SOCK_DGRAM", "AF_UNIX", "AF_INET", "AF_INET6",
    "SHUT_WR", "SHUT_RD", "SHUT_RDWR", "SOL_SOCKET", "SO_TYPE", "SO_PROTOCOL", "SO_OOBINLINE",
    "SO_LINGER", "SO_PASSCRED", "SCM_CREDENTIALS", "F_GETFL", "F_SETFL", "F_GETFD", "F_DUPFD",
    "F_DUPFD_CLOEXEC", "S_ISREG", "S_ISSOCK", "st_ino", "st_dev", "EAI_AGAIN", "EAI_NONAME",
    "EAI_SYSTEM", "EAI_MEMORY", "EAI_FAIL", "EAI_SERVICE", "EAI_FAMILY", "EAI_SOCKTYPE",
    "EAI_BADFLAGS", "EAI_OVERFLOW", "EAI_NODATA", "EAI_ADDRFAMILY",
}

SOURCE_DIRS = ["include", "src", "test", "tools", "bench", "examples", ".ci", "model"]
SOURCE_EXT = (".c", ".h", ".S", ".py", ".sh", ".go", ".pml", ".supp", ".in")

PATH_RE = re.compile(r"^(?:src|test|tools|bench|examples|include|docs|\.ci|model)/[\w./+-]*$")
FILE_RE = re.compile(r"^[\w+-]+\.(?:c|h|S|py|sh|go|md|pml|svg|supp)$")
CALL_RE = re.compile(r"^([A-Za-z_]\w*)\(\)$")
IDENT_RE = re.compile(r"^([A-Za-z_]\w*_\w*)$")
MAKE_RE = re.compile(r"^make ((?:[\w-]+ ?)+)$")
WHERE_RE = re.compile(r"^((?:[\w.+-]+/)*[\w+-]+\.(?:c|h|S|py|sh)):([A-Za-z_]\w*)$")


def tree_files():
    out = []
    for d, dirs, files in os.walk(ROOT):
        rel = os.path.relpath(d, ROOT)
        dirs[:] = [x for x in dirs if not (rel == "." and x in ("build", ".git"))]
        for f in files:
            out.append(os.path.normpath(os.path.join(rel, f)))
    return out


def main():
    files = tree_files()
    basenames = {os.path.basename(f) for f in files}
    words = set()
    tests = set()
    for f in files:
        top = f.split(os.sep)[0]
        if f == "Makefile" or (top in SOURCE_DIRS and f.endswith(SOURCE_EXT)):
            with open(os.path.join(ROOT, f), encoding="utf-8", errors="replace") as fh:
                text = fh.read()
            words.update(re.findall(r"[A-Za-z_]\w*", text))
            if top == "test":
                for m in re.finditer(r"\b(IO_TEST(?:_TIMEOUT)?|TEST(?:_TIMEOUT)?)\((\w+)", text):
                    if m.group(1).startswith("IO_"):
                        tests.update({m.group(2) + "_epoll", m.group(2) + "_uring"})
                    else:
                        tests.add(m.group(2))
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as fh:
        make_text = fh.read()
    targets = set(re.findall(r"^([\w-]+)\s*:(?!=)", make_text, re.M))
    for m in re.finditer(r"^\.PHONY:((?:.*\\\n)*.*)$", make_text, re.M):
        targets.update(m.group(1).replace("\\\n", " ").split())

    docs = ["README.md"] + sorted(
        os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))
    missing = []
    checked = 0
    for doc in docs:
        with open(os.path.join(ROOT, doc), encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        in_code = False
        for n, line in enumerate(lines, 1):
            if line.lstrip().startswith("```"):
                in_code = not in_code
                continue
            if in_code:
                continue
            for tok in re.findall(r"`([^`\n]+)`", line):
                tok = tok.strip()
                what = None
                where = WHERE_RE.match(tok)
                if where:
                    checked += 1
                    path, name = where.groups()
                    hits = [path] if "/" in path else [f for f in files if os.path.basename(f) == path]
                    hits = [f for f in hits if os.path.isfile(os.path.join(ROOT, f))]
                    if not hits:
                        what = "no such file"
                    elif not any(re.search(r"\b%s\b" % re.escape(name),
                                           open(os.path.join(ROOT, f), encoding="utf-8", errors="replace").read())
                                 for f in hits):
                        what = "%s is not in %s" % (name, path)
                elif PATH_RE.match(tok):
                    checked += 1
                    if not os.path.exists(os.path.join(ROOT, tok.rstrip("/"))):
                        what = "no such file or folder"
                elif FILE_RE.match(tok):
                    checked += 1
                    if tok not in basenames and tok not in FOREIGN:
                        what = "no file of that name in the tree"
                elif MAKE_RE.match(tok):
                    for t in MAKE_RE.match(tok).group(1).split():
                        if "=" in t:
                            continue
                        checked += 1
                        if t not in targets:
                            missing.append((doc, n, "make " + t, "no such Makefile target"))
                else:
                    m = CALL_RE.match(tok) or IDENT_RE.match(tok)
                    if m:
                        name = m.group(1)
                        checked += 1
                        if name not in words and name not in tests and name not in FOREIGN:
                            what = "not found in the sources, the tests or the Makefile"
                if what:
                    missing.append((doc, n, tok, what))
    for doc, n, tok, what in missing:
        print(f"{doc}:{n}: `{tok}`: {what}")
    print(f"check_docs: {checked} names checked in {len(docs)} files, {len(missing)} missing")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
