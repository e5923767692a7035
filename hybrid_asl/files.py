"""Reading and writing files safely: the one home of each promise in README 'Trust and safety' about files.

  - reads:   a path must be a regular file before it is opened (a FIFO, socket or device would block a read for
             ever); checkpoints and arrays never run code (weights_only / allow_pickle=False, where they are read)
  - writes:  atomic_write (temporary name, fsync, rename) with one-line errors naming the path and what to do;
             write_json is strict JSON (NaN/inf become null); leftovers of a killed writer are removed at the next
             start; an output path can never be one of the command's own inputs, or empty
"""
import csv
import difflib
import errno
import io
import json
import math
import os
import re
import shlex
import shutil
import stat
from pathlib import Path

from hybrid_asl.errors import DataError


def quote(path):
    """A path as it would be typed into a shell: quoted when it holds spaces or other special characters."""
    return shlex.quote(str(path))


# ----------------------------------------------------------------------------------------------------------------
# Reading

def not_a_regular_file(path):
    """None when path is a regular file (symlinks followed); else why it is not, in a few words.

    Only stat is called, never open: opening a FIFO for reading blocks until a writer appears."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "not found"
    except NotADirectoryError:
        return "not found (a part of the path is a file)"
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    return f"is {kind}, not a regular file"


def require_regular_file(path, what, hint=""):
    """Raises DataError('<what> <path> <why>; <hint>') unless path is a regular file."""
    why = not_a_regular_file(path)
    if why is not None:
        raise DataError(f"{what} {path} {why}" + (f"; {hint}" if hint else ""))


def read_text(path, what, hint=""):
    """The text of a regular file, or a DataError naming the file."""
    require_regular_file(path, what, hint)
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {what} {path} ({e}); check the file and its permissions")


# ----------------------------------------------------------------------------------------------------------------
# Writing

_TMP = re.compile(r"\.tmp(\d+)$")

# What to do about a write that failed, by errno
_WRITE_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or choose another folder",
    errno.EDQUOT: "the disk quota is exceeded: free some space or choose another folder",
    errno.EFBIG: "the file is larger than this system allows (disk or file-size limit): free space or choose "
                 "another folder",
    errno.EROFS: "the folder is on a read-only file system: choose another folder",
    errno.EACCES: "the folder is not writable: choose another folder or fix its permissions",
    errno.EPERM: "the folder is not writable: choose another folder or fix its permissions",
    errno.ENOTDIR: "a part of the path is a file where a folder is needed: choose another path",
    errno.EISDIR: "a folder is in the way where a file is needed: choose another path",
    errno.ENOENT: "its folder does not exist (was it deleted while running?)",
}


def write_error(path, error):
    """An OSError from writing `path` as a one-line DataError: the path, the system's reason and what to do."""
    hint = _WRITE_HINTS.get(error.errno, "check the folder")
    kept = "; the previous file is unchanged" if os.path.isfile(path) else ""
    return DataError(f"cannot write {path}: {error.strerror or error}; {hint}{kept}")


def atomic_write(path, write, mode):
    """write(file) into a temporary name, then rename it over path. On any failure (disk full, Ctrl-C) the
    previous file stays as it was and the temporary one is removed; an OSError becomes a DataError naming path."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise


def atomic_write_text(path, text):
    atomic_write(path, lambda f: f.write(text), "w")


def atomic_write_bytes(path, data):
    atomic_write(path, lambda f: f.write(data), "wb")


def csv_text(rows, fieldnames):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def finite_json(value):
    """A copy of value in which every NaN or infinite float is None (JSON null): numbers stay numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def json_text(obj):
    """Strict JSON (allow_nan=False): a reader in any language can parse what these tools write."""
    return json.dumps(finite_json(obj), indent=2, allow_nan=False) + "\n"


def write_json(path, obj):
    atomic_write_text(path, json_text(obj))


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(folder):
    """Removes `*.tmp<pid>` files and folders that a killed writer (kill -9, power loss) left in folder: those whose
    process is gone. Returns their names. A live process's temporary is left alone: it may still be writing."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = _TMP.search(name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        path = os.path.join(folder, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
            removed.append(name)
        except OSError:
            pass
    return removed


def make_folder(path, flag):
    """mkdir -p with one-line errors: a file in the way, a read-only or unwritable parent."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{flag} {path} is a file, not a folder; choose another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DataError(f"{flag} {path}: a part of the path is a file, not a folder; choose another path")
    except OSError as e:
        hint = _WRITE_HINTS.get(e.errno, "choose another folder")
        raise DataError(f"{flag} {path} cannot be created: {e.strerror}; {hint}")
    if not os.access(path, os.W_OK | os.X_OK):
        raise DataError(f"{flag} {path} is not writable; choose another folder or fix its permissions")
    return path


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_output_path(path, flag, inputs=()):
    """An output path must be a path, and never one of the command's own input files (a typo such as
    `--output_csv best.pt` would otherwise replace the checkpoint). inputs: (flag, path) pairs, paths may be None."""
    if path is None:
        return
    if not str(path).strip():
        raise DataError(f"{flag} is empty; give a file path")
    for input_flag, input_path in inputs:
        if input_path is not None and os.path.exists(input_path) and os.path.exists(path) \
                and _same_file(path, input_path):
            raise DataError(f"{flag} {path} is the {input_flag} input of this command; writing it would destroy "
                            "that input: choose another path")
    if os.path.isdir(path):
        raise DataError(f"{flag} {path} is a folder; give a file path")


def closest_name(folder, expected):
    """The name in folder most like `expected` (difflib), or None: what a user most likely meant when the file a
    tool looked for is not there (05237.mp4 vs 5237.mp4, _landmark.npy vs _landmarks.npy)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    match = difflib.get_close_matches(expected, names, n=1, cutoff=0.3)
    return match[0] if match else None


def few_found_hint(found, listed, folder, expected):
    """A hint line when a tool found none or few (under 20 %) of the files a split names: the folder it searched,
    the name it expected for one id, and the closest name it saw there. None when enough were found."""
    if listed == 0 or found >= 0.2 * listed:
        return None
    closest = closest_name(folder, expected)
    seen = (f"the closest name there is {closest}" if closest else
            "the folder is empty" if os.path.isdir(folder) and not os.listdir(folder) else
            "the folder does not exist" if not os.path.isdir(folder) else "nothing there looks like it")
    return (f"hint: found {found} of the {listed} files the split names; searched {quote(folder)} for names like "
            f"{expected}; {seen}")
