"""Linux isolation primitives for the sandbox: namespaces, mounts, privilege drop, rlimits, audit hooks.

Two strong modes (`zygote.main` picks): as root, the zygote enters mount, IPC, network and PID
namespaces and every box runs under its own unprivileged uid; without root (or without CAP_SYS_ADMIN),
an unprivileged user namespace maps the caller's uid to 0 inside, the same namespaces follow, and every
run drops all capabilities. Each run (or session) then gets its own *box*: fresh mount, IPC, network
and PID namespaces with a private tmpfs (`enter_box` / `setup_box`). Where neither works, only the
weak process mode is left (own session, subreaper, rlimits, audit hooks), which the caller must allow.
"""

from __future__ import annotations

import ctypes
import os
import resource
import stat
import sys

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x08000000, 0x20000000, 0x40000000
CLONE_NEWUSER = 0x10000000
BOX_FLAGS = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWPID
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 8192, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER = 1, 38, 36
PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.capset.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
_libc.capget.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
CAP_SYS_ADMIN = 21
_CAP_V3 = 0x20080522

# Directories any user may write to; each gets a private tmpfs inside the sandbox's mount namespace.
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue")


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def prctl(option: int, arg: int = 0) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl({option})")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def enter_namespaces(uid_base: int, slots: int) -> str:
    """New mount, IPC, network and (for children) PID namespaces for this process. Returns the mode:

    - "root": as root with CAP_SYS_ADMIN; runs get uids `uid_base + slot`.
    - "userns": root without CAP_SYS_ADMIN (a container that dropped it): a new user namespace whose
      uid/gid 0 is root (the zygote still reads what root reads) and whose uids 1..`slots` map to
      `uid_base`..; a forked helper left outside writes the maps (CAP_SETUID there). Runs get uid
      1 + slot inside, the same outside uids as in "root" mode.
    - "userns_1uid": any other user: a user namespace mapping only the caller's uid (and gid) to 0.
      Runs keep the caller's uid outside; they are told apart by their boxes, and drop every capability.
    Raises OSError naming each attempt where the kernel allows none."""
    if not sys.platform.startswith("linux"):
        raise OSError(f"namespaces need Linux, this is {sys.platform}")
    tried = []
    if os.geteuid() == 0:
        try:
            unshare(BOX_FLAGS)
            return "root"
        except OSError as e:
            tried.append(f"as root: {e.strerror}")
        try:
            _mapped_user_namespace(uid_base, slots)
            return "userns"
        except OSError as e:
            tried.append(f"user namespace with a uid range: {e.strerror}")
            raise OSError(e.errno, "no namespaces: " + "; ".join(tried)) from None
    uid, gid = os.geteuid(), os.getegid()
    try:
        unshare(CLONE_NEWUSER | BOX_FLAGS)
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    except OSError as e:
        raise OSError(e.errno, f"no namespaces: unprivileged user namespace: {e.strerror}") from None
    return "userns_1uid"


def _mapped_user_namespace(uid_base: int, slots: int) -> None:
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    me = os.getpid()
    helper = os.fork()
    if helper == 0:  # stays in the parent user namespace, where it holds CAP_SETUID
        ok = b"0"
        try:
            if os.read(go_r, 1) == b"1":
                maps = f"0 0 1\n1 {uid_base} {slots}\n"
                for name in ("uid_map", "gid_map"):
                    with open(f"/proc/{me}/{name}", "w") as f:
                        f.write(maps)
                ok = b"1"
        finally:
            os.write(done_w, ok)
            os._exit(0)
    os.close(go_r)
    os.close(done_w)
    try:
        unshare(CLONE_NEWUSER | BOX_FLAGS)
    except OSError:
        os.write(go_w, b"0")
        raise
    finally:
        os.write(go_w, b"1")  # a no-op for the helper after "0"
        ok = os.read(done_r, 1)
        os.waitpid(helper, 0)
        os.close(go_w)
        os.close(done_r)
    if ok != b"1":
        raise OSError(1, "the uid map of the new user namespace could not be written")


def new_pid_namespace_for_next_child() -> None:
    """The next fork of this process becomes PID 1 of a new PID namespace (undo with
    `restore_pid_namespace`: the kernel allows this only while children go to our own namespace)."""
    unshare(CLONE_NEWPID)


def restore_pid_namespace(own_ns_fd: int) -> None:
    """Children go to this process's own PID namespace again (`own_ns_fd`: /proc/self/ns/pid)."""
    _check(_libc.setns(own_ns_fd, CLONE_NEWPID), "setns")


def enter_box() -> None:
    """As the new init of a box's PID namespace: fresh mount, IPC and network namespaces. Nothing in
    the box sees another box's files, processes, sockets or IPC objects, and all of it dies with
    this process."""
    unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET)


