"""The ECG feature path rebuilt once for fast inference in bf16 (or int8) on a CPU.

:class:`FastEcgPath` computes exactly what ``DBeta.encode_ecg`` computes —
(B, in_d, N) float32 mV -> (B, D) float32 unimodal ECG features — but is
arranged for low-precision matrix units (AMX, AVX512-BF16) rather than for
fidelity to the reference's order of operations:

- weights are cast once, when the path is built (not per batch as under autocast);
  the input is cast once on the way in and the features once on the way out, so
  no float32 <-> bf16 round trip happens between layers;
- the convolutional tokenizer (kernel == stride, D-BETA's ``[(256, 2, 2)] * 4``)
  is a matrix product on a channels-last ``(B, T, C)`` tensor: each token's
  ``k`` input samples are contiguous, so a layer is a reshape and one GEMM;
  the whole encoder then stays in the ``(B, T, C)`` layout (no transposes);
- the weight normalisation of the positional convolution is applied once and the
  convolution runs as a channels-last ``conv2d`` (oneDNN's preferred bf16 layout);
- q/k/v are one fused projection; attention is ``scaled_dot_product_attention``;
- the last transformer layer runs its query, feed-forward and norms on the class
  token only (the only token the feature reads), and only the class token is
  projected and pooled: about a tenth of the base model's work is skipped;
- GELU and norms run directly on bf16 tensors (their CPU kernels accumulate in
  float32, so the explicit float32 casts of the reference add only memory passes).

``precision="fp32"`` never uses this class: the fp32 path is the reference
model itself (bit-for-bit the conformance path). Built only for inference.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from .dbeta import DBeta


class _TokenizerLayer(nn.Module):
    """A stride == kernel Conv1d as a GEMM on channels-last tokens: (B, N, C) -> (B, N // k, C_out)."""

    def __init__(self, conv: nn.Conv1d, norm: nn.GroupNorm | None):
        super().__init__()
        c_out, c_in, k = conv.weight.shape
        self.k = k
        self.proj = nn.Linear(k * c_in, c_out, bias=conv.bias is not None)
        with torch.no_grad():
            # y[o, t] = sum_{c, j} W[o, c, j] x[c, t k + j]; channels-last rows hold x[t k + j, c]
            # at column j * C_in + c, so the GEMM weight is W permuted to (o, j, c)
            self.proj.weight.copy_(conv.weight.permute(0, 2, 1).reshape(c_out, k * c_in))
            if conv.bias is not None:
                self.proj.bias.copy_(conv.bias)
        self.norm = None
        if norm is not None:  # GroupNorm with one channel per group = per-channel norm over time
            self.norm = nn.Parameter(torch.stack([norm.weight.detach(), norm.bias.detach()]), requires_grad=False)
            self.eps = norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        t = n // self.k
        x = self.proj(x[:, : t * self.k].reshape(b, t, self.k * c))
        if self.norm is not None:
            # statistics over time in float32 (as the reference's Fp32GroupNorm); the
            # normalised tensor is written once, in the working dtype
            var, mean = torch.var_mean(x.float(), dim=1, keepdim=True, correction=0)
            scale = self.norm[0].float() * torch.rsqrt(var + self.eps)
            x = (x * scale.to(x.dtype) + (self.norm[1].float() - mean * scale).to(x.dtype))
        return F.gelu(x)


class _FastLayer(nn.Module):
    """One transformer layer with fused q/k/v projections.

    The ``last`` layer computes the class token only: keys and values of every
    token (one fused k/v projection), the query, attention output, feed-forward
    and norms of the class token alone.
    """

    def __init__(self, layer: nn.Module, last: bool = False):
        super().__init__()
        att = layer.self_attn
        self.heads = att.heads
        self.last = last
        self.layer_norm_first = layer.layer_norm_first
        projs = [att.q_proj, att.k_proj, att.v_proj]
        if last:
            self.q, self.kv = att.q_proj, _fused(projs[1:])
        else:
            self.qkv = _fused(projs)
        self.out_proj = att.out_proj
        self.self_attn_layer_norm = layer.self_attn_layer_norm
        self.fc1, self.fc2 = layer.fc1, layer.fc2
        self.final_layer_norm = layer.final_layer_norm

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        b, t, e = x.shape
        h, d = self.heads, e // self.heads
        if self.last:
            k, v = self.kv(x).view(b, t, 2, h, d).permute(2, 0, 3, 1, 4)
            q = self.q(x[:, :1]).view(b, 1, h, d).transpose(1, 2)
        else:
            q, k, v = self.qkv(x).view(b, t, 3, h, d).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(y.transpose(1, 2).reshape(b, q.shape[2], e))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, E) -> (B, T, E), or (B, 1, E) (the class token) for the last layer."""
        res = x[:, :1] if self.last else x
        if self.layer_norm_first:
            x = res + self._attend(self.self_attn_layer_norm(x))
            return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))
        x = self.self_attn_layer_norm(res + self._attend(x))
        return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x))))


def _fused(linears: list[nn.Linear]) -> nn.Linear:
    """One Linear computing ``linears`` side by side (outputs concatenated)."""
    out = nn.Linear(linears[0].in_features, sum(lin.out_features for lin in linears))
    with torch.no_grad():
        out.weight.copy_(torch.cat([lin.weight for lin in linears]))
        out.bias.copy_(torch.cat([lin.bias for lin in linears]))
    return out


class FastEcgPath(nn.Module):
    """(B, in_d, N) float32 mV -> (B, D) float32 unimodal ECG features, in ``dtype``.

    Built from (and sharing no storage with) an eval-mode ``DBeta``; needs a
    tokenizer whose convolutions have kernel == stride and no padding (D-BETA's).
    """

    def __init__(self, model: "DBeta", dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        if not supports_fast_path(model):
            raise ValueError("the fast ECG path needs tokenizer convolutions with kernel == stride")
        # own copies of the ECG path: casting must never touch the reference model
        enc = copy.deepcopy(model.ecg_encoder).eval()
        self.dtype = dtype
        blocks = enc.feature_extractor.conv_layers
        self.tokenizer = nn.ModuleList(
            _TokenizerLayer(block[0], block[2] if i == 0 else None) for i, block in enumerate(blocks))
        self.layer_norm = enc.layer_norm
        self.post_extract_proj = enc.post_extract_proj
        pos = enc.conv_pos.pos_conv[0]
        with torch.no_grad():
            w = torch._weight_norm(pos.weight_v, pos.weight_g, 2)  # applied once, not per batch
        self.pos_weight = nn.Parameter(w.unsqueeze(2), requires_grad=False)  # (E, E / groups, 1, K)
        self.pos_bias = pos.bias
        self.pos_padding, self.pos_groups, self.pos_remove = pos.padding, pos.groups, enc.conv_pos.remove
        tr = enc.encoder
        self.encoder_layer_norm = tr.layer_norm
        self.layer_norm_first = tr.layer_norm_first
        n = len(tr.layers)
        self.layers = nn.ModuleList(_FastLayer(layer, last=i == n - 1) for i, layer in enumerate(tr.layers))
        self.class_embedding = nn.Parameter(model.class_embedding.detach().clone(), requires_grad=False)
        self.proj = copy.deepcopy(model.multi_modal_ecg_proj)
        self.pooler = copy.deepcopy(model.unimodal_ecg_pooler.dense)
        self.eval().requires_grad_(False)
        self.to(device=model.device, dtype=dtype)
        # channels-last is oneDNN's preferred (and bf16-capable) layout for the grouped conv
        self.pos_weight.data = self.pos_weight.data.contiguous(memory_format=torch.channels_last)

    def forward(self, ecg: torch.Tensor) -> torch.Tensor:
        x = ecg.to(self.dtype).transpose(1, 2).contiguous()  # (B, N, C): channels-last samples
        for layer in self.tokenizer:
            x = layer(x)
        x = self.layer_norm(x)
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        # positional conv on the (B, T, E) tokens viewed as a channels-last (B, E, 1, T) image
        y = F.conv2d(x.transpose(1, 2).unsqueeze(2), self.pos_weight, self.pos_bias,
                     padding=(0, self.pos_padding), groups=self.pos_groups).squeeze(2)
        if self.pos_remove:
            y = y[:, :, : -self.pos_remove]
        x = x + F.gelu(y).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], dim=1)
        if not self.layer_norm_first:
            x = self.encoder_layer_norm(x)
        for layer in self.layers:
            x = layer(x)
        if self.layer_norm_first:
            x = self.encoder_layer_norm(x)
        return torch.tanh(self.pooler(self.proj(x[:, 0]))).float()


def supports_fast_path(model: "DBeta") -> bool:
    """Whether ``model``'s tokenizer can run as GEMMs (every conv: kernel == stride)."""
    return all(k == s for _, k, s in model.config.model.conv_layers())
