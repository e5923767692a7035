"""Live (streaming) recognition: frames as they come from a camera or a video file, MediaPipe landmarks frame by
frame, a sliding window, and the recognized gloss or a rest state ("no sign") each time it changes.

    python predict.py --checkpoint model.onnx --stream 0                     # camera 0
    python predict.py --checkpoint model.onnx --stream clip.mp4              # a file, read as if live (its fps)
    python predict.py --checkpoint best.pt --stream clip.mp4 --fast --segments segments.jsonl   # or .csv

Frames: a camera gives its newest frame (timed by the clock); a file is read at its own frame rate, and a frame is
dropped when processing falls behind (as a camera drops them), or every frame as fast as possible with --fast.
Landmarks: one MediaPipe Holistic with tracking per stream (hybrid_asl.mediapipe_landmarks.holistic_row, the
extractor's layout and settings). Decisions, every --hop frames: "no sign" when no hand has been up (detected, wrist
above the rest line) for --rest_after seconds; else the model sees the current stretch of signing (from the first
raised hand after the last pause, at most --window seconds), sampled to num_frames by clips.sample_clip exactly as
training samples a clip; a top probability below --min_confidence is "no sign" too. --hold agreeing decisions change
the state; the segment that ends is printed (start - end in stream seconds, gloss, its best probability) and, with
--segments, written as CSV or JSON lines when the stream ends. Segment times are decision times: a gloss is reported
about --min_window + --hold x --hop frames after it starts.

Landmark-only models are the live path, from a .onnx file (onnxruntime; torch is never imported) or a checkpoint.
Models with a Gemma stream need the Gemma encoder on every frame, which is not live: they are refused in one line.
The model is any object with num_frames, modality, label_mapping and predict([(None, landmarks)]) -> probabilities
(hybrid_asl.onnx_model.OnnxModel, predict.CheckpointModel).
"""
import json
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hybrid_asl.cli import exit_code, float_range, int_range, probability
from hybrid_asl.clips import sample_clip
from hybrid_asl.errors import DataError
from hybrid_asl.files import atomic_write_text, csv_text
from hybrid_asl.mediapipe_landmarks import (MODEL_COMPLEXITY, holistic_row, import_mediapipe, native_stderr_silenced,
                                            quiet_worker)
from hybrid_asl.video import VideoError, open_video, require_cv2

NO_SIGN = "(no sign)"
DEFAULT_FPS = 25.0  # a file or camera that does not say its frame rate
SEGMENT_FIELDS = ("gloss", "wlasl_id", "confidence", "start", "end", "decisions")


def check_live_model(model):
    """DataError unless the model runs on landmarks alone."""
    if model.modality != "landmarks":
        raise DataError(f"{model.path} is a {model.modality} model: it needs Gemma features from the Gemma encoder "
                        "for every frame, which is not live. Live recognition runs landmark-only models: train one "
                        "with --modality landmarks (and export it with export_onnx.py)")


# ----------------------------------------------------------------------------------------------------------------
# The recognizer: landmark rows in, segments out

@dataclass
class LiveConfig:
    window: float = 2.0          # seconds: the longest stretch of frames one decision sees
    min_window: float = 0.5      # seconds of signing before the first decision
    hop: int = 2                 # decide every hop-th frame
    min_confidence: float = 0.5  # a top probability below this is "no sign"
    hold: int = 2                # agreeing decisions in a row that change the state
    rest_after: float = 0.4      # seconds without a raised hand that make the state "no sign"
    rest_line: float = 1.8       # shoulder widths below the shoulder midpoint where a wrist counts as down


def hands_up(row, rest_line=LiveConfig.rest_line):
    """Is a hand raised in this (162,) row: found by the hand model, its wrist above the rest line (y grows
    downwards). Without both shoulders there is no line, and any detected hand counts. 1.8 is from the real clips:
    hanging arms sit 2.0-2.6 shoulder widths down, the lowest sign (abdomen) at 1.2-1.5."""
    pts = row.reshape(54, 3)
    hands = [pts[0:21], pts[21:42]]
    seen = [bool(h.any()) for h in hands]
    left, right = pts[42], pts[43]
    width = float(np.hypot(*(left[:2] - right[:2])))
    if not any(seen) or not (left.any() and right.any() and width > 1e-4):
        return any(seen)
    line = (left[1] + right[1]) / 2 + rest_line * width
    return any(s and h[0, 1] < line for s, h in zip(seen, hands))


