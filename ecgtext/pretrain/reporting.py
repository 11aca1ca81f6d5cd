"""Progress and metrics of a training run: terminal, JSONL and (optionally) TensorBoard."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ecgtext.fsutil import atomic_path

logger = logging.getLogger(__name__)


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
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(TextColumn("pretrain"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=False)
            self.task = self.progress.add_task("steps", total=total, completed=resume_step, info="")
            self.progress.start()

    def say(self, msg: str) -> None:
        if self.active:
            if self.progress is not None:
                self.progress.console.print(msg, highlight=False)
            else:
                logger.info("%s", msg)

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
