"""Per-box cgroups: one memory limit and one process limit for everything a box runs (all its
processes and its tmpfs together), where the cgroup tree is writable. Elsewhere the per-process rlimits
stay the only bound (docs/sandbox.md says which applies; `Sandbox.isolation` lists `cgroup_memory` /
`cgroup_pids` where they are in force).

Where: cgroup v2 under the directory `SQUIGGLRAY_SANDBOX_CGROUP` names (an operator-made cgroup
delegated to the Ray user, holding no process), or under the zygote's own cgroup when `memory` and
`pids` are delegated to it; else cgroup v1's `memory` and `pids` hierarchies (as root). The zygote makes `squigglray-sandbox-<pid>-<random>` there *before* it enters its
namespaces and keeps directory descriptors of it: its mount namespace makes /sys read-only, so no run
ever sees a writable cgroup file. Each box gets a child cgroup of a random name, made by the manager;
the box's init joins it as its first act (through a `cgroup.procs` descriptor the manager opened), so
every process of the run is in it from the start; the manager removes it once the box is gone.

Try it (as root): `python -c "from squigglray.solve.sandbox.cgroups import BoxCgroups; print(BoxCgroups.setup())"`
"""

from __future__ import annotations

import os
import re
import secrets
import time
from dataclasses import dataclass, field

CONTROLLERS = ("memory", "pids")
ENABLE = " ".join(f"+{c}" for c in CONTROLLERS)  # what cgroup v2's cgroup.subtree_control takes
PARENT_ENV = "SQUIGGLRAY_SANDBOX_CGROUP"  # a cgroup v2 directory to make the sandboxes' cgroups in
_PREFIX = "squigglray-sandbox-"


@dataclass
class _Hierarchy:
    """One cgroup hierarchy we may write: v2 (both controllers) or one v1 controller."""

    version: int
    controllers: tuple[str, ...]
    base_fd: int  # the zygote's own cgroup in this hierarchy
    parent: str  # our cgroup's name under base_fd
    parent_fd: int


@dataclass
class BoxCgroup:
    """One box's cgroup, in each hierarchy. `join_fds`: `cgroup.procs` descriptors for the box's init
    (it writes "0" to each, then closes them; the manager closes its copies after the fork)."""

    name: str
    join_fds: list[int] = field(default_factory=list)
    memory_fd: int = -1  # the hierarchy holding memory (for its OOM-kill count), -1 if none
    memory_version: int = 0
    oom_kills_seen: int = 0  # the count when it was last read (`BoxCgroups.new_oom_kills`)


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(root, mount point, fs type, super options) of every cgroup mount, from /proc/self/mountinfo."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fields, tail = pre.split(), post.split()
            if tail and tail[0] in ("cgroup", "cgroup2"):
                out.append((fields[3], fields[4].replace("\\040", " "), tail[0], set(tail[2].split(","))))
    return out


def _own_paths() -> dict[str, str]:
    """Controller (or "" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, names, path = line.rstrip("\n").split(":", 2)
            for name in names.split(",") if names else [""]:
                out[name] = path
    return out


def _dir(mount_root: str, mount_point: str, path: str) -> str | None:
    if not (path == mount_root or path.startswith(mount_root.rstrip("/") + "/")):
        return None  # our cgroup is not visible under this mount
    return os.path.join(mount_point, path[len(mount_root):].lstrip("/"))


def _write(dir_fd: int | None, name: str, text: str) -> None:
    fd = os.open(name, os.O_WRONLY, dir_fd=dir_fd)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _read(dir_fd: int | None, name: str) -> str:
    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    try:
        return os.read(fd, 1 << 16).decode()
    finally:
        os.close(fd)


def _rmdir_tree(dir_fd: int, name: str) -> bool:
    """Remove cgroup `name` under dir_fd and its child cgroups (rmdir only: a cgroup with processes
    stays). Returns whether it is gone."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=dir_fd)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        for entry in os.scandir(fd):
            if entry.is_dir(follow_symlinks=False):
                _rmdir_tree(fd, entry.name)
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=dir_fd)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _clear_stale(base_fd: int, pid: int | None = None) -> None:
    """Remove what zygotes that no longer run left here (one killed before it could clean up; with
    `pid`: that zygote's only)."""
    for entry in os.scandir(base_fd):
        m = re.fullmatch(re.escape(_PREFIX) + r"(\d+)-[0-9a-f]+", entry.name)
        if (m and entry.is_dir(follow_symlinks=False) and (pid is None or int(m.group(1)) == pid)
                and not os.path.exists(f"/proc/{m.group(1)}")):
            _rmdir_tree(base_fd, entry.name)


