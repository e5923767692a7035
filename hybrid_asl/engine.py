"""The step engine: one training step and one evaluation step, the same on CPU and GPU, replayed as CUDA graphs.

    steps = build_steps(model, eval_model, prepare, optimizer, scaler, ema, class_weights, augment, loaders, args,
                        device)
    steps.train(step_input, generator)       # one optimisation step; totals accumulate on the device
    metrics = evaluate(eval_model, prepare, val_loader, amp, num_classes, steps.val)

A step never waits for the host, so that a whole step (batch gather, augmentation, normalization, forward,
backward, clipping, the fused AdamW update, the EMA) can be captured once and replayed: this model is small, and an
eager step costs several times its arithmetic in kernel-launch overhead.
"""
import copy
import math
from contextlib import nullcontext
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from hybrid_asl.augment import augment_batch, mix_clips
from hybrid_asl.landmarks import mirror_landmarks
from hybrid_asl.metrics import classification_metrics, topk_correct
from hybrid_asl_model import Ensemble, mean_probability_logits


def uses_bf16(device):
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def amp_context(device, cache_enabled=True):
    """The autocast of this device: bf16 on Ampere and newer, else fp16; none on CPU."""
    if device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if uses_bf16(device) else torch.float16,
                          cache_enabled=cache_enabled)


def prepare_inputs(batch, prepare, augment=None, generator=None):
    """Batch -> the model's (gemma, landmarks, mask): augmentation (training only), then the landmark normalization
    `prepare` (a landmarks.LandmarkPreprocessor; None without landmarks)."""
    gemma, landmarks, mask = batch.gemma, batch.landmarks, batch.mask
    if gemma is not None:
        gemma = gemma.float()  # stored as float16 to halve memory; computed in float32 or autocast
    if augment is not None:
        gemma, landmarks, mask = augment_batch(gemma, landmarks, mask, augment, generator)
    if landmarks is not None:
        landmarks = prepare(landmarks, mask)
    return gemma, landmarks, mask


def inference_logits(model, prepare, batch, tta_flip=False):
    """A batch's logits at evaluation and prediction (no augmentation). tta_flip: test-time flip averaging, the log
    of the mean class probabilities of each clip and its mirror image (for models trained with --aug_mirror_p)."""
    logits = model(*prepare_inputs(batch, prepare)).float()
    if not tta_flip:
        return logits
    flipped = batch._replace(landmarks=mirror_landmarks(batch.landmarks, batch.mask))
    both = torch.stack([logits.log_softmax(-1), model(*prepare_inputs(flipped, prepare)).float().log_softmax(-1)])
    return torch.logsumexp(both, 0) - math.log(2)


def member_logits(model, gemma, landmarks, mask):
    """(members, B, C): the own logits of every member of an Ensemble, or of the one model."""
    if isinstance(model, Ensemble):
        return model.member_logits(gemma, landmarks, mask)
    return model(gemma, landmarks, mask)[None]


def weighted_loss(logits, labels, weight, class_weights, label_smoothing, partner=None, lam=None):
    """Class-weighted, label-smoothed cross-entropy; rows with weight 0 (batch padding) do not count.
    Equals F.cross_entropy(..., weight=class_weights)'s mean when every row has weight 1. With mixup (partner index,
    own share lam per row) each row's loss and class weight mix its own label's and its partner's."""
    def per_clip(target):
        return F.cross_entropy(logits, target, weight=class_weights, label_smoothing=label_smoothing,
                               reduction="none")
    loss, share = per_clip(labels), class_weights[labels]
    if partner is not None:
        loss = lam * loss + (1 - lam) * per_clip(labels[partner])
        share = lam * share + (1 - lam) * class_weights[labels[partner]]
    return (loss * weight).sum() / (share * weight).sum().clamp(min=1e-12)


