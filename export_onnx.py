"""
Export a trained checkpoint to one self-contained ONNX file, checked against the checkpoint before it is written.

    pip install -r requirements-export.txt
    python train_simple.py --demo --output_dir runs/demo
    python export_onnx.py --checkpoint runs/demo/best.pt --output runs/demo/model.onnx
    python predict.py --checkpoint runs/demo/model.onnx --landmarks data/demo/landmarks/90001_landmarks.npy \\
        --gemma data/demo/gemma_features/90001_gemma.npy          # onnxruntime alone, no torch

Every model the trainer builds exports (simple or full; landmarks, gemma or hybrid; every fusion; sinusoidal or
legacy learned positional encoding; normalized, standardized or raw landmarks). The graph takes the raw inputs
(gemma (batch, time, D), landmarks (batch, time, 162), mask (batch, time); only the streams the model uses), batch
and time dynamic, and returns the logits; the landmark normalization and its statistics are inside the graph. Class
names, inputs and their layout, num_frames and the sampling rule, the normalization statistics (for reference) and
the training data's extraction settings travel as ONNX metadata (key "hybrid_asl", JSON). The parity check runs
onnxruntime and torch on batch sizes 1-16 and clip lengths 1 to twice num_frames, padded clips included; the file
is written only if they agree within 1e-4. Details: hybrid_asl/onnx_export.py.
"""
import argparse
import os
import sys
import time
from pathlib import Path

from hybrid_asl.cli import HelpFormatter, int_range, run_cli
from hybrid_asl.errors import DataError
from hybrid_asl.files import check_output_path
from hybrid_asl.onnx_export import DEFAULT_OPSET, EXPORTERS, PARITY_TOLERANCE, export_checkpoint


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, help="best.pt or last.pt written by train_simple.py")
    p.add_argument("--output", default=None, help="the .onnx file to write (default: the checkpoint's name, .onnx)")
    p.add_argument("--opset", type=int_range(18, 20), default=DEFAULT_OPSET, help="ONNX opset")
    p.add_argument("--exporter", default="dynamo", choices=EXPORTERS,
                   help="torch.onnx's dynamo exporter (needs onnxscript), or the older TorchScript one as a fallback")
    p.add_argument("--no_check", action="store_true",
                   help=f"skip the onnxruntime-vs-torch parity check (max |diff| of the logits < {PARITY_TOLERANCE:g})")
    return p.parse_args(argv)


def main(argv=None):
    cli = get_args(argv)
    output = cli.output if cli.output is not None else str(Path(cli.checkpoint).with_suffix(".onnx"))
    if Path(output).suffix.lower() != ".onnx":
        raise DataError(f"--output {output}: give a file name ending in .onnx")
    check_output_path(output, "--output", [("--checkpoint", cli.checkpoint)])
    started = time.time()
    metadata, parity = export_checkpoint(cli.checkpoint, output, cli.opset, cli.exporter, check=not cli.no_check)
    model = metadata["model"]
    print(f"wrote {output} ({os.path.getsize(output) / 1e6:.1f} MB): {model['model']} model, modality "
          f"{model['modality']}, {metadata['num_classes']} classes, {metadata['num_frames']} frames per clip; inputs "
          f"{', '.join(i['name'] for i in metadata['inputs'])}; opset {cli.opset}, {cli.exporter} exporter, "
          f"{time.time() - started:.0f} s")
    if parity:
        print(f"parity with the checkpoint (onnxruntime vs torch, fp32 logits): max |diff| "
              f"{max(d for _, d in parity):.1e} over {len(parity)} cases (batch 1-16, 1-{2 * metadata['num_frames']} "
              "frames, padded clips)")
    return 0


def run(argv=None):
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(run())
