"""Building blocks of the hybrid ASL recognizer, and the full (per-frame fusion) alternative model.

Both models see a clip as two aligned sequences of T frames: Gemma 3 features (B, T, D) and landmark channels
(B, T, C) (hybrid_asl.landmarks.LandmarkPreprocessor makes them from raw MediaPipe landmarks), plus a padding mask
(B, T) that is True on real frames. Every attention and every pooling below honours that mask, so a short clip
padded to T frames gives the same logits as the unpadded clip.

The primary model is `SimpleHybridASLModel` in hybrid_asl_model_simple.py; it is assembled from the blocks here.
`FullHybridASLModel` (--model full) fuses the two streams frame by frame with cross-attention before a shared
temporal encoder. `Ensemble` (--ensemble N) holds N independently initialised copies of either model.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class SinusoidalPositionalEncoding(nn.Module):
    """Transformer sin/cos encoding: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(same)."""

    def __init__(self, d_model, max_len=512, dropout=0.1):
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(1, max_len, d_model)
        pe[0, :, 0::2] = torch.sin(position * div_term)
        pe[0, :, 1::2] = torch.cos(position * div_term[: d_model // 2])  # odd d_model: one fewer cos column
        self.register_buffer("pe", pe)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(x + self.pe[:, : x.size(1)])


class LearnedPositionalEncoding(nn.Module):
    """The legacy encoding (a randomly initialised, learned table), kept so that old checkpoints still load."""

    def __init__(self, d_model, max_len=512, dropout=0.1):
        super().__init__()
        self.pe = nn.Parameter(torch.randn(1, max_len, d_model) * 0.02)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(x + self.pe[:, : x.size(1)])


def masked_mean(tokens, mask):
    """Mean over real frames only: (B, T, H), (B, T) bool -> (B, H). Padding never dilutes the average."""
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def attention_mask(key_mask):
    """(B, T) True-on-real-frames -> a (B, 1, 1, T) boolean mask for scaled_dot_product_attention."""
    return None if key_mask is None else key_mask[:, None, None, :]


class DropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per sample during training."""

    def __init__(self, p=0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = torch.empty(x.size(0), *([1] * (x.dim() - 1)), device=x.device, dtype=x.dtype).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class MultiHeadAttention(nn.Module):
    """Multi-head attention on PyTorch's fused SDPA kernel; queries and keys may come from different streams."""

    def __init__(self, dim, num_heads, dropout):
        super().__init__()
        assert dim % num_heads == 0, f"hidden_dim {dim} must be divisible by num_heads {num_heads}"
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x, context, context_mask):
        B, Tq, H = x.shape
        q = self.q(x).view(B, Tq, self.num_heads, -1).transpose(1, 2)
        k, v = self.kv(context).view(B, context.size(1), 2, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask(context_mask),
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, Tq, H))


class TransformerBlock(nn.Module):
    """Pre-norm transformer layer. With `context` it cross-attends (queries from x, keys/values from context)."""

    def __init__(self, dim, num_heads=8, dropout=0.1, drop_path=0.0, mlp_ratio=4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_ratio * dim, dim), nn.Dropout(dropout))
        self.drop_path = DropPath(drop_path)

    def forward(self, x, mask, context=None, context_mask=None):
        h = self.norm1(x)
        if context is None:
            context, context_mask = h, mask
        x = x + self.drop_path(self.attn(h, context, context_mask))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class ConvBlock(nn.Module):
    """Depthwise temporal convolution (the Kaggle ISLR 2023 winner's block, without batch norm): pre-norm, expand,
    depthwise convolution over time, project; residual. Padding frames are zeroed before the convolution, so a clip
    padded to T frames convolves exactly like the unpadded clip (zero padding past its end)."""

    def __init__(self, dim, kernel_size=17, dropout=0.1, drop_path=0.0, expand=2):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.expand = nn.Linear(dim, expand * dim)
        self.conv = nn.Conv1d(expand * dim, expand * dim, kernel_size, padding=kernel_size // 2, groups=expand * dim)
        self.project = nn.Linear(expand * dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x, mask):
        h = self.expand(self.norm(x)) * mask.unsqueeze(-1).to(x.dtype)
        h = self.conv(h.transpose(1, 2)).transpose(1, 2)
        return x + self.drop_path(self.dropout(self.project(F.gelu(h))))


ENCODERS = ("transformer", "conv")
CONV_BLOCKS_PER_LAYER = 3  # the ISLR winner's ratio: three convolution blocks, then one transformer layer


class SequenceEncoder(nn.Module):
    """Per-frame projection + positional encoding + transformer layers over time (encoder="conv": each transformer
    layer is preceded by CONV_BLOCKS_PER_LAYER depthwise convolution blocks, which see neighbouring frames).

    `encode_frames` returns the frame tokens (B, T, hidden); `forward` pools them over real frames to (B, hidden).
    """

    def __init__(self, input_dim, hidden_dim=512, num_layers=2, num_heads=8, dropout=0.1, max_len=512,
                 use_sinusoidal_pos=True, drop_path=0.0, encoder="transformer"):
        super().__init__()
        assert encoder in ENCODERS, f"encoder must be one of {ENCODERS}"
        self.input_proj = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.LayerNorm(hidden_dim))
        encoding = SinusoidalPositionalEncoding if use_sinusoidal_pos else LearnedPositionalEncoding
        self.pos_encoding = encoding(hidden_dim, max_len, dropout)
        # Stochastic depth grows linearly with depth, as in DeiT/timm: the top layer is dropped most often.
        rates = [drop_path * (i + 1) / num_layers for i in range(num_layers)]
        per_layer = CONV_BLOCKS_PER_LAYER if encoder == "conv" else 0
        self.layers = nn.ModuleList(
            block for r in rates
            for block in [*(ConvBlock(hidden_dim, dropout=dropout, drop_path=r) for _ in range(per_layer)),
                          TransformerBlock(hidden_dim, num_heads, dropout, r)])
        self.norm = nn.LayerNorm(hidden_dim)

    def encode_frames(self, x, mask=None):
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        h = self.pos_encoding(self.input_proj(x))
        for layer in self.layers:
            h = layer(h, mask)
        return self.norm(h)

    def forward(self, x, mask=None):
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        return masked_mean(self.encode_frames(x, mask), mask)


