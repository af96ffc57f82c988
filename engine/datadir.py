"""Files the engine keeps beside its journal: the data directory's lock and the KILL file.

One data directory is one engine. :class:`DataDirLock` holds an exclusive ``flock`` on
``<data_dir>/engine.lock`` for the engine's whole life, taken before the journal is read or
opened, so a second engine on the same directory stops before it writes a single row (two
writers on one hash-chained journal would fork it). The OS drops the lock when the process dies,
so a kill -9 never leaves a stale lock behind; the file only records the holder's pid for the
message. One-shot readers (``verify``, ``status``, ``trace``) take no lock: the journal is WAL and
they read a consistent snapshot.

:func:`write_durably` writes a small file atomically and fsyncs it and its directory: the KILL
file that keeps a kill switch engaged across a restart when the journal cannot record it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path

from engine.vocabulary import ENGINE_FILE_PREFIXES as ENGINE_FILE_PREFIXES
from engine.vocabulary import JOURNAL_FILE as JOURNAL_FILE
from engine.vocabulary import KILL_LEVELS, ExitCode, KillLevel, kill_at_least
from engine.vocabulary import LOCK_FILE as LOCK_FILE
from engine.vocabulary import is_engine_file as is_engine_file

# A level is one word, perhaps below a comment; a huge or endless file is never read whole.
KILL_READ_BYTES = 4096


class DataDirRefused(RuntimeError):
    """The engine may not use this data directory; ``exit_code`` is the CLI's usage error."""

    exit_code = ExitCode.USAGE


class DataDirInUse(DataDirRefused):
    """Another engine holds the data directory."""


class DataDirUnsafe(DataDirRefused):
    """Any user can write the data directory: they could replace the journal, its anchor or
    the KILL file, or plant a link where the engine writes."""


def holds_engine_data(path: Path) -> bool:
    """An engine has used this directory: its journal or its lock file is there."""
    try:
        return (path / JOURNAL_FILE).exists() or (path / LOCK_FILE).exists()
    except (OSError, ValueError):  # cannot look (a permission, a NUL): nothing known there
        return False


def config_data_dir(value: str | Path, config_file: str | Path | None) -> Path:
    """The data directory a config's ``engine.data_dir`` names for a command given that config.

    A relative ``data_dir`` is relative to the directory the engine started in, so a command
    given the config from anywhere else (``cockpit kill --config /srv/bot/prod.toml`` typed in
    a hurry from home) looked for the engine in the wrong folder. It names the working
    directory's folder where an engine has used that one (as before: no one's data moves),
    else the one beside the config file where an engine has used that, else the working
    directory's (a new engine's). Absolute paths, and no config file, are taken as written.
    Beside the config is beside the name given and, for a config reached through a symlink
    (``~/prod.toml`` -> ``/srv/bot/prod.toml``), beside the file it names. Where several have
    been used, the one an engine runs on now wins (an old paper run's ./data must not take
    `cockpit kill --config` away from the engine trading beside the config).
    """
    path = Path(value)
    candidates = _config_candidates(path, config_file)
    used = [c for c in candidates if holds_engine_data(c)]
    if not used:
        return path
    return next((c for c in used if _running(c)), used[0])


def _config_candidates(path: Path, config_file: str | Path | None) -> list[Path]:
    """The folders a config's relative ``data_dir`` may name, in order: the working
    directory's, beside the config, beside the file a symlinked config names ([] for an
    absolute path or no config file)."""
    if config_file is None or path.is_absolute():
        return []
    config = Path(config_file)
    candidates = [path, config.parent / path]
    with contextlib.suppress(OSError, RuntimeError, ValueError):  # a loop, a NUL: the name's
        candidates.append(config.resolve().parent / path)
    return candidates


def config_data_dirs_running(value: str | Path, config_file: str | Path | None) -> list[Path]:
    """Each distinct folder ``config_data_dir`` weighs (the working directory's, beside the
    config, beside the file a symlinked config names) that an engine runs on now: more than
    one, and a command given the config reaches only one of them (which one it chose wins by
    the rule above, the others are named so the person can reach them)."""
    out: dict[Path, Path] = {}
    for c in _config_candidates(Path(value), config_file):
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            if _running(c):
                out.setdefault(c.resolve(), c)
    return list(out.values())


