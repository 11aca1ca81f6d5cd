"""The pretraining loop: model set-up, optimiser, checkpoints, exact resume, DDP.

One optimiser *step* consumes ``grad_accum`` micro-batches of ``batch_size``
pairs per process. Every random draw of a micro-batch is keyed by
(seed, step, micro-batch, rank): the record order and per-record draws by the
sampler (seed, epoch, index), N3S and MLM by a generator seeded from the key,
ECG-token masking by noise drawn from it, and dropout by reseeding torch's
global generator from it. A resumed run therefore repeats exactly what an
uninterrupted one would have done; checkpoints also carry the RNG states.

Only rank 0 writes (checkpoints, metrics, the final model).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ecgtext.fsutil import atomic_path
from ..config import ModelDirConfig, load_config, load_preset
from ..errors import CheckpointMismatchError, ConfigError, EcgTextError, HubError, ModelError
from .config import TrainConfig
from .data import (MlmMasker, PairDataset, PairSet, ShardedBatchSampler, derive_seed, iterate_batches,
                   load_pairs, torch_generator)
from .negatives import N3SSampler, ReportIndex

CHECKPOINT_FORMAT = 1
_CKPT_RE = re.compile(r"^step-(\d+)\.pt$")
# settings a resumed run must share with the run it continues (else the data order differs)
_RESUME_FIXED = ("seed", "batch_size", "grad_accum")


class NonFiniteLossError(EcgTextError):
    """The loss or gradient became NaN/inf; the run stopped, checkpoints untouched."""

    exit_code = 7


# ----------------------------------------------------------------- processes
@dataclass
class Dist:
    """Where this process sits: rank, world size, device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @classmethod
    def from_env(cls, device: str | None) -> "Dist":
        """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; start the process group
        (NCCL on GPU, gloo on CPU) when there is more than one process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device:
            dev = torch.device(device)
            if dev.type == "cuda" and dev.index is None:
                dev = torch.device("cuda", local)
        else:
            dev = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError(f"device {device!r} asked for, but CUDA is not available")
            torch.cuda.set_device(dev)
        here = False
        if world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
                here = True
        return cls(rank, world, local, dev, here)

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX,
                                   "min": dist.ReduceOp.MIN}[op])
        return t

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.initialised_here:
            import torch.distributed as dist

            dist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather of (B_r, D) shards of possibly different B_r; the backward sums the
    gradient over ranks (all_reduce) and returns this rank's slice, so each rank's
    text features get the gradient of every rank's contrastive loss."""

    @staticmethod
    def forward(ctx, x, sizes: list[int], rank: int):
        import torch.distributed as dist

        top = max(sizes)
        padded = torch.zeros((top,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        ctx.sizes, ctx.rank = sizes, rank
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad):
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]], None, None


def make_gather_text(dist_info: Dist):
    """``gather_text`` for :func:`pretraining_losses`: (B, D) -> (text_all (sum B_r, D), offset)."""

    def gather(text: torch.Tensor):
        import torch.distributed as dist

        b = torch.tensor([text.shape[0]], device=text.device, dtype=torch.long)
        sizes = [torch.zeros_like(b) for _ in range(dist_info.world)]
        dist.all_gather(sizes, b)
        sizes = [int(s) for s in sizes]
        return _GatherWithGrad.apply(text, sizes, dist_info.rank), sum(sizes[: dist_info.rank])

    return gather


