"""The typed configuration tree. Every value is validated here; YAML files in this folder fill it.

Each section mirrors a package (`sim`, later `policy`, `datagen`, `train`, `eval`). All models forbid unknown
keys, so a typo is an error that names the key instead of a silently ignored setting.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator


class Section(BaseModel):
    """Base of every config section: unknown keys are errors and values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _ordered(r: tuple[float, float]) -> tuple[float, float]:
    if r[0] > r[1]:
        raise ValueError(f"range must be [low, high] with low <= high, got [{r[0]}, {r[1]}]")
    return r


Range = Annotated[tuple[float, float], AfterValidator(_ordered)]
Angle = Annotated[float, Field(ge=0.0, le=180.0)]


class RunConfig(Section):
    """Names a run; every output goes under `<root>/<name>/`."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=128)
    root: str = Field(min_length=1)
    seed: int = Field(ge=0)


class CameraConfig(Section):
    """The simulated camera: image size, and focal length as a multiple of the canonical f = W."""

    width: int = Field(ge=16, le=8192)
    height: int = Field(ge=16, le=8192)
    focal_scale: float = Field(gt=0.05, le=20.0)


class ExtraRotation(Section):
    """Largest extra rotations (degrees) about the camera's own z, y and x axes, applied as Rz Ry Rx."""

    z: Angle
    y: Angle
    x: Angle


class PoseDistribution(Section):
    """A camera on a sphere around the scene centre looking at it, as CNS samples poses."""

    radius: Range = Field(description="distance to the scene centre, metres")
    elevation_deg: Range = Field(description="elevation above the ground plane; sin(elevation) is uniform")
    azimuth_deg: Range = Field(description="azimuth about the world z axis, uniform")
    extra_rotation_deg: ExtraRotation

    @field_validator("radius")
    @classmethod
    def _positive_radius(cls, r: tuple[float, float]) -> tuple[float, float]:
        if r[0] <= 0:
            raise ValueError(f"radius must be > 0, got {list(r)}")
        return r

    @field_validator("elevation_deg")
    @classmethod
    def _upper_hemisphere(cls, r: tuple[float, float]) -> tuple[float, float]:
        if not (0.0 <= r[0] and r[1] <= 90.0):
            raise ValueError(f"elevation must lie in [0, 90] degrees, got {list(r)}")
        return r

    @field_validator("azimuth_deg")
    @classmethod
    def _one_turn(cls, r: tuple[float, float]) -> tuple[float, float]:
        if not (-180.0 <= r[0] and r[1] <= 180.0):
            raise ValueError(f"azimuth must lie in [-180, 180] degrees, got {list(r)}")
        return r


class PosePairConfig(Section):
    """Desired and initial pose distributions, and the rejection of pairs that start at the goal."""

    desired: PoseDistribution
    initial: PoseDistribution
    min_rotation_deg: float = Field(ge=0.0, description="reject a pair closer than this in rotation ...")
    min_translation: float = Field(ge=0.0, description="... and closer than this in translation (metres)")
    max_tries: int = Field(ge=1, description="give up (error) after this many rejected draws")


class SimConfig(Section):
    """The simulated world."""

    camera: CameraConfig
    poses: PosePairConfig


class Config(Section):
    """The whole configuration of a run."""

    run: RunConfig
    sim: SimConfig
