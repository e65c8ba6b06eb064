# weft's gdb extension: see the fibers of a live process or of a core file.
#
#   (gdb) source tools/gdb/weft.py
#   (gdb) info fibers            every live fiber: id, name, state, where
#   (gdb) fiber bt ID [N]        backtrace of a suspended fiber (N frames)
#
# How `fiber bt` unwinds a fiber that is not running, without touching the
# inferior. A suspended fiber's registers are on its own stack, in the
# frame weft__ctx_switch pushed (the diagram at the top of
# src/arch/switch_x86_64_sysv_elf_gas.S):
#
#     sp+0x00 mxcsr, x87 cw   sp+0x08 r15   sp+0x10 r14   sp+0x18 r13
#     sp+0x20 r12             sp+0x28 rbx   sp+0x30 rbp   sp+0x38 return address
#
# (src/arch/unwind_posix.c and LAYOUTS below hold the same facts for our
# AArch64 switch and for Boost's fcontext on both.) Writing those into the
# registers of some thread would work on a live
# process only (a core file's registers are read-only) and would change the
# inferior. Instead, a gdb.unwinder.Unwinder (gdb >= 11: PendingFrame.level)
# is switched on for the duration of one command: it claims the innermost
# normal frame of the selected thread (gdb never asks Python about inlined
# frames, which sit inside it) and tells gdb that this frame's *caller* had
# the fiber's saved registers: pc = the return address, sp = sp + 0x40, and
# rbx, rbp, r12-r15 from the frame. gdb then unwinds frame #1 onwards with the
# program's own DWARF CFI, exactly as it would a thread, and `fiber bt`
# prints the frames older than the claimed one, renumbered from 0.
# The frame id it gives the pseudo frame uses the fiber's sp, so gdb's
# "previous frame inner to this frame" check passes (the fiber's frames lie
# above it). The unwinder is switched off again and gdb's frame cache
# flushed before the command returns, whatever happens.
#
# The fibers are found as the runtime finds them: by walking the carved
# stacks of every pool of the stack allocator, whose top holds the record.
# The frame layouts known are those of our x86-64 and AArch64 switches and
# of Boost's fcontext on both (LAYOUTS); another gets a message.

import struct

import gdb
import gdb.unwinder

STATES = {1: "runnable", 2: "running", 3: "parked", 4: "dead", 5: "freed"}

# Where each switch leaves a suspended context's registers, from its saved
# sp (the same table as src/arch/unwind_posix.c): frame size (sp after the
# switch returns), the pc's register and slot, the sp register, and the
# callee-saved registers' slots. Chosen by the inferior's weft__ctx_impl and
# architecture.
_X86_WEFT = (0x40, "rip", 0x38, "rsp",
             [("r15", 0x08), ("r14", 0x10), ("r13", 0x18), ("r12", 0x20),
              ("rbx", 0x28), ("rbp", 0x30)])
_X86_BOOST = (0x40, "rip", 0x38, "rsp",
              [("r12", 0x08), ("r13", 0x10), ("r14", 0x18), ("r15", 0x20),
               ("rbx", 0x28), ("rbp", 0x30)])
_A64_WEFT = (0xb0, "pc", 0xa8, "sp",
             [("x%d" % r, 0x50 + 8 * (r - 19)) for r in range(19, 31)])
_A64_BOOST = (0xb0, "pc", 0xa0, "sp",
              [("x%d" % r, 0x40 + 8 * (r - 19)) for r in range(19, 31)])
LAYOUTS = {
    ("x86-64", "weft x86_64 sysv"): _X86_WEFT,
    ("x86-64", "boost fcontext"): _X86_BOOST,
    ("aarch64", "weft arm64 aapcs"): _A64_WEFT,
    ("aarch64", "boost fcontext"): _A64_BOOST,
}


def _layout():
    try:
        arch = gdb.selected_inferior().architecture().name()
    except gdb.error:
        arch = ""
    arch = "x86-64" if "x86-64" in arch else "aarch64" if "aarch64" in arch else arch
    try:
        # through a pointer: gdb takes the bare array's name for a symbol
        # address and .string() of it comes back empty
        impl = gdb.parse_and_eval("(const char *)&weft__ctx_impl").string()
    except (gdb.error, gdb.MemoryError):
        impl = ""
    return LAYOUTS.get((arch, impl)), "%s/%s" % (arch, impl or "?")


class _FrameId(object):
    def __init__(self, sp, pc):
        self.sp = sp
        self.pc = pc


