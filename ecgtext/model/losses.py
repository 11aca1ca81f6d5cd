"""The four D-BETA pretraining losses as pure functions, and a combiner that
returns named parts plus their (unweighted) sum."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Masked language modelling. logits (B, L, V), labels (B, L) with -100 = ignored."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)


def mem_target(ecg: torch.Tensor, n_tokens: int, patch: int, norm_pix: bool) -> torch.Tensor:
    """Reconstruction target (B, T, in_d * patch): the input cropped to T * patch samples,
    each token's target its ``patch`` samples of every lead (lead-major).

    ``norm_pix`` standardises each lead over the whole (cropped) record first.
    """
    x = ecg[..., : n_tokens * patch].float()
    if norm_pix:
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True)
        x = (x - mean) / (var + 1e-6) ** 0.5
    b, c, _ = x.shape
    return x.reshape(b, c, n_tokens, patch).permute(0, 2, 1, 3).reshape(b, n_tokens, c * patch)


def mem_loss(pred: torch.Tensor, ecg: torch.Tensor, mask: torch.Tensor, norm_pix: bool = False) -> torch.Tensor:
    """Masked ECG modelling: MSE over masked tokens. pred (B, T, in_d, patch), mask (B, T) 1 = masked."""
    b, t, c, p = pred.shape
    target = mem_target(ecg, t, p, norm_pix)
    per_token = ((pred.reshape(b, t, c * p).float() - target) ** 2).mean(dim=-1)
    return (per_token * mask).sum() / mask.sum()


def etm_loss(logits: torch.Tensor, is_aligned: torch.Tensor) -> torch.Tensor:
    """ECG-text matching: 2-way cross-entropy. logits (B, 2), is_aligned (B,) 0/1."""
    return F.cross_entropy(logits.float(), is_aligned.long())


def ets_loss(ecg_feats: torch.Tensor, text_feats: torch.Tensor, is_aligned: torch.Tensor,
             scale: float = 1.0, bias: float | None = None) -> torch.Tensor:
    """Sigmoid contrastive loss (SigLIP) over a (B_ecg, B_text) logit matrix.

    ecg_feats (B, D) and text_feats (B', D) are raw unimodal features; with
    B' > B (distributed: text gathered from all ranks) the diagonal sits at
    ``offset = rank * B`` — pass text already rolled so that pair i is column i.
    Label +1 on the diagonal of aligned pairs, -1 elsewhere; the mean over all
    B x B' entries (as the conformance fixtures pin it).
    """
    logits = scale * ecg_feats.float() @ text_feats.float().T
    if bias is not None:
        logits = logits + bias
    b = ecg_feats.shape[0]
    labels = -torch.ones_like(logits)
    idx = torch.arange(b, device=logits.device)
    labels[idx, idx] = 2 * is_aligned.to(logits.dtype) - 1
    return -F.logsigmoid(labels * logits).mean()


@dataclass
class LossParts:
    """Named loss parts; ``total`` is their unweighted sum (what is back-propagated)."""

    mlm: torch.Tensor
    mem: torch.Tensor
    etm: torch.Tensor
    ets: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.mlm + self.mem + self.etm + self.ets

    def as_dict(self) -> dict[str, float]:
        return {"mlm": float(self.mlm), "mem": float(self.mem), "etm": float(self.etm),
                "ets": float(self.ets), "total": float(self.total)}