def setup_box(tmpfs_mb: int, owner: int | None, carry: dict[str, list[str]]) -> str:
    """As the box's init, before any run code: a /proc of the box's own PID namespace and one fresh
    tmpfs of `tmpfs_mb` for all the world-writable directories (/tmp, and /var/tmp, /dev/shm, ... bound
    from folders inside it, so the box's total is `tmpfs_mb`), with the interpreter's folders that
    live there carried over again (`carry`, from `setup_mounts`). Returns the run's working folder
    (/tmp/work, owned by `owner`)."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    held = {d: _hold(d, cs) for d, cs in carry.items()}
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmpfs_mb}m,mode=1777")
    for d in WORLD_WRITABLE[1:]:
        if os.path.isdir(d) and not os.path.islink(d):
            inner = "/tmp/.box" + d.replace("/", "-")
            os.mkdir(inner, 0o1777)
            os.chmod(inner, 0o1777)
            mount(inner, d, None, MS_BIND)
    for d, fds in held.items():
        _bind_back(d, fds)
    work = "/tmp/work"
    os.mkdir(work, 0o700)
    if owner is not None:
        os.chown(work, owner, owner)
    return work


def _blocking_dirs(paths: list[str]) -> dict[str, set[str]]:
    """For each path, the first ancestor that others cannot traverse, and the child to expose under it."""
    out: dict[str, set[str]] = {}
    for p in paths:
        parts = os.path.realpath(p).split("/")[1:]
        cur = "/"
        for i, part in enumerate(parts[:-1]):
            cur = os.path.join(cur, part)
            try:
                mode = os.stat(cur).st_mode
            except OSError:
                break
            if not mode & stat.S_IXOTH:
                out.setdefault(cur, set()).add(parts[i + 1])
                break
    return out


def _covers(expose: list[str], hide: list[str]) -> dict[str, set[str]]:
    """Directories to cover with an empty tmpfs -> the children to carry over from under them: each
    closed ancestor of an exposed path (`_blocking_dirs`), and each hidden directory (with the first
    component of every exposed path inside it)."""
    out = _blocking_dirs(expose)
    for h in hide:
        h = os.path.realpath(h)
        if not os.path.isdir(h) or h == "/":
            continue
        keep = out.setdefault(h, set())
        for p in expose:
            rp = os.path.realpath(p)
            if rp.startswith(h + "/"):
                keep.add(rp[len(h) + 1:].split("/")[0])

    def hidden(d: str) -> bool:  # under another cover, and not inside what that cover carries over
        return any(d.startswith(q + "/") and not any(d == f"{q}/{c}" or d.startswith(f"{q}/{c}/") for c in cs)
                   for q, cs in out.items() if q != d)

    return {d: cs for d, cs in out.items() if not hidden(d)}


def setup_mounts(tmpfs_mb: int, expose: list[str], hide: list[str] = ()) -> dict[str, list[str]]:
    """Inside the zygote's new mount namespace (as PID 1): private mounts, a fresh /proc that shows
    only the sandbox's processes, private tmpfs over world-writable directories, `hide` (e.g. the
    home directory in user-namespace mode, where runs keep the caller's file permissions) covered by
    an empty tmpfs, and the interpreter's own folders (`expose`) carried over, read-only, wherever one
    of those covers (or a closed ancestor, e.g. /root) would hide them -- a checkout or venv under /tmp
    included; then every other mount read-only. Returns the world-writable directories -> children
    carried over, which every box carries again over its own tmpfs (`setup_box`)."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    world = [d for d in WORLD_WRITABLE if os.path.isdir(d) and not os.path.islink(d)]
    covers = _covers(expose, list(hide) + world)
    for parent, children in sorted(covers.items()):
        opts = f"size={tmpfs_mb}m,mode=1777" if parent in world else "size=1m,mode=0755"
        _cover(parent, sorted(children), opts)
    _remount_read_only(keep_writable=set(WORLD_WRITABLE) | {"/proc"})
    return {d: sorted(covers.get(d, ())) for d in world if covers.get(d)}


def _cover(parent: str, carry: list[str], opts: str) -> None:
    """Mount a tmpfs (`opts`) over `parent`, with the entries `carry` of what was there bound back,
    read-only (through O_PATH descriptors opened before the tmpfs hides them)."""
    fds = _hold(parent, carry)
    mount("tmpfs", parent, "tmpfs", MS_NOSUID | MS_NODEV, opts)
    _bind_back(parent, fds)


def _hold(parent: str, names: list[str]) -> list[tuple[str, int]]:
    """O_PATH descriptors of the entries `names` of `parent`, taken before a mount hides them."""
    return [(n, os.open(os.path.join(parent, n), os.O_PATH)) for n in names if os.path.lexists(os.path.join(parent, n))]


def _bind_back(parent: str, held: list[tuple[str, int]]) -> None:
    """Bind what `_hold` took back to the same names under the mount now over `parent`, read-only."""
    for name, fd in held:
        target = os.path.join(parent, name)
        os.makedirs(target, exist_ok=True)
        mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
        _read_only(target)
        os.close(fd)


MS_RDONLY, MS_REMOUNT = 1, 32
_MOUNT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "ro": MS_RDONLY}


