"""The fusion teacher: the student's sparse U-Net plus a 2D image branch, fused per point.

Why it looks like this (docs/method.md, steps 1-2):

* The 3D branch *is* a :class:`StudentNet` (same architecture as the deployed student), so
  the teacher's 3D-only features/logits are directly comparable to the student's and can
  supervise it on points no camera sees.
* Every LiDAR point that projects into a camera samples the image feature map at its pixel
  (:func:`sample_point_features`). The data pipeline hands over a flat list of
  correspondences ``(point_idx, image_idx, u, v)``; a point seen by several cameras (or by
  one camera under two augmentations) has several rows, and its 2D feature is the mean over
  its views.
* Fusion is a gated residual: ``g = sigmoid(MLP([f3d, f2d]))``,
  ``fused = f3d + g * proj(f2d)``, then a residual MLP. Points without a view get ``g = 0``
  and so fall back to their 3D feature; the teacher degrades to LiDAR-only gracefully
  instead of hallucinating image features at zero.
* Projection heads map the 3D feature of each point and each per-view 2D feature into a
  shared space for the multi-view contrastive loss
  (:func:`xmodelkd_ros.training.losses.multiview_infonce`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from xmodelkd_ros.nets.image_branch import build_image_encoder, load_image_weights
from xmodelkd_ros.nets.image_encoder import (
    ImageEncoderConfig,
    LoadReport,
    sample_point_features,
)
from xmodelkd_ros.nets.inputs import NetInputs
from xmodelkd_ros.nets.student import StudentConfig, StudentNet


@dataclass
class PointPixelCorrespondence:
    """Which point is seen where: one row per (point, view) pair.

    ``point_idx`` (K,) indexes the valid points of the batch (rows of
    ``NetInputs.point_feats``), ``image_idx`` (K,) the images, ``uv`` (K, 2) pixel
    coordinates in the original ``image_size = (H, W)`` with pixel centres at integer + 0.5.
    ``fuse`` (K,) bool, optional: the rows the fusion may use (None = all). Temporal views
    (images of other frames) are not fused: they are positives of the contrastive term only,
    so the fused features mean the same in training and at inference.
    """

    point_idx: Tensor
    image_idx: Tensor
    uv: Tensor
    image_size: tuple[int, int]
    fuse: Tensor | None = None

    def __post_init__(self) -> None:
        k = self.point_idx.shape[0]
        bad_fuse = self.fuse is not None and self.fuse.shape != (k,)
        if self.image_idx.shape != (k,) or self.uv.shape != (k, 2) or bad_fuse:
            raise ValueError(
                f"correspondences disagree: point_idx {tuple(self.point_idx.shape)}, "
                f"image_idx {tuple(self.image_idx.shape)}, uv {tuple(self.uv.shape)}, "
                f"fuse {None if self.fuse is None else tuple(self.fuse.shape)}"
            )

    def __len__(self) -> int:
        return int(self.point_idx.shape[0])

    @classmethod
    def from_batch(cls, batch: object) -> PointPixelCorrespondence:
        """From the training ``Batch`` (anything with point_idx, image_idx, uv, image_size)."""
        return cls(
            batch.point_idx,  # type: ignore[attr-defined]
            batch.image_idx,  # type: ignore[attr-defined]
            batch.uv,  # type: ignore[attr-defined]
            tuple(batch.image_size),  # type: ignore[attr-defined]
            getattr(batch, "fuse", None),
        )


@dataclass(frozen=True)
class TeacherConfig:
    """Architecture of :class:`FusionTeacher`; ``student`` is the 3D branch's config."""

    student: StudentConfig = field(default_factory=StudentConfig)
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    #: Width of the contrastive embedding space (proj_3d / proj_2d).
    contrast_dim: int = 64

    def to_dict(self) -> dict:
        image = {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in self.image.__dict__.items()
        }
        return {"student": self.student.to_dict(), "image": image,
                "contrast_dim": self.contrast_dim}

    @classmethod
    def from_dict(cls, data: dict) -> TeacherConfig:
        unknown = sorted(set(data) - {"student", "image", "contrast_dim"})
        if unknown:
            raise ValueError(f"unknown teacher config keys: {unknown}")
        image = {k: tuple(v) if isinstance(v, list) else v
                 for k, v in data.get("image", {}).items()}
        return cls(
            student=StudentConfig.from_dict(data.get("student", {})),
            image=ImageEncoderConfig(**image),
            contrast_dim=int(data.get("contrast_dim", 64)),
        )


