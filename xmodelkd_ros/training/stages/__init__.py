"""The stage kinds of the method, in two families: :mod:`.fusion` (``pretrain``,
``teacher``, ``joint``: the camera+LiDAR network) and :mod:`.student` (``distill``,
``baseline``, ``selftrain``, ``lasermix``: the LiDAR-only network). :mod:`.base` holds
what they share.

They are registered here, in the order ``--stage`` documents them (the order a run
trains them in), so the families' modules need not be imported in that order.
"""

from xmodelkd_ros.training.stages.base import (
    EVAL_STREAM,
    STAGE_KINDS,
    StageKind,
    on_sparse_backend,
    student_cfg_of,
    teacher_cfg_of,
)
from xmodelkd_ros.training.stages.fusion import (
    JointStage,
    PretrainStage,
    TeacherStage,
    load_teacher,
    save_teacher,
)
from xmodelkd_ros.training.stages.student import (
    BaselineStage,
    DistillStage,
    LaserMixStage,
    SelfTrainStage,
    control_epochs,
    lineage_epochs,
    recipe_epochs,
)

for _kind in (PretrainStage, TeacherStage, DistillStage, BaselineStage, SelfTrainStage,
              LaserMixStage, JointStage):  # fmt: skip
    STAGE_KINDS.register(_kind.name)(_kind)

__all__ = [
    "EVAL_STREAM",
    "STAGE_KINDS",
    "BaselineStage",
    "DistillStage",
    "JointStage",
    "LaserMixStage",
    "PretrainStage",
    "SelfTrainStage",
    "StageKind",
    "TeacherStage",
    "control_epochs",
    "lineage_epochs",
    "load_teacher",
    "on_sparse_backend",
    "recipe_epochs",
    "save_teacher",
    "student_cfg_of",
    "teacher_cfg_of",
]
