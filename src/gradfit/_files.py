"""Writing outputs safely: check the place first, write whole files, all or nothing."""

from __future__ import annotations

import glob
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from .errors import OptionError


def check_out_dir(path: str | os.PathLike, name: str) -> Path:
    """An output folder that exists as a folder or can be made; refuses files and unwritable places."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OptionError(f"{name} '{out}' is an existing file; give a folder to write into.")
    existing = next(p for p in (out, *out.parents) if p.exists())  # "." or "/" at worst
    if not existing.is_dir():
        raise OptionError(f"{name} '{out}' cannot be made: '{existing}' is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OptionError(f"{name} '{out}' is not writable; choose a folder you can write to.")
    return out


def check_out_file(path, flag: str):
    """An output file path whose folder exists; refuses folders and files that are neither regular files nor
    streams (a character device such as /dev/stdout, or a FIFO: written to directly). A symbolic link is
    followed: its target is written, the link stays. None passes through."""
    if path is None:
        return None
    out = Path(path)
    target = _target(out, flag)
    if target.is_dir():
        raise OptionError(f"{flag} '{out}' is a folder; give a file name.")
    if not target.parent.is_dir():
        raise OptionError(f"{flag} '{out}': the folder '{target.parent}' does not exist.")
    if target.exists() and not (target.is_file() or _is_stream(target)):
        raise OptionError(f"{flag} '{out}' is a {_kind(target)}, not a file: give a file name.")
    return out


def _target(path: Path, flag: str) -> Path:
    """Where writing ``path`` lands: a symbolic link's final target (a stream as named: /dev/stdout's target,
    /proc/self/fd/1, names no file)."""
    try:
        if path.exists() and _is_stream(path):
            return path
        return path.resolve()
    except (RuntimeError, OSError):  # a loop of links (RuntimeError up to Python 3.12, OSError after)
        raise OptionError(f"{flag} '{path}' is a loop of symbolic links; give a file name.") from None


def _is_stream(path: Path) -> bool:
    mode = path.stat().st_mode
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def _kind(path: Path) -> str:
    mode = path.stat().st_mode
    return "block device" if stat.S_ISBLK(mode) else "socket" if stat.S_ISSOCK(mode) else "special file"


def check_animation(path, flag: str):
    """An animation's path: .gif, or .mp4 when ffmpeg is installed. None passes through."""
    out = check_out_file(path, flag)
    if out is None:
        return None
    if out.suffix.lower() not in (".gif", ".mp4"):
        raise OptionError(f"{flag} '{out}': an animation is written as .gif or .mp4.")
    if out.suffix.lower() == ".mp4":
        from matplotlib.animation import FFMpegWriter

        if not FFMpegWriter.isAvailable():
            raise OptionError(f"{flag} '{out}': writing MP4 needs ffmpeg, which is not installed; use .gif.")
    return out


def write_atomic(path, text: str) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    save_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


TEMP_TAG = ".gradfit-tmp-"  # in the name of a file being written: .NAME.gradfit-tmp-PID-XXXX.SUFFIX


def save_atomic(path, write: Callable[[str], object]) -> None:
    """Run ``write(tmp)`` on a temporary file beside ``path``'s target, then rename it into place: readers never
    see half a file, and a symbolic link stays a link (its target is replaced). A stream (/dev/stdout, a FIFO)
    is written directly, from the finished temporary file. Temporary files that a killed run left behind (their
    process is gone) are removed first."""
    path = Path(path)
    target = _target(path, f"'{path}'")
    _remove_stale(target)
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name}{TEMP_TAG}{os.getpid()}-",
            suffix=target.suffix,
            dir=target.parent if not (target.exists() and _is_stream(target)) else None,
        )
        os.close(fd)
    except OSError as e:
        raise OptionError(f"Cannot write '{path}': {e.strerror}.") from None
    try:
        write(tmp)
        if target.exists() and _is_stream(target):
            with open(tmp, "rb") as source, open(target, "wb") as stream:
                shutil.copyfileobj(source, stream)
            return
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary new file would be, not mkstemp's 0600
        os.replace(tmp, target)
    except OSError as e:
        raise OptionError(f"Cannot write '{path}': {e.strerror}.") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _remove_stale(target: Path) -> None:
    """Remove .NAME.gradfit-tmp-PID-* files beside ``target`` whose writing process no longer runs."""
    folder = target.parent
    if not folder.is_dir():
        return
    for leftover in folder.glob(f".{glob.escape(target.name)}{TEMP_TAG}*"):
        pid = leftover.name[len(target.name) + 1 + len(TEMP_TAG) :].split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            try:
                leftover.unlink()
            except OSError:
                pass


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def staged(out: Path | None):
    """Yield a scratch folder inside ``out``; move its files into ``out`` only if the block succeeds."""
    if out is None:
        yield None
        return
    existed = out.is_dir()
    try:
        out.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".gradfit-", dir=out))
    except OSError as e:
        raise OptionError(f"Cannot write to '{out}': {e.strerror}. Choose a folder you can write to.") from None
    try:
        yield scratch
        for f in sorted(scratch.iterdir()):
            os.replace(f, out / f.name)
    except BrokenPipeError:  # the reader of our output went away (gradfit demo | head): not a folder's fault
        raise
    except OSError as e:
        raise OptionError(f"Cannot write to '{out}': {e.strerror}. Nothing was written.") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if not existed and not any(out.iterdir()):
            out.rmdir()
