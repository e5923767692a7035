"""One clip: its files read and checked, both streams sampled onto one time grid. The same code serves training
(through the packed splits), evaluation and prediction, from paths or from arrays already in memory.

    gemma      <gemma_features_dir>/{video_id}_gemma.npy       (T, D)   frozen Gemma 3 features, one row per frame
    landmarks  <landmarks_dir>/{video_id}_landmarks.npy        (T, 162) MediaPipe [left hand | right hand | pose]
"""
from pathlib import Path

import numpy as np

from hybrid_asl.errors import ClipError
from hybrid_asl.files import not_a_regular_file
from hybrid_asl.splits import video_id_problem

LANDMARK_DIM = 162  # left hand 21x3 | right hand 21x3 | pose landmarks 11..22 x3
# MediaPipe's normalized image coordinates stay within a few units of [0, 1]; a finite value beyond this is a broken
# file or another layout (pixels), and would overflow float32 once normalized.
LANDMARK_LIMIT = 1e3
FLOAT16_MAX = float(np.finfo(np.float16).max)


def resample_indices(num_available, length):
    """`length` frame indices spread uniformly over `num_available` frames (segment centres; repeats if upsampling)."""
    return ((np.arange(length) + 0.5) * num_available / length).astype(np.int64)


def uniform_indices(num_available, num_frames):
    """Uniform temporal sampling down to num_frames; a shorter clip keeps all its frames (it is padded later)."""
    return resample_indices(num_available, min(num_available, num_frames))


def clip_file(directory, video_id, suffix):
    """<directory>/<video_id><suffix>; ClipError('bad_id') when the id is not a plain name (it would reach outside
    the folder)."""
    problem = video_id_problem(video_id)
    if problem:
        raise ClipError("bad_id", f"video id {video_id!r} {problem}")
    return Path(directory) / f"{video_id}{suffix}"


def gemma_file(directory, video_id):
    return clip_file(directory, video_id, "_gemma.npy")


def landmarks_file(directory, video_id):
    return clip_file(directory, video_id, "_landmarks.npy")


def read_array(path, width=None):
    """Loads a (T, width) array of real numbers or raises ClipError with the reason it is unusable.

    Never unpickles (allow_pickle=False: an object array is refused) and never opens what is not a regular file
    (a FIFO would block the read for ever)."""
    why = not_a_regular_file(path)
    if why == "not found":
        raise ClipError("missing", f"{path} not found")
    if why is not None:
        raise ClipError("not_a_file", f"{path} {why}")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):  # an object array: unpickling it could run any code stored in the file
            raise ClipError("unreadable", f"{path} holds pickled Python objects, not a plain array (never loaded: "
                                          "unpickling could run code)")
        raise ClipError("unreadable", f"{path}: ValueError: {str(e)[:100]}")
    except Exception as e:  # truncated, not .npy, permissions: all one outcome for the user
        raise ClipError("unreadable", f"{path}: {type(e).__name__}: {str(e)[:100]}")
    if not isinstance(array, np.ndarray):  # an .npz archive
        raise ClipError("unreadable", f"{path} is an .npz archive, not one .npy array")
    return check_array(array, path, width)


def check_array(array, name, width=None):
    """The array itself if it is (T, width) real numbers; else ClipError naming `name` (its path, or what it is)."""
    if array.dtype.kind not in "iuf":  # bool, complex, strings, structured records: not a real number per value
        raise ClipError("bad_dtype", f"{name} holds {array.dtype} values; expected real numbers (float or int)")
    if array.ndim != 2:
        raise ClipError("bad_shape", f"{name} has shape {array.shape}; expected (frames, features)")
    if array.shape[0] == 0:
        raise ClipError("empty", f"{name} has no frames")
    if width is not None and array.shape[1] != width:
        raise ClipError("bad_shape", f"{name} has {array.shape[1]} features per frame; expected {width}")
    return array


