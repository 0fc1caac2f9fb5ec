"""Which DDS configuration this package's processes get for large point clouds.

Why: with Fast DDS's defaults a 3 MB cloud does not fit the 512 KB shared-memory
segment, is cut into ~50 fragments and, from a best-effort publisher, is lost whole when
one fragment is (measured: 0/30 delivered between two processes). The shipped
``config/fastdds_large_data.xml`` (64 MB SHM segment, UDP beside it) delivered 30/30.
Fast DDS reads the profile from ``FASTDDS_DEFAULT_PROFILES_FILE`` once per
process, when its first participant is created, and it matters on the PUBLISHING side.

Rule used by the launch file, the replay and the demo: apply the shipped profile
unless the user already chose a DDS configuration (their own Fast DDS profile, or
CycloneDDS), which is never overridden. No ROS import here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PACKAGE = "xmodelkd_ros"
FASTDDS_PROFILE = "fastdds_large_data.xml"
CYCLONEDDS_CONFIG = "cyclonedds_large_data.xml"
PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
#: Fast DDS 2.x's name of the same variable (still read by Fast DDS 3 with a warning).
LEGACY_PROFILE_ENV = "FASTRTPS_DEFAULT_PROFILES_FILE"


def config_path(name: str) -> Path | None:
    """``config/<name>`` of the source tree, else of the installed ament package."""
    p = Path(__file__).resolve().parents[1] / "config" / name
    if p.is_file():
        return p
    try:
        from ament_index_python.packages import get_package_share_directory

        q = Path(get_package_share_directory(PACKAGE)) / "config" / name
        return q if q.is_file() else None
    except Exception:  # not installed as an ament package
        return None


def user_dds_config(env: Mapping[str, str]) -> str | None:
    """The DDS configuration the user set in ``env`` (a one-line description), or None."""
    for var in (PROFILE_ENV, LEGACY_PROFILE_ENV):
        if env.get(var):
            return f"{var}={env[var]}"
    rmw = env.get("RMW_IMPLEMENTATION", "")
    if rmw and not rmw.startswith("rmw_fastrtps"):  # CycloneDDS, Connext, Zenoh, ...
        return f"RMW_IMPLEMENTATION={rmw}"
    if env.get("CYCLONEDDS_URI"):
        return f"CYCLONEDDS_URI={env['CYCLONEDDS_URI']}"
    return None


def large_data_env(
    env: Mapping[str, str] | None = None, profile: str | os.PathLike | None = "default"
) -> dict[str, str]:
    """Variables to add to ``env`` so a process uses the large-data Fast DDS profile.

    ``profile``: ``"default"`` (the shipped one), a path, or None / ``"none"`` (nothing).
    Empty when the user already configured DDS in ``env`` or no profile file exists.
    Raises FileNotFoundError for an explicit path that does not exist.
    """
    env = os.environ if env is None else env
    if profile is None or str(profile) in ("", "none") or user_dds_config(env):
        return {}
    if str(profile) == "default":
        path = config_path(FASTDDS_PROFILE)
        if path is None:
            return {}
    else:
        path = Path(profile).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Fast DDS profile {path} does not exist")
    return {PROFILE_ENV: str(path.resolve())}
