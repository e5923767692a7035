"""Reading videos, the one place that does it (landmark and Gemma feature extraction, prediction).

    from hybrid_asl.video import read_clip_frames
    frames, fps = read_clip_frames("videos/00335.mp4")                      # whole clip, every frame
    frames, fps = read_clip_frames("videos/00335.mp4", 5, 40, num_frames=16)  # WLASL window, 16 frames

`frames` is uint8 RGB of shape (T, H, W, 3). WLASL split files give start_frame / end_frame 1-indexed at
25 fps; they are converted to the video's own frame rate here, an end beyond the video is clamped, and
end_frame -1 or None means "to the end". Decoding uses OpenCV (opencv-python-headless).
"""
import os

import numpy as np

# FFmpeg's own line for a broken file ("moov atom not found") would print beside the VideoError that names it;
# set OPENCV_FFMPEG_LOGLEVEL yourself (e.g. 24) to see FFmpeg's messages again.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
try:
    import cv2
except ImportError:  # the training CLI never imports this module; extraction tools need the extras
    cv2 = None

from hybrid_asl.clips import uniform_indices  # the same temporal sampling as training (segment centres)
from hybrid_asl.files import not_a_regular_file

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm")
SPLIT_FPS = 25.0  # WLASL start/end frames are counted at 25 fps


class VideoError(Exception):
    """A video that cannot be opened, decoded, or holds no frame in the requested window (one-line message)."""


def cv2_missing():
    return cv2 is None


def require_cv2():
    if cv2 is None:
        raise VideoError("OpenCV is not installed: pip install -r requirements-extract.txt")


def open_video(path):
    """cv2.VideoCapture that is known to be open; VideoError otherwise. Only regular files are opened: a FIFO or a
    device would make the decoder wait for ever."""
    require_cv2()
    why = not_a_regular_file(path)
    if why == "not found":
        raise VideoError(f"video not found: {path}")
    if why is not None:
        raise VideoError(f"video {path} {why}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"cannot open video (unreadable or unsupported format): {path}")
    return cap


def video_info(path):
    """(fps, frame_count) from the container header; frame_count may be off by a frame or two (or 0 if unknown)."""
    cap = open_video(path)
    try:
        fps, count = cap.get(cv2.CAP_PROP_FPS), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    return (fps if fps and fps > 0 else SPLIT_FPS), max(count, 0)


def clip_window(fps, start_frame=1, end_frame=None):
    """0-indexed [start, end) frame range in the video's own frame numbering (end None = to the end).

    start_frame / end_frame are 1-indexed at 25 fps (WLASL); at 25 fps this is exactly [start-1, end).
    """
    start_frame = 1 if start_frame is None or start_frame < 1 else int(start_frame)
    scale = fps / SPLIT_FPS
    start = int(np.floor((start_frame - 1) * scale + 1e-6))
    if end_frame is None or end_frame < 0:
        return start, None
    end = int(np.ceil(int(end_frame) * scale - 1e-6))
    return start, max(end, start + 1)


def _decode(path, start, end, wanted):
    """Decode frames start..end-1 (end None = EOF); keep the window-relative indices in `wanted` (None = all).

    Returns (kept RGB frames, how many frames the window really held). It reads to the end of the window even
    after the last wanted frame, because that count is how a lying header is caught.
    """
    cap = open_video(path)
    frames, i = [], 0
    want = None if wanted is None else set(int(w) for w in wanted)
    try:
        while end is None or i < end:
            rel = i - start
            if rel >= 0 and (want is None or rel in want):
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            elif not cap.grab():  # grab() skips the colour conversion of frames we do not keep
                break
            i += 1
    finally:
        cap.release()
    return frames, max(i - start, 0)


def read_clip_frames(path, start_frame=1, end_frame=None, num_frames=None, notes=None):
    """RGB frames of one clip: (uint8 array (T, H, W, 3), fps of the video).

    start_frame / end_frame: 1-indexed at 25 fps (WLASL); end_frame None or -1 = to the end; beyond the video
    = clamped. num_frames: sample that many frames uniformly from the window (never more than it holds);
    None = every frame. Raises VideoError for a missing, unreadable or empty video / window, or a window that
    starts after the video ends. notes (a list): what was done about a window end beyond the video or a video of
    which only a part decodes is appended there, one line each.
    """
    fps, header_count = video_info(path)
    start, end = clip_window(fps, start_frame, end_frame)
    if header_count and start >= header_count + 2:  # headers over-count by a frame or two now and then
        raise VideoError(f"the window of {path} starts at frame {start_frame} (25 fps) but the video has only "
                         f"{header_count} frames at {fps:g} fps")
    # Plan the sample with the header's frame count. Headers over-count by a frame or two now and then
    # (00338.mp4: 72 in the header, 71 decodable); then decode again, planned with the true count.
    stop = min(end, header_count) if end is not None and header_count else (end or header_count)
    planned = max(stop - start, 0)
    if num_frames is None:
        frames, available = _decode(path, start, end, None)
    else:
        frames, available = _decode(path, start, end, uniform_indices(planned, num_frames))
        if available != planned:
            frames, _ = _decode(path, start, end, uniform_indices(available, num_frames))
    if not frames:
        raise VideoError(f"no decodable frame in {path} (window start_frame={start_frame} end_frame={end_frame} at 25 fps)")
    if notes is not None:
        # a quarter of a second of slack: 25 fps windows on 30 fps videos round past the end by a few frames
        if end is not None and header_count and end > header_count + max(2, 0.25 * fps):
            notes.append(f"window end frame {end_frame} at 25 fps (frame {end} at the video's {fps:g} fps) is beyond "
                         f"its {header_count} frames; used the frames up to its end")
        if planned and available < planned - 2:
            notes.append(f"only {available} of the {planned} frames of its window decode (the file is damaged "
                         "or cut short); used those")
    return np.stack(frames), fps
