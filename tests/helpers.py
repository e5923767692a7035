"""What several test modules share: the training script run in-process.

train_simple.py is a script, not a library: no module imports it. Tests that need a run in-process (to patch the
step engine, or to be fast) execute its definitions with runpy, as `python train_simple.py` would, and call main().
"""
import functools
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=None)
def train_script():
    """The functions of train_simple.py (their globals are the script's own namespace)."""
    return runpy.run_path(str(ROOT / "train_simple.py"))


def train_main(argv):
    """train_simple.main(argv): the run's exit code; errors propagate (DataError, ...)."""
    return train_script()["main"]([str(a) for a in argv])


def train_run(argv):
    """train_simple.run(argv): as the command line, DataError -> one line on stderr and exit code 2."""
    return train_script()["run"]([str(a) for a in argv])


def one_error_line(result, code, *must_mention):
    """A finished subprocess: exit `code`, no traceback, stderr one `error:` line (argparse may print its usage
    block above it) that names every item of must_mention. Returns that line."""
    assert result.returncode == code, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1, result.stderr
    if errors[0].startswith("error:"):
        assert len(lines) == 1, result.stderr
    else:  # argparse: usage block, then `prog: error: ...`
        assert lines[0].startswith("usage:") and errors[0] == lines[-1], result.stderr
    for text in must_mention:
        assert str(text) in errors[0], (text, errors[0])
    return errors[0]


def succeeded(result):
    """A finished subprocess that exited 0 without a traceback: its stdout."""
    assert result.returncode == 0, (result.returncode, result.stdout[-3000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout
