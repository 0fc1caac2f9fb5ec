"""The CPU runtime's C++ kernels (``fused_*.cpp``): build, load, call.

One library holds them all: the fused gather-GEMM-scatter sparse conv and the point
branch (``fused_conv.cpp``, called from here), the kernel maps (``fused_maps.cpp``,
:mod:`.fused_maps`) and voxelize + labels (``fused_voxelize.cpp``, :mod:`.fused_voxelize`).
ONNX Runtime's custom ops compile ``fused_conv.cpp`` a second time, into their own
library (:mod:`.ort_ops`, with this module's build helpers).

The pair-list conv in eager torch ops (:func:`.pairs.conv_pairs`) writes two buffers of
``pairs x channels`` per conv and reads them back, which keeps the CPU at ~25 % of its
GEMM rate. The C++ kernel does the same arithmetic on a few rows at a time in registers
(see the source's header). It is compiled on first use with the system C++ compiler
(``-O3 -march=native -fopenmp``, ~2 s) into a per-user cache and loaded with
:mod:`ctypes`: no torch headers, so it builds in seconds and does not depend on the
torch version. Inference only (no autograd): training keeps the eager form.

Where no compiler is found or the build fails, :func:`available` says why and the
eager form runs instead (same numbers to float rounding). ``XMODELKD_FUSED_CONV=0``
turns the kernel off; ``XMODELKD_CACHE`` moves the cache (default
``~/.cache/xmodelkd_ros``); ``CXX`` picks the compiler.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from .built_once import BuiltOnce

__all__ = [
    "FusedUnavailableError", "available", "disabled", "enabled", "library", "point_head",
    "reset", "set_enabled", "sparse_conv",
]  # fmt: skip

#: compiled together into one library (one build, one OpenMP runtime); the first defines
#: ``xk_abi_version``
SOURCES = tuple(
    Path(__file__).with_name(n) for n in ("fused_conv.cpp", "fused_maps.cpp", "fused_voxelize.cpp")
)
#: included by the sources (part of the cache key, not compiled on their own)
HEADERS = (Path(__file__).with_name("fused_conv.h"),)
#: Code for this CPU (the cache key holds the CPU model). x86-64: 512-bit vectors where the
#: CPU has them (GCC prefers 256 by default, measured 1.7x slower here on AVX-512); ARM
#: (e.g. Jetson): -mcpu=native, the GCC / clang spelling there; unmeasured.
_ARCH_FLAGS = {
    "x86_64": ("-march=native", "-mprefer-vector-width=512"),
    "AMD64": ("-march=native", "-mprefer-vector-width=512"),
    "aarch64": ("-mcpu=native",),
    "arm64": ("-mcpu=native",),
}
FLAGS = ("-O3", *_ARCH_FLAGS.get(platform.machine(), ()), "-fopenmp", "-shared", "-fPIC",
         "-std=c++17")  # fmt: skip
ABI_VERSION = 6
#: output rows per work item: 256 rows x 64 channels = 64 KB, stays in L2 over 27 offsets
TILE_ROWS = 256

_I64, _PTR, _INT = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
#: The library's C calling convention, every source's functions in one place (checked
#: together with ABI_VERSION): name -> (argument types, return type).
SIGNATURES: dict[str, tuple[list[type], type | None]] = {
    # fused_conv.cpp
    "xk_sparse_conv": ([_PTR, _I64, _PTR, _I64, _I64, _PTR, _PTR, _PTR, _I64, _PTR, _PTR, _INT,
                        _PTR, _I64, _I64, _INT], _INT),
    "xk_point_head": ([_I64, _PTR, _I64, _PTR, _PTR, _PTR, _PTR, _I64, _PTR, _PTR, _I64, _PTR,
                       _PTR, _PTR, _PTR, _PTR, _PTR, _I64, _PTR, _INT], _INT),
    # fused_maps.cpp
    "xk_subm_table": ([_PTR, _I64, _I64, _I64, _I64, _I64, _PTR, _INT], _INT),
    "xk_downsample2": ([_PTR, _I64, _I64, _I64, _I64, _PTR, _PTR, _PTR, _INT], _I64),
    "xk_pair_counts": ([_PTR, _I64, _I64, _I64, _I64, _PTR, _INT], _INT),
    "xk_pair_fill": ([_PTR, _I64, _I64, _I64, _I64, _I64, _PTR, _PTR, _PTR, _INT], None),
    # fused_voxelize.cpp
    "xk_voxelize_sort": ([_PTR, _I64, _I64, _PTR, _I64, _PTR, _PTR, _PTR, _PTR, _INT, _INT,
                          _PTR, _PTR, _PTR, _PTR], _I64),
    "xk_voxelize_reduce": ([_PTR, _I64, _PTR, _I64, _INT, _PTR, _PTR, _PTR], None),
    "xk_point_labels": ([_PTR, _I64, _I64, _PTR, _I64, _PTR, _PTR], _I64),
}  # fmt: skip

_enabled = os.environ.get("XMODELKD_FUSED_CONV", "1").strip().lower() not in ("0", "false", "no")


class FusedUnavailableError(RuntimeError):
    """The fused kernel cannot run here (no compiler, failed build, turned off)."""


def cache_dir() -> Path:
    root = os.environ.get("XMODELKD_CACHE") or Path.home() / ".cache" / "xmodelkd_ros"
    return Path(root) / "fused"


def compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


#: /proc/cpuinfo fields that identify what ``-march=native`` / ``-mcpu=native`` compile
#: for (x86, then ARM); the others (``cpu MHz``, ``bogomips``) change while it runs.
CPU_FIELDS = (
    "vendor_id", "cpu family", "model", "model name", "stepping", "flags",
    "CPU implementer", "CPU architecture", "CPU variant", "CPU part", "Features",
)  # fmt: skip


def cpu_identity(cpuinfo: str) -> str:
    """The first CPU's identifying fields of ``/proc/cpuinfo`` text, one per line."""
    first = cpuinfo.split("\n\n")[0]
    fields = (line.split(":", 1) for line in first.splitlines() if ":" in line)
    keep = {k.strip(): v.strip() for k, v in fields if k.strip() in CPU_FIELDS}
    return "\n".join(f"{k}: {keep[k]}" for k in CPU_FIELDS if k in keep)