@dataclass
class Segment:
    """A stretch of the stream with one state: a gloss, or "no sign" (gloss None)."""
    gloss: object
    wlasl_id: object
    confidence: object   # the best top-1 probability among its decisions (None for "no sign")
    start: float
    end: float
    decisions: int = 0
    index: object = field(default=None, repr=False)  # class index (None for "no sign")

    @property
    def label(self):
        return NO_SIGN if self.gloss is None else self.gloss

    def as_dict(self):
        return {"gloss": self.gloss, "wlasl_id": self.wlasl_id,
                "confidence": None if self.confidence is None else round(float(self.confidence), 4),
                "start": round(self.start, 3), "end": round(self.end, 3), "decisions": self.decisions}


@dataclass
class Decision:
    time: float
    index: object            # class index, or None for "no sign"
    probability: float       # top-1 probability (0 when the model did not run)
    reason: str              # "sign", "low confidence", "hands down"
    frames: int = 0          # frames of the window (before sampling)
    window_start: float = 0.0


class StreamRecognizer:
    """push(time, landmark row) per frame -> the segments that ended; finish() closes the open one.

    Keeps the last `window` seconds of rows; decides every hop-th frame (LiveConfig); `hold` agreeing decisions
    change the state, and the segment that ends is returned."""

    def __init__(self, model, config=None, on_decision=None):
        self.model, self.config, self.on_decision = model, config or LiveConfig(), on_decision
        self.rows = deque()          # (time, row, hand up)
        self.frames_seen = 0
        self.current = None          # the open Segment
        self.pending = None          # [class index, decisions, first time, best probability] of a possible change
        self.decisions = deque(maxlen=10000)  # the latest, for inspection: a camera runs for hours
        self.model_seconds, self.model_calls = 0.0, 0

    def push(self, t, row):
        cfg = self.config
        row = np.nan_to_num(np.asarray(row, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        self.rows.append((t, row, hands_up(row, cfg.rest_line)))
        while self.rows[0][0] < t - cfg.window - 1e-9:
            self.rows.popleft()
        if self.current is None:
            self.current = Segment(None, None, None, t, t)
        self.frames_seen += 1
        if (self.frames_seen - 1) % cfg.hop:
            return []
        decision = self.decide(t)
        if decision is None:
            return []
        self.decisions.append(decision)
        if self.on_decision is not None:
            self.on_decision(decision)
        return self.update(decision)

    def activity_start(self, t):
        """Index in self.rows of the first raised-hand frame of the current stretch of signing (going back from now,
        while no pause between raised-hand frames is longer than rest_after); None when no hand was up in the last
        rest_after seconds."""
        rest_after, first = self.config.rest_after, None
        for i in range(len(self.rows) - 1, -1, -1):
            ti, _, up = self.rows[i]
            if not up:
                continue
            if first is None and ti < t - rest_after - 1e-9:
                return None
            if first is not None and self.rows[first][0] - ti > rest_after + 1e-9:
                break
            first = i
        return first

    def decide(self, t):
        start = self.activity_start(t)
        if start is None:
            return Decision(t, None, 0.0, "hands down")
        rows = list(self.rows)[start:]
        if t - rows[0][0] < self.config.min_window - 1e-9:
            return None  # too little signing to say anything yet: the state stays
        began = time.perf_counter()
        clip = sample_clip(None, np.stack([r for _, r, _ in rows]), self.model.num_frames)[:2]
        probs = self.model.predict([clip])[0]
        self.model_seconds += time.perf_counter() - began
        self.model_calls += 1
        index = int(np.argmax(probs))
        p = float(probs[index])
        if p < self.config.min_confidence:
            return Decision(t, None, p, "low confidence", len(rows), rows[0][0])
        return Decision(t, index, p, "sign", len(rows), rows[0][0])

    def update(self, d):
        current = self.current
        if d.index == current.index:
            self.pending = None
            current.decisions += 1
            if d.index is not None:
                current.confidence = max(current.confidence or 0.0, d.probability)
            return []
        if self.pending is not None and self.pending[0] == d.index:
            self.pending[1] += 1
            self.pending[3] = max(self.pending[3], d.probability)
        else:
            self.pending = [d.index, 1, d.time, d.probability]
        if self.pending[1] < self.config.hold:
            return []
        index, count, since, best = self.pending
        self.pending = None
        current.end = since
        entry = self.model.label_mapping[index] if index is not None else None
        self.current = Segment(entry and entry["gloss"], entry and entry["wlasl_id"], entry and best, since, d.time,
                               count, index)
        return [current]

    def finish(self, t=None):
        """Closes the open segment at t (default: the last frame's time); returns it in a list (empty if none)."""
        if self.current is None:
            return []
        self.current.end = t if t is not None else (self.rows[-1][0] if self.rows else self.current.start)
        done, self.current = self.current, None
        return [done]


# ----------------------------------------------------------------------------------------------------------------
# Frames in, landmark rows out

def open_source(source):
    """(cv2.VideoCapture, is_camera, fps): a camera index (digits) or a video file."""
    try:
        require_cv2()
        is_camera = str(source).isdigit()
        cap = open_video(source) if not is_camera else None
    except VideoError as e:
        raise DataError(f"--stream: {e}")
    import cv2
    if is_camera:
        with native_stderr_silenced():  # OpenCV's backends each print a line for a camera they cannot open
            cap = cv2.VideoCapture(int(source))
        if not cap.isOpened():
            cap.release()
            raise DataError(f"--stream {source}: cannot open camera {source} (give a video file or the index of a "
                            "connected camera)")
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a queue of old ones
    fps = cap.get(cv2.CAP_PROP_FPS)
    return cap, is_camera, fps if fps and fps > 0 else DEFAULT_FPS


def read_frames(opened, realtime=True, stats=None):
    """Yields (time in s, RGB frame) as a live source (open_source's answer) delivers them. A camera: every frame it
    gives, timed by the clock. A file: frame i at i / fps; with realtime, the reader waits until it is due and drops
    it when the next one is already due (processing fell behind). `stats` (a dict) gets fps, frames read, dropped."""
    import cv2
    cap, is_camera, fps = opened
    stats = stats if stats is not None else {}
    stats.update(fps=fps, read=0, dropped=0, camera=is_camera)
    start, index = time.perf_counter(), 0
    try:
        while cap.grab():
            if is_camera:
                t = time.perf_counter() - start
            else:
                t = index / fps
                late = time.perf_counter() - start - t
                if realtime and late < 0:
                    time.sleep(-late)
                elif realtime and late > 1.0 / fps:  # the next frame is due already: this one is gone
                    index += 1
                    stats["dropped"] += 1
                    continue
            ok, frame = cap.retrieve()
            if not ok or frame is None:
                break
            stats["read"] += 1
            yield t, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        cap.release()


def holistic():
    """MediaPipe Holistic with tracking across frames, the extractor's settings; one per stream (a context manager).
    MediaPipe writes to file descriptor 2 from its own threads: run_stream silences it for the whole stream, as the
    extractor does for a whole clip."""
    quiet_worker()
    return import_mediapipe().solutions.holistic.Holistic(static_image_mode=False, model_complexity=MODEL_COMPLEXITY)


# ----------------------------------------------------------------------------------------------------------------
# The stream

def run_stream(model, source, config=None, realtime=True, on_segment=None, max_seconds=None, on_decision=None):
    """Recognizes a stream (a video path, a camera index, or open_source's answer for one) with a landmark-only
    model. on_segment(Segment) gets
    every finished segment in order, on_decision(Decision) every decision. Ctrl-C or SIGTERM ends it like the end of
    the stream (the open segment is closed). Returns a summary: segments (dicts), frames, dropped, wall seconds,
    end-to-end fps, landmark ms per frame, model ms per decision and the model's share of the time, stopped (the
    exit code of the signal that stopped it, or None)."""
    check_live_model(model)
    recognizer = StreamRecognizer(model, config, on_decision)
    segments, stats = [], {}
    opened = source if isinstance(source, tuple) else open_source(source)  # fails before MediaPipe starts
    frames_in = read_frames(opened, realtime, stats)

    def emit(done):
        for segment in done:
            segments.append(segment)
            if on_segment is not None:
                on_segment(segment)

    frames, last_t, extract_seconds, stopped = 0, None, 0.0, None
    clock = time.perf_counter()
    try:
        with native_stderr_silenced(), holistic() as tracker:
            for t, rgb in frames_in:
                began = time.perf_counter()
                row = holistic_row(tracker.process(rgb))
                if frames:
                    extract_seconds += time.perf_counter() - began
                else:
                    clock = time.perf_counter()  # the first frame loads MediaPipe's graphs: not timed
                emit(recognizer.push(t, row))
                frames, last_t = frames + 1, t
                if max_seconds is not None and t >= max_seconds:
                    break
    except KeyboardInterrupt as stop:  # Ctrl-C ends a camera stream: the open segment is still reported
        stopped = exit_code(stop)
    finally:
        opened[0].release()  # also when MediaPipe failed to start
    wall = time.perf_counter() - clock
    emit(recognizer.finish(last_t))
    timed = max(frames - 1, 1)
    return {
        "segments": [s.as_dict() for s in segments], "glosses": [s.gloss for s in segments if s.gloss is not None],
        "frames": frames, "dropped": stats.get("dropped", 0), "source_fps": stats.get("fps"),
        "wall_seconds": wall, "fps": timed / wall if wall > 0 else 0.0,
        "extract_ms_per_frame": 1000 * extract_seconds / timed,
        "model_ms_per_decision": 1000 * recognizer.model_seconds / max(recognizer.model_calls, 1),
        "model_calls": recognizer.model_calls,
        "model_share": recognizer.model_seconds / wall if wall > 0 else 0.0,
        "config": asdict(recognizer.config), "stopped": stopped,
    }


# ----------------------------------------------------------------------------------------------------------------
# The command line: predict.py --stream

def add_stream_args(parser):
    d = LiveConfig()
    g = parser.add_argument_group("live recognition (--stream)")
    g.add_argument("--fast", action="store_true",
                   help="read a video file as fast as possible, every frame, instead of at its frame rate (as if live)")
    g.add_argument("--segments", default=None, help="also write the segments to this .csv or .jsonl (JSON lines)")
    g.add_argument("--window", type=float_range(0.1, 60.0), default=d.window,
                   help="seconds: the longest stretch of signing one decision sees")
    g.add_argument("--min_window", type=float_range(0.0, 60.0), default=d.min_window,
                   help="seconds of signing before the first decision")
    g.add_argument("--hop", type=int_range(1, 1000), default=d.hop, help="decide every N frames")
    g.add_argument("--min_confidence", type=probability, default=d.min_confidence,
                   help="a top probability below this is 'no sign'")
    g.add_argument("--hold", type=int_range(1, 1000), default=d.hold, help="agreeing decisions that change the state")
    g.add_argument("--rest_after", type=float_range(0.0, 60.0), default=d.rest_after,
                   help="seconds without a raised hand that make the state 'no sign'")
    g.add_argument("--rest_line", type=float_range(0.0, 1000.0), default=d.rest_line,
                   help="a wrist this many shoulder widths below the shoulders is down (a large value: any detected "
                        "hand is up)")
    g.add_argument("--max_seconds", type=float_range(0.0, 1e7, low_open=True), default=None,
                   help="stop after this many seconds of the stream (None: at its end, or Ctrl-C)")
    g.add_argument("--show_decisions", action="store_true", help="print every decision, not only the changes")
    g.add_argument("--threads", type=int_range(1, 256), default=1,
                   help="threads of the model (MediaPipe needs the other cores)")


def config_from_args(cli):
    return LiveConfig(**{key: getattr(cli, key) for key in asdict(LiveConfig())})


def format_segment(segment):
    confidence = "" if segment.confidence is None else f"{segment.confidence:.3f}"
    return f"{segment.start:7.2f} - {segment.end:7.2f} s  {segment.label:<20} {confidence}"


def segments_text(path, rows):
    """CSV (.csv) or JSON lines (.jsonl) of segment dicts."""
    if Path(path).suffix.lower() == ".csv":
        return csv_text(rows, SEGMENT_FIELDS)
    return "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows)


def stream_main(model, cli):
    """What `predict.py --checkpoint X --stream S` runs; cli has stream and add_stream_args' flags. Returns the exit
    code (130/143 when Ctrl-C/SIGTERM ended it)."""
    check_live_model(model)
    if cli.segments is not None and Path(cli.segments).suffix.lower() not in (".csv", ".jsonl"):
        raise DataError(f"--segments {cli.segments}: give a .csv or a .jsonl (JSON lines) file name")
    opened = open_source(cli.stream)
    _, is_camera, fps = opened
    pace = "camera" if is_camera else f"{fps:g} fps, " + ("as fast as possible" if cli.fast else "read as if live")
    print(f"{model.path}: {len(model.label_mapping)} glosses, {model.num_frames} frames per decision; stream "
          f"{cli.stream} ({pace}); Ctrl-C stops", flush=True)

    def on_decision(d):
        label = NO_SIGN if d.index is None else model.label_mapping[d.index]["gloss"]
        print(f"  [{d.time:7.2f} s] {label:<20} {d.probability:.3f}  {d.reason}, {d.frames} frames", flush=True)

    summary = run_stream(model, opened, config_from_args(cli), realtime=not cli.fast,
                         on_segment=lambda s: print(format_segment(s), flush=True), max_seconds=cli.max_seconds,
                         on_decision=on_decision if cli.show_decisions else None)
    if cli.segments is not None:
        atomic_write_text(cli.segments, segments_text(cli.segments, summary["segments"]))
    print(f"{summary['frames']} frames ({summary['dropped']} dropped) in {summary['wall_seconds']:.1f} s: "
          f"{summary['fps']:.1f} frames/s; landmarks {summary['extract_ms_per_frame']:.1f} ms/frame, model "
          f"{summary['model_ms_per_decision']:.2f} ms/decision ({100 * summary['model_share']:.1f}% of the time)"
          + (f"; wrote {cli.segments}" if cli.segments else ""))
    return summary["stopped"] or 0
