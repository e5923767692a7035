"""The frozen Gemma 3 vision tower (+ multimodal projector) alone, as extraction and prediction use it: which
weights to read (never the 4B language model, never a download), the image preprocessing of Gemma3ImageProcessor,
one feature vector per frame. transformers and safetensors (requirements-extract.txt) are imported only here.
"""
import json
import os

import torch
import torch.nn.functional as F

from hybrid_asl.errors import INSTALL_HINT, DataError

DEFAULT_MODEL = "google/gemma-3-4b-it"
GIB = 1024 ** 3


def import_transformers():
    try:
        import safetensors  # noqa: F401
        from transformers import AutoConfig, AutoModel
        from transformers.models.gemma3.modeling_gemma3 import Gemma3MultiModalProjector
    except ImportError as e:
        raise DataError(f"transformers / safetensors with Gemma 3 support are not installed ({e}): {INSTALL_HINT}")
    return AutoConfig, AutoModel, Gemma3MultiModalProjector


# ----------------------------------------------------------------------------------------------------------------
# The model: the vision tower (+ projector) alone

CHECKPOINT_FILES = "config.json and the *.safetensors weights (with model.safetensors.index.json when sharded)"


def looks_like_path(model_name):
    """A --model_name that can only mean a folder on disk: /abs, ./rel, ../rel, ~/..., or more than one '/'
    (a hub id is owner/name)."""
    return (model_name.startswith(("/", "./", "../", "~")) or model_name in (".", "..")
            or model_name.count("/") > 1 or "\\" in model_name or os.path.isabs(model_name))


def resolve_model_dir(model_name):
    """A local folder holding config.json and the safetensors shards; never downloads.

    A value that exists on disk is a local folder; a path-like value (looks_like_path) that does not exist is a
    missing local folder; anything else is a hub id that must already be in the hub cache.
    """
    local = os.path.expanduser(model_name)
    if os.path.isdir(local):
        if not os.path.isfile(os.path.join(local, "config.json")):
            raise DataError(f"--model_name {model_name} has no config.json; point it at a Gemma 3 checkpoint folder "
                            f"holding {CHECKPOINT_FILES}")
        return local
    if os.path.exists(local):
        raise DataError(f"--model_name {model_name} is a file; give the folder that holds {CHECKPOINT_FILES}")
    if looks_like_path(model_name):
        raise DataError(f"--model_name {model_name}: local folder does not exist; give a Gemma 3 checkpoint folder "
                        f"holding {CHECKPOINT_FILES}, or a hub id such as {DEFAULT_MODEL}")
    hint = (f"model {model_name} is not on this machine; get it once with `hf download {model_name} "
            f"--include '*.json' --include '*.safetensors'` (accept its licence on the hub and `hf auth login` first), "
            f"or pass --model_name /path/to/a/local/copy")
    try:
        from huggingface_hub import snapshot_download
        return snapshot_download(model_name, local_files_only=True, allow_patterns=["*.json", "*.safetensors"])
    except Exception:
        raise DataError(hint)