def remove_left_by(pid: int) -> None:
    """The caller's side of a zygote it killed (the zygote could not clean up): its cgroups, which
    sit in the caller's own cgroup. A zygote killed with its caller is cleared by the next one."""
    try:
        mounts, own = _mounts(), _own_paths()
    except OSError:
        return
    for base in {_v2_base(mounts, own), *(_v1_base(mounts, own, c) for c in CONTROLLERS)} - {None}:
        try:
            fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            _clear_stale(fd, pid)
        except OSError:
            pass
        finally:
            os.close(fd)


def _open_parent(base: str, controllers: tuple[str, ...], version: int) -> _Hierarchy:
    base_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _clear_stale(base_fd)
        parent = f"{_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
        os.mkdir(parent, 0o755, dir_fd=base_fd)
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY, dir_fd=base_fd)
        if version == 2:
            try:
                _write(parent_fd, "cgroup.subtree_control", ENABLE)
            except OSError:
                os.close(parent_fd)
                os.rmdir(parent, dir_fd=base_fd)
                raise
    except OSError:
        os.close(base_fd)
        raise
    return _Hierarchy(version, controllers, base_fd, parent, parent_fd)


def _v2_base(mounts, own: dict[str, str]) -> str | None:
    """PARENT_ENV's directory if set, else our own cgroup v2 (None: no v2 mount shows it)."""
    mount = next(((r, mp) for r, mp, fs, _ in mounts if fs == "cgroup2"), None)
    return os.environ.get(PARENT_ENV) or (_dir(*mount, own[""]) if mount and "" in own else None)


def _v1_base(mounts, own: dict[str, str], controller: str) -> str | None:
    """Our own cgroup in cgroup v1's hierarchy of `controller` (None: not mounted where we see it)."""
    mount = next(((r, mp) for r, mp, fs, opts in mounts if fs == "cgroup" and controller in opts), None)
    return _dir(*mount, own[controller]) if mount and controller in own else None


def _v2(mounts, own: dict[str, str]) -> tuple[list[_Hierarchy], str]:
    """Our cgroup v2 parent: under PARENT_ENV's directory if set, else under our own cgroup. cgroup v2
    lets a cgroup hand controllers to children only while it holds no process, so our own cgroup
    serves only where `memory` and `pids` are already in its subtree_control (the root cgroup); a
    non-root node needs an operator-made, delegated, empty cgroup named by PARENT_ENV."""
    configured, base = os.environ.get(PARENT_ENV), _v2_base(mounts, own)
    if base is None:
        return [], "no cgroup v2 mount that shows this process's cgroup"
    try:
        available = set(_read(None, os.path.join(base, "cgroup.controllers")).split())
        if not set(CONTROLLERS) <= available:
            return [], f"cgroup v2 at {base} has no {' / '.join(sorted(set(CONTROLLERS) - available))} controller"
        delegated = set(_read(None, os.path.join(base, "cgroup.subtree_control")).split())
        if not set(CONTROLLERS) <= delegated:
            if not configured:
                return [], (f"cgroup v2 at {base} does not delegate memory and pids (set {PARENT_ENV} to a "
                            f"delegated cgroup v2 directory that holds no process)")
            _write(None, os.path.join(base, "cgroup.subtree_control"), ENABLE)  # it holds no process
        return [_open_parent(base, CONTROLLERS, 2)], ""
    except OSError as e:
        return [], f"cgroup v2 at {base}: {e.strerror or e}"


def _v1(mounts, own: dict[str, str]) -> tuple[list[_Hierarchy], str]:
    found, why = [], []
    for c in CONTROLLERS:
        base = _v1_base(mounts, own, c)
        if base is None:
            why.append(f"no cgroup v1 {c} hierarchy")
            continue
        try:
            found.append(_open_parent(base, (c,), 1))
        except OSError as e:
            why.append(f"cgroup v1 {c} at {base}: {e.strerror or e}")
    return found, "; ".join(why)


