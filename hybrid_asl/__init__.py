"""The library behind the commands (train_simple.py, evaluate.py, predict.py, the extractors). One home each:

    errors        DataError (one-line user errors), ClipError (one bad clip)
    cli           run_cli, Ctrl-C/SIGTERM, numeric flag ranges, devices
    files         safe reads (regular files only), atomic writes, strict JSON, output-path checks
    splits        split files, glosses, label mapping, data folders
    clips         one clip: read, check, sample (from paths or arrays), padding
    packing       packed splits and their content-keyed cache
    batches       Batch, BatchLoader (GPU-resident or pinned host batches)
    landmarks     landmark channels and their normalization (LandmarkPreprocessor)
    augment       training-only augmentation
    recipe        class weights, the warmup + cosine schedule, the feature-width check, the model config
    engine        the training and evaluation steps (CUDA graphs, EMA), prediction logits
    metrics       top-1/top-5, per-class and confusion tables
    checkpoint    saving, loading (no code runs), older formats, the model of a checkpoint
    run_folder    one run per folder, summary.csv, where training ran
    video, extraction, mediapipe_landmarks, gemma_vision    reading videos and making the .npy files
    plots         pictures of a run
"""
