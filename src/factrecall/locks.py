"""One writer per directory, and no output over an input.

`directory_lock(directory, what)` holds an OS lock (`flock`) on `directory/.lock` for as long as a
command writes the directory: a second writer is refused at once, naming the holder's pid. The
kernel drops the lock when its process dies (SIGKILL included), so a stale lock file never blocks;
on a normal exit the file is removed, so a finished directory holds only its artifacts.

`refuse_overlap(out, inputs)` refuses an output directory that is, contains or lies inside a
directory the command reads, before anything is written or deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from factrecall.errors import UserError
from factrecall.layout import LOCK


def _same_file(path: Path, fd: int) -> bool:
    """Whether `path` still names the open file `fd` (a released lock file may be unlinked meanwhile)."""
    try:
        a, b = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


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
            f = open(path, "a+", encoding="utf-8")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                pid, _, holder = f.read().strip().partition("\n")
                f.close()
                raise UserError(f"another {holder or 'process'} is writing {directory} (pid {pid or '?'}); "
                                f"wait for it or use another --out") from None
            if _same_file(path, f.fileno()):
                break
            f.close()  # its holder released and removed it between our open and flock: take the new one
    except OSError as e:
        raise UserError(f"cannot write {directory} ({e.strerror or e}); give a directory you can write to "
                        f"as --out") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n{what}")  # the holder, as a refused writer names it
        f.flush()
        yield path
    finally:
        if _same_file(path, f.fileno()):  # removed while held, so a later writer never takes an orphan
            with contextlib.suppress(OSError):
                path.unlink()
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
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
