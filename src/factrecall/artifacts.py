"""Reading and writing run artifacts safely.

Every write goes to a temporary name in the destination folder and is renamed into place
(`os.replace`), so a crash leaves the previous file or none, never a truncated one. Files
we read are JSON, JSONL or safetensors only: nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from factrecall.errors import UserError

_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def _temporary_beside(path: Path, suffix: str = "") -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the artifact gets a normal file's mode
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def is_directory(path: str | Path) -> bool:
    """Whether `path` names a directory; a name the OS cannot even look up (e.g. too long) names none."""
    try:
        return Path(path).is_dir()
    except OSError:
        return False


def write_bytes(path: Path, data: bytes) -> None:
    with _temporary_beside(Path(path)) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def dumps_json(obj: Any) -> str:
    """Canonical JSON text (stable key order as given, UTF-8, trailing newline)."""
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def as_json(obj: Any) -> Any:
    """`obj` as it reads back from a JSON file (tuples become lists), for comparing records."""
    return json.loads(json.dumps(obj))


def digest(obj: Any) -> str:
    """sha256 (hex) of `obj`'s canonical JSON (sorted keys): the cache key of a step or a sweep point."""
    return hashlib.sha256(json.dumps(as_json(obj), sort_keys=True).encode()).hexdigest()


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, dumps_json(obj).encode())


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows)
    write_bytes(path, text.encode())


def append_jsonl(path: Path, row: dict) -> None:
    """Append one line to a log (a resumed run truncates its log back to the checkpoint's length)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")


def read_json(path: Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what}: {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{what}: {path} is not valid JSON ({e}); regenerate or fix the file") from None


def json_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every non-blank line of JSON Lines text. Lines end at "\n" only (with an optional
    "\r" before it), as the format defines them: U+2028 or U+0085 inside a JSON string is text, not a line end."""
    return [(number, line) for number, line in enumerate(text.split("\n"), start=1) if line.strip()]


def has_lone_surrogate(value) -> bool:
    """Whether a parsed JSON value holds a string with a lone UTF-16 surrogate (JSON's "\\ud800"), which no
    UTF-8 text can hold and a tokenizer cannot encode."""
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(map(has_lone_surrogate, value))
    return False


def read_jsonl_numbered(path: Path, hint: str = "regenerate the file") -> list[tuple[int, dict]]:
    """(line number, row) of every non-blank line of a JSONL file (`json_lines`); a line that is not a JSON object
    or holds a lone surrogate, or a file that is not UTF-8, is a `UserError` naming the file and line (and
    `hint`, what to do)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    rows = []
    for number, line in json_lines(text):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{number}: malformed JSON line ({e.msg}); {hint}") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}; {hint}")
        if has_lone_surrogate(row):
            raise UserError(f"{path}:{number}: a string holds a lone surrogate escape (\\ud800–\\udfff), which is "
                            f"no Unicode text; {hint}")
        rows.append((number, row))
    return rows


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file (`read_jsonl_numbered` without the line numbers)."""
    return [row for _, row in read_jsonl_numbered(path)]


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file atomically; the same tensors and metadata give the same bytes
    (`canonical_header`), so resumed and repeated runs hash alike."""
    with _temporary_beside(Path(path), ".safetensors") as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        canonical_header(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # safetensors recreates the file with mode 0600


def canonical_header(path: Path) -> None:
    """Rewrite a safetensors file's header in one fixed order: `__metadata__` first with its keys sorted,
    then the tensors by data offset. safetensors writes metadata in hash-map order, which changes from
    process to process, so equal tensors and metadata would otherwise hash differently."""
    path = Path(path)
    with open(path, "r+b") as f:
        length = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(length))
        metadata = header.pop("__metadata__", None)
        ordered = {} if metadata is None else {"__metadata__": dict(sorted(metadata.items()))}
        ordered.update(sorted(header.items(), key=lambda item: (item[1]["data_offsets"][0], item[0])))
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
        text += b" " * (-len(text) % 8)  # safetensors pads its header to 8 bytes with spaces
        if len(text) == length:  # the usual case: the same bytes in another order
            f.seek(8)
            f.write(text)
            return
    rewritten = path.with_name(f"{path.name}.canonical.tmp")
    try:
        with open(path, "rb") as source, open(rewritten, "wb") as target:
            target.write(len(text).to_bytes(8, "little") + text)
            source.seek(8 + length)
            shutil.copyfileobj(source, target, 1 << 24)
        os.replace(rewritten, path)
    finally:
        rewritten.unlink(missing_ok=True)


def load_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what}: {path} does not exist")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise UserError(f"{what}: {path} is not a readable safetensors file ({e})") from None


def sha256_files(paths: Iterable[Path]) -> str:
    """One hash over the bytes of several files, in the given order (names not included)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _usual_modes(root: Path) -> None:
    """Give `root` and everything in it the modes a plain mkdir and open give under the umask (tempfile
    makes the directory 0700 and safetensors its files 0600, which colleagues could not read)."""
    for directory, _, names in os.walk(root):
        os.chmod(directory, 0o777 & ~_UMASK)
        for name in names:
            file = os.path.join(directory, name)
            if not os.path.islink(file):
                os.chmod(file, 0o666 & ~_UMASK)


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Build a directory under a temporary name; on success it replaces `path` whole, its directories
    and files with the umask's modes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _usual_modes(tmp)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
