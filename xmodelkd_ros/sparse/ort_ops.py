"""ONNX Runtime custom-op library: the fused sparse conv and point branch as graph nodes.

``model_cpu_fused.onnx`` (export's ``fused`` graph form) spells every sparse conv as one
``ai.xmodelkd::SparseConv`` node and the point branch as one ``ai.xmodelkd::PointHead``
node. Their kernels are the torch backend's C++ kernels (``fused_conv.cpp``), wrapped for
ONNX Runtime in ``ort_ops.cpp`` and run on the session's own intra-op threads. With
standard ONNX ops (``model_cpu.onnx``) ONNX Runtime cannot do better than ~1/3 of the
torch backend (docs/performance.md: every per-offset ScatterND copies its whole input).

Building the library needs a C++ compiler and ONNX Runtime's C/C++ API headers, which
the pip wheel does not ship. They are looked for, in order, in ``$XMODELKD_ORT_INCLUDE``,
``<venv>/include/onnxruntime`` (where ``scripts/fetch_ort_headers.sh`` puts them; the
setup script calls it), ``/usr/local/include/onnxruntime``, ``/usr/include/onnxruntime``
(an ONNX Runtime release or distribution package). The library is compiled on first use
(~4 s) into the kernel cache of :mod:`.fused` and keyed like it (sources, headers,
flags, compiler, CPU). It needs an ONNX Runtime whose C API is at least the headers'
(the runtime refuses the library otherwise; :func:`available` says so first).

Where anything is missing, :func:`available` says why in one line and the ONNX Runtime
backend runs ``model_cpu.onnx`` (standard ops, same numbers to float rounding).
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from pathlib import Path

from . import fused
from .built_once import BuiltOnce
from .graph_nodes import DOMAIN

__all__ = [
    "DOMAIN", "OrtOpsUnavailableError", "available", "find_headers", "header_api_version",
    "library_path", "session_options",
]  # fmt: skip

#: ops the library registers in :data:`DOMAIN` (opset version 1)
OPS = ("SparseConv", "PointHead")
OPS_VERSION = 1  # xk_ort_ops_version() of a library built from this tree
SOURCES = (Path(__file__).with_name("ort_ops.cpp"), Path(__file__).with_name("fused_conv.cpp"))
HEADER = "onnxruntime_cxx_api.h"
#: headers of ONNX Runtime's API that the build reads (part of the cache key)
API_HEADERS = ("onnxruntime_c_api.h", "onnxruntime_cxx_api.h", "onnxruntime_cxx_inline.h",
               "onnxruntime_float16.h")  # fmt: skip


class OrtOpsUnavailableError(RuntimeError):
    """The custom-op library cannot be built or used here (the reason is the message)."""


def header_dirs() -> list[Path]:
    """Where ONNX Runtime's headers are looked for, in order (see the module docstring)."""
    explicit = os.environ.get("XMODELKD_ORT_INCLUDE")
    if explicit:  # an explicit choice is not second-guessed by a fallback
        return [Path(explicit)]
    return [
        Path(sys.prefix) / "include" / "onnxruntime",
        Path("/usr/local/include/onnxruntime"),
        Path("/usr/include/onnxruntime"),
    ]


def find_headers() -> Path | None:
    """The first of :func:`header_dirs` that holds ONNX Runtime's C++ API header."""
    return next((d for d in header_dirs() if (d / HEADER).is_file()), None)


def header_api_version(include_dir: Path) -> int:
    """``ORT_API_VERSION`` of the headers in ``include_dir`` (the C API they need)."""
    text = (include_dir / "onnxruntime_c_api.h").read_text(errors="replace")
    m = re.search(r"#define\s+ORT_API_VERSION\s+(\d+)", text)
    if m is None:
        raise OrtOpsUnavailableError(f"no ORT_API_VERSION in {include_dir}/onnxruntime_c_api.h")
    return int(m.group(1))


def runtime_api_version(version: str) -> int | None:
    """C API version an ONNX Runtime release serves (``1.N.x`` serves up to N), or None
    for a version string this does not know how to read."""
    m = re.match(r"1\.(\d+)", version)
    return int(m.group(1)) if m else None


def _build() -> Path:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise OrtOpsUnavailableError("onnxruntime not importable") from exc
    include = find_headers()
    if include is None:
        where = ", ".join(str(d) for d in header_dirs())
        raise OrtOpsUnavailableError(
            f"no ONNX Runtime headers ({HEADER}) in {where}: run scripts/fetch_ort_headers.sh "
            "or set XMODELKD_ORT_INCLUDE"
        )
    need, have = header_api_version(include), runtime_api_version(ort.__version__)
    if have is not None and have < need:
        raise OrtOpsUnavailableError(
            f"headers in {include} need ONNX Runtime C API {need}, onnxruntime "
            f"{ort.__version__} serves {have}"
        )
    cxx = fused.compiler()
    if cxx is None:
        raise OrtOpsUnavailableError("no C++ compiler (c++, g++, clang++ or $CXX) on PATH")
    keyed = (*fused.HEADERS, *(include / h for h in API_HEADERS if (include / h).is_file()))
    flags = (f"-I{include}",)
    path = fused.library_path(cxx, "xk_ort_ops", SOURCES, keyed, flags)
    if not path.is_file():
        fused.build_library(cxx, path, SOURCES, flags, OrtOpsUnavailableError)
    lib = ctypes.CDLL(str(path))
    if lib.xk_ort_ops_version() != OPS_VERSION:
        raise OrtOpsUnavailableError(
            f"{path} holds ops version {lib.xk_ort_ops_version()}, need {OPS_VERSION}"
        )
    return path


_LIBRARY: BuiltOnce[Path] = BuiltOnce(_build, OrtOpsUnavailableError)


def library_path() -> Path:
    """The built library (built on the first call); :class:`OrtOpsUnavailableError`
    with the reason where it cannot be."""
    return _LIBRARY.get()


def available() -> tuple[bool, str]:
    """(usable, why not): builds the library on the first call."""
    return _LIBRARY.available()


def session_options(options: object | None = None) -> object:
    """``onnxruntime.SessionOptions`` (``options`` or new) with the library registered."""
    import onnxruntime as ort

    opts = options if options is not None else ort.SessionOptions()
    opts.register_custom_ops_library(str(library_path()))
    return opts


def reset() -> None:
    """Forget the built library and any failure (tests change the environment)."""
    _LIBRARY.reset()
