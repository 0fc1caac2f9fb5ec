"""Networks: the sparse student (also the teacher's 3D branch) and its input preparation."""

from xmodelkd_ros.nets.checkpoint import (
    CheckpointError,
    StudentCheckpoint,
    load_student,
    save_student,
)
from xmodelkd_ros.nets.inputs import NetInputs, build_inputs, default_grid
from xmodelkd_ros.nets.student import (
    PRESETS,
    StudentConfig,
    StudentNet,
    StudentOutput,
    count_parameters,
    student_config,
)

__all__ = [
    "PRESETS",
    "CheckpointError",
    "NetInputs",
    "StudentCheckpoint",
    "StudentConfig",
    "StudentNet",
    "StudentOutput",
    "build_inputs",
    "count_parameters",
    "default_grid",
    "load_student",
    "save_student",
    "student_config",
]
