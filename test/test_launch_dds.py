"""The large-data DDS profile is applied by default and never over the user's own choice.

Rules under test (``xmodelkd_ros.dds``, used by the launch file, the replay and the demo):
the shipped Fast DDS profile goes into ``FASTDDS_DEFAULT_PROFILES_FILE`` unless the
environment already chose a DDS configuration; ``none`` turns it off; a path is used
as given. That the profile actually works is ``test_dds_large.py``'s job.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from xmodelkd_ros.dds import (
    CYCLONEDDS_CONFIG,
    FASTDDS_PROFILE,
    PROFILE_ENV,
    config_path,
    large_data_env,
    user_dds_config,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = str((ROOT / "config" / FASTDDS_PROFILE).resolve())

USER_CHOICES = [
    {PROFILE_ENV: "/etc/my_profile.xml"},
    {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/old_profile.xml"},
    {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"},
    {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp", "CYCLONEDDS_URI": "file:///etc/c.xml"},
    {"CYCLONEDDS_URI": "file:///etc/c.xml"},
    {"RMW_IMPLEMENTATION": "rmw_zenoh_cpp"},
]


def test_shipped_configs_are_well_formed_and_large() -> None:
    """The Fast DDS profile: a default participant profile with an SHM transport of a
    segment that holds many 3 MB clouds, UDP beside it, no builtin transports (which
    would bring back the 512 KB segment)."""
    assert config_path(FASTDDS_PROFILE) == ROOT / "config" / FASTDDS_PROFILE
    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(ROOT / "config" / FASTDDS_PROFILE).getroot()
    descs = {d.findtext("d:transport_id", namespaces=ns): d
             for d in root.iterfind(".//d:transport_descriptor", ns)}  # fmt: skip
    kinds = {d.findtext("d:type", namespaces=ns): d for d in descs.values()}
    assert set(kinds) == {"SHM", "UDPv4"}
    assert int(kinds["SHM"].findtext("d:segment_size", namespaces=ns)) >= 10 * 3_000_000
    (part,) = root.iterfind(".//d:participant", ns)
    assert part.get("is_default_profile") == "true"
    used = [t.text for t in part.iterfind(".//d:userTransports/d:transport_id", ns)]
    assert sorted(used) == sorted(descs)
    assert part.findtext(".//d:useBuiltinTransports", namespaces=ns) == "false"
    cyclone = ET.parse(ROOT / "config" / CYCLONEDDS_CONFIG).getroot()
    assert cyclone.tag.endswith("CycloneDDS")
    assert cyclone.find(".//{https://cdds.io/config}SocketReceiveBufferSize") is not None


def test_default_profile_unless_the_user_chose() -> None:
    assert user_dds_config({}) is None
    assert user_dds_config({"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}) is None
    assert large_data_env({}) == {PROFILE_ENV: SHIPPED}
    assert large_data_env({"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}) == {PROFILE_ENV: SHIPPED}
    for env in USER_CHOICES:
        assert user_dds_config(env), env
        assert large_data_env(env) == {}, env
        assert large_data_env(env, ROOT / "config" / FASTDDS_PROFILE) == {}, env
    assert large_data_env({}, "none") == {} and large_data_env({}, None) == {}


def test_explicit_profile_path(tmp_path: Path) -> None:
    mine = tmp_path / "mine.xml"
    mine.write_text("<dds/>")
    assert large_data_env({}, mine) == {PROFILE_ENV: str(mine.resolve())}
    with pytest.raises(FileNotFoundError, match=r"missing\.xml does not exist"):
        large_data_env({}, tmp_path / "missing.xml")


def _segment_node(load_launch_file, **args: str):
    mod = load_launch_file(ROOT / "launch" / "segment.launch.py")
    actions = mod.generate_launch_description().args[0]
    declared = {a.args[0]: a.kwargs["default_value"] for a in actions[:-1]}
    (node,) = actions[-1].kwargs["function"](dict(declared, **args))
    return declared, node.kwargs


def test_segment_launch_applies_the_profile(
    load_launch_file, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Default: the installed profile into the node's environment; ``none`` or a DDS
    choice already in the environment: nothing added; a path: that path."""
    for var in (PROFILE_ENV, "FASTRTPS_DEFAULT_PROFILES_FILE", "CYCLONEDDS_URI",
                "RMW_IMPLEMENTATION"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    declared, kw = _segment_node(load_launch_file)
    assert declared["dds_profile"] == "default"
    assert kw["additional_env"] == {
        PROFILE_ENV: f"/opt/share/xmodelkd_ros/config/{FASTDDS_PROFILE}"}
    assert _segment_node(load_launch_file, dds_profile="none")[1]["additional_env"] == {}
    kw = _segment_node(load_launch_file, dds_profile="/etc/p.xml")[1]
    assert kw["additional_env"] == {PROFILE_ENV: "/etc/p.xml"}
    for env in USER_CHOICES:
        with monkeypatch.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            assert _segment_node(load_launch_file)[1]["additional_env"] == {}, env


def test_replay_launch_passes_the_profile(
    load_launch_file, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xmodelkd_ros.replay import build_parser

    mod = load_launch_file(ROOT / "launch" / "replay.launch.py")
    actions = mod.generate_launch_description().args[0]
    declared = {a.args[0]: a.kwargs["default_value"] for a in actions[:-1]}
    monkeypatch.setenv("ROS_DOMAIN_ID", "7")
    for value in ("default", "none", "/etc/p.xml"):
        ctx = dict(declared, bag="/b", model="/m", dds_profile=value)
        (proc,) = actions[-1].kwargs["function"](ctx)
        assert build_parser().parse_args(proc.kwargs["cmd"][3:]).dds_profile == value
