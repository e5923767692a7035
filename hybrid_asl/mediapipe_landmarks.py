"""MediaPipe Holistic landmarks of one clip in the 162 layout (videos, or existing .pose files): what the extractor
runs per clip and what prediction runs on a new video. mediapipe 0.10.21 (requirements-extract.txt) ships its models
in the wheel, so nothing is downloaded; it is imported only when used.

    [left hand 21 x (x,y,z) | right hand 21 x (x,y,z) | pose landmarks 11..22 x (x,y,z)], zeros where not detected
"""
import os
import platform
import sys
from contextlib import contextmanager

import numpy as np

from hybrid_asl.clips import LANDMARK_DIM, uniform_indices
from hybrid_asl.errors import INSTALL_HINT, DataError
from hybrid_asl.files import not_a_regular_file
from hybrid_asl.video import VideoError, clip_window, read_clip_frames

POSE_IDS = list(range(11, 23))  # shoulders, elbows, wrists, pinkies, index fingers, thumbs
POSE_NAMES = ["LEFT_SHOULDER", "RIGHT_SHOULDER", "LEFT_ELBOW", "RIGHT_ELBOW", "LEFT_WRIST", "RIGHT_WRIST",
              "LEFT_PINKY", "RIGHT_PINKY", "LEFT_INDEX", "RIGHT_INDEX", "LEFT_THUMB", "RIGHT_THUMB"]
MODEL_COMPLEXITY = 1  # 0 and 2 make mediapipe 0.10.21 download a model at run time, which fails offline


def import_mediapipe():
    try:
        import mediapipe as mp
        return mp
    except ImportError:
        raise DataError(f"mediapipe is not installed: {INSTALL_HINT}")
    except Exception as e:  # e.g. a numpy 2 install under mediapipe 0.10.21
        raise DataError(f"mediapipe failed to import ({type(e).__name__}: {str(e)[:120]}); {INSTALL_HINT}")


@contextmanager
def native_stderr_silenced():
    """MediaPipe 0.10.21's C++ side (TFLite, absl) writes ~8 warnings per clip straight to file descriptor 2, which
    no environment variable turns off: over a corpus they would bury the tool's own warnings."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def holistic_row(results):
    """One frame's MediaPipe Holistic results -> float32 (162,), zeros for each part that was not detected."""
    row = np.zeros(LANDMARK_DIM, dtype=np.float32)
    parts = ((results.left_hand_landmarks, slice(0, 63), None), (results.right_hand_landmarks, slice(63, 126), None),
             (results.pose_landmarks, slice(126, 162), POSE_IDS))
    for landmarks, where, keep in parts:
        if landmarks is not None:
            points = landmarks.landmark if keep is None else [landmarks.landmark[i] for i in keep]
            row[where] = [c for p in points for c in (p.x, p.y, p.z)]
    return row


def extract_video_landmarks(path, start_frame=1, end_frame=None, num_frames=None, notes=None):
    """(T, 162) float32 landmarks of one video clip (window and sampling as in video.read_clip_frames, which
    also appends to notes).

    A fresh Holistic per clip: its tracking state must not carry over from the previous clip.
    Raises VideoError for an unreadable or empty video, DataError when mediapipe is missing.
    """
    mp = import_mediapipe()
    frames, _ = read_clip_frames(path, start_frame, end_frame, num_frames, notes)
    out = np.zeros((len(frames), LANDMARK_DIM), dtype=np.float32)
    with native_stderr_silenced(), \
            mp.solutions.holistic.Holistic(static_image_mode=False, model_complexity=MODEL_COMPLEXITY) as holistic:
        for i, frame in enumerate(frames):
            out[i] = holistic_row(holistic.process(frame))
    return out


def pose_file_landmarks(path, start_frame=1, end_frame=None, num_frames=None):
    """(T, 162) float32 landmarks from a pose-format .pose file in MediaPipe Holistic layout.

    x and y are divided by the header's width and height (pose-format stores pixels) so they match
    MediaPipe's normalized coordinates; z is kept as stored (pose-format keeps MediaPipe's z), or divided by
    the header's depth when a file declares one. Masked (undetected) points become zeros, and
    pose points a reduced file lacks (e.g. no pinkies) stay zero. ValueError for any other layout (OpenPose...).
    """
    try:
        from pose_format import Pose
    except ImportError:
        raise DataError(f"pose-format is not installed: {INSTALL_HINT}")
    with open(path, "rb") as f:
        pose = Pose.read(f.read())
    header = pose.header
    names = [c.name for c in header.components]
    needed = ("POSE_LANDMARKS", "LEFT_HAND_LANDMARKS", "RIGHT_HAND_LANDMARKS")
    if not all(n in names for n in needed):
        raise ValueError(f"{path} is not in MediaPipe Holistic layout (components {names}; need {list(needed)}): "
                         "only MediaPipe .pose files can be converted")
    data = np.ma.getdata(pose.body.data)[:, 0].astype(np.float32)  # first person: (frames, points, dims)
    valid = ~np.ma.getmaskarray(pose.body.data)[:, 0].any(-1)
    if data.shape[-1] < 3:
        raise ValueError(f"{path} has {data.shape[-1]}-d points; need x, y, z")
    dims = header.dimensions
    scale = [float(dims.width or 1), float(dims.height or 1), float(dims.depth or 1)]
    data = data[..., :3] / np.array(scale, dtype=np.float32)
    offsets = np.cumsum([0] + [len(c.points) for c in header.components])
    where = {c.name: (int(offsets[k]), list(c.points)) for k, c in enumerate(header.components)}

    out = np.zeros((len(data), LANDMARK_DIM), dtype=np.float32)
    for component, column in (("LEFT_HAND_LANDMARKS", 0), ("RIGHT_HAND_LANDMARKS", 63)):
        start, points = where[component]
        if len(points) != 21:
            raise ValueError(f"{path}: {component} has {len(points)} points, expected 21")
        hand = np.where(valid[:, start:start + 21, None], data[:, start:start + 21], 0.0)
        out[:, column:column + 63] = hand.reshape(len(data), 63)
    start, points = where["POSE_LANDMARKS"]
    for j, name in enumerate(POSE_NAMES):
        if name in points:  # reduced files (e.g. 8 pose points) lack some: those stay zero
            k = points.index(name)
            out[:, 126 + 3 * j:129 + 3 * j] = np.where(valid[:, start + k, None], data[:, start + k], 0.0)

    fps = float(pose.body.fps or 25.0)
    first, end = clip_window(fps, start_frame, end_frame)
    out = out[first:end]
    if num_frames is not None:
        out = out[uniform_indices(len(out), num_frames)]
    if len(out) == 0:
        raise VideoError(f"no frame in {path} in window start_frame={start_frame} end_frame={end_frame}")
    return out


def extract_file(path, start_frame=1, end_frame=None, num_frames=None, notes=None):
    """Landmarks of a video or a .pose file (only regular files are opened: a FIFO would block the read)."""
    why = not_a_regular_file(path)
    if why is not None:
        raise VideoError(f"{path} {why}")
    if path.lower().endswith(".pose"):
        return pose_file_landmarks(path, start_frame, end_frame, num_frames)
    return extract_video_landmarks(path, start_frame, end_frame, num_frames, notes)


def quiet_worker():
    os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe/absl start-up chatter would drown the progress bar
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def tool_versions():
    from importlib.metadata import PackageNotFoundError, version
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("mediapipe", "opencv-python-headless", "opencv-contrib-python", "pose-format"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions
