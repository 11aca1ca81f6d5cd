"""D-BETA: contrastive masked ECG-text auto-encoder (ICML 2025).

Shapes: ECG (B, in_d=12, N) float32 mV with leads in the model's order;
text ids / attention mask (B, L). H = ``hidden_dim``, E = ``encoder_embed_dim``.

``components="ecg"`` builds only the ECG feature path (encoder, class token,
projection, unimodal pooler): what ``embed`` and cached ``zeroshot`` need.
It neither imports ``transformers`` nor allocates the text tower.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..config import ModelDirConfig
from ..errors import ModelError
from .ecg_encoder import EcgEncoder
from .fusion import CrossLayer, Pooler, additive_mask
from .heads import ETMHead, MEMHead, MLMHead

Components = Literal["all", "ecg"]

# state-dict prefixes of the ECG feature path
ECG_PATH_PREFIXES = ("ecg_encoder.", "class_embedding", "multi_modal_ecg_proj.", "unimodal_ecg_pooler.")
# the published checkpoint carries an unused wav2vec mask embedding
TOLERATED_EXTRA_KEYS = ("ecg_encoder.mask_emb",)


def _init_bert(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(mean=0.0, std=0.02)
    elif isinstance(module, nn.LayerNorm):
        module.bias.data.zero_()
        module.weight.data.fill_(1.0)
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()


def random_masking(x: torch.Tensor, ratio: float, noise: torch.Tensor | None = None,
                   generator: torch.Generator | None = None):
    """MAE masking of the tokens after the class token.

    x: (B, 1 + T, E). noise: (B, T), lower = kept. Returns (x_kept (B, 1 + K, E),
    mask (B, T) 1 = removed, ids_restore (B, T)), K = int(T * (1 - ratio)).
    """
    cls, body = x[:, :1], x[:, 1:]
    b, t, e = body.shape
    keep = int(t * (1 - ratio))
    if noise is None:
        noise = torch.rand(b, t, device=x.device, generator=generator)
    elif noise.shape != (b, t):
        raise ValueError(f"noise must have shape {(b, t)}, got {tuple(noise.shape)}")
    noise = noise.to(x.device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    kept = torch.gather(body, 1, ids_shuffle[:, :keep, None].expand(-1, -1, e))
    mask = torch.ones(b, t, device=x.device, dtype=x.dtype)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return torch.cat([cls, kept], dim=1), mask, ids_restore


@dataclass
class FusedOutput:
    """What one fused forward produces (all float tensors)."""

    uni_ecg: torch.Tensor  # (B, H) unimodal ECG feature (pooled)
    uni_text: torch.Tensor  # (B, H) unimodal text feature (pooled)
    text_feats: torch.Tensor  # (B, L, H) fused text stream
    ecg_feats: torch.Tensor  # (B, 1 + K, H) fused ECG stream
    cls: torch.Tensor  # (B, 2H) concatenated pooled fused features
    etm_logits: torch.Tensor  # (B, 2)
    mlm_logits: torch.Tensor | None = None  # (B, L, vocab)
    mem_logits: torch.Tensor | None = None  # (B, T, in_d, patch)
    mem_mask: torch.Tensor | None = None  # (B, T), 1 = masked token
    extras: dict[str, Any] = field(default_factory=dict)


class DBeta(nn.Module):
    """The whole D-BETA model; parameter names are those of the published checkpoint."""

    def __init__(self, config: ModelDirConfig, components: Components = "all"):
        super().__init__()
        if components not in ("all", "ecg"):
            raise ValueError(f"components must be 'all' or 'ecg', got {components!r}")
        self.config = config
        self.components = components
        cfg = config.model
        self.ecg_encoder = EcgEncoder(cfg)
        self.class_embedding = nn.Parameter(torch.empty(cfg.encoder_embed_dim).uniform_())
        self.multi_modal_ecg_proj = nn.Linear(cfg.encoder_embed_dim, cfg.hidden_dim)
        self.unimodal_ecg_pooler = Pooler(cfg.hidden_dim)
        self.multi_modal_ecg_proj.apply(_init_bert)
        self.unimodal_ecg_pooler.apply(_init_bert)
        self._tokenizer = None
        self.model_dir: Path | None = None
        if components == "ecg":
            return

        from .text_encoder import build_t5_encoder

        text_cfg = config.text_encoder_config()
        self.language_encoder = build_t5_encoder(text_cfg)
        d_text = int(text_cfg["d_model"])
        h = cfg.hidden_dim
        # the reference sizes this from encoder_embed_dim, which equals d_model in D-BETA
        self.multi_modal_language_proj = nn.Linear(d_text, h)
        self.modality_type_embeddings = nn.Embedding(2, h)
        self.multi_modal_ecg_layers = nn.ModuleList(
            CrossLayer(h, cfg.num_heads, cfg.drop_rate) for _ in range(cfg.num_top_layer))
        self.multi_modal_language_layers = nn.ModuleList(
            CrossLayer(h, cfg.num_heads, cfg.drop_rate) for _ in range(cfg.num_top_layer))
        self.multi_modal_ecg_pooler = Pooler(h)
        self.multi_modal_language_pooler = Pooler(h)
        self.unimodal_language_pooler = Pooler(h)
        self.mlm_head = MLMHead(h, cfg.vocab_size)
        self.mim_head = MEMHead(h, cfg.mem_decoder_hidden_dim, cfg.mem_decoder_num_layers,
                                cfg.mem_decoder_num_heads, cfg.in_d, cfg.token_stride)
        self.itm_head = ETMHead(2 * h)
        for m in (self.multi_modal_language_proj, self.modality_type_embeddings,
                  self.multi_modal_ecg_layers, self.multi_modal_language_layers,
                  self.multi_modal_ecg_pooler, self.multi_modal_language_pooler,
                  self.unimodal_language_pooler, self.mlm_head, self.mim_head, self.itm_head):
            m.apply(_init_bert)
        nn.init.normal_(self.mim_head.mask_token, std=0.02)

    # ------------------------------------------------------------------ helpers
    @property
    def embed_dim(self) -> int:
        """D, the size of the unimodal features."""
        return self.config.model.hidden_dim

    @property
    def device(self) -> torch.device:
        return self.class_embedding.device

    def _need_text(self, what: str) -> None:
        if self.components != "all":
            raise ModelError(f"{what} needs the text tower; load the model with components='all'")

    @property
    def tokenizer(self):
        """The model's tokenizer (T5 SentencePiece), loaded from the model directory."""
        if self._tokenizer is None:
            if self.model_dir is None:
                raise ModelError("this model has no directory to load a tokenizer from; "
                                 "use ecgtext.load_model(...) or set model.model_dir")
            from .tokenizer import load_tokenizer

            self._tokenizer = load_tokenizer(self.model_dir)
        return self._tokenizer

    def tokenize(self, texts: list[str], max_length: int | None = None,
                 lowercase: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> (input_ids (B, L) int64, attention_mask (B, L) int64), EOS appended,
        right-padded, truncated to ``max_text_size``."""
        if lowercase:
            texts = [t.lower() for t in texts]
        enc = self.tokenizer(list(texts), padding=True, truncation=True,
                             max_length=max_length or self.config.model.max_text_size,
                             return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    # ------------------------------------------------------------ unimodal paths
    def ecg_tokens(self, ecg: torch.Tensor, noise: torch.Tensor | None = None,
                   mask_ratio: float | None = None, generator: torch.Generator | None = None):
        """(B, in_d, N) mV -> (B, 1 + T, E) encoder output (class token first).

        With ``mask_ratio`` (or ``noise``) the tokens are MAE-masked before the
        transformer; then returns (tokens (B, 1 + K, E), mask (B, T), ids_restore (B, T)).
        """
        if ecg.dim() != 3 or ecg.shape[1] != self.config.model.in_d:
            raise ValueError(f"ecg must be (B, {self.config.model.in_d}, N), got {tuple(ecg.shape)}")
        x = self.ecg_encoder.embed(ecg)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        if mask_ratio is None and noise is None:
            return self.ecg_encoder.encode(x)
        ratio = self.config.model.mem_prob if mask_ratio is None else mask_ratio
        x, mask, ids_restore = random_masking(x, ratio, noise, generator)
        return self.ecg_encoder.encode(x), mask, ids_restore

    def encode_ecg(self, ecg: torch.Tensor) -> torch.Tensor:
        """(B, in_d, N) float32 mV -> (B, D) unimodal ECG features (what zero-shot scores)."""
        h = self.multi_modal_ecg_proj(self.ecg_tokens(ecg))
        return self.unimodal_ecg_pooler(h)

    def text_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """(B, L) -> (B, L, H) projected T5 encoder states."""
        self._need_text("encode_text")
        from .text_encoder import run_t5_encoder

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.multi_modal_language_proj(run_t5_encoder(self.language_encoder, input_ids, attention_mask))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) ids + (B, L) mask -> (B, D) unimodal text features (first token pooled)."""
        self._need_text("encode_text")
        return self.unimodal_language_pooler(self.text_tokens(input_ids, attention_mask))

    def encode_texts(self, texts: list[str], lowercase: bool = True, batch_size: int = 64) -> torch.Tensor:
        """Strings -> (N, D) unimodal text features; lower-cased as the reference does."""
        out = []
        for i in range(0, len(texts), batch_size):
            ids, mask = self.tokenize(texts[i:i + batch_size], lowercase=lowercase)
            out.append(self.encode_text(ids.to(self.device), mask.to(self.device)))
        return torch.cat(out) if out else torch.empty(0, self.embed_dim)

    # ------------------------------------------------------------------- fusion
    def fuse(self, ecg: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
             mask: bool = False, noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> FusedOutput:
        """Fused forward. ``mask=True`` masks 75 % of ECG tokens (``noise`` (B, T) decides
        which, as in MAE) and runs the MLM / MEM heads; ETM logits are always computed."""
        self._need_text("fuse")
        cfg = self.config.model
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        text = self.text_tokens(input_ids, attention_mask)
        uni_text = self.unimodal_language_pooler(text)
        mem_mask = ids_restore = None
        if mask:
            ecg_tok, mem_mask, ids_restore = self.ecg_tokens(ecg, noise=noise, mask_ratio=cfg.mem_prob,
                                                             generator=generator)
        else:
            ecg_tok = self.ecg_tokens(ecg)
        ecg_h = self.multi_modal_ecg_proj(ecg_tok)
        uni_ecg = self.unimodal_ecg_pooler(ecg_h)

        text_mask = additive_mask(attention_mask, text.dtype)
        x = text + self.modality_type_embeddings.weight[0].to(text.dtype)
        y = ecg_h + self.modality_type_embeddings.weight[1].to(ecg_h.dtype)
        mem_input = None
        for i, (tl, el) in enumerate(zip(self.multi_modal_language_layers, self.multi_modal_ecg_layers)):
            if mask and i == cfg.mem_layer:
                mem_input = y
            x, y = tl(x, y, text_mask, None), el(y, x, None, text_mask)
        cls = torch.cat([self.multi_modal_language_pooler(x), self.multi_modal_ecg_pooler(y)], dim=-1)
        out = FusedOutput(uni_ecg=uni_ecg, uni_text=uni_text, text_feats=x, ecg_feats=y, cls=cls,
                          etm_logits=self.itm_head(cls))
        if mask:
            if mem_input is None:  # mem_layer == -1 (or past the last layer): use the final stream
                mem_input = y
            out.mlm_logits = self.mlm_head(x)
            out.mem_logits = self.mim_head(mem_input, ids_restore)
            out.mem_mask = mem_mask
        return out

    def forward(self, ecg: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`encode_ecg` (so the model works with plain ``model(x)``)."""
        return self.encode_ecg(ecg)


def pretraining_losses(model: DBeta, ecg: torch.Tensor, input_ids: torch.Tensor,
                       attention_mask: torch.Tensor, mlm_labels: torch.Tensor, is_aligned: torch.Tensor,
                       noise: torch.Tensor | None = None, norm_pix: bool = False,
                       generator: torch.Generator | None = None, gather_text=None,
                       ets_scale: float = 1.0, ets_bias: float | None = None):
    """The pretraining forward: fused, masked pass and the four losses.

    ecg (B, in_d, N) mV; input_ids / attention_mask / mlm_labels (B, L) (the ids
    already carry the MLM corruption; labels -100 where not predicted);
    is_aligned (B,) 1 = true pair, 0 = replaced report. ``noise`` (B, T) fixes the
    ECG masking. ``gather_text(uni_text, uni_ecg) -> (text_all, offset)`` lets the
    ETS loss see the global batch when distributed. ``ets_scale`` / ``ets_bias`` shape the
    ETS logits (the reference: 1 and none).
    Returns (LossParts, FusedOutput); ``parts.total`` is the unweighted sum.
    """
    from . import losses as L

    out = model.fuse(ecg, input_ids, attention_mask, mask=True, noise=noise, generator=generator)
    text_all, offset = (out.uni_text, 0) if gather_text is None else gather_text(out.uni_text)
    if offset:
        text_all = torch.roll(text_all, shifts=-offset, dims=0)  # put this rank's pairs on the diagonal
    parts = L.LossParts(
        mlm=L.mlm_loss(out.mlm_logits, mlm_labels),
        mem=L.mem_loss(out.mem_logits, ecg, out.mem_mask, norm_pix=norm_pix),
        etm=L.etm_loss(out.etm_logits, is_aligned),
        ets=L.ets_loss(out.uni_ecg, text_all, is_aligned, scale=ets_scale, bias=ets_bias),
    )
    return parts, out
