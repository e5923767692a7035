"""What every tool promises about the files it is given and the files it writes (README 'Trust and safety').

One home for each mechanism, so that the promise holds everywhere, not case by case:
  - reads:   a path must be a regular file before it is opened (a FIFO, socket or device would block a read for
             ever); checkpoints and arrays never run code (weights_only / allow_pickle=False, at their call sites)
  - writes:  atomic_write (temporary name, fsync, rename) with one-line errors naming the path and what to do;
             write_json is strict JSON (NaN/inf become null); leftovers of a killed writer are removed at the next
             start; an output path can never be one of the command's own inputs, or empty
  - runs:    RunLock keeps one run per output folder (a stale lock of a dead process is taken over)
  - stops:   SIGTERM is handled like Ctrl-C, and a second Ctrl-C/SIGTERM ends the process at once
  - flags:   int_range / float_range give every numeric flag an argparse error outside its range
"""
import argparse
import errno
import json
import math
import os
import re
import shlex
import signal
import socket
import stat
import sys
import time
from pathlib import Path


class DataError(Exception):
    """A problem with the user's data, flags or files that one line can explain; the CLIs print it and exit 2."""


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
                import shutil
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


# ----------------------------------------------------------------------------------------------------------------
# One run per output folder

class RunLock:
    """`<folder>/.lock` holds the pid, host and command of the run writing the folder. A second run into the same
    folder is refused with the holder's pid; a lock left by a process that no longer exists on this host (kill -9,
    a crash) is taken over with a warning. Released when the run ends, however it ends."""
    NAME = ".lock"

    def __init__(self, folder):
        self.path = Path(folder) / self.NAME
        self.held = False

    def _holder(self):
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self):
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(sys.argv)}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:  # being written this very moment, or garbage: look again
                    time.sleep(0.05)
                    holder = self._holder()
                pid, host = (holder or {}).get("pid"), (holder or {}).get("host")
                if isinstance(pid, int) and host == me["host"] and not pid_alive(pid):
                    print(f"warning: {self.path.parent} was locked by process {pid}, which no longer runs (killed or "
                          "crashed); taking the folder over")
                    self.path.unlink(missing_ok=True)
                    continue
                if holder is None:
                    print(f"warning: {self.path} is unreadable; taking the folder over")
                    self.path.unlink(missing_ok=True)
                    continue
                where = f"process {pid}" + ("" if host == me["host"] else f" on {host}")
                raise DataError(f"{self.path.parent} is in use by another run ({where}, started "
                                f"{holder.get('started', '?')}: {holder.get('command', '?')[:120]}); wait for it to "
                                f"finish, stop it, or choose another --output_dir (delete {self.path} only if that "
                                "run is gone)")
            except OSError as e:
                raise write_error(self.path, e)
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me))
            self.held = True
            return self
        raise DataError(f"cannot lock {self.path.parent}: the lock keeps changing; is another run starting there?")

    def release(self):
        if self.held:
            holder = self._holder()
            if holder is None or holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# ----------------------------------------------------------------------------------------------------------------
# Stopping: Ctrl-C and SIGTERM

class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler's time limit, `kill`, docker stop) handled like Ctrl-C: the tool stops between
    writes, so every file it wrote is whole."""
    exit_code = 143  # 128 + SIGTERM, what a shell reports for a terminated process


_stopping = False


def _stop(signum, frame):
    global _stopping
    if _stopping:  # the second Ctrl-C/SIGTERM: leave now (every write is atomic, nothing is half-written)
        os._exit(128 + signum)
    _stopping = True
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def install_stop_handlers():
    """SIGTERM stops a tool like Ctrl-C; a second signal while it is stopping ends the process at once. A process
    started with SIGINT ignored (a background job of a non-interactive shell) keeps ignoring it."""
    import threading
    global _stopping
    _stopping = False
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set from there
        return
    signal.signal(signal.SIGTERM, _stop)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _stop)


def exit_code(stop):
    return getattr(stop, "exit_code", 130)  # Ctrl-C: 130; SIGTERM: 143


def run_cli(main, argv=None, interrupted="interrupted; run the same command again to continue"):
    """Runs a command-line main(argv): a DataError becomes one `error:` line on stderr and exit code 2, Ctrl-C or
    SIGTERM one line and 130/143, never a traceback."""
    install_stop_handlers()
    try:
        return main(argv)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print(f"\n{interrupted}", file=sys.stderr)
        return exit_code(stop)


# ----------------------------------------------------------------------------------------------------------------
# Flags: every number has a range

def int_range(low, high=None):
    """argparse type: an integer in [low, high] (high None: no upper bound)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"must be {'>= ' + str(low) if high is None else f'in [{low}, {high}]'}, got {text}")
        return value
    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def float_range(low, high, low_open=False, high_open=False):
    """argparse type: a finite number in the interval low..high (either end open or closed)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number")
        inside = math.isfinite(value) and (value > low if low_open else value >= low) and \
            (value < high if high_open else value <= high)
        if not inside:
            raise argparse.ArgumentTypeError(
                f"must be a finite number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}, "
                f"got {text}")
        return value
    parse.__name__ = "number"
    return parse


def available_memory_bytes():
    """Memory this process could still allocate: MemAvailable from /proc/meminfo, else physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