def _running(path: Path) -> bool:
    """An engine holds ``path``'s lock now (unknown counts as not)."""
    return bool(lock_holders(path))


def data_dir_elsewhere(value: str | Path, config_file: str | Path | None) -> str | None:
    """Why an engine must not start on the config's relative ``data_dir`` from here, or None.

    Started from another folder than the one it ran in, the engine began a new, empty data
    directory: ACTIVE, no positions, no open orders known, a latched kill switch and the
    breakers' trips left behind in the old one. It stops instead and says where its data is.
    """
    path = Path(value)
    if config_file is None or path.is_absolute() or holds_engine_data(path):
        return None  # its data is here (an engine may run beside the config on its own)
    chosen = config_data_dir(path, config_file)
    if chosen == path:
        return None
    home = chosen.absolute()  # the folder it is relative to (beside the config's file)
    for _ in path.parts:
        home = home.parent
    return (
        f"engine.data_dir {str(value)!r} in {config_file} is relative to the folder the engine "
        f"starts in: {path.absolute()} holds no engine data, but {chosen.absolute()} beside the "
        f"config does (its journal: kill switch, positions, orders); start the engine from {home}, "
        f"pass --data-dir {chosen.absolute()}, or make engine.data_dir an absolute path"
    )


def check_own_dir(path: Path) -> None:
    """Refuse a data directory every user may write into (the others' write bit). The group's
    is left to the owner: with a umask of 002 (user-private groups) a folder that `cockpit data
    download` made is group-writable, and its group is the owner alone."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o002:
        raise DataDirUnsafe(
            f"the data directory {path} is mode {mode:04o}: any user could replace its journal "
            f"or KILL file. Run `chmod o-w {path}` (or `chmod 700 {path}`)"
        )
    # Every directory above it likewise, unless sticky (as /tmp): there any user could move the
    # data directory (or a directory on its way: /shared/alice/data) away and put another (an
    # older copy, with its own anchor) in its place; so could they a link naming it. Those on
    # the path as given (a symlink's directory) and on the real path.
    given = Path(os.path.abspath(path))
    for parent in (*given.parents, *Path(os.path.realpath(path)).parents):
        pmode = stat.S_IMODE(os.stat(parent).st_mode)
        if pmode & 0o002 and not pmode & stat.S_ISVTX:
            what = "parent" if parent == given.parent else "ancestor"
            raise DataDirUnsafe(
                f"the data directory's {what} {parent} is mode {pmode:04o}: any user could "
                f"move {path} away and put another in its place. Run `chmod o-w {parent}`, or "
                "choose a --data-dir elsewhere"
            )


def make_private_dirs(path: Path) -> None:
    """Make ``path`` and every missing parent, each 0700. ``Path.mkdir(parents=True)`` gives the
    parents 0777 less the umask: under a umask of 000 (a container, a service's UMask=) a parent
    any user could write into, who could then swap the data directory out of it."""
    missing: list[Path] = []
    p = Path(path)
    while not os.path.lexists(p) and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            if not d.is_dir():
                raise
    if not missing and not Path(path).is_dir():
        os.mkdir(path, 0o700)  # (what is there is not a directory: the error names it)


def read_small_file(path: str | Path, limit: int = 65536) -> bytes | None:
    """The first ``limit`` bytes of a regular file (a symlink to one included), or None: no
    such file, or not a regular file. Opened without blocking: a FIFO by the name of a pid or
    info file (a `mkfifo` in the data or socket directory) held `cockpit kill` and a second
    engine's refusal for ever, before either said anything."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_pid_file(path: str | Path) -> int | None:
    """The pid a pid file (engine.lock, a socket's .pid) names, or None (see read_small_file;
    also when it holds no pid)."""
    words = (read_small_file(path, 64) or b"").decode("ascii", "replace").split()
    return int(words[0]) if words and words[0].isdigit() else None


def _holder(path: Path) -> str:
    """The pid the lock file names, as text ("unknown" while the holder is still writing it)."""
    pid = read_pid_file(path)
    return "unknown" if pid is None else str(pid)


class DataDirLock:
    """An exclusive, non-blocking OS lock on one data directory, held until :meth:`release`.

    ``flock`` locks belong to an open file description, so a second engine in the same process
    is refused as well as one in another process.
    """

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_FILE
        self._fd: int | None = None  # engine.lock, which records the holder's pid
        self._held: list[int] = []  # the locked directory, then the journal once it exists

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`DataDirInUse` naming the holder (:class:`DataDirUnsafe`
        when any user may write the directory); OSError if the directory cannot be made or the
        file opened. Taking a lock already held is a no-op."""
        if self._fd is not None:
            return
        if not self.data_dir.exists():
            make_private_dirs(self.data_dir)
        check_own_dir(self.data_dir)
        # Locked where no rm can undo it: the directory itself and, when there is one, the
        # journal's inode (another data dir may reach it through a symlink). engine.lock only
        # names the holder; deleting it unlocks nothing.
        held: list[int] = []
        try:
            for target, flags in (
                (self.data_dir, os.O_RDONLY | os.O_DIRECTORY),
                # O_NONBLOCK: a FIFO by the journal's name blocked the open (and the start, a
                # SIGTERM included) for ever; the start then refuses it as no journal.
                (self.data_dir / JOURNAL_FILE, os.O_RDONLY | os.O_NONBLOCK),
            ):
                try:
                    fd = os.open(target, flags | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue  # no journal yet: the directory's lock covers it
                held.append(fd)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            try:
                # Never through a symlink: the pid is written over the file's content (a link
                # planted as engine.lock truncated whatever it pointed at).
                fd = os.open(
                    self.path,
                    os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK,
                    0o600,
                )
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                raise OSError(
                    exc.errno,
                    f"{self.path} is a symbolic link; the engine writes its pid there and does not "
                    "follow links: remove it",
                ) from None
            held.append(fd)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                # A FIFO (a `mkfifo`): no pid could be written there for `cockpit kill` to find.
                raise OSError(
                    errno.EINVAL,
                    f"{self.path} is not a regular file; the engine writes its pid there: "
                    "remove it",
                )
        except BlockingIOError:
            for fd in held:
                os.close(fd)
            raise DataDirInUse(
                f"the data directory {self.data_dir} is in use by another engine "
                f"(pid {_holder(self.path)}, lock {self.path}); stop that engine or choose "
                "another --data-dir"
            ) from None
        except BaseException:
            for fd in held:
                os.close(fd)
            raise
        self._held = held[:-1]
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid is only for the message; the lock itself is held
        self._fd = fd

    def lock_journal(self) -> None:
        """Lock the journal's inode too once it exists (a first start creates it after
        :meth:`acquire`): another data directory reaching it through a symlink is refused."""
        if self._fd is None or len(self._held) > 1:
            return  # not held, or the journal was locked with the directory
        try:
            fd = os.open(self.data_dir / JOURNAL_FILE, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirInUse(
                f"the journal {self.data_dir / JOURNAL_FILE} is in use by another engine; "
                "stop that engine or choose another --data-dir"
            ) from None
        self._held.append(fd)

    def release(self) -> None:
        """Drop the lock (the file stays: unlinking it would let two engines lock two inodes)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)
        held, self._held = self._held, []
        for locked in held:
            os.close(locked)  # closing the last descriptor releases the flock


