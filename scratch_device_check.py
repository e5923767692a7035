# scratch: CUDA smoke test of the CLI with a tiny random Gemma 3 checkpoint (deleted after the device run)
import os, sys, json, subprocess, tempfile, torch
from transformers import Gemma3Config, Gemma3ForConditionalGeneration
d = tempfile.mkdtemp()
cfg = Gemma3Config(vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=56, patch_size=14),
                   text_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=24, vocab_size=4000), mm_tokens_per_image=4)
Gemma3ForConditionalGeneration(cfg).save_pretrained(d, max_shard_size="300KB")
out = tempfile.mkdtemp()
for extra in ([], ["--compile", "--attention", "cudnn"]):
    r = subprocess.run([sys.executable, "extract_gemma_features.py", "--videos_dir", "../shared/data/videos/wlasl_raw", "--model_name", d,
                        "--output_dir", out, "--overwrite", "--no_progress"] + extra, capture_output=True, text=True)
    print(r.returncode, r.stdout[-600:], r.stderr[-1500:])
m = json.load(open(os.path.join(out, "extraction_metadata.json")))
print({k: m[k] for k in ("feature_dim", "device", "batch_size", "counts", "precision")})