class Objective(nn.Module):
    """The four D-BETA losses as one module, so DDP sees one forward per micro-batch."""

    def __init__(self, model: nn.Module, gather_text=None, norm_pix: bool = False):
        super().__init__()
        self.model = model
        self.gather_text = gather_text
        self.norm_pix = norm_pix

    def forward(self, ecg, input_ids, attention_mask, mlm_labels, is_aligned, noise):
        from ..model.dbeta import pretraining_losses

        seen = {}

        def gather(text):
            out = self.gather_text(text) if self.gather_text else (text, 0)
            seen["cols"] = out[0].shape[0]
            return out

        parts, out = pretraining_losses(self.model, ecg, input_ids, attention_mask, mlm_labels, is_aligned,
                                        noise=noise, norm_pix=self.norm_pix, gather_text=gather)
        with torch.no_grad():
            picked = mlm_labels != -100
            mlm_ok = (out.mlm_logits.argmax(-1) == mlm_labels) & picked
            etm_ok = out.etm_logits.argmax(-1) == is_aligned
        return {"total": parts.total, "mlm": parts.mlm, "mem": parts.mem, "etm": parts.etm, "ets": parts.ets,
                "mlm_correct": mlm_ok.sum(), "mlm_count": picked.sum(), "etm_correct": etm_ok.sum(),
                "ets_cols": torch.tensor(seen.get("cols", ecg.shape[0]), device=ecg.device)}


# --------------------------------------------------------------- model setup
def _arch_config(arch: str) -> ModelDirConfig:
    if arch.startswith("pretrain-"):
        raise ConfigError(f"--arch {arch!r} is a training preset, not an architecture (use dbeta-base, "
                          "dbeta-tiny or a config.json)")
    p = Path(arch)
    if arch.endswith(".json") or p.is_dir():
        return load_config(p)
    return load_preset(arch)


def build_initial_model(cfg: TrainConfig, tokenizer_out: Path, write: bool):
    """The model to start from and a folder with its tokenizer (copied to ``tokenizer_out``).

    ``init``: ``scratch`` (random weights, ``arch``), ``flan-t5`` (random + the
    pretrained Flan-T5 text tower from the Hub cache), or a D-BETA model (dir,
    registry name, ``hf-hub:`` id) for continued pretraining.
    """
    from ..hub.load import load_model
    from ..model.loading import build_model, copy_tokenizer_files

    torch.manual_seed(derive_seed(cfg.seed, 0x1417))  # the same random init on every rank
    if cfg.init in ("scratch", "flan-t5"):
        model = build_model(_arch_config(cfg.arch), components="all")
        tok_src = Path(cfg.tokenizer) if cfg.tokenizer else None
        if cfg.init == "flan-t5":
            _load_flan_t5(model)
            if tok_src is None and write:
                _save_hub_tokenizer(tokenizer_out)
        elif tok_src is None:
            raise ConfigError("--init scratch needs --tokenizer DIR: a folder with the T5 tokenizer "
                              "files (spiece.model / tokenizer.json), e.g. a D-BETA model directory")
    else:
        model = load_model(cfg.init, components="all")
        tok_src = Path(cfg.tokenizer) if cfg.tokenizer else model.model_dir
    if tok_src is not None and write:
        if not any((tok_src / f).exists() for f in ("spiece.model", "tokenizer.json")):
            raise ConfigError(f"{tok_src}: no tokenizer files (spiece.model / tokenizer.json)")
        tokenizer_out.mkdir(parents=True, exist_ok=True)
        copy_tokenizer_files(tok_src, tokenizer_out)
    model.model_dir = tokenizer_out
    model._tokenizer = None
    return model


def _load_flan_t5(model) -> None:
    from ..model.text_encoder import load_pretrained_t5_encoder

    try:
        t5 = load_pretrained_t5_encoder("google/flan-t5-base")
    except Exception as exc:  # offline, no cache, gated: transformers raises many types
        raise HubError(f"cannot load google/flan-t5-base ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:160]}); it must be in the Hugging Face cache "
                       "or downloadable, or use --init scratch / a D-BETA model") from None
    try:
        model.language_encoder.load_state_dict(t5.state_dict(), strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"--init flan-t5: the text encoder of --arch does not match Flan-T5-base "
                          f"({str(exc).splitlines()[0][:160]})") from None


def _save_hub_tokenizer(out: Path) -> None:
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained("google/flan-t5-base")
    except Exception as exc:
        raise HubError(f"cannot load the google/flan-t5-base tokenizer ({type(exc).__name__}); "
                       "pass --tokenizer DIR") from None
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out))


