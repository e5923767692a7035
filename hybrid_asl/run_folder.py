"""The run folder: one run at a time in it, never trained over by accident, summary.csv, and where training ran.

    RUN/ best.pt last.pt args.json label_mapping.json summary.csv metrics.json curves.png (.lock while running)
"""
import json
import os
import socket
import sys
import time
from pathlib import Path

from hybrid_asl.errors import DataError
from hybrid_asl.files import atomic_write_text, csv_text, pid_alive, quote, remove_stale_temporaries, write_error

RUN_FILES = ("best.pt", "last.pt", "args.json", "label_mapping.json", "summary.csv", "metrics.json", "curves.png")


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


def lock_run_folder(out_dir, cleanup):
    """One run per output folder: a second run into it is refused while the first runs (RunLock, released by the
    ExitStack `cleanup` however the run ends), and what a killed writer left behind is removed."""
    cleanup.enter_context(RunLock(out_dir))
    removed = remove_stale_temporaries(out_dir)
    if removed:
        print(f"removed {len(removed)} temporary files left in {out_dir} by an interrupted run")


def check_output_dir(args, resume_state, latest_epoch):
    """Nothing is lost by a typo: a run folder that already holds a run is only written by resuming that run
    from its latest epoch; --overwrite is the explicit way past this. latest_epoch(path) reads a checkpoint's epoch."""
    if args.output_dir is None:
        return
    out_dir = Path(args.output_dir)
    last = out_dir / "last.pt"
    if resume_state is None or out_dir.resolve() != Path(args.resume).parent.resolve():
        found = [f for f in ("last.pt", "best.pt", "metrics.json") if (out_dir / f).is_file()]
        if found:
            todo = ("branch off into an empty --output_dir" if resume_state
                    else f"continue it with --resume {quote(last)}")
            raise DataError(f"--output_dir {quote(out_dir)} already holds a run ({', '.join(found)}); {todo}, or "
                            "pick another --output_dir (--overwrite replaces it)")
        return
    if last.is_file() and last.resolve() != Path(args.resume).resolve():
        latest = latest_epoch(last)
        if latest > resume_state["epoch"]:
            raise DataError(f"--resume {quote(args.resume)} was saved after epoch {resume_state['epoch']} but "
                            f"{quote(last)} after epoch {latest}: resume from {quote(last)}, or branch off into a new "
                            "--output_dir (--overwrite replaces the later epochs)")


def write_summary(path, history):
    """summary.csv: one row per finished epoch (timm's summary.csv)."""
    if history:
        atomic_write_text(path, csv_text(history, list(history[0])))


def training_folder(checkpoint_path, output_dir):
    """The folder train_simple.py ran in: the checkpoint's folder less the run folder it was given (relative to
    where it ran). None when that cannot be known: an absolute --output_dir, or a run folder moved since."""
    run_dir, recorded = Path(os.path.abspath(checkpoint_path)).parent, Path(output_dir or "")
    n = len(recorded.parts)
    if n == 0 or recorded.is_absolute() or ".." in recorded.parts or run_dir.parts[-n:] != recorded.parts:
        return None
    return Path(*run_dir.parts[:-n])


def recorded_dir(checkpoint_path, args, path):
    """A folder recorded in the checkpoint's args (relative to where training ran) as a path usable from here."""
    if path is None or Path(path).is_absolute() or Path(path).exists():
        return path
    folder = training_folder(checkpoint_path, args.output_dir)
    return str(folder / path) if folder is not None and (folder / path).exists() else path


def tensorboard_writer(out_dir):
    """A SummaryWriter logging to <run>/tensorboard (--tensorboard); the package is optional."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise DataError("--tensorboard needs the tensorboard package: pip install tensorboard "
                        "(it is in requirements-extract.txt)")
    return SummaryWriter(str(Path(out_dir) / "tensorboard"))


class ConsoleLog:
    """What the console shows, kept in <run>/train.log: every line printed to stdout or stderr, from the first one
    (lines printed before the run folder exists are held until start()). Progress bars are not kept: tqdm draws
    them only on a terminal, with carriage returns, and such writes are left out of the log."""

    def __init__(self):
        self.held, self.file, self.streams = [], None, (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = _Tee(sys.stdout, self), _Tee(sys.stderr, self)

    def write(self, text):
        if "\r" in text:  # a progress bar redrawing itself
            return
        if self.file is None:
            self.held.append(text)
        else:
            self.file.write(text)
            self.file.flush()

    def start(self, out_dir, resumed):
        """Opens <out_dir>/train.log (appended to when the run resumes) and writes what was held."""
        self.file = open(Path(out_dir) / "train.log", "a")
        self.file.write(f"---- {time.strftime('%Y-%m-%d %H:%M:%S')} {'resumed: ' if resumed else ''}"
                        f"{' '.join(sys.argv) or 'train_simple.py'}\n")
        self.write("".join(self.held))
        self.held = []

    def close(self):
        sys.stdout, sys.stderr = self.streams
        if self.file is not None:
            self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Tee:
    """A text stream that writes to the console and to a ConsoleLog."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text):
        self.log.write(text)
        return self.stream.write(text)

    def __getattr__(self, name):  # flush, isatty, fileno, encoding: the console's own
        return getattr(self.stream, name)