class LandmarkEncoder(SequenceEncoder):
    """Encodes MediaPipe landmark sequences (B, T, input_dim) to one vector per clip (B, hidden_dim).

    use_sinusoidal_pos=False keeps the legacy learned/random encoding so that old checkpoints load.
    """

    def __init__(self, input_dim=162, hidden_dim=512, num_layers=2, num_heads=8, dropout=0.1, max_len=512,
                 use_sinusoidal_pos=True, drop_path=0.0, encoder="transformer"):
        super().__init__(input_dim, hidden_dim, num_layers, num_heads, dropout, max_len, use_sinusoidal_pos,
                         drop_path, encoder)


def build_classifier(hidden_dim, num_classes, dropout):
    """Above 500 classes the head gets a third layer and a 2x wider middle: one linear map underfits 1000 glosses."""
    if num_classes > 500:
        width = hidden_dim * 2
        layers = [nn.Linear(hidden_dim, width), nn.GELU(), nn.Dropout(dropout),
                  nn.Linear(width, width), nn.GELU(), nn.Dropout(dropout),
                  nn.Linear(width, num_classes)]
    else:
        layers = [nn.Linear(hidden_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
                  nn.Linear(hidden_dim, num_classes)]
    classifier = nn.Sequential(*layers)
    # Small final weights start every class near the same logit, which keeps early training with many classes stable.
    nn.init.xavier_uniform_(classifier[-1].weight, gain=0.1)
    nn.init.zeros_(classifier[-1].bias)
    return classifier


class FullHybridASLModel(nn.Module):
    """Per-frame fusion, then time: each landmark frame token cross-attends to the Gemma frame tokens and vice
    versa (real attention between frame tokens, masked), the two fused streams are summed frame by frame, and a
    temporal transformer runs over the fused sequence.
    """

    def __init__(self, num_classes, gemma_feature_dim=2560, hidden_dim=512, dropout=0.5, landmark_dim=162,
                 num_layers=2, num_heads=8, encoder_dropout=0.1, use_sinusoidal_pos=True, drop_path=0.0,
                 max_len=512):
        super().__init__()
        encoding = SinusoidalPositionalEncoding if use_sinusoidal_pos else LearnedPositionalEncoding
        self.gemma_proj = nn.Sequential(nn.Linear(gemma_feature_dim, hidden_dim), nn.LayerNorm(hidden_dim))
        self.landmark_proj = nn.Sequential(nn.Linear(landmark_dim, hidden_dim), nn.LayerNorm(hidden_dim))
        self.pos_encoding = encoding(hidden_dim, max_len, encoder_dropout)
        self.landmark_to_gemma = TransformerBlock(hidden_dim, num_heads, encoder_dropout)
        self.gemma_to_landmark = TransformerBlock(hidden_dim, num_heads, encoder_dropout)
        rates = [drop_path * (i + 1) / num_layers for i in range(num_layers)]
        self.temporal = nn.ModuleList(TransformerBlock(hidden_dim, num_heads, encoder_dropout, r) for r in rates)
        self.norm = nn.LayerNorm(hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = build_classifier(hidden_dim, num_classes, dropout)

    def forward(self, gemma_features, landmarks, mask=None):
        if mask is None:
            mask = torch.ones(landmarks.shape[:2], dtype=torch.bool, device=landmarks.device)
        g = self.pos_encoding(self.gemma_proj(gemma_features))
        l = self.pos_encoding(self.landmark_proj(landmarks))
        l_fused = self.landmark_to_gemma(l, mask, context=g, context_mask=mask)
        g_fused = self.gemma_to_landmark(g, mask, context=l, context_mask=mask)
        h = l_fused + g_fused
        for layer in self.temporal:
            h = layer(h, mask)
        pooled = masked_mean(self.norm(h), mask)
        return self.classifier(self.dropout(pooled))


class Ensemble(nn.Module):
    """N copies of one model, each initialised on its own, trained side by side on the same batches, each on its own
    loss (engine.member_logits): the copies stay as different as separately trained runs, which is where an
    ensemble's gain comes from. The output is the log of the members' mean class probabilities, so softmax(output) is
    that mean and every consumer of logits (evaluation, prediction, the ONNX graph) needs nothing else."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    def member_logits(self, gemma_features, landmarks, mask=None):
        """(members, B, num_classes): every member's own logits."""
        return torch.stack([m(gemma_features, landmarks, mask) for m in self.members])

    def forward(self, gemma_features, landmarks, mask=None):
        return mean_probability_logits(self.member_logits(gemma_features, landmarks, mask))


def mean_probability_logits(member_logits):
    """(members, B, C) logits -> (B, C): the log of the mean of the members' class probabilities."""
    return torch.logsumexp(member_logits.float().log_softmax(-1), 0) - math.log(member_logits.shape[0])