# ----------------------------------------------------------- schedule, RNG
def lr_multiplier(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """LR factor at optimiser step ``step`` (0-based): linear warm-up over ``warmup``
    steps, then cosine / linear decay to ``min_ratio`` at ``total`` (or constant)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return min_ratio + (1 - min_ratio) * (1 - progress)


def rng_state() -> dict[str, Any]:
    """Every global RNG state as tensors / plain lists (loadable with weights_only=True)."""
    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    out = {"python": [int(py[0]), [int(v) for v in py[1]], py[2]],
           "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                     "has_gauss": int(has_gauss), "cached": float(cached)},
           "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def param_hash(model: nn.Module) -> str:
    """sha256 over every parameter and buffer (name order): equal iff bit-identical."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# -------------------------------------------------------------- checkpoints
def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of ``step-NNNNNN.pt`` files, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _CKPT_RE.match(p.name))]
    return sorted(found)


def read_training_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint, read with ``weights_only=True`` (no pickled code runs)."""
    try:
        ck = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: cannot read the training checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160]})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path}: not an ecgtext training checkpoint (format {CHECKPOINT_FORMAT})")
    return ck


# --------------------------------------------------------------------- output
class Reporter:
    """Rank 0's outputs: metrics.jsonl, TensorBoard (when installed), terminal line."""

    def __init__(self, out: Path, active: bool, total: int, resume_step: int):
        self.active = active
        self.file = out / "metrics.jsonl"
        self.tb = None
        self.progress = None
        if not active:
            return
        out.mkdir(parents=True, exist_ok=True)
        if self.file.exists():  # drop records of steps a resumed run will redo
            keep = []
            for line in self.file.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    rec = json.loads(line)
                    if rec.get("step", 0) <= resume_step:
                        keep.append(line)
            with atomic_path(self.file) as tmp:
                tmp.write_text("".join(k + "\n" for k in keep))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except Exception:  # tensorboard not installed: JSONL only
            self.tb = None
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("pretrain"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=False)
            self.task = self.progress.add_task("steps", total=total, completed=resume_step, info="")
            self.progress.start()

    def say(self, msg: str) -> None:
        if self.active:
            if self.progress is not None:
                self.progress.console.print(msg, highlight=False)
            else:
                print(msg, file=sys.stderr, flush=True)

    def record(self, rec: dict[str, Any]) -> None:
        if not self.active:
            return
        with open(self.file, "a") as f:
            f.write(json.dumps(rec) + "\n")
        step = rec.get("step")
        if self.tb is not None and step is not None and "loss" in rec:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"pretrain/{k}", v, step)
        if self.progress is not None and "loss" in rec:
            self.progress.update(self.task, completed=step,
                                 info=f"loss {rec['loss']:.4f} lr {rec['lr']:.2e} {rec['samples_per_s']:.1f} samples/s")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.tb is not None:
            self.tb.close()