class EMA:
    """An exponential moving average of the model's weights, updated on the device inside the training step.

    The decay warms up as (1 + n) / (10 + n), capped at `decay`: early on the average follows the weights instead of
    carrying the random initialisation for thousands of steps. A skipped step does not move it."""

    def __init__(self, model, decay):
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.params = list(self.model.parameters())
        self.decay = decay
        self.updates = torch.zeros((), device=next(model.parameters()).device)

    # no_grad: else each update chains onto the autograd graph, which grows every eager step and, kept alive, trips
    # CUDA-graph capture (AccumulateGrad stream mismatch)
    @torch.no_grad()
    def update(self, params, skipped):
        # ema += (1 - decay) * (params - ema); foreach ops with a device scalar, so nothing waits for the host
        decay = torch.clamp((1.0 + self.updates) / (10.0 + self.updates), max=self.decay)
        rate = (1.0 - decay) * (1.0 - skipped)
        delta = torch._foreach_sub(params, self.params)
        torch._foreach_mul_(delta, rate)
        torch._foreach_add_(self.params, delta)
        self.updates.add_(1.0 - skipped)


def make_train_step(model, prepare, optimizer, args, class_weights, amp, augment, scaler, ema, found_inf, skip_all,
                    compile_forward=False):
    """One optimisation step with no host synchronisation, so that it can be captured as a CUDA graph.

    A non-finite loss or gradient norm sets `found_inf`, and the fused AdamW then skips the update on the device
    (the step is counted, never applied). `skip_all` (a device flag) skips every update: the warm-up runs that
    CUDA-graph capture needs then leave weights and optimizer state untouched. Returns device tensors: loss,
    correct top-1, real clips, skipped (0/1). args: label_smoothing, grad_clip, mixup.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not scaler.is_enabled():
        optimizer.found_inf = found_inf  # read by fused AdamW at every step (also inside a captured graph)

    mixup = getattr(args, "mixup", 0.0)

    def forward_loss(batch, generator):
        gemma, landmarks, mask = prepare_inputs(batch, prepare, augment, generator)
        partner = lam = None
        if mixup > 0:  # drawn after the augmentation, and only when on: without it every draw stays as it was
            gemma, landmarks, partner, lam = mix_clips(gemma, landmarks, mask, batch.weight, mixup, generator)
        with amp:
            members = member_logits(model, gemma, landmarks, mask)
        # each member of an Ensemble learns from its own loss: one loss of their mean would train them as one model
        loss = sum(weighted_loss(m.float(), batch.labels, batch.weight, class_weights, args.label_smoothing, partner,
                                 lam) for m in members) / len(members)
        return loss, members[0] if len(members) == 1 else mean_probability_logits(members)

    if compile_forward:  # fuses augmentation, normalization and the model's small ops into a few kernels
        forward_loss = torch.compile(forward_loss, dynamic=False)

    def train_step(batch, generator=None):
        loss, logits = forward_loss(batch, generator)
        if scaler.is_enabled():  # fp16 on GPUs without bf16: the scaler finds and skips overflowing steps itself
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(params, args.grad_clip, foreach=True)
            scaler.step(optimizer)
            scaler.update()
            skipped = (~torch.isfinite(loss)).float()
        else:
            loss.backward()
            norm = nn.utils.clip_grad_norm_(params, args.grad_clip, foreach=True)
            found_inf.copy_(torch.maximum((~(torch.isfinite(loss) & torch.isfinite(norm))).float(), skip_all))
            optimizer.step()
            skipped = found_inf.clone()
        if ema is not None:
            ema.update(params, skipped)
        kept = 1.0 - skipped
        correct = (topk_correct(logits.detach(), batch.labels, 1).float() * batch.weight).sum()
        return torch.nan_to_num(loss.detach()) * kept, correct * kept, batch.weight.sum() * kept, skipped

    return train_step


def make_eval_step(model, prepare, loader, amp, compile_forward=False, tta_flip=False):
    """Step input of `loader` -> (logits float32, labels, weight); weight 0 marks batch padding."""
    def forward(batch):
        with torch.no_grad(), amp:
            return inference_logits(model, prepare, batch, tta_flip)

    if compile_forward:
        forward = torch.compile(forward, dynamic=False)

    def eval_step(step_input):
        batch = loader.materialize(step_input)
        return forward(batch), batch.labels, batch.weight
    return eval_step


class CudaGraphStep:
    """Captures `step(inputs)` once as a CUDA graph and replays it for every batch.

    Each call copies its inputs into static buffers and replays the graph; the outputs are static tensors that the
    next replay overwrites. The warm-up runs before capture must not change training: callers make them no-ops (the
    training step's skip_all flag).
    """

    def __init__(self, step, example_inputs, before_capture=None):
        # The graph reads and writes tensors by address, among them some that only step's closure holds (the
        # training step's skip_all flag): keep step, or they are freed and their memory handed to other tensors
        # while every replay still uses it.
        self.step = step
        static = [t.clone() if torch.is_tensor(t) else t for t in example_inputs]
        # A host split's step input is a Batch: keep its type, the step reads its fields by name.
        self.inputs = example_inputs._make(static) if hasattr(example_inputs, "_make") else tuple(static)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (lazy state, cuBLAS workspaces) must happen outside the capture
            for _ in range(3):
                step(self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        if before_capture is not None:
            before_capture()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = step(self.inputs)

    def __call__(self, inputs):
        for static, new in zip(self.inputs, inputs):
            if torch.is_tensor(static):
                static.copy_(new, non_blocking=True)
        self.graph.replay()
        return self.outputs


def build_steps(model, eval_model, prepare, optimizer, scaler, ema, class_weights, augment, train_loader, val_loader,
                args, device, use_graphs, compile_forward):
    """The training and validation steps of a run: eager, or captured as CUDA graphs (use_graphs), compiled first
    when compile_forward. A compiler failure falls back to plain graphs with a warning: a toolchain problem must
    not cost the run. Returns a namespace: train(step_input, generator) accumulating `totals` (loss * clips,
    correct, clips, skipped steps) on the device, val(step_input), amp (the autocast context of the steps)."""
    # Autocast's weight-cast cache must be off under graph capture (a cached cast would be replayed stale).
    amp = amp_context(device, cache_enabled=not use_graphs)
    found_inf, skip_all = torch.zeros((), device=device), torch.zeros((), device=device)
    totals = torch.zeros(4, device=device)

    def build(compiled):
        train_step = make_train_step(model, prepare, optimizer, args, class_weights, amp, augment, scaler, ema,
                                     found_inf, skip_all, compiled)

        def counted_train_step(step_input, generator=None):
            loss, correct, clips, skipped = train_step(train_loader.materialize(step_input), generator)
            totals.add_(torch.stack([loss * clips, correct, clips, skipped]))

        val_step = make_eval_step(eval_model, prepare, val_loader, amp, compiled, getattr(args, "tta_flip", False))
        if use_graphs:
            model.train()
            skip_all.fill_(1.0)  # the warm-up runs before capture must not train
            # Gradients must be None when capture starts, so the captured backward writes them instead of adding
            # to them on every replay.
            counted_train_step = CudaGraphStep(counted_train_step, next(train_loader.plan()),
                                               before_capture=lambda: optimizer.zero_grad(set_to_none=True))
            skip_all.fill_(0.0)
            eval_model.eval()
            val_step = CudaGraphStep(val_step, next(val_loader.plan()))
        return counted_train_step, val_step

    try:
        train, val = build(compile_forward)
    except Exception as e:
        if not compile_forward or isinstance(e, torch.OutOfMemoryError):
            raise
        print(f"warning: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:100]}); "
              "continuing without it (--no_compile skips the attempt)")
        skip_all.fill_(0.0)
        train, val = build(False)

    def train_step(step_input, generator=None):
        if use_graphs:  # the replayed graph draws its random numbers from the device's default generator
            train(step_input)
        else:
            optimizer.zero_grad(set_to_none=True)
            train(step_input, generator)

    return SimpleNamespace(train=train_step, val=val, totals=totals, amp=amp)


def predict_logits(model, prepare, loader, amp, step=None, tta_flip=False):
    """Logits (N, C) float32 and labels (N,) for every clip of the loader's split, in split order.

    step: a callable from make_eval_step (possibly replayed as a CUDA graph); default runs the model eagerly.
    """
    model.eval()
    step = step or make_eval_step(model, prepare, loader, amp, tta_flip=tta_flip)
    all_logits, all_labels = [], []
    for step_input in loader.plan(shuffle=False):
        logits, labels, weight = step(step_input)
        real = weight > 0
        all_logits.append(logits[real].cpu())
        all_labels.append(labels[real].cpu())
    return torch.cat(all_logits).numpy(), torch.cat(all_labels).numpy()


def evaluate(model, prepare, loader, amp, num_classes, step=None, tta_flip=False):
    """classification_metrics of every clip of the loader's split, with n_listed (clips the split file lists)."""
    logits, labels = predict_logits(model, prepare, loader, amp, step, tta_flip)
    metrics = classification_metrics(logits, labels, num_classes)
    metrics["n_listed"] = loader.split.listed
    return metrics