def _compiler_version(cxx: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.split("\n", 1)[0]
    return ""


def library_path(
    cxx: str,
    stem: str = "xk_fused",
    sources: tuple[Path, ...] = SOURCES,
    keyed: tuple[Path, ...] = HEADERS,
    extra_flags: tuple[str, ...] = (),
) -> Path:
    """Cache file name: hash of sources, the headers they include (``keyed``), flags,
    compiler (path and version) and CPU model (``-march=native`` code is only good for
    that CPU; a home directory may be shared across machines and a container's hostname
    changes every run, so the key names the CPU, not the host)."""
    h = hashlib.sha256()
    for src in (*sources, *keyed):
        h.update(src.read_bytes())
    h.update(" ".join((*FLAGS, *extra_flags)).encode())
    h.update(cxx.encode())
    h.update(_compiler_version(cxx).encode())
    h.update(platform.machine().encode())
    with contextlib.suppress(OSError):
        h.update(cpu_identity(Path("/proc/cpuinfo").read_text()).encode())
    return cache_dir() / f"{stem}_{h.hexdigest()[:16]}.so"


def build_library(
    cxx: str,
    target: Path,
    sources: tuple[Path, ...] = SOURCES,
    extra_flags: tuple[str, ...] = (),
    error: type[Exception] = FusedUnavailableError,
) -> None:
    """Compile ``sources`` into the shared library ``target`` (atomically: a concurrent
    process sees all or nothing); a failed build raises ``error`` with the compiler's
    first line."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run(
            [cxx, *FLAGS, *extra_flags, *map(str, sources), "-o", tmp],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if proc.returncode != 0:
            first = (proc.stderr.strip().splitlines() or ["(no output)"])[0]
            names = " ".join(s.name for s in sources)
            raise error(f"{Path(cxx).name} failed on {names}: {first}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load() -> ctypes.CDLL:
    cxx = compiler()
    if cxx is None:
        raise FusedUnavailableError("no C++ compiler (c++, g++, clang++ or $CXX) on PATH")
    path = library_path(cxx)
    if not path.is_file():
        build_library(cxx, path)
    lib = ctypes.CDLL(str(path))
    if lib.xk_abi_version() != ABI_VERSION:
        raise FusedUnavailableError(f"{path} has ABI {lib.xk_abi_version()}, need {ABI_VERSION}")
    for name, (argtypes, restype) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, restype
    return lib


def _warn_unavailable(reason: str) -> None:
    warnings.warn(
        f"fused CPU kernels unavailable, using eager torch ops: {reason}",
        RuntimeWarning,
        stacklevel=5,  # the code that called the fused kernel (get, library, kernel fn)
    )


_LIBRARY: BuiltOnce[ctypes.CDLL] = BuiltOnce(
    _load, FusedUnavailableError, (OSError, subprocess.SubprocessError), _warn_unavailable
)


_TURNED_OFF = "turned off (XMODELKD_FUSED_CONV=0 or set_enabled(False))"


def library() -> ctypes.CDLL:
    """The loaded kernels (built on the first call); :class:`FusedUnavailableError` with
    the reason where they cannot be, or while turned off (:func:`set_enabled`)."""
    if not _enabled:
        raise FusedUnavailableError(_TURNED_OFF)
    return _LIBRARY.get()


def available() -> tuple[bool, str]:
    """(usable, why not): builds the kernel on the first call."""
    return _LIBRARY.available() if _enabled else (False, _TURNED_OFF)


def reset() -> None:
    """Forget the loaded kernels and any failure (tests change the environment); the
    next call builds or loads again (a built library stays in the cache)."""
    _LIBRARY.reset()


def enabled() -> bool:
    return _enabled


def set_enabled(flag: bool) -> None:
    """Process-wide switch (benchmarks compare both forms in one run)."""
    global _enabled
    _enabled = bool(flag)


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """The eager torch forms inside the block, the previous switch state after it (tests
    and benchmarks compare both forms in one process)."""
    was = _enabled
    set_enabled(False)
    try:
        yield
    finally:
        set_enabled(was)


def _ready(t: Tensor | None, dtype: torch.dtype | None = None) -> Tensor | None:
    """``t`` as a contiguous tensor of ``dtype``, touched only where it is not one already:
    an untouched tensor also leaves no no-op cast behind when the exporter traces the
    ``fused`` graph's nodes (:mod:`.graph_nodes`), which run this kernel for their values."""
    if t is None:
        return None
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    return t if t.is_contiguous() else t.contiguous()


def sparse_conv(
    x: Tensor,
    weight_k: Tensor,
    bias: Tensor | None,
    in_rows: Tensor,
    out_rows: Tensor,
    bounds: Tensor,
    num_out: int,
    centre_offset: int | None = None,
    threads: int | None = None,
    residual: Tensor | None = None,
    relu: bool = False,
) -> Tensor:
    """``bias + [x @ weight_k[centre]] + sum over pairs (j -> i, offset k) of x[j] @
    weight_k[k]``, a new ``(num_out, Cout)`` tensor. Pairs grouped by offset
    (``bounds``), each offset's pairs sorted by output row
    (:attr:`.pairs.ConvPairs.sorted_by_output`); ``centre_offset`` is a submanifold
    conv's identity tap, which the pair list leaves out (then ``num_out == len(x)``).
    Then ``+ residual`` (``(num_out, Cout)``) and ``relu`` when given: a residual block's
    tail, done on each output tile while it is in cache instead of two more passes.

    float32 CPU tensors only; raises :class:`FusedUnavailableError` when the kernel is not.
    """
    lib = library()
    K, cin, cout = weight_k.shape
    for name, t in (("x", x), ("weight", weight_k), ("bias", bias), ("residual", residual)):
        if t is not None and (t.dtype != torch.float32 or t.device.type != "cpu"):
            raise TypeError(f"the fused conv takes float32 CPU tensors; {name} is {t.dtype} "
                            f"on {t.device}")  # fmt: skip
    if x.shape[1] != cin or bounds.numel() != K + 1 or (bias is not None and bias.numel() != cout):
        raise ValueError(
            f"shapes do not match: x {tuple(x.shape)}, weight {tuple(weight_k.shape)}, "
            f"bias {None if bias is None else tuple(bias.shape)}, bounds {bounds.numel()}"
        )
    if residual is not None and tuple(residual.shape) != (num_out, cout):
        raise ValueError(f"residual {tuple(residual.shape)} is not ({num_out}, {cout})")
    if centre_offset is not None and (not 0 <= centre_offset < K or x.shape[0] != num_out):
        raise ValueError(f"centre tap {centre_offset} needs {K} offsets and as many output "
                         f"rows ({num_out}) as input rows ({x.shape[0]})")  # fmt: skip
    x, w, b, res = (_ready(t) for t in (x, weight_k, bias, residual))
    in_rows, out_rows, bounds = (_ready(t, torch.int64) for t in (in_rows, out_rows, bounds))
    out = x.new_empty(num_out, cout)
    rc = lib.xk_sparse_conv(
        x.data_ptr(), cin, w.data_ptr(), cout, K, in_rows.data_ptr(), out_rows.data_ptr(),
        bounds.data_ptr(), -1 if centre_offset is None else int(centre_offset),
        None if b is None else b.data_ptr(), None if res is None else res.data_ptr(),
        int(bool(relu)), out.data_ptr(), num_out, TILE_ROWS,
        int(threads or torch.get_num_threads()),
    )  # fmt: skip
    if rc != 0:
        raise RuntimeError(f"fused conv failed (code {rc})")
    return out


def point_head(
    point_feats: Tensor,
    point2voxel: Tensor,
    voxel_x: Tensor,
    mean: Tensor,
    std: Tensor,
    layers: list[tuple[Tensor, Tensor]],
    threads: int | None = None,
) -> Tensor:
    """The student's point branch, logits only, in one pass per point:
    ``relu(relu((p - mean) / std @ W1 + b1) @ W2 + b2)`` plus ``voxel_x[point2voxel]``,
    ``relu(. @ W3 + b3)``, ``. @ W4 + b4``. ``layers`` are the four ``(weight, bias)``
    of ``nn.Linear`` (weight ``(out, in)``), BatchNorm folded in beforehand.
    """
    lib = library()
    if len(layers) != 4:
        raise ValueError(f"the fused point head takes 4 linear layers, got {len(layers)}")
    tensors = [point_feats, voxel_x, mean, std, *(t for wb in layers for t in wb)]
    if any(t.dtype != torch.float32 or t.device.type != "cpu" for t in tensors):
        raise TypeError("the fused point head takes float32 CPU tensors only")
    (w1, b1), (w2, b2), (w3, b3), (w4, b4) = layers
    n, cin = point_feats.shape
    h1, f, ncls = w1.shape[0], w2.shape[0], w4.shape[0]
    ok = (w1.shape[1] == cin and w2.shape[1] == h1 and tuple(w3.shape) == (f, f)
          and w4.shape[1] == f and voxel_x.shape[1] == f and mean.numel() == cin
          and std.numel() == cin and point2voxel.numel() == n
          and [b1.numel(), b2.numel(), b3.numel(), b4.numel()] == [h1, f, f, ncls])  # fmt: skip
    if not ok:
        raise ValueError("point head shapes do not chain: "
                         + ", ".join(str(tuple(t.shape)) for t in tensors))  # fmt: skip
    keep = [point_feats.contiguous(), voxel_x.contiguous(), point2voxel.contiguous().long(),
            mean.contiguous(), std.contiguous()]  # fmt: skip
    wts = [(w.t().contiguous(), b.contiguous()) for w, b in layers]  # (in, out) row-major
    out = point_feats.new_empty(n, ncls)
    p = lambda t: t.data_ptr()  # noqa: E731
    rc = lib.xk_point_head(
        n, p(keep[0]), cin, p(keep[3]), p(keep[4]), p(wts[0][0]), p(wts[0][1]), h1,
        p(wts[1][0]), p(wts[1][1]), f, p(keep[1]), p(keep[2]), p(wts[2][0]), p(wts[2][1]),
        p(wts[3][0]), p(wts[3][1]), ncls, p(out), int(threads or torch.get_num_threads()),
    )  # fmt: skip
    if rc != 0:
        raise ValueError("a point head layer is wider than the fused kernel's 256 channels")
    return out