# -------------------------------------------------------------------- trainer
class Trainer:
    """One pretraining run (see :func:`ecgtext.pretrain.pretrain`)."""

    def __init__(self, cfg: TrainConfig, dist_info: Dist):
        self.cfg = cfg
        self.d = dist_info
        self.out = Path(cfg.out)
        self.ckpt_dir = self.out / "checkpoints"

    # ............................................................ set-up
    def _precision(self) -> str:
        p = self.cfg.precision
        cuda = self.d.device.type == "cuda"
        if p == "auto":
            return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
        if p == "fp16" and not cuda:
            raise ConfigError("precision fp16 needs a GPU; use fp32 (or bf16) on CPU")
        return p

    def setup(self) -> None:
        cfg, d = self.cfg, self.d
        existing = list_checkpoints(self.ckpt_dir)
        if existing and not cfg.resume:
            raise ConfigError(f"{self.out} already holds checkpoints (last: step {existing[-1][0]}); "
                              "pass --resume to continue that run, or choose another --out")
        self.resume_from = existing[-1][1] if (existing and cfg.resume) else None
        from ..io import ReadOptions

        try:
            ReadOptions(**cfg.read_options)
        except TypeError as exc:
            raise ConfigError(f"read_options: {exc}") from None

        self.pairs: PairSet = load_pairs(cfg.dataset, cfg.manifest, cfg.root, cfg.rate, cfg.path_col,
                                         cfg.report_col, cfg.id_col, cfg.max_records)
        n = len(self.pairs.pairs)
        if n < d.world:
            raise ConfigError(f"{n} pairs are fewer than the {d.world} processes")

        tok_dir = self.out / "tokenizer"
        ck = read_training_checkpoint(self.resume_from) if self.resume_from else None
        self.ck = ck
        if ck is not None:
            self._check_resume_compatible(ck)
            model_cfg = ModelDirConfig.from_dict(json.loads(ck["model_config"]), str(self.resume_from))
            from ..model.dbeta import DBeta

            model = DBeta(model_cfg, components="all")
            self._load_model_state(model, ck["model"])
            model.model_dir = tok_dir
        else:
            if d.main:
                self.out.mkdir(parents=True, exist_ok=True)
                model = build_initial_model(cfg, tok_dir, write=True)
            d.barrier()
            if not d.main:
                model = build_initial_model(cfg, tok_dir, write=False)
        self.model = model
        mcfg = model.config.model
        self.masker = MlmMasker(model.tokenizer, mcfg.max_text_size, cfg.mlm_prob, cfg.mlm_strategy,
                                cfg.mlm_mask_token)
        if len(model.tokenizer) > mcfg.vocab_size:
            raise ConfigError(f"the tokenizer has {len(model.tokenizer)} tokens but the model's vocab_size is "
                              f"{mcfg.vocab_size}; use the tokenizer the architecture was made for")
        self.n3s = None
        if cfg.n3s_fraction > 0:
            reports = [p.report for p in self.pairs.pairs]
            if d.main:
                index = ReportIndex.build(reports, cfg.n3s_encoder, cfg.n3s_dim)
            d.barrier()
            if not d.main:
                index = ReportIndex.build(reports, cfg.n3s_encoder, cfg.n3s_dim, write=False)
            self.n3s = N3SSampler(index, cfg.n3s_k, cfg.n3s_fraction)
        lead_masking = mcfg.lead_masking if cfg.lead_masking is None else cfg.lead_masking
        self.dataset = PairDataset(self.pairs.pairs, model.config.preprocess, cfg.read_options,
                                   cfg.crop, lead_masking)
        self.sampler = ShardedBatchSampler(n, cfg.batch_size, d.world, d.rank, cfg.seed)
        self.n_tokens = mcfg.num_tokens(model.config.preprocess.window)
        per_epoch = len(self.sampler)
        if cfg.max_steps is not None:
            self.total = cfg.max_steps
        else:
            self.total = max(1, (cfg.max_epochs * per_epoch) // cfg.grad_accum)
        self.warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(round(cfg.warmup_ratio * self.total))
        self.precision = self._precision()

        model.to(d.device)
        model.train()
        for p in model.parameters():
            p.requires_grad_(True)
        gather = make_gather_text(d) if d.enabled else None
        objective = Objective(model, gather, cfg.norm_pix)
        if d.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            objective = DDP(objective, device_ids=[d.device.index] if d.device.type == "cuda" else None,
                            find_unused_parameters=False)
        self.objective = objective
        # decoupled weight decay on all parameters, as fairseq's Adam (the reference's trainer)
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.adam_eps,
                                     weight_decay=cfg.weight_decay)
        total, warmup = self.total, self.warmup
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_multiplier(s, total, warmup, cfg.schedule, cfg.min_lr_ratio))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")

        self.step, self.epoch, self.batch_pos = 0, 0, 0
        self.n_failed = 0
        if ck is not None:
            self.opt.load_state_dict(ck["optimizer"])
            self.sched.load_state_dict(ck["scheduler"])
            if ck["config"]["lr"] != cfg.lr:  # a deliberate change of lr on resume (e.g. after divergence)
                self.sched.base_lrs = [cfg.lr for _ in self.sched.base_lrs]
                for g in self.opt.param_groups:
                    g["lr"] = cfg.lr * lr_multiplier(ck["step"], total, warmup, cfg.schedule, cfg.min_lr_ratio)
            if ck.get("scaler"):
                self.scaler.load_state_dict(ck["scaler"])
            set_rng_state(ck["rng"])
            self.step, self.epoch, self.batch_pos = ck["step"], ck["epoch"], ck["batch"]
            self.n_failed = int(ck.get("n_failed", 0))
        self.ck = None  # free the checkpoint's tensors

    def _load_model_state(self, model, sd) -> None:
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise CheckpointMismatchError(f"{self.resume_from}: model weights do not match "
                                          f"({str(exc).splitlines()[0][:160]})") from None
        enc = model.language_encoder  # keep T5's tied input embedding tied
        enc.encoder.embed_tokens.weight = enc.shared.weight

    def _check_resume_compatible(self, ck: dict) -> None:
        old = ck["config"]
        bad = [f"{k} {old.get(k)!r} -> {getattr(self.cfg, k)!r}" for k in _RESUME_FIXED
               if old.get(k) != getattr(self.cfg, k)]
        if ck["world_size"] != self.d.world:
            bad.append(f"processes {ck['world_size']} -> {self.d.world}")
        if ck["n_pairs"] != len(self.pairs.pairs):
            bad.append(f"pairs {ck['n_pairs']} -> {len(self.pairs.pairs)}")
        if bad:
            raise ConfigError(f"{self.resume_from}: cannot resume exactly with changed settings "
                              f"({'; '.join(bad)}); use the original ones or start a new --out")

    # ........................................................ checkpoints
    def save_checkpoint(self) -> Path | None:
        if not self.d.main:
            return None
        path = self.ckpt_dir / f"step-{self.step:06d}.pt"
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step, "epoch": self.epoch, "batch": self.batch_pos,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "rng": rng_state(),
            "config": self.cfg.to_dict(),
            "model_config": json.dumps(self.model.config.to_dict()),
            "world_size": self.d.world, "n_pairs": len(self.pairs.pairs),
            "n_failed": self.n_failed,
        }
        with atomic_path(path) as tmp:
            torch.save(state, str(tmp))
        for _, old in list_checkpoints(self.ckpt_dir)[: -self.cfg.keep_checkpoints]:
            with contextlib.suppress(OSError):
                old.unlink()
        return path

    # .............................................................. loop
    def _stream(self):
        """(epoch, batch index, batch) from the saved data position on, endlessly."""
        batches = self.sampler.run(self.epoch, self.batch_pos)
        for batch in iterate_batches(self.dataset, batches, self.cfg.num_workers,
                                     pin_memory=self.d.device.type == "cuda"):
            yield batch["epoch"], batch["batch"], batch

    def _autocast(self):
        if self.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(self.d.device.type, dtype=dtype)
        return contextlib.nullcontext()

    def _stop(self, what: str, values: dict[str, float]) -> None:
        last = list_checkpoints(self.ckpt_dir)
        where = f"last good checkpoint: {last[-1][1]}" if last else "no checkpoint was written yet"
        detail = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        raise NonFiniteLossError(f"step {self.step + 1}: non-finite {what} ({detail}); training stopped, "
                                 f"{where}; lower --lr (resume with --resume --lr ...) or check the data")

    def run(self) -> Path:
        cfg, d = self.cfg, self.d
        self.setup()
        stop_at = min(self.total, cfg.stop_at_step) if cfg.stop_at_step else self.total
        rep = Reporter(self.out, d.main, self.total, self.step)
        n_params = sum(p.numel() for p in self.model.parameters())
        global_batch = cfg.batch_size * cfg.grad_accum * d.world
        ps = self.pairs
        info = {
            "event": "start", "step": self.step, "pairs": len(ps.pairs), "empty_reports": ps.n_empty,
            "missing_files": ps.n_missing, "data": ps.source, "world_size": d.world,
            "device": str(d.device), "precision": self.precision, "global_batch": global_batch,
            "total_steps": self.total, "warmup_steps": self.warmup, "params": n_params,
            "n3s_encoder": self.n3s.index.encoder if self.n3s else None,
            "n3s_reports": len(self.n3s.index) if self.n3s else 0,
            "resumed_from": str(self.resume_from) if self.resume_from else None,
        }
        rep.record(info)
        rep.say(f"pretrain: {len(ps.pairs)} pairs from {ps.source}; skipped {ps.n_empty} empty report(s) and "
                f"{ps.n_missing} missing file(s)" + (f" (e.g. {ps.missing[0]})" if ps.missing else ""))
        rep.say(f"pretrain: {n_params / 1e6:.1f} M parameters on {d.world} x {d.device} ({self.precision}), "
                f"global batch {global_batch}, {self.total} steps (warm-up {self.warmup}), N3S "
                + (f"{self.n3s.index.encoder} over {len(self.n3s.index)} reports" if self.n3s else "off")
                + (f"; resuming at step {self.step}" if self.resume_from else ""))
        try:
            self._loop(stop_at, rep)
            return self._finish(rep)
        finally:
            rep.close()

    def _loop(self, stop_at: int, rep: Reporter) -> None:
        stream = self._stream()
        try:
            self._steps(stream, stop_at, rep)
        finally:
            stream.close()  # stops the DataLoader workers now, not at garbage collection

    def _steps(self, stream, stop_at: int, rep: Reporter) -> None:
        cfg, d = self.cfg, self.d
        params = [p for p in self.model.parameters()]
        seen_failed: set[int] = set()
        acc = torch.zeros(11, dtype=torch.float64)  # summed metrics over a logging window
        window_t0, window_samples, window_steps = time.perf_counter(), 0, 0
        last_cols = 0
        while self.step < stop_at:
            micro = 0
            step_metrics = torch.zeros(11, dtype=torch.float64)
            while micro < cfg.grad_accum:
                epoch, pos, batch = next(stream)
                self.epoch, self.batch_pos = epoch, pos + 1
                for idx, msg in batch["failed"]:
                    if idx not in seen_failed:
                        seen_failed.add(idx)
                        self.n_failed += 1
                        print(f"warning: skipping record: {msg}", file=sys.stderr, flush=True)
                b = len(batch["index"])
                smallest = d.all_reduce(torch.tensor([b], device=d.device), "min")
                if int(smallest) == 0:  # some rank has nothing readable: every rank skips it
                    continue
                last_cols = self._micro_step(batch, micro, step_metrics)
                micro += 1
            self._optimizer_step(params, step_metrics)
            acc += step_metrics
            window_samples += int(step_metrics[10])
            window_steps += 1
            if self.step % cfg.log_every == 0 or self.step == stop_at:
                tot = d.all_reduce(acc.to(d.device), "sum").cpu()
                nfail = int(d.all_reduce(torch.tensor([self.n_failed], device=d.device), "sum"))
                elapsed = max(time.perf_counter() - window_t0, 1e-9)
                samples = int(d.all_reduce(torch.tensor([window_samples], device=d.device), "sum"))
                nm = max(float(tot[5]), 1.0)
                rec = {"step": self.step, "epoch": self.epoch, "lr": self.last_lr,
                       "loss": float(tot[4]) / nm, "mlm": float(tot[0]) / nm, "mem": float(tot[1]) / nm,
                       "etm": float(tot[2]) / nm, "ets": float(tot[3]) / nm,
                       "mlm_acc": float(tot[6]) / max(float(tot[7]), 1.0),
                       "etm_acc": float(tot[8]) / max(float(tot[9]), 1.0),
                       "grad_norm": self.last_grad_norm, "samples_per_s": samples / elapsed,
                       "global_batch": samples / window_steps,
                       "ets_logits": [int(batch["index"].numel()), int(last_cols)],
                       "skipped_records": nfail}
                rep.record(rec)
                acc.zero_()
                window_t0, window_samples, window_steps = time.perf_counter(), 0, 0
            if self.step % cfg.save_every == 0 and self.step < stop_at:
                self.save_checkpoint()

    def _micro_step(self, batch: dict, micro: int, metrics: torch.Tensor) -> int:
        cfg, d = self.cfg, self.d
        idx = batch["index"].tolist()
        reports = [self.pairs.pairs[i].report for i in idx]
        gen = torch_generator(cfg.seed, 0x7E47, self.step, micro, d.rank)
        if self.n3s is not None:
            texts, aligned = self.n3s.draw(reports, gen)
        else:
            texts, aligned = reports, torch.ones(len(reports), dtype=torch.long)
        ids, attn, labels = self.masker(texts, gen)
        noise = torch.rand(len(idx), self.n_tokens, generator=gen)
        torch.manual_seed(derive_seed(cfg.seed, 0xD409, self.step, micro, d.rank))  # dropout
        dev = d.device
        last = micro == cfg.grad_accum - 1
        sync = contextlib.nullcontext() if (last or not d.enabled) else self.objective.no_sync()
        with sync:
            with self._autocast():
                out = self.objective(batch["ecg"].to(dev, non_blocking=True), ids.to(dev), attn.to(dev),
                                     labels.to(dev), aligned.to(dev), noise.to(dev))
            total = out["total"]
            bad = d.all_reduce(torch.tensor([0.0 if torch.isfinite(total.detach()) else 1.0], device=dev), "max")
            if float(bad) > 0:
                self._stop("loss", {k: float(out[k].detach()) for k in ("total", "mlm", "mem", "etm", "ets")})
            self.scaler.scale(total / cfg.grad_accum).backward()
        out = {k: v.detach() for k, v in out.items()}
        metrics += torch.tensor([float(out["mlm"]), float(out["mem"]), float(out["etm"]), float(out["ets"]),
                                 float(out["total"]), 1.0, float(out["mlm_correct"]), float(out["mlm_count"]),
                                 float(out["etm_correct"]), float(len(idx)), float(len(idx))],
                                dtype=torch.float64)
        return int(out["ets_cols"])

    def _optimizer_step(self, params: list, metrics: torch.Tensor) -> None:
        cfg = self.cfg
        self.scaler.unscale_(self.opt)
        clip = cfg.clip_grad if cfg.clip_grad else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
        self.last_grad_norm = float(norm)
        if not math.isfinite(self.last_grad_norm) and not self.scaler.is_enabled():
            # fp16 overflow is normal (the scaler skips the step); elsewhere it means divergence
            self._stop("gradient", {"grad_norm": self.last_grad_norm})
        self.last_lr = self.opt.param_groups[0]["lr"]  # the lr this step used
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1

    def _finish(self, rep: Reporter) -> Path:
        d = self.d
        ckpt = self.save_checkpoint()
        # every rank must hold the same weights: compare hashes (rank 0 records them)
        digest = param_hash(self.model)
        mine = torch.tensor([int(digest[i:i + 8], 16) for i in range(0, 32, 8)], dtype=torch.long,
                            device=d.device)
        hashes = [mine]
        if d.enabled:
            import torch.distributed as dist

            hashes = [torch.zeros_like(mine) for _ in range(d.world)]
            dist.all_gather(hashes, mine)
        rank_hashes = ["".join(f"{int(v):08x}" for v in h.tolist()) for h in hashes]
        model_dir = self.out / "model"
        done = self.step >= self.total
        if d.main:
            if done:
                from ..model.loading import save_model_dir

                extra = {"name": self.out.resolve().name,
                         "source": {"pretrained_with": "ecgtext pretrain", "init": self.cfg.init,
                                    "steps": self.step, "data": self.pairs.source}}
                save_model_dir(self.model, model_dir, tokenizer_from=self.out / "tokenizer", extra_config=extra)
            rep.record({"event": "end", "step": self.step, "finished": done,
                        "checkpoint": str(ckpt) if ckpt else None,
                        "model_dir": str(model_dir) if done else None,
                        "param_hash": digest, "rank_param_hashes": rank_hashes,
                        "skipped_records": self.n_failed})
            rep.say(f"pretrain: {'finished' if done else 'paused'} at step {self.step}; "
                    + (f"model in {model_dir}" if done else f"resume with --resume (checkpoint {ckpt})"))
        d.barrier()
        if len(set(rank_hashes)) > 1:
            raise ModelError(f"the {d.world} processes ended with different weights ({', '.join(rank_hashes)}); "
                             "this is a bug in distributed training")
        return model_dir if done else self.ckpt_dir
