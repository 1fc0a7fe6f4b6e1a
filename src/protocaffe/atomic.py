"""Publishing files atomically: a file appears complete, or the previous one stays.

Every file protocaffe writes (model.py, the weights, the manifest, pictures, reports,
caffemodels) goes through `atomic_write`, so a run that fails or is killed part way leaves what
was there before and no debris.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _anonymous_file(directory: Path) -> int | None:
    """A file in `directory` with no name (Linux O_TMPFILE): if the process dies, even by
    SIGKILL, the kernel frees it and nothing is left behind. None where that is unsupported."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(directory, flag | os.O_WRONLY, 0o666)
    except OSError:  # a file system or kernel without O_TMPFILE
        return None


def _name_anonymous_file(fd: int, name: Path) -> None:
    """linkat(AT_SYMLINK_FOLLOW) through /proc/self/fd; os.link uses plain link(), which does
    not follow the magic link, unless it is given a directory fd."""
    proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.link(str(fd), name, src_dir_fd=proc, follow_symlinks=True)
    finally:
        os.close(proc)


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a path to write in place of `path`; it replaces `path` only if the body succeeds.

    Nest two of these to publish two files together: both are written in full before either
    is renamed. On Linux the data goes to an unnamed file that gets a (hidden) name only just
    before the rename, so a run killed part way leaves the old file and no debris; elsewhere
    it goes to a hidden temporary file next to `path`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _anonymous_file(path.parent)
    if fd is not None:
        try:
            yield Path(f"/proc/self/fd/{fd}")
            tmp = path.parent / f".{path.name}.{os.getpid()}.{fd}.tmp"
            _name_anonymous_file(fd, tmp)
            try:
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        finally:
            os.close(fd)
        return
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp_path = Path(name)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_files(paths: Sequence[Path], remove: Sequence[Path] = ()) -> Iterator[list[Path]]:
    """`atomic_write` for a set of files that belong together: yield a temporary path for each
    of `paths`; only if the body succeeds do they replace theirs (the last one last), and then
    the files in `remove` (an earlier set's that this one does not have) are deleted.

    A failure leaves the previous set as it was, leftovers included."""
    with ExitStack() as stack:
        # Entered first, left last: paths[0] is renamed once all the others are in place.
        tmps = [stack.enter_context(atomic_write(path)) for path in paths]
        yield tmps
    for path in remove:
        path.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
