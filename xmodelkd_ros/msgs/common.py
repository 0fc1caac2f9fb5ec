"""What both codecs share: the error types, the header stamp, byte-buffer views.

Why separate: clouds and images raise the same error family (the node catches
:class:`MessageFormatError` for either) and both write outputs through the same
``array('B')`` buffers that rclpy stores without per-element checks.
"""

from __future__ import annotations

import array
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class MessageFormatError(ValueError):
    """A message whose content cannot be interpreted (base class)."""


class CloudFormatError(MessageFormatError):
    """A PointCloud2 whose layout is inconsistent or unsupported."""


class ImageFormatError(MessageFormatError):
    """An Image / CompressedImage / CameraInfo that cannot be decoded."""


# --------------------------------------------------------------------------------------
# Buffers
# --------------------------------------------------------------------------------------


def stamp_ns(header: Any) -> int:
    """A ``std_msgs/Header`` stamp as integer nanoseconds (the key scans and images are
    matched and scored by; integers so equality is exact)."""
    st = header.stamp
    return int(st.sec) * 1_000_000_000 + int(st.nanosec)


def _as_uint8(data: Any) -> np.ndarray:
    """A flat uint8 view of a message's ``data`` (bytes, bytearray, array('B'), list...).

    Zero-copy for anything exposing the buffer protocol; rclpy hands ``array.array``.
    """
    if isinstance(data, np.ndarray):
        flat = np.ascontiguousarray(data).reshape(-1)
        return flat.view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError, OverflowError) as exc:
            raise MessageFormatError(f"message data is not a byte sequence: {exc}") from None


def _new_byte_buffer(nbytes: int) -> tuple[array.array, np.ndarray]:
    """A zeroed ``array('B')`` for a message's ``data`` plus a writable numpy view of it."""
    buf = array.array("B", bytes(nbytes))
    return buf, np.frombuffer(buf, dtype=np.uint8) if nbytes else np.zeros(0, np.uint8)


def _build(cls: Any, header: Any, **kw: Any) -> Any:
    """Construct a message; a None header is left to the class default (rclpy's
    messages would otherwise hold None and fail to serialize)."""
    if header is not None:
        kw["header"] = header
    return cls(**kw)
