"""The shipped configuration: params file (every parameter of the node, valid), rviz config, single-host
Fast DDS profile (loopback only), and the launch file where launch_ros can be imported."""
from __future__ import annotations

import importlib.util
import re
import sys
import types
import xml.etree.ElementTree as ET

import pytest
import yaml

from ros_harness import PARAMS_FILE, PROFILE, REPO
from simdistill_ros.ros.params import SPECS, ParameterError, validate


def params() -> dict:
    return yaml.safe_load(PARAMS_FILE.read_text())["/**"]["ros__parameters"]


def test_params_file_sets_every_parameter_and_validates(tmp_path) -> None:  # noqa: ANN001
    values = params()
    assert set(values) == {s.name for s in SPECS}
    for spec in SPECS:
        assert type(values[spec.name]) is type(spec.default), spec.name
    assert values["model"] == ""  # the bundled model
    model = tmp_path / "m.pt"
    model.write_bytes(b"")
    p = validate(dict(values, model=str(model)))
    assert p.sync_policy().anchor == "CAM_FRONT" and len(p.image_topics) == 6
    with pytest.raises(ParameterError, match="'image_topics'"):
        validate(dict(values, model=str(model), image_topics=values["image_topics"][:5]))
    with pytest.raises(ParameterError, match="'anchor_camera'"):
        validate(dict(values, model=str(model), anchor_camera="CAM_NOSE"))


def test_empty_model_is_the_bundled_checkpoint_imported_lazily(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    values = params()
    bundled = types.ModuleType("simdistill_ros.models")
    bundled.BUNDLED_CHECKPOINT = tmp_path / "simdistill_synth.pt"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "simdistill_ros.models", bundled)
    missing = re.escape(str(tmp_path / "simdistill_synth.pt"))
    with pytest.raises(ParameterError, match=f"'model': empty, and the bundled model {missing} does not exist; set it"):
        validate(values)
    bundled.BUNDLED_CHECKPOINT.write_bytes(b"")
    assert validate(values).model == str(tmp_path / "simdistill_synth.pt")
    assert validate(dict(values, model=str(tmp_path / "simdistill_synth.pt"))).model.endswith("simdistill_synth.pt")
    monkeypatch.setitem(sys.modules, "simdistill_ros.models", None)  # not installed: import fails
    with pytest.raises(ParameterError, match=r"'model': empty, and the bundled model is not installed \(.*models"):
        validate(values)
    other = tmp_path / "other.pt"
    other.write_bytes(b"")
    assert validate(dict(values, model=str(other))).model == str(other)  # a given model needs no bundled one


def test_rviz_config_shows_markers_tf_and_the_six_images() -> None:
    cfg = yaml.safe_load((REPO / "config" / "detector.rviz").read_text())["Visualization Manager"]
    assert cfg["Global Options"]["Fixed Frame"] == "base_link"
    displays = {d["Class"]: [] for d in cfg["Displays"]}
    for d in cfg["Displays"]:
        displays[d["Class"]].append(d)
    assert displays["rviz_default_plugins/MarkerArray"][0]["Topic"]["Value"] == "/detector_node/markers"
    assert "rviz_default_plugins/TF" in displays
    images = [d["Topic"]["Value"] for d in displays["rviz_default_plugins/Image"]]
    assert images == ["/" + t for t in params()["image_topics"]]


def test_fastdds_profile_keeps_dds_on_this_host() -> None:
    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(PROFILE).getroot()
    participant = root.find(".//d:participant", ns)
    assert participant.get("is_default_profile") == "true"
    assert participant.find(".//d:useBuiltinTransports", ns).text == "false"
    kinds = {t.find("d:transport_id", ns).text: t.find("d:type", ns).text for t in root.iter(f"{{{ns['d']}}}transport_descriptor")}
    assert sorted(kinds.values()) == ["SHM", "UDPv4"]
    used = [t.text for t in participant.findall(".//d:userTransports/d:transport_id", ns)]
    assert sorted(used) == sorted(kinds)
    addresses = [a.text for a in root.iter(f"{{{ns['d']}}}address")]
    assert addresses and set(addresses) == {"127.0.0.1"}
    shm = next(t for t in root.iter(f"{{{ns['d']}}}transport_descriptor") if t.find("d:type", ns).text == "SHM")
    assert int(shm.find("d:segment_size", ns).text) >= 6 * 1600 * 900 * 3 * 4  # several six-camera sets in flight
    assert root.find(".//d:metatrafficMulticastLocatorList", ns) is None  # discovery by unicast only


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None,
                    reason="launch_ros is not installable here (not on PyPI or Debian); runs in a ROS 2 install")
def test_launch_file_describes_the_node() -> None:  # pragma: no cover - needs a ROS 2 install
    from launch_ros.actions import Node

    spec = importlib.util.spec_from_file_location("detector_launch", REPO / "launch" / "detector.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    desc = module.generate_launch_description()
    args = {a.name for a in desc.get_launch_arguments()}
    assert args == {"params_file", "namespace", "use_sim_time", "model", "backend", "device"}
    default = next(a for a in desc.get_launch_arguments() if a.name == "model").default_value
    assert "".join(s.text for s in default) == ""
    nodes = [e for e in desc.entities if isinstance(e, Node)]
    assert len(nodes) == 1 and nodes[0].node_executable == "detector_node"
