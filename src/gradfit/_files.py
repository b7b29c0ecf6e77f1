"""Writing outputs safely: check the place first, write whole files, all or nothing."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

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
    """An output file path whose folder exists; refuses folders. None passes through."""
    if path is None:
        return None
    out = Path(path)
    if out.is_dir():
        raise OptionError(f"{flag} '{out}' is a folder; give a file name.")
    if not out.parent.is_dir():
        raise OptionError(f"{flag} '{out}': the folder '{out.parent}' does not exist.")
    return out


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


def save_atomic(path, write: Callable[[str], object]) -> None:
    """Run ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise OptionError(f"Cannot write '{path}': {e.strerror}.") from None
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary new file would be, not mkstemp's 0600
        os.replace(tmp, path)
    except OSError as e:
        raise OptionError(f"Cannot write '{path}': {e.strerror}.") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