def vision_weight_names(model_dir):
    """{checkpoint tensor name: shard file} for the vision tower and projector only (the index names the shards)."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
    else:
        single = os.path.join(model_dir, "model.safetensors")
        if not os.path.isfile(single):
            raise DataError(f"{model_dir} has no model.safetensors(.index.json); only safetensors checkpoints are supported")
        import safetensors
        with safetensors.safe_open(single, framework="pt") as f:
            weight_map = {k: "model.safetensors" for k in f.keys()}
    return {k: v for k, v in weight_map.items() if "vision_tower." in k or "multi_modal_projector." in k}


def load_vision_tensors(model_dir, names):
    """Reads the named tensors, opening only the shards that hold them."""
    import safetensors
    tensors = {}
    for shard in sorted(set(names.values())):
        with safetensors.safe_open(os.path.join(model_dir, shard), framework="pt", device="cpu") as f:
            for name in (n for n, s in names.items() if s == shard):
                tensors[name] = f.get_tensor(name)
    return tensors


def match_keys(checkpoint_keys, marker, module_keys):
    """Checkpoint name -> module name: the part after `marker`, with or without SigLIP's 'vision_model.' prefix
    (checkpoints written by different transformers versions differ there)."""
    mapping = {}
    for key in checkpoint_keys:
        suffix = key.split(marker, 1)[1]
        for candidate in (suffix, suffix.removeprefix("vision_model."), "vision_model." + suffix):
            if candidate in module_keys:
                mapping[key] = candidate
                break
    return mapping


def padded_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, pad_to=128, **kwargs):
    """SDPA with the head dimension zero-padded to a multiple of `pad_to`: SigLIP's 72-wide heads miss the tuned
    64/128 attention kernels, and zero columns change neither q.k nor the kept part of the output."""
    width = query.shape[-1]
    extra = (-width) % pad_to
    if extra:
        query, key, value = (F.pad(t, (0, extra)) for t in (query, key, value))
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                         scale=scaling if scaling is not None else width ** -0.5)
    return out[..., :width].transpose(1, 2).contiguous(), None


def use_padded_attention(tower, pad_to):
    """Switches the tower's attention to padded_sdpa (0 = back to transformers' own SDPA)."""
    name = "sdpa"
    if pad_to:
        from functools import partial
        from transformers import AttentionInterface
        name = f"sdpa_pad{pad_to}"
        AttentionInterface.register(name, partial(padded_sdpa, pad_to=pad_to))
    for module in tower.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = name


def build_vision_model(config, layer, device, dtype):
    """Randomly initialised SigLIP tower (+ projector), built on the device in the target dtype (no fp32 copy in
    host memory, no language model at all); load_vision_model fills in the weights, bench_extract.py does not."""
    _, AutoModel, Gemma3MultiModalProjector = import_transformers()
    with torch.device(device):
        tower = AutoModel.from_config(config.vision_config, dtype=dtype, attn_implementation="sdpa")
        projector = Gemma3MultiModalProjector(config).to(dtype) if layer == "projector" else None
    tower.eval().requires_grad_(False)
    if projector is not None:
        projector.eval().requires_grad_(False)
    return tower, projector


def load_vision_model(model_name, layer, device, dtype):
    """(vision tower, projector or None, Gemma3Config, model_dir): only these weights are built and read."""
    AutoConfig, _, _ = import_transformers()
    model_dir = resolve_model_dir(model_name)
    config = AutoConfig.from_pretrained(model_dir)
    if getattr(config, "model_type", None) != "gemma3" or not hasattr(config, "vision_config"):
        raise DataError(f"{model_name} is a {getattr(config, 'model_type', '?')} model, not a Gemma 3 vision model "
                        "(e.g. google/gemma-3-4b-it)")
    tower, projector = build_vision_model(config, layer, device, dtype)
    names = vision_weight_names(model_dir)
    tensors = load_vision_tensors(model_dir, {k: v for k, v in names.items()
                                              if projector is not None or "vision_tower." in k})
    for module, marker in ((tower, "vision_tower."), (projector, "multi_modal_projector.")):
        if module is None:
            continue
        expected = set(module.state_dict())
        mapping = match_keys([k for k in tensors if marker in k], marker, expected)
        missing = expected - set(mapping.values()) - {"embeddings.position_ids", "vision_model.embeddings.position_ids"}
        if missing:
            raise DataError(f"{model_dir}: {len(missing)} {marker.rstrip('.')} weights missing from the checkpoint "
                            f"(e.g. {sorted(missing)[0]}); is it a complete Gemma 3 checkpoint?")
        module.load_state_dict({mapping[k]: tensors[k] for k in mapping}, strict=False)
    return tower, projector, config, model_dir


def preprocessing(model_dir, config):
    """Image size, rescale factor, mean and std: preprocessor_config.json when present, else Gemma 3's defaults."""
    size = config.vision_config.image_size
    spec = {"image_size": size, "rescale_factor": 1 / 255, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    path = os.path.join(model_dir, "preprocessor_config.json")
    if os.path.isfile(path):
        with open(path) as f:
            pre = json.load(f)
        for key in ("rescale_factor", "image_mean", "image_std"):
            spec[key] = pre.get(key, spec[key])
    return spec


def preprocess(frames, spec, dtype):
    """uint8 (T, H, W, 3) on the device -> (T, 3, S, S) pixel values, as Gemma3ImageProcessor makes them.

    Bilinear resize with antialiasing to S x S (no pan-and-scan), rounded back to uint8 levels as the reference
    processor does, then x * rescale, normalized with mean/std (0.5 -> [-1, 1]). One batched op per clip.
    """
    size = spec["image_size"]
    x = frames.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = x.round_().clamp_(0, 255)
    mean = torch.tensor(spec["image_mean"], device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec["image_std"], device=x.device).view(1, 3, 1, 1)
    return ((x * spec["rescale_factor"] - mean) / std).to(dtype)


def attention_backends(name):
    """Context that makes SDPA prefer one kernel (falling back to the others where it cannot run); auto = PyTorch's choice."""
    from contextlib import nullcontext
    if name == "auto":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    order = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
    backends = [order[name]] + [b for k, b in order.items() if k != name]
    return sdpa_kernel(backends, set_priority=True)


@torch.inference_mode()
def frame_features(tower, projector, pixel_values):
    """(B, 3, S, S) -> (B, D) float32: mean over the image tokens of the tower (or of the projector)."""
    tokens = tower(pixel_values=pixel_values).last_hidden_state  # (B, 4096, 1152) for gemma-3-4b
    if projector is not None:
        tokens = projector(tokens)  # (B, 256, 2560): 4x4 average pool, RMSNorm, linear map to the text width
    return tokens.mean(dim=1, dtype=torch.float32)


def per_frame_bytes(config, dtype):
    """Rough activation memory of one frame at inference (calibrated on gemma-3-4b: ~0.11 GB/frame in bf16)."""
    v = config.vision_config
    tokens = (v.image_size // v.patch_size) ** 2
    element = torch.finfo(dtype).bits // 8
    return int(1.5 * tokens * (v.intermediate_size + 4 * v.hidden_size) * element + 8 * 3 * v.image_size ** 2)


def auto_batch_size(device, config, dtype):
    """Largest power of two (1..32) whose activations fit the free GPU memory left after loading the model."""
    if device.type != "cuda":
        return 8
    free, _ = torch.cuda.mem_get_info(device)
    room = free - 0.35 * GIB  # CUDA workspaces, allocator fragmentation
    batch = 1
    while batch < 32 and (batch * 2) * per_frame_bytes(config, dtype) <= room:
        batch *= 2
    return batch
