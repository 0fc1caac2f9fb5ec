"""ROS message <-> numpy conversion without ROS: PointCloud2, Image, CompressedImage, CameraInfo.

Why this package exists: ``sensor_msgs_py`` and ``cv_bridge`` have no wheels, and the
node must accept *any* PointCloud2 layout a vehicle driver produces. Everything here
works by duck typing on objects that carry the message's attribute names, so the tests
use small stand-ins and the node passes real ``sensor_msgs.msg`` objects.

* :mod:`.clouds` -- the PointCloud2 layout types and decoding (zero-copy where the
  layout allows).
* :mod:`.cloud_encoders` -- the labeled / visualization / filtered cloud encoders.
* :mod:`.images` -- Image / CompressedImage decoding and encoding, CameraInfo.
* :mod:`.common` -- the error types, :func:`stamp_ns`, byte buffers.

Encoding writes straight into an ``array.array('B')`` buffer: that is what rclpy
stores for ``uint8[]`` fields, so assigning it skips rclpy's per-element checks.
Malformed messages raise :class:`CloudFormatError` / :class:`ImageFormatError` (both
``ValueError``) with a message naming the problem, never a numpy traceback.

``from xmodelkd_ros.msgs import X`` keeps working for every public name.
"""

from xmodelkd_ros.msgs.cloud_encoders import (
    encode_filtered_cloud,
    encode_labeled_cloud,
    filter_mask,
)
from xmodelkd_ros.msgs.clouds import (
    DATATYPE_SIZE,
    DATATYPE_TO_NUMPY,
    FLOAT32,
    FLOAT64,
    INT8,
    INT16,
    INT32,
    UINT8,
    UINT16,
    UINT32,
    DecodedCloud,
    FieldSpec,
    PointCloud2,
    PointField,
    decode_cloud,
    parse_fields,
    structured_dtype,
)
from xmodelkd_ros.msgs.common import (
    CloudFormatError,
    ImageFormatError,
    MessageFormatError,
    stamp_ns,
)
from xmodelkd_ros.msgs.images import (
    CameraModel,
    CompressedImage,
    Image,
    decode_camera_info,
    decode_compressed_image,
    decode_image,
    encode_image,
    image_to_rgb,
)

__all__ = [
    "DATATYPE_SIZE",
    "DATATYPE_TO_NUMPY",
    "FLOAT32",
    "FLOAT64",
    "INT8",
    "INT16",
    "INT32",
    "UINT8",
    "UINT16",
    "UINT32",
    "CameraModel",
    "CloudFormatError",
    "CompressedImage",
    "DecodedCloud",
    "FieldSpec",
    "Image",
    "ImageFormatError",
    "MessageFormatError",
    "PointCloud2",
    "PointField",
    "decode_camera_info",
    "decode_cloud",
    "decode_compressed_image",
    "decode_image",
    "encode_filtered_cloud",
    "encode_image",
    "encode_labeled_cloud",
    "filter_mask",
    "image_to_rgb",
    "parse_fields",
    "stamp_ns",
    "structured_dtype",
]  # fmt: skip