def _remount_read_only(keep_writable: set[str]) -> None:
    """Make every other mount point read-only for this namespace: a run can write nowhere but the
    private tmpfs directories, which vanish with the namespace."""
    with open("/proc/self/mountinfo") as f:
        entries = [line.split() for line in f]
    for fields in entries:
        target = fields[4].replace("\\040", " ")
        if not any(target == k or target.startswith(k + "/") for k in keep_writable):
            _read_only(target, fields[5].split(","))


def _read_only(target: str, opts: list[str] | None = None) -> None:
    """Remount one mount point read-only, keeping its other flags (in a user namespace the kernel
    refuses to clear a locked nosuid/nodev/noexec)."""
    if opts is None:
        with open("/proc/self/mountinfo") as f:
            opts = next((line.split()[5].split(",") for line in reversed(f.readlines())
                         if line.split()[4] == target), [])
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY
    for opt in opts:
        flags |= _MOUNT_FLAGS.get(opt, 0)
    try:
        mount(None, target, None, flags)
    except OSError:
        pass  # e.g. a mount hidden under another one; uid drop still protects it


def interpreter_paths() -> list[str]:
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    return paths + [sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))]


def drop_privileges(uid: int | None) -> None:
    """Become an unprivileged user with no supplementary groups and no way back (no_new_privs). With
    `uid` None (user-namespace mode: uid 0 is the only one mapped), stay uid 0 of the namespace but
    drop every capability (bounding, ambient, effective, permitted, inheritable)."""
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    else:
        drop_capabilities()
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def own_user_namespace() -> None:
    """A new user namespace mapping only this process's uid and gid (0) to themselves. The run keeps
    its files and permissions, but the kernel (Linux >= 5.14) counts RLIMIT_NPROC per user namespace
    and uid: with one namespace per box, the process limit counts this box's processes alone, where
    every box shares one uid outside (user-namespace mode without a uid range). Call it before
    setting RLIMIT_NPROC: the new namespace's count of the caller's own processes is capped by the
    limit in force when it is made."""
    unshare(CLONE_NEWUSER)
    for name, text in (("setgroups", "deny"), ("uid_map", "0 0 1"), ("gid_map", "0 0 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def drop_capabilities(only: int | None = None) -> None:
    """Drop every capability (or only capability number `only`) from this process: the bounding set,
    the ambient set, and the effective, permitted and inheritable sets."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1) if only is None else (only,):
        prctl(PR_CAPBSET_DROP, cap)
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header = (ctypes.c_uint32 * 2)(_CAP_V3, 0)  # this process
    data = (ctypes.c_uint32 * 6)()  # two {effective, permitted, inheritable} words
    if only is not None:
        _check(_libc.capget(header, data), "capget")
        word, bit = divmod(only, 32)
        for i in range(3):
            data[3 * word + i] &= ~(1 << bit) & 0xFFFFFFFF
    _check(_libc.capset(header, data), "capset")


def set_rlimits(address_space: int, cpu_s: int, file_size: int, open_files: int, processes: int | None) -> None:
    pairs = [
        (resource.RLIMIT_AS, address_space),
        (resource.RLIMIT_CPU, cpu_s),
        (resource.RLIMIT_FSIZE, file_size),
        (resource.RLIMIT_NOFILE, open_files),
        (resource.RLIMIT_CORE, 0),
    ]
    if processes is not None:
        pairs.append((resource.RLIMIT_NPROC, processes))
    for res, value in pairs:
        soft = value
        hard = value + 1 if res == resource.RLIMIT_CPU else value  # SIGXCPU first, then SIGKILL
        resource.setrlimit(res, (soft, hard))


def install_audit_hook(workdir: str, own_pid: int) -> None:
    """Process-mode fallback: refuse network sockets, writes and deletions outside the working
    folder, and signals to processes other than the run's own. Bypassable through ctypes."""
    workdir = os.path.realpath(workdir)
    inside = lambda p: os.path.realpath(os.fsdecode(p)).startswith(workdir + os.sep)  # noqa: E731

    def hook(event: str, args: tuple) -> None:
        if event in ("socket.connect", "socket.bind", "socket.sendto"):
            raise PermissionError("sandbox: network access is refused")
        if event == "socket.__new__" and len(args) > 1 and args[1] not in (1,):  # AF_UNIX is 1
            raise PermissionError("sandbox: network access is refused")
        if event == "open" and isinstance(args[0], (str, bytes)):
            mode, flags = args[1], args[2] or 0
            writes = (mode and any(c in mode for c in "wax+")) or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            if writes and not inside(args[0]):
                raise PermissionError(f"sandbox: writing outside the working folder is refused: {args[0]!r}")
        if event in ("os.remove", "os.rmdir", "os.rename", "os.truncate", "os.chmod", "os.chown"):
            if isinstance(args[0], (str, bytes)) and not inside(args[0]):
                raise PermissionError(f"sandbox: {event} outside the working folder is refused")
        if event in ("os.kill", "os.killpg") and args[0] not in (os.getpid(), own_pid, 0):
            raise PermissionError("sandbox: signalling other processes is refused")

    sys.addaudithook(hook)
