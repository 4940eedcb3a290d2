"""Config dataclasses: presets load, YAML round trip, and every bad field is named."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from simdistill_ros.core.config import (
    DetectorConfig,
    GeometryConfig,
    config_from_dict,
    config_to_dict,
    load_detector_config,
    load_preset,
    save_detector_config,
)


@pytest.mark.parametrize("name", ["tiny", "r50", "toy", "demo"])
def test_presets_load_and_round_trip(name: str, tmp_path: Path) -> None:
    cfg = load_preset(name)
    assert cfg.name == name
    out = tmp_path / "c.yaml"
    save_detector_config(cfg, out)
    assert load_detector_config(out) == cfg


def test_r50_matches_method_geometry() -> None:
    g = load_preset("r50").geometry
    assert g.num_depth_bins == 118
    assert g.feature_size == (32, 88)
    assert g.bev_size == (360, 360)
    assert g.head_size == (180, 180)
    assert g.head_resolution == pytest.approx(0.6)


def test_unknown_preset_is_named() -> None:
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        load_preset("nope")


def _tiny_dict() -> dict:
    return config_to_dict(load_preset("tiny"))


def test_missing_field_is_named() -> None:
    d = _tiny_dict()
    del d["geometry"]["depth_step"]
    with pytest.raises(ValueError, match=r"geometry\.depth_step' is missing"):
        config_from_dict(DetectorConfig, d)


def test_unknown_field_is_named() -> None:
    d = _tiny_dict()
    d["model"]["backbone_dpth"] = 18
    with pytest.raises(ValueError, match="backbone_dpth"):
        config_from_dict(DetectorConfig, d)


def test_wrong_type_is_named() -> None:
    d = _tiny_dict()
    d["model"]["neck_channels"] = "many"
    with pytest.raises(ValueError, match=r"model\.neck_channels"):
        config_from_dict(DetectorConfig, d)


def test_invalid_value_is_named() -> None:
    d = _tiny_dict()
    d["geometry"]["image_size"] = [130, 352]
    with pytest.raises(ValueError, match="divisible by feature_stride"):
        config_from_dict(DetectorConfig, d)
    d = _tiny_dict()
    d["model"]["tasks"][0]["class_names"] = ["lorry"]
    with pytest.raises(ValueError, match="unknown class 'lorry'"):
        config_from_dict(DetectorConfig, d)


def test_value_checks_name_the_field() -> None:
    for section, key, value, pattern in [
        ("postprocess", "post_center_range", [1.0, -61.2, -10.0, -1.0, 61.2, 10.0], r"post_center_range"),
    ]:
        d = _tiny_dict()
        d[section][key] = value
        with pytest.raises(ValueError, match=pattern):
            config_from_dict(DetectorConfig, d)
    d = _tiny_dict()
    d["model"]["context_channels"] = 33
    d["model"]["gcm"]["num_heads"] = 3
    with pytest.raises(ValueError, match=r"model\.context_channels': must be even"):
        config_from_dict(DetectorConfig, d)
    d["model"]["context_channels"] = 36
    config_from_dict(DetectorConfig, d)
    d["model"]["tasks"][0]["nms_iou"] = 1.5
    with pytest.raises(ValueError, match=r"tasks\[0\]\.nms_iou"):
        config_from_dict(DetectorConfig, d)
    d = _tiny_dict()
    d["model"]["tasks"][5]["size_scale"] = [2.5, 0.0]
    with pytest.raises(ValueError, match=r"tasks\[5\]\.size_scale"):
        config_from_dict(DetectorConfig, d)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("geometry: [1, 2\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_detector_config(bad)
    with pytest.raises(ValueError, match="missing.yaml"):
        load_detector_config(tmp_path / "missing.yaml")
    d = _tiny_dict()
    d["geometry"]["bev_resolution"] = -1.0
    bad.write_text(yaml.safe_dump(d))
    with pytest.raises(ValueError, match=r"bad.yaml.*bev_resolution"):
        load_detector_config(bad)


def test_configs_are_frozen() -> None:
    g = load_preset("tiny").geometry
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.feature_stride = 4  # type: ignore[misc]
    assert isinstance(g, GeometryConfig)


def test_backbone_width_defaults_validates_and_round_trips(tmp_path: Path) -> None:
    d = _tiny_dict()
    del d["model"]["backbone_width"]  # presets written before the field load as the standard ResNet
    assert config_from_dict(DetectorConfig, d).model.backbone_width == 64
    for bad in (0, 12, 512):
        d["model"]["backbone_width"] = bad
        with pytest.raises(ValueError, match=r"model\.backbone_width"):
            config_from_dict(DetectorConfig, d)
    d["model"]["backbone_width"] = 16
    cfg = config_from_dict(DetectorConfig, d)
    out = tmp_path / "w.yaml"
    save_detector_config(cfg, out)
    assert load_detector_config(out).model.backbone_width == 16
    assert load_detector_config(out) == cfg
