"""One writer per directory, and no output over an input.

`directory_lock(directory, what)` holds an OS lock (`flock`) on `directory/.lock` for as long as a
command writes the directory: a second writer is refused at once, naming the holder's pid. The
kernel drops the lock when its process dies (SIGKILL included), so a stale lock file never blocks;
on a normal exit the file is removed, so a finished directory holds only its artifacts.

The lock file is opened without following a link (`O_NOFOLLOW`), and only a file this process created
is ever written: a `.lock` that is a symlink, FIFO or directory is refused, and a stale one (its holder
died) is removed and replaced, never written into, so a folder from someone else cannot aim the lock at
another file. Only the file this process holds is ever removed.

`refuse_overlap(out, inputs)` refuses an output directory that is, contains or lies inside a
directory the command reads, before anything is written or deleted; `PACKAGE` is one such input for
a command that reads the package's own files (its pools).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from factrecall.errors import UserError
from factrecall.layout import LOCK

PACKAGE = Path(__file__).resolve().parent  # the installed factrecall (in an editable install, the checkout's)
_OPEN = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # O_NONBLOCK: a FIFO never blocks the open
_NOT_A_FILE = (errno.ELOOP, errno.EISDIR, errno.ENXIO)  # a symlink, a directory, a socket


def _same_file(path: Path, fd: int) -> bool:
    """Whether `path` still names the open file `fd` (a released lock file may be unlinked meanwhile)."""
    try:
        a, b = os.lstat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _open_lock(path: Path) -> tuple[int, bool]:
    """(descriptor of the regular file `path`, whether this call created it); anything else is refused."""
    while True:
        try:
            return os.open(path, _OPEN | os.O_CREAT | os.O_EXCL, 0o666), True
        except FileExistsError:
            pass
        try:
            fd = os.open(path, _OPEN)
        except FileNotFoundError:
            continue  # its holder removed it meanwhile: create it
        except OSError as e:
            if e.errno not in _NOT_A_FILE:
                raise
            break
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd, False
        os.close(fd)
        break
    raise UserError(f"{path} is not a lock file (a symlink, FIFO or directory); factrecall never writes through "
                    f"it: delete it and run again")


def _holder(fd: int) -> tuple[str, str]:
    """(pid, name) of the writer that holds the lock file `fd`, as it wrote them ("?", "process" if unreadable)."""
    pid, _, holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip().partition("\n")
    return (pid if pid.isdigit() else "?"), (holder if holder.isprintable() and holder else "process")


@contextlib.contextmanager
def directory_lock(directory: Path, what: str) -> Iterator[Path]:
    """Hold `directory/.lock` (created with the directory if absent); yields the lock file's path.

    `what` names this writer in the lock file, so a refused one reads "another <what> is writing
    <directory> (pid N)".
    A directory this call created is removed again if it is still empty on exit."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UserError(f"--out {directory} is a file; give a directory")
    path = directory / LOCK
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd, new = _open_lock(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid, holder = _holder(fd)
                os.close(fd)
                raise UserError(f"another {holder} is writing {directory} (pid {pid}); "
                                f"wait for it or use another --out") from None
            if new and _same_file(path, fd):
                break
            if _same_file(path, fd):  # a stale lock file, held now: removed, and a file of our own made
                path.unlink()
            os.close(fd)  # else its holder released and removed it between our open and flock: take the new one
    except OSError as e:
        raise UserError(f"cannot write {directory} ({e.strerror or e}); give a directory you can write to "
                        f"as --out") from None
    try:
        os.write(fd, f"{os.getpid()}\n{what}".encode())  # the holder, as a refused writer names it
        yield path
    finally:
        if _same_file(path, fd):  # removed while held, so a later writer never takes an orphan
            with contextlib.suppress(OSError):
                path.unlink()
        fcntl.flock(fd, fcntl.LOCK_UN)  # for every copy of the descriptor (a forked child's too)
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                directory.rmdir()  # only succeeds when nothing was written


def refuse_overlap(out: Path, inputs: Iterable[tuple[str, Path | str | None]], command: str) -> None:
    """A UserError when the output directory `out` is, contains or lies inside one of `inputs`
    ((what, directory) pairs, e.g. ("data directory", DATA); a None directory is skipped)."""
    target = Path(out).resolve()
    for what, source in inputs:
        if source is None:
            continue
        source = Path(source).resolve()
        if target == source:
            relation = f"is the {what}"
        elif source.is_relative_to(target):
            relation = f"contains the {what} {source}"
        elif target.is_relative_to(source):
            relation = f"lies inside the {what} {source}"
        else:
            continue
        raise UserError(f"--out {out} {relation} that {command} reads; writing there could destroy it, "
                        f"so choose an --out outside it")
