"""Progress and metrics of a training run: JSONL, (optionally) TensorBoard, the log, and a
progress callback (the CLI draws a bar with it; the library never looks at the terminal)."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

from ecgtext.fsutil import atomic_path

logger = logging.getLogger(__name__)
# progress(completed_steps, total_steps, metrics_record): called after each logged step
ProgressFn = Callable[[int, int, dict], None]


class Reporter:
    """Rank 0's outputs: metrics.jsonl, TensorBoard (when installed), log lines, progress."""

    def __init__(self, out: Path, active: bool, total: int, resume_step: int, progress: ProgressFn | None = None):
        self.active = active
        self.file = out / "metrics.jsonl"
        self.tb = None
        self.total = total
        self.progress = progress if active else None
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
        if self.progress is not None:
            self.progress(resume_step, total, {})

    def say(self, msg: str) -> None:
        if self.active:
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
        if self.progress is not None and step is not None and "loss" in rec:
            self.progress(int(step), self.total, rec)

    def close(self) -> None:
        pass  # the progress callback's owner (the CLI) closes its bar
        if self.tb is not None:
            self.tb.close()
