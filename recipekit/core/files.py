"""Files written whole or not at all (temp file + rename), readable by teammates (the user's umask)."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def usual_mode(st: os.stat_result) -> int:
    """The mode a plain open() or mkdir() gives under the user's umask (executables keep their x bits)."""
    executable = stat.S_ISDIR(st.st_mode) or st.st_mode & 0o111
    return (0o777 if executable else 0o666) & ~umask()


def _entries(folder: Path) -> dict[str, int]:
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            try:
                out[path] = os.lstat(path).st_ino
            except OSError:
                pass
    return out


@contextmanager
def follow_umask(folder: Path):
    """Every file and folder the block creates or replaces under `folder` (and `folder` itself, when the block
    creates it) ends with the mode a plain open() or mkdir() would give under the user's umask.

    Libraries that write whole files through a temporary one keep the temporary file's private mode: safetensors
    0.8's save_file (model.safetensors, adapters, checkpoints) renames a 0600 file into place
    (safetensors/safetensors#782), as tempfile.mkstemp and mkdtemp (0700) do. What was there before the block,
    a user's own files included, keeps its mode.
    """
    folder = Path(folder)
    existed = folder.exists()
    before = _entries(folder) if existed else {}
    try:
        yield
    finally:
        changed = [path for path, inode in _entries(folder).items() if before.get(path) != inode]
        for path in changed + ([] if existed else [str(folder)]):
            try:
                st = os.lstat(path)
                if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) != usual_mode(st):
                    os.chmod(path, usual_mode(st))
            except OSError:
                pass  # removed meanwhile, or not ours to change


@contextmanager
def atomic_file(path: Path, newline: str | None = None):
    """A text file to write that appears at `path` only once the block ends without an error: it is written to a
    temporary file in the same folder, then renamed, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file 0600; a teammate sharing the runs folder reads what a plain open() would allow.
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as f:
        f.write(text)


def write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_predictions(path: Path, frame) -> None:
    write_atomic(path, frame.to_csv(index=False))
