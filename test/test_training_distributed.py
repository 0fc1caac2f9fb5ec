"""Device-aware collectives: the stop/skip flag every rank must agree on.

gloo runs here (two CPU processes); the NCCL path needs two GPUs and skips without them.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from xmodelkd_ros.training import distributed as D

# Per rank, the flags it raises at each call; any_flag must be their OR on every rank.
FLAGS = [
    [False, True, False, True],
    [False, False, True, True],
]


def _worker(rank: int, init: str, backend: str, results) -> None:
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=init, rank=rank, world_size=len(FLAGS))
    info = D.DistInfo(rank, len(FLAGS), rank, D.collective_device(dist.get_backend(), device))
    try:
        results[rank] = [D.any_flag(f, info) for f in FLAGS[rank]]
        D.barrier(info)
    finally:
        D.cleanup(info)


def _run(tmp_path, backend: str) -> None:
    results = mp.Manager().dict()
    init = f"file://{os.fspath(tmp_path / 'rendezvous')}"
    mp.spawn(_worker, args=(init, backend, results), nprocs=len(FLAGS), join=True)
    expected = [any(col) for col in zip(*FLAGS, strict=True)]
    assert dict(results) == {r: expected for r in range(len(FLAGS))}


def test_any_flag_is_the_or_over_ranks_gloo(tmp_path):
    _run(tmp_path, "gloo")


@pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.cuda.device_count() >= 2 and dist.is_nccl_available()),
    reason="the NCCL path needs 2 CUDA GPUs and an NCCL build of torch",
)
def test_any_flag_on_nccl_uses_cuda_tensors(tmp_path):
    _run(tmp_path, "nccl")


def test_single_process_is_a_no_op():
    info = D.DistInfo()
    assert not info.enabled and D.any_flag(True, info) and not D.any_flag(False, info)
    D.barrier(info)


def test_collective_device_follows_the_backend():
    cpu = torch.device("cpu")
    assert D.collective_device("gloo", cpu) == cpu
    assert D.collective_device("gloo", torch.device("cuda", 1)) == cpu
    assert D.collective_device("nccl", torch.device("cuda", 1)) == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="NCCL backend needs a CUDA device"):
        D.collective_device("nccl", cpu)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(capsys, tmp_path):
    from xmodelkd_ros.training.train import main

    with pytest.raises(ValueError, match="CUDA is not available"):
        D.resolve_device("cuda")
    assert D.resolve_device("auto") == torch.device("cpu")
    assert main(["--device", "cuda", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "bad device 'cuda'" in err and "CUDA is not available" in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_without_index_is_this_ranks_gpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert D.resolve_device("cuda") == torch.device("cuda", 0)
    assert D.resolve_device("auto") == torch.device("cuda", 0)
