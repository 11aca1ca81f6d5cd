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
import json
import logging
import math
import time
from pathlib import Path

import torch

from ecgtext.fsutil import atomic_path
from ecgtext.pretrain.checkpoint import (
    CHECKPOINT_FORMAT,
    list_checkpoints,
    param_hash,
    read_training_checkpoint,
    rng_state,
    set_rng_state,
)
from ecgtext.pretrain.distributed import Dist, make_gather_text
from ecgtext.pretrain.objective import Objective
from ecgtext.pretrain.reporting import Reporter
from ecgtext.pretrain.schedule import lr_multiplier
from ecgtext.pretrain.setup import build_initial_model

from ..config import ModelDirConfig
from ..errors import (
    CheckpointMismatchError,
    ConfigError,
    EcgTextError,
    ModelError,
)
from .config import TrainConfig
from .data import (
    MlmMasker,
    PairDataset,
    PairSet,
    ShardedBatchSampler,
    derive_seed,
    iterate_batches,
    load_pairs,
    torch_generator,
)
from .negatives import N3SSampler, ReportIndex

logger = logging.getLogger(__name__)

_RESUME_FIXED = ("seed", "batch_size", "grad_accum")


class NonFiniteLossError(EcgTextError):
    """The loss or gradient became NaN/inf; the run stopped, checkpoints untouched."""

    exit_code = 7


class Trainer:
    """One pretraining run (see :func:`ecgtext.pretrain.pretrain`)."""

    def __init__(self, cfg: TrainConfig, dist_info: Dist):
        self.cfg = cfg
        self.d = dist_info
        self.out = Path(cfg.out)
        self.ckpt_dir = self.out / "checkpoints"
        self.progress = None  # progress(step, total, record) callback, see ecgtext.pretrain.pretrain

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
                              "resume to continue that run, or choose another output folder", option="resume")
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
        objective = Objective(model, gather, cfg.norm_pix, cfg.ets_scale, cfg.ets_bias)
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
                              f"({'; '.join(bad)}); use the original ones or start a new output folder", option="out")

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
                                 f"{where}; lower the learning rate (and resume) or check the data", option="lr")

    def run(self) -> Path:
        cfg, d = self.cfg, self.d
        self.setup()
        stop_at = min(self.total, cfg.stop_at_step) if cfg.stop_at_step else self.total
        rep = Reporter(self.out, d.main, self.total, self.step, progress=self.progress)
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
            "ets_scale": cfg.ets_scale, "ets_bias": cfg.ets_bias,
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
                        logger.warning("skipping record: %s", msg)
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
                    + (f"model in {model_dir}" if done else f"resume to continue (checkpoint {ckpt})"))
        d.barrier()
        if len(set(rank_hashes)) > 1:
            raise ModelError(f"the {d.world} processes ended with different weights ({', '.join(rank_hashes)}); "
                             "this is a bug in distributed training")
        return model_dir if done else self.ckpt_dir