class FiberUnwinder(gdb.unwinder.Unwinder):
    """Gives the innermost frame the saved registers of one fiber as its
    caller's, while a `fiber bt` runs; inactive otherwise."""

    def __init__(self):
        super(FiberUnwinder, self).__init__("weft-fiber")
        self.sp = None
        self.level = None
        self.layout = None

    def __call__(self, pending):
        # gdb asks Python unwinders about normal frames only, innermost
        # first: the first one asked is the innermost normal frame (level 0,
        # or 1 and more when the thread stopped inside inlined code).
        if self.sp is None:
            return None
        if self.level is None:
            self.level = pending.level()
        elif pending.level() != self.level:
            return None
        size, pc_reg, pc_off, sp_reg, regs = self.layout
        sp = self.sp
        mem = bytes(gdb.selected_inferior().read_memory(sp, size))
        word = lambda off: struct.unpack_from("<Q", mem, off)[0]
        pc = pending.read_register(pc_reg)
        spv = pending.read_register(sp_reg)
        info = pending.create_unwind_info(_FrameId(gdb.Value(sp).cast(spv.type), pc))
        info.add_saved_register(pc_reg, gdb.Value(word(pc_off)).cast(pc.type))
        info.add_saved_register(sp_reg, gdb.Value(sp + size).cast(spv.type))
        for reg, off in regs:
            val = pending.read_register(reg)
            info.add_saved_register(reg, gdb.Value(word(off)).cast(val.type))
        return info


_unwinder = FiberUnwinder()
_registered = False


def _register():
    global _registered
    if not _registered:
        gdb.unwinder.register_unwinder(None, _unwinder, replace=True)
        _registered = True


def _arch_ok():
    return _layout()[0] is not None


def _fibers():
    """Every fiber spawned and not yet freed. There is no list of fibers:
    each record sits at the top of its stack, so walk the stacks the way
    weft__stack_each does (src/arch/stack.c) and keep the records whose
    magic and state say "a fiber lives here"."""
    rt = gdb.parse_and_eval("weft__rt")
    if int(rt["n"]) == 0 or int(rt["workers"]) == 0:
        return
    stack_t = gdb.lookup_type("weft__stack")
    fiber_t = gdb.lookup_type("weft_fiber")
    fiber_p = fiber_t.pointer()
    stack_p = stack_t.pointer()
    magic = int(gdb.parse_and_eval("(unsigned)0x77656674"))
    pool = gdb.parse_and_eval("'stack.c'::pools")
    while int(pool) != 0:
        stride = int(pool["stride"])
        slab = pool["slabs"]
        newest = True
        while int(slab) != 0:
            base = int(slab["base"])
            end = int(pool["carve"]) if newest else base + int(slab["len"])
            g = base
            while g + stride <= end:
                try:
                    st = gdb.Value((g + stride - stack_t.sizeof) & ~63).cast(stack_p)
                    f = gdb.Value((int(st["hi"]) - fiber_t.sizeof) & ~63).cast(fiber_p)
                    if int(f["magic"]) == magic and 1 <= int(f["state"]) <= 4:
                        yield f
                except gdb.MemoryError:
                    pass   # a stack whose top page a core file does not hold
                g += stride
            slab = slab["next"]
            newest = False
        pool = pool["next"]


def _worker_index(f):
    w = f["worker"]
    if int(w) == 0:
        return -1
    return int(w["idx"])


def _thread_of_worker(idx):
    """gdb's number for the thread running worker idx (its tls_worker)."""
    inf = gdb.selected_inferior()
    cur = gdb.selected_thread()
    found = None
    try:
        for t in inf.threads():
            t.switch()
            try:
                w = gdb.parse_and_eval("tls_worker")
            except gdb.error:
                continue
            if int(w) != 0 and int(w["idx"]) == idx:
                found = t.num
                break
    finally:
        if cur is not None:
            cur.switch()
    return found


def _wait_text(f):
    kind = int(f["wkind"])
    try:
        name = gdb.parse_and_eval("weft__wait_names")[kind].string()
    except (gdb.error, gdb.MemoryError):
        name = "wait %d" % kind
    obj = int(f["wobj"])
    if name == "join" and obj:
        j = gdb.Value(obj).cast(f.type)
        return "join of fiber %d" % int(j["id"])
    if name in ("fd read", "fd write", "io") and obj:
        # the I/O layer's operation (src/io/io.h), as weft__wait_fd reads it
        try:
            op = gdb.Value(obj).cast(gdb.lookup_type("weft__io_op").pointer())
            what = name.split()[1] if name != "io" else "io"
            return "fd %d %s" % (int(op["fd"]), what)
        except gdb.error:
            return name
    if obj and name not in ("sleep", "select", "blocking pool", "io"):
        # the wait record (src/sched/waitq.h): its first field is the object
        vp = gdb.lookup_type("void").pointer().pointer()
        target = int(gdb.Value(obj).cast(vp).dereference())
        return "%s 0x%x" % (name, target)
    return name