@dataclass
class TeacherOutput:
    logits: Tensor  # (P, C) fused logits
    features: Tensor  # (P, D3) fused per-point features
    logits_3d: Tensor  # (P, C) 3D-only logits (the StudentNet branch)
    features_3d: Tensor  # (P, D3) 3D-only features
    feats_2d_views: Tensor  # (K, D2) per-correspondence 2D features
    proj_3d: Tensor  # (P, Dc) contrastive embedding of the 3D features
    proj_2d: Tensor  # (K, Dc) contrastive embedding of each 2D view
    seen: Tensor  # (P,) bool: the point has a fused (current-frame) view: the cameras' view
    gate: Tensor  # (P, D3) fusion gate, zero for unseen points


def _mlp(cin: int, hidden: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(cin, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, cout),
    )


def average_views(feats: Tensor, point_idx: Tensor, num_points: int) -> tuple[Tensor, Tensor]:
    """Mean of the per-view features of each point: (P, D) and the (P,) view counts."""
    summed = feats.new_zeros(num_points, feats.shape[1]).index_add(0, point_idx, feats)
    counts = torch.bincount(point_idx, minlength=num_points)
    mean = summed / counts.clamp(min=1).to(feats.dtype)[:, None]
    return mean, counts


class FusionTeacher(nn.Module):
    """LiDAR + camera teacher: StudentNet 3D branch, 2D branch, gated per-point fusion."""

    def __init__(self, config: TeacherConfig | None = None):
        super().__init__()
        self.config = cfg = config or TeacherConfig()
        self.branch_3d = StudentNet(cfg.student)
        self.image_encoder = build_image_encoder(cfg.image)
        d3, d2, dc = cfg.student.feature_dim, cfg.image.out_channels, cfg.contrast_dim
        self.proj_2d_to_3d = nn.Linear(d2, d3)
        self.gate_mlp = _mlp(d3 + d2, d3, d3)
        self.fuse_mlp = _mlp(d3, d3, d3)
        self.fuse_norm = nn.BatchNorm1d(d3)
        self.classifier = nn.Linear(d3, cfg.student.num_classes)
        self.contrast_3d = nn.Sequential(
            nn.Linear(d3, d3), nn.ReLU(inplace=True), nn.Linear(d3, dc)
        )
        self.contrast_2d = nn.Sequential(
            nn.Linear(d2, d2), nn.ReLU(inplace=True), nn.Linear(d2, dc)
        )

    @property
    def feature_dim(self) -> int:
        return self.config.student.feature_dim

    def load_image_weights(self, weights: str) -> LoadReport:
        """Pretrained weights (a file or a package that ships one) into the 2D branch's
        backbone (:func:`~xmodelkd_ros.nets.image_branch.load_image_weights`)."""
        return load_image_weights(self.image_encoder, weights)

    def forward(
        self, net_inputs: NetInputs, images: Tensor, corr: PointPixelCorrespondence
    ) -> TeacherOutput:
        """Fused and 3D-only per-point outputs for the valid points of ``net_inputs``.

        ``images`` (B_img, 3, H, W) RGB in [0, 1] (see :class:`ImageEncoderConfig`);
        ``corr`` indexes points and images of this batch. With no correspondences the
        image branch is skipped and every point is unseen.
        """
        out3d = self.branch_3d(
            net_inputs.voxel_feats, net_inputs.point_feats, net_inputs.point2voxel,
            net_inputs.maps,
        )
        f3d = out3d.features
        P = f3d.shape[0]
        d2 = self.config.image.out_channels
        if len(corr) > 0:
            if int(corr.point_idx.max()) >= P or int(corr.point_idx.min()) < 0:
                raise IndexError(f"correspondence point_idx out of range for {P} points")
            fmap = self.image_encoder(images)
            views = sample_point_features(fmap, corr.image_idx, corr.uv, corr.image_size)
            if corr.fuse is None:
                f2d, counts = average_views(views, corr.point_idx, P)
            else:
                f2d, counts = average_views(views[corr.fuse], corr.point_idx[corr.fuse], P)
        else:
            views = f3d.new_zeros(0, d2)
            f2d, counts = f3d.new_zeros(P, d2), torch.zeros(P, dtype=torch.long,
                                                             device=f3d.device)
        seen = counts > 0
        gate = torch.sigmoid(self.gate_mlp(torch.cat([f3d, f2d], dim=1)))
        gate = gate * seen[:, None].to(gate.dtype)
        fused = f3d + gate * self.proj_2d_to_3d(f2d)
        fused = torch.relu(self.fuse_norm(fused + self.fuse_mlp(fused)))
        return TeacherOutput(
            logits=self.classifier(fused),
            features=fused,
            logits_3d=out3d.logits,
            features_3d=f3d,
            feats_2d_views=views,
            proj_3d=self.contrast_3d(f3d),
            proj_2d=self.contrast_2d(views),
            seen=seen,
            gate=gate,
        )