def stream_array(source, width, name):
    """One stream of a clip from a .npy path (read_array) or an array already in memory (check_array, messages
    calling it `name`): what prediction accepts for either stream."""
    return check_array(source, name, width) if isinstance(source, np.ndarray) else read_array(source, width)


def sample_clip(gemma, landmarks, num_frames, gemma_name="the Gemma features", landmarks_name="the landmarks"):
    """Checks the values of one clip's arrays and samples both streams onto the same time grid.

    gemma (T1, D) / landmarks (T2, 162): already read (read_array or check_array), either may be None. Returns
    (gemma (L, D) float16 or None, landmarks (L, 162) float32 or None, number of non-finite landmark values that
    were zeroed). L = min(num_frames, longest stream): each stream covers the same clip window, so both are
    resampled uniformly to L frames and stay aligned even when their frame counts differ. The names are what
    messages call the arrays (their paths, for files).
    """
    if gemma is not None:
        gemma = gemma.astype(np.float64)  # float64: |int64| and the float16 range check are exact
        # Features are stored as float16: a finite value beyond its range would become inf in the cache and turn
        # every step and score that touches the clip into NaN.
        if not np.isfinite(gemma).all():
            raise ClipError("nonfinite", f"{gemma_name} contains NaN or inf")
        if np.abs(gemma).max() > FLOAT16_MAX:
            raise ClipError("out_of_range", f"{gemma_name} holds values beyond the float16 range (|x| > 65504)")
    length = min(num_frames, max(len(a) for a in (gemma, landmarks) if a is not None))
    nonfinite = 0
    if gemma is not None:
        gemma = gemma[resample_indices(len(gemma), length)].astype(np.float16)
    if landmarks is not None:
        landmarks = landmarks[resample_indices(len(landmarks), length)].astype(np.float64)
        bad = ~np.isfinite(landmarks)
        nonfinite = int(bad.sum())
        landmarks[bad] = 0.0  # a NaN coordinate means "not detected", which the layout writes as zero
        if np.abs(landmarks).max() > LANDMARK_LIMIT:
            raise ClipError("out_of_range", f"{landmarks_name} holds values beyond +-{LANDMARK_LIMIT:g}; landmarks "
                                            "are MediaPipe's normalized image coordinates (about 0..1)")
        landmarks = landmarks.astype(np.float32)
    return gemma, landmarks, nonfinite


def pad_rows(rows, num_frames, dtype):
    """Sampled clips [(L_i, C) arrays] -> (N, num_frames, C) numpy array, zero after each clip's frames (the layout of
    a packed split). None when the stream is absent (rows of None)."""
    if not rows or rows[0] is None:
        return None
    out = np.zeros((len(rows), num_frames, rows[0].shape[1]), dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def pad_clips(clips, num_frames):
    """Sampled clips [(gemma or None, landmarks or None)] (sample_clip) -> (gemma (N, num_frames, D) float16 or None,
    landmarks (N, num_frames, 162) float32 or None, mask (N, num_frames) bool, True on real frames): one batch for
    prediction, padded as a packed split is."""
    lengths = np.array([len(g if g is not None else l) for g, l in clips])
    return (pad_rows([g for g, _ in clips], num_frames, np.float16),
            pad_rows([l for _, l in clips], num_frames, np.float32),
            np.arange(num_frames)[None, :] < lengths[:, None])


def load_clip(video_id, gemma_dir, landmarks_dir, modality, num_frames, gemma_dim=None):
    """Reads one clip's files (the streams `modality` uses) and samples them: sample_clip on read_array."""
    gemma = landmarks = None
    gemma_path = landmarks_path = None
    if modality in ("hybrid", "gemma"):
        gemma_path = gemma_file(gemma_dir, video_id)
        gemma = read_array(gemma_path, gemma_dim)
    if modality in ("hybrid", "landmarks"):
        landmarks_path = landmarks_file(landmarks_dir, video_id)
        landmarks = read_array(landmarks_path, LANDMARK_DIM)
    return sample_clip(gemma, landmarks, num_frames, gemma_path, landmarks_path)
