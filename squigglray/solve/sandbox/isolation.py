"""Linux isolation primitives for the sandbox: namespaces, mounts, privilege drop, rlimits, audit hooks.

Namespaces need root (as on these machines and in many containers). Without them the sandbox falls
back to process-level isolation (own session, subreaper, rlimits, audit hooks) and says so.
"""

from __future__ import annotations

import ctypes
import os
import resource
import stat
import sys

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x08000000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 8192, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER = 1, 38, 36

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

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


def namespaces_possible() -> bool:
    return sys.platform.startswith("linux") and os.geteuid() == 0


def enter_namespaces() -> None:
    """New mount, IPC, network and (for children) PID namespaces for this process."""
    unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWPID)


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


def setup_mounts(tmpfs_mb: int, expose: list[str]) -> None:
    """Inside the new mount namespace (as PID 1): private mounts, a fresh /proc that shows only the
    sandbox's processes, private tmpfs over world-writable directories, and the interpreter's own
    directories made reachable for the unprivileged user when an ancestor (e.g. /root) is closed."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for d in WORLD_WRITABLE:
        if os.path.isdir(d) and not os.path.islink(d):
            mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmpfs_mb}m,mode=1777")
    stage = "/tmp/.squigglray-stage"
    for n, (parent, children) in enumerate(sorted(_blocking_dirs(expose).items())):
        staged = []
        for child in sorted(children):
            src = os.path.join(parent, child)
            tgt = f"{stage}/{n}-{child}"
            os.makedirs(tgt, exist_ok=True)
            mount(src, tgt, None, MS_BIND | MS_REC)
            staged.append((tgt, child))
        mount("tmpfs", parent, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        for tgt, child in staged:
            os.makedirs(os.path.join(parent, child), exist_ok=True)
            mount(tgt, os.path.join(parent, child), None, MS_MOVE)
            os.rmdir(tgt)
    if os.path.isdir(stage):
        os.rmdir(stage)
    _remount_read_only(keep_writable=set(WORLD_WRITABLE) | {"/proc"})


MS_RDONLY, MS_REMOUNT = 1, 32
_MOUNT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "ro": MS_RDONLY}


def _remount_read_only(keep_writable: set[str]) -> None:
    """Make every other mount point read-only for this namespace: a run can write nowhere but the
    private tmpfs directories, which vanish with the namespace."""
    with open("/proc/self/mountinfo") as f:
        entries = [line.split() for line in f]
    for fields in entries:
        target, opts = fields[4].replace("\\040", " "), fields[5].split(",")
        if any(target == k or target.startswith(k + "/") for k in keep_writable):
            continue
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


def drop_privileges(uid: int) -> None:
    """Become an unprivileged user with no supplementary groups and no way back (no_new_privs)."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    prctl(PR_SET_NO_NEW_PRIVS, 1)


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