def lock_holders(data_dir: Path) -> set[int] | None:
    """The pids that hold ``data_dir``'s engine lock now, from the kernel's /proc/locks (an
    empty set: none does; None: this system cannot tell).

    A pid written in a file (engine.lock, the socket's .pid) outlives a crashed engine and may
    since belong to another process: only the lock tells whether it is still the engine.
    """
    try:
        st = os.stat(data_dir)
    except OSError:
        return set()  # no directory, no engine on it
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    holders: set[int] = set()
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:3366971 0 EOF" (a waiter's line has "->")
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK" or parts[3] != "WRITE":
            continue
        try:
            major, minor, inode = parts[5].split(":")
            where = (int(major, 16), int(minor, 16), int(inode))
            pid = int(parts[4])
        except ValueError:
            continue
        if where == want:
            if pid <= 0:
                return None  # a holder outside this pid namespace: cannot tell
            holders.add(pid)
    return holders


def open_new(path: Path, mode: int = 0o600) -> int:
    """A write descriptor on a new, empty file at ``path`` (a temporary name), replacing what
    is there without following it: a symlink planted under a predictable name must not make
    the engine truncate and write the file it points at."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def write_durably(
    path: Path,
    content: str | bytes,
    *,
    mode: int = 0o600,
    sync_dir: bool = True,
    owner: tuple[int, int] | None = None,
) -> None:
    """Replace ``path`` with ``content`` atomically (a reader sees the old or the new file,
    never half of one) and fsync the file and (unless ``sync_dir`` is off, for a caller that
    syncs the directory once after several files) its directory, so it survives a power cut.
    ``owner``: (uid, gid) the file belongs to before it appears (root writing for a user)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = open_new(tmp, mode)
        try:
            if owner is not None:
                os.fchown(fd, *owner)
            view = memoryview(content.encode("utf-8") if isinstance(content, str) else content)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if not sync_dir:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_kill_level(path: Path) -> str | None:
    """The level a KILL file demands: None when nothing by that name is there.

    Anything by that name counts, whatever it is (a dangling symlink, a directory, a FIFO):
    fail closed at ``halt`` without opening what is not a regular file (opening a FIFO would
    block the engine). A regular file, or a symlink to one (``ln -s ~/KILL.flatten KILL`` names
    the level its target says), is read non-blocking and only its first bytes: the first word
    outside a comment (# to the end of its line) names the level (entries, halt, flatten; a BOM
    and case are fine); anything else, or nothing, means ``halt``.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError:
        return KillLevel.HALT
    if stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(path)  # what the link points at
        except OSError:
            return KillLevel.HALT  # dangling, a loop: still something by that name
    if not stat.S_ISREG(st.st_mode):
        return KillLevel.HALT
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            # Swapped for something else between the look and the open: not read.
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return KillLevel.HALT
            head = os.read(fd, KILL_READ_BYTES)
        finally:
            os.close(fd)
    except OSError:
        return KillLevel.HALT
    text = head.decode("utf-8", "replace").lstrip("\ufeff")
    if len(head) == KILL_READ_BYTES and text and not text[-1].isspace():
        text = text[: -len(text.split()[-1])]  # a word cut at the end is not read as a level
    # A comment runs from # to the end of its line: "# entries" above "flatten" is not a level.
    words = [w for line in text.splitlines() for w in line.partition("#")[0].split()]
    word = words[0].lower() if words else ""
    return word if word in KILL_LEVELS else KillLevel.HALT


def raise_kill_file(path: Path, level: str) -> tuple[bool, str]:
    """Make the KILL file demand at least ``level``, never less than it already does, and
    never replace what is not a regular file. Returns (it now demands at least ``level``,
    a sentence saying what was done)."""
    try:
        st: os.stat_result | None = os.lstat(path)  # other errors (a bad path) propagate
    except FileNotFoundError:
        st = None
    if st is not None:
        current = read_kill_level(path) or KillLevel.HALT
        if kill_at_least(current, level):
            return True, f"{path} already demands {current}"
        if not stat.S_ISREG(st.st_mode):
            return False, f"{path} is not a regular file; left as it is (it holds {current})"
    write_durably(path, level + "\n", owner=_owner_for_root(path.parent))
    return True, f"wrote {path} (level {level})"


def _owner_for_root(directory: Path) -> tuple[int, int] | None:
    """Root (`sudo cockpit kill`: the engine's socket admits its own user only, so root's kill
    falls back to the KILL file) writing into a user's data directory: the file is made the
    directory owner's. A root-owned 0600 file is one the engine cannot read, and an unreadable
    KILL file counts as `halt`: a `--level flatten` reported written flattened nothing."""
    if os.geteuid() != 0:
        return None
    st = os.stat(directory)
    return None if st.st_uid == 0 else (st.st_uid, st.st_gid)