def _state_text(f):
    st = int(f["state"])
    s = STATES.get(st, "state %d" % st)
    if st == 2:
        return "running on worker %d" % _worker_index(f)
    if st == 3:
        return "parked on " + _wait_text(f)
    if st == 1 and int(f["wkind"]) != 0:
        return "runnable (woken from %s)" % _wait_text(f)
    return s


def _find(fid):
    for f in _fibers():
        if int(f["id"]) == fid:
            return f
    return None


def _fiber_frames(f, limit):
    """[(pc, function name or None, sal)] of a suspended fiber."""
    layout, what = _layout()
    if layout is None:
        raise gdb.GdbError("fiber bt: the switch frame of %s is not known" % what)
    sp = int(f["ctx"]["sp"])
    if sp & 1:   # fcontext's tag for a context that has not run yet
        return []
    _register()
    _unwinder.layout = layout
    _unwinder.sp = sp
    _unwinder.level = None
    frames = []
    try:
        gdb.invalidate_cached_frames()
        frame = gdb.newest_frame()
        while frame is not None and len(frames) < limit:
            # the pseudo frame, and inlined frames inside it, are the thread's
            if _unwinder.level is not None and frame.level() > _unwinder.level:
                frames.append((frame.pc(), frame.name(), frame.find_sal()))
            frame = frame.older()
    finally:
        _unwinder.sp = None
        _unwinder.level = None
        gdb.invalidate_cached_frames()
    return frames


WEFT_DIRS = ("src/sched/", "src/arch/", "src/io/")


def _is_weft(name, sal):
    if sal is not None and sal.symtab is not None:
        if any(d in sal.symtab.filename for d in WEFT_DIRS):
            return True
    return name is None or name.startswith("weft") or name == "fiber_entry"


def _where(frames):
    """The first frame that is not weft's own machinery."""
    for pc, name, sal in frames:
        if not _is_weft(name, sal):
            return _frame_text(pc, name, sal)
    return ""


def _frame_text(pc, name, sal):
    s = "0x%016x in %s" % (pc, name or "??")
    if sal is not None and sal.symtab is not None:
        s += " at %s:%d" % (sal.symtab.filename, sal.line)
    return s


class InfoFibers(gdb.Command):
    """List weft's fibers: id, name, state, and where a suspended one waits.
Usage: info fibers"""

    def __init__(self):
        super(InfoFibers, self).__init__("info fibers", gdb.COMMAND_STATUS)

    def invoke(self, arg, from_tty):
        rows = []
        for f in _fibers():
            st = int(f["state"])
            where = ""
            if st in (1, 3) and _arch_ok():
                try:
                    where = _where(_fiber_frames(f, 16))
                except (gdb.error, gdb.MemoryError) as e:
                    where = "(%s)" % e
            rows.append((int(f["id"]), f["name"].string(), _state_text(f), where))
        if not rows:
            print("No weft runtime is running (weft__rt has no workers).")
            return
        print("  %-6s %-20s %-34s %s" % ("Id", "Name", "State", "Where"))
        for fid, name, state, where in rows:
            print("  %-6d %-20s %-34s %s" % (fid, '"%s"' % name, state, where))


class Fiber(gdb.Command):
    """Commands on weft fibers. See: fiber bt."""

    def __init__(self):
        super(Fiber, self).__init__("fiber", gdb.COMMAND_STACK, prefix=True)


class FiberBt(gdb.Command):
    """Backtrace of a suspended weft fiber, from its saved context.
Usage: fiber bt ID [COUNT]
The inferior is not changed: registers are read from the fiber's switch frame."""

    def __init__(self):
        super(FiberBt, self).__init__("fiber bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        argv = gdb.string_to_argv(arg)
        if not argv:
            raise gdb.GdbError("usage: fiber bt ID [COUNT]")
        fid = int(argv[0])
        limit = int(argv[1]) if len(argv) > 1 else 64
        f = _find(fid)
        if f is None:
            raise gdb.GdbError("no live fiber with id %d" % fid)
        st = int(f["state"])
        print('fiber %d "%s": %s' % (fid, f["name"].string(), _state_text(f)))
        if st == 2:
            num = _thread_of_worker(_worker_index(f))
            if num is not None:
                print("  it is running on gdb thread %d: see `thread %d` then `bt`" % (num, num))
            else:
                print("  it is running: select the thread of worker %d and use bt" % _worker_index(f))
            return
        if st not in (1, 3):
            print("  it has no suspended context")
            return
        for i, (pc, name, sal) in enumerate(_fiber_frames(f, limit)):
            print("#%-2d %s" % (i, _frame_text(pc, name, sal)))


InfoFibers()
Fiber()
FiberBt()