class BoxCgroups:
    """The zygote's cgroup parent(s) and the boxes' cgroups under them."""

    def __init__(self, hierarchies: list[_Hierarchy]) -> None:
        self.hierarchies = hierarchies
        self.pending: list[str] = []  # boxes gone whose cgroup still had processes leaving

    @classmethod
    def setup(cls) -> tuple[BoxCgroups | None, str]:
        """Our own cgroup parent where the tree is writable, or None and the reason (shown by the
        sandbox: the per-process address-space limit then bounds memory alone)."""
        if not os.path.exists("/proc/self/cgroup"):
            return None, "no cgroups on this system"
        try:
            mounts, own = _mounts(), _own_paths()
        except OSError as e:
            return None, f"cgroups unreadable: {e}"
        found, why2 = _v2(mounts, own)
        if not found:
            found, why1 = _v1(mounts, own)
            if not found:
                return None, f"{why2}; {why1}"
        return cls(found), ""

    @property
    def labels(self) -> list[str]:
        have = {c for h in self.hierarchies for c in h.controllers}
        return [f"cgroup_{c}" for c in CONTROLLERS if c in have]

    def create(self, memory_bytes: int, processes: int) -> BoxCgroup:
        """A new box's cgroup with its limits set. Raises OSError (the box is then not made)."""
        box = BoxCgroup(secrets.token_hex(8))
        try:
            for h in self.hierarchies:
                os.mkdir(box.name, 0o755, dir_fd=h.parent_fd)
                fd = os.open(box.name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=h.parent_fd)
                try:
                    if "memory" in h.controllers:
                        if h.version == 2:
                            _write(fd, "memory.max", str(memory_bytes))
                            _write(fd, "memory.oom.group", "1")  # the box goes as a whole
                            try:
                                _write(fd, "memory.swap.max", "0")
                            except FileNotFoundError:  # no swap accounting
                                pass
                        else:
                            _write(fd, "memory.limit_in_bytes", str(memory_bytes))
                        box.memory_fd, box.memory_version = os.dup(fd), h.version
                    if "pids" in h.controllers:
                        _write(fd, "pids.max", str(processes))
                    box.join_fds.append(os.open("cgroup.procs", os.O_WRONLY | os.O_CLOEXEC, dir_fd=fd))
                finally:
                    os.close(fd)
        except OSError:
            self.release(box)
            raise
        return box

    def new_oom_kills(self, box: BoxCgroup | None) -> int:
        """How many of the box's processes the kernel killed at its memory limit since the last call."""
        if box is None or box.memory_fd < 0:
            return 0
        try:
            text = _read(box.memory_fd, "memory.events" if box.memory_version == 2 else "memory.oom_control")
        except OSError:
            return 0
        m = re.search(r"^oom_kill (\d+)$", text, re.M)
        seen, box.oom_kills_seen = box.oom_kills_seen, int(m.group(1)) if m else box.oom_kills_seen
        return box.oom_kills_seen - seen

    def release(self, box: BoxCgroup | None) -> None:
        """The box is gone (or going): close its descriptors and remove its cgroup, now or, while its
        last processes are still leaving, on a later `sweep`."""
        if box is None:
            return
        for fd in [*box.join_fds, box.memory_fd]:
            if fd >= 0:
                os.close(fd)
        box.join_fds, box.memory_fd = [], -1
        self.pending.append(box.name)
        self.sweep()

    def sweep(self) -> None:
        """Remove the cgroups of boxes that have emptied since."""
        self.pending = [n for n in self.pending
                        if not all(_rmdir_tree(h.parent_fd, n) for h in self.hierarchies)]

    def remove_all(self) -> None:
        """At the zygote's exit (its boxes died with its PID namespace): every box cgroup, then ours."""
        for h in self.hierarchies:
            for _ in range(200):
                if _rmdir_tree(h.base_fd, h.parent):
                    break
                time.sleep(0.005)


def join(fds: list[int]) -> None:
    """In a box's init, first thing: move this process (and so all it will start) into the box's cgroup."""
    for fd in fds:
        os.write(fd, b"0")
        os.close(fd)
