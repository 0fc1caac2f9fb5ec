"""torchrun / DDP plumbing: one code path for 1 process, N GPUs or N CPU (gloo) processes.

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; without
them everything degrades to a single process and these helpers become no-ops.

Collectives are device-aware: NCCL only reduces CUDA tensors ("No backend type associated
with device type cpu"), gloo only CPU ones, so :class:`DistInfo` carries the device the
process group's tensors live on and every helper builds its tensors there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    #: Where collective tensors must live: this rank's GPU for NCCL, the CPU for gloo.
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group if launched by torchrun (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(
        dist.get_rank(),
        dist.get_world_size(),
        int(os.environ.get("LOCAL_RANK", 0)),
        collective_device(dist.get_backend(), device),
    )


def collective_device(backend: str, device: torch.device) -> torch.device:
    """The device a ``backend`` process group reduces on: NCCL needs this rank's GPU."""
    if str(backend).lower() == "nccl":
        if device.type != "cuda":
            raise ValueError(f"the NCCL backend needs a CUDA device, this rank uses {device}")
        return device
    return torch.device("cpu")


def resolve_device(spec: str) -> torch.device:
    """``auto`` = this rank's GPU when CUDA is available, else CPU; ``cuda`` without an
    index is this rank's GPU too (``LOCAL_RANK`` under torchrun), so NCCL ranks never
    share a device. A CUDA device without CUDA is a ValueError."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("CUDA is not available on this machine (use --device cpu)")
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


def barrier(info: DistInfo) -> None:
    if info.enabled:
        # NCCL: name the device, or it guesses one from the rank (wrong across nodes)
        ids = [info.device.index] if info.device.type == "cuda" else None
        dist.barrier(device_ids=ids)


def any_flag(flag: bool, info: DistInfo) -> bool:
    """True on every rank if ``flag`` is true on any rank (so all ranks stop together)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
