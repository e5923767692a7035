"""SimpleHybridASLModel, the primary model: one temporal encoder per stream, fused once per clip.

    landmarks (B, T, C) --LandmarkEncoder--> frame tokens --\
                                                            fusion (concat | gated | attention) -> classifier
    gemma     (B, T, D) --SequenceEncoder--> frame tokens --/

The landmark channels come from hybrid_asl.landmarks.LandmarkPreprocessor (normalized, standardized raw landmarks).

--modality landmarks / gemma builds only one stream (no fusion), so each can be trained without the other's files.
"""
import torch
import torch.nn as nn

from hybrid_asl_model import (ENCODERS, LandmarkEncoder, SequenceEncoder,  # noqa: F401
                              SinusoidalPositionalEncoding, TransformerBlock, build_classifier, masked_mean)

MODALITIES = ("hybrid", "landmarks", "gemma")
FUSION_TYPES = ("concat", "attention", "gated")


class SimpleHybridASLModel(nn.Module):
    def __init__(self, num_classes, gemma_feature_dim=2560, hidden_dim=512, dropout=0.5, landmark_dim=162,
                 num_layers=2, num_heads=8, encoder_dropout=0.1, fusion_type="concat", modality="hybrid",
                 use_sinusoidal_pos=True, drop_path=0.0, max_len=512, encoder="transformer"):
        super().__init__()
        assert modality in MODALITIES, f"modality must be one of {MODALITIES}"
        assert fusion_type in FUSION_TYPES, f"fusion_type must be one of {FUSION_TYPES}"
        self.modality, self.fusion_type = modality, fusion_type
        encoder_args = dict(hidden_dim=hidden_dim, num_layers=num_layers, num_heads=num_heads,
                            dropout=encoder_dropout, max_len=max_len, use_sinusoidal_pos=use_sinusoidal_pos,
                            drop_path=drop_path, encoder=encoder)
        if modality in ("hybrid", "landmarks"):
            self.landmark_encoder = LandmarkEncoder(input_dim=landmark_dim, **encoder_args)
        if modality in ("hybrid", "gemma"):
            self.gemma_encoder = SequenceEncoder(input_dim=gemma_feature_dim, **encoder_args)
        if modality == "hybrid":
            if fusion_type == "concat":
                self.fusion = nn.Sequential(nn.Linear(2 * hidden_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout))
            elif fusion_type == "gated":
                # A per-dimension gate decides, clip by clip, how much to trust each stream.
                self.gate = nn.Linear(2 * hidden_dim, hidden_dim)
            else:
                # Landmark frame tokens attend over Gemma frame tokens (and back): attention between frames,
                # not a softmax over one pooled vector, which would be the identity.
                self.landmark_to_gemma = TransformerBlock(hidden_dim, num_heads, encoder_dropout)
                self.gemma_to_landmark = TransformerBlock(hidden_dim, num_heads, encoder_dropout)
                self.fusion = nn.Sequential(nn.Linear(2 * hidden_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout))
        self.dropout = nn.Dropout(dropout)
        self.classifier = build_classifier(hidden_dim, num_classes, dropout)

    def forward(self, gemma_features, landmarks, mask=None):
        x = landmarks if landmarks is not None else gemma_features
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if self.modality == "landmarks":
            pooled = self.landmark_encoder(landmarks, mask)
        elif self.modality == "gemma":
            pooled = self.gemma_encoder(gemma_features, mask)
        else:
            pooled = self.fuse(self.landmark_encoder.encode_frames(landmarks, mask),
                               self.gemma_encoder.encode_frames(gemma_features, mask), mask)
        return self.classifier(self.dropout(pooled))

    def fuse(self, landmark_tokens, gemma_tokens, mask):
        if self.fusion_type == "attention":
            landmark_tokens, gemma_tokens = (
                self.landmark_to_gemma(landmark_tokens, mask, context=gemma_tokens, context_mask=mask),
                self.gemma_to_landmark(gemma_tokens, mask, context=landmark_tokens, context_mask=mask))
        l, g = masked_mean(landmark_tokens, mask), masked_mean(gemma_tokens, mask)
        if self.fusion_type == "gated":
            gate = torch.sigmoid(self.gate(torch.cat([l, g], dim=-1)))
            return gate * l + (1 - gate) * g
        return self.fusion(torch.cat([l, g], dim=-1))
