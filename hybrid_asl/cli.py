"""What every command line shares: one-line errors, Ctrl-C and SIGTERM, numeric flag ranges, devices, memory.

    from hybrid_asl.cli import run_cli, int_range
    parser.add_argument("--epochs", type=int_range(1, 100000), default=50)
    sys.exit(run_cli(main))          # DataError -> one `error:` line, exit 2; Ctrl-C -> 130; SIGTERM -> 143
"""
import argparse
import math
import os
import signal
import sys

from hybrid_asl.errors import DataError


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


positive_int = int_range(1)
probability = float_range(0.0, 1.0)               # a chance per clip, 0 and 1 included
open_probability = float_range(0.0, 1.0, high_open=True)  # dropout, label smoothing, EMA decay: 1 would be nonsense


class Refused(argparse.Action):
    """A flag that this tool answers with an argparse error saying why and what to do instead (help=the reason)."""

    def __init__(self, option_strings, dest, nargs=None, **kwargs):
        super().__init__(option_strings, dest, nargs="?", default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string}: {self.help}")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help keeps the docstring's layout and shows every flag's default (not None or False, which say nothing,
    and not twice where the help already names it)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False) or "default" in text:
            return text
        return super()._get_help_string(action)


def explicit_flags(parser, argv):
    """Names (dests) of the flags given on the command line, so that they can override --demo or --resume."""
    quiet = argparse.ArgumentParser(add_help=False)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            kwargs = dict(dest=action.dest, default=argparse.SUPPRESS)
            if action.nargs == 0:
                kwargs["action"] = "store_const"
                kwargs["const"] = action.const
            quiet.add_argument(*action.option_strings, **kwargs)
    known, _ = quiet.parse_known_args(argv)
    return set(vars(known))


def resolve_device(parser, name):
    """--device auto/cpu/cuda/cuda:N -> torch.device, with an argparse error for one that is not here."""
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        parser.error(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        parser.error(f"--device {name}: no such CUDA device here; use --device cpu (or auto)")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device {name}: only cpu and cuda are supported")
    return device


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
