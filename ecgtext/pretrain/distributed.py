"""Process setup for DDP (torchrun) and the all-gather that keeps gradients."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import (
    ConfigError,
)


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
