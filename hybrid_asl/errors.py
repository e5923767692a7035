"""The two kinds of expected failure: a user problem the command line explains in one line, and one bad clip."""

# What to run when an optional part (video reading, MediaPipe, transformers) is not installed
INSTALL_HINT = "pip install -r requirements-extract.txt"


class DataError(Exception):
    """A problem with the user's data, flags or files that one line can explain; the CLIs print it and exit 2."""


class ClipError(Exception):
    """One clip's file is unusable; the clip is skipped and counted under `reason` (missing, unreadable, ...)."""

    def __init__(self, reason, detail):
        super().__init__(detail)
        self.reason = reason
