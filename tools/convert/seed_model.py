#!/usr/bin/env python3
"""PyTorch definition of the seed `DocumentEncoder` (spectral-mixing MLP encoder).

This is the training-side model whose state dicts `tools/convert/convert_seed.py`
turns into `spectralmlp` GGUF files. It is written from the architecture
description (docs/default-model.md) and is the ground truth for the parity
fixture in tests/data/seed/.

State-dict keys (L blocks, D = dim, K = n_filters, F = ffn):

    embedding.weight                      (V, D)
    blocks.N.norm1.weight / .bias         (D,)        LayerNorm before mixing
    blocks.N.spectral_mix.weight_real     (D, K)
    blocks.N.spectral_mix.weight_imag     (D, K)
    blocks.N.spectral_mix.bias            (D,)
    blocks.N.norm2.weight / .bias         (D,)        LayerNorm before the MLP
    blocks.N.mlp.0.weight (F, D), .bias (F,)          Linear(D, F)
    blocks.N.mlp.3.weight (D, F), .bias (D,)          Linear(F, D)
    (mlp.1 = GELU (exact, erf), mlp.2 = Dropout: no parameters)
    norm_out.weight / .bias               (D,)        optional final LayerNorm
    output.weight (E, D), output.bias (E,)            optional projection

Forward, for a batch x of byte ids (B, T):

    h = embedding(x)
    for each block:
        u = norm1(h)
        U = fft(u, along T)                       # full complex FFT
        k = min(K, T // 2)
        Z[f] = U[f] * (weight_real + i weight_imag)[:, f]  for f < k, else 0
        h = h + real(ifft(Z)) + bias
        h = h + mlp(norm2(h))
    h = norm_out(h)      if present
    h = output(h)        if present
    -> token states (B, T, E or D); pooling (mean + L2) happens outside.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as Fn


class SpectralMix(nn.Module):
    """Global token mixing by a learned complex filter on the lowest K frequencies."""

    def __init__(self, dim: int, n_filters: int):
        super().__init__()
        self.n_filters = n_filters
        scale = 1.0 / math.sqrt(n_filters)
        self.weight_real = nn.Parameter(torch.randn(dim, n_filters) * scale)
        self.weight_imag = nn.Parameter(torch.randn(dim, n_filters) * scale)
        self.bias = nn.Parameter(torch.zeros(dim))

    literal = False  # True: full complex fft/ifft exactly as described (slower, same result)

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # u: (B, T, D)
        T = u.shape[1]
        k = min(self.n_filters, T // 2)
        if k <= 0:
            return torch.zeros_like(u) + self.bias
        W = torch.complex(self.weight_real[:, :k], self.weight_imag[:, :k]).transpose(0, 1)  # (k, D)
        if self.literal:
            U = torch.fft.fft(u, dim=1)  # (B, T, D) complex
            Z = torch.zeros_like(U)
            Z[:, :k, :] = U[:, :k, :] * W
            return torch.fft.ifft(Z, dim=1).real + self.bias
        # Same value through real transforms: since only bins f < k <= T/2 are
        # kept, Re(ifft(Z))_t = (1/T) sum_f Re(Z_f e^{2 pi i f t / T}), which is
        # irfft of Y with Y_0 = Re(Z_0), Y_f = Z_f / 2 (0 < f < k), 0 above.
        Z = torch.fft.rfft(u, dim=1)[:, :k, :] * W
        Y = torch.cat([torch.complex(Z[:, :1, :].real, torch.zeros_like(Z[:, :1, :].real)),
                       0.5 * Z[:, 1:, :]], dim=1)
        return torch.fft.irfft(Y, n=T, dim=1) + self.bias


class SpectralMLPBlock(nn.Module):
    def __init__(self, dim: int, ffn: int, n_filters: int, dropout: float = 0.0, eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.spectral_mix = SpectralMix(dim, n_filters)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = nn.Sequential(
            nn.Linear(dim, ffn),
            nn.GELU(approximate="none"),
            nn.Dropout(dropout),
            nn.Linear(ffn, dim),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.spectral_mix(self.norm1(h))
        h = h + self.mlp(self.norm2(h))
        return h


class DocumentEncoder(nn.Module):
    def __init__(self, vocab: int = 256, dim: int = 256, ffn: int = 1024, n_layers: int = 4,
                 n_filters: int = 128, dropout: float = 0.0, eps: float = 1e-5,
                 output_norm: bool = False, out_dim: int | None = None):
        super().__init__()
        self.config = dict(vocab=vocab, dim=dim, ffn=ffn, n_layers=n_layers, n_filters=n_filters,
                           dropout=dropout, eps=eps, output_norm=output_norm, out_dim=out_dim)
        self.embedding = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(
            [SpectralMLPBlock(dim, ffn, n_filters, dropout, eps) for _ in range(n_layers)])
        self.norm_out = nn.LayerNorm(dim, eps=eps) if output_norm else None
        self.output = nn.Linear(dim, out_dim) if out_dim else None

    def token_states(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T) int64 byte ids -> (B, T, D) hidden states before the projection."""
        h = self.embedding(x)
        for blk in self.blocks:
            h = blk(h)
        if self.norm_out is not None:
            h = self.norm_out(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.token_states(x)
        if self.output is not None:
            h = self.output(h)
        return h

    def embed(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Mean pooling (+ L2 normalization) of the output states: (B, E)."""
        v = self.forward(x).mean(dim=1)
        return Fn.normalize(v, dim=-1) if normalize else v
