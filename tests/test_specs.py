"""Spec resolution: defaults <- spec file <- overrides, aliases, ???, schema types."""
from __future__ import annotations

import json

import pytest
import yaml

from tao_aoi import specs
from tao_aoi.cli import UsageError
from tao_aoi.data_services import registry

ALIASES = {"inference_csv": "inference_results_dir", "output_dir": "results_dir"}


def write(tmp_path, doc, name="spec.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc, encoding="utf-8")
    return p


def test_every_registered_schema_follows_the_shared_conventions():
    for category, action in registry.ACTIONS:
        path = specs.schema_path(category, action)
        if not path.exists():  # written by another engineer; checked once present
            continue
        schema = json.loads(path.read_text())
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        for key, prop in schema["properties"].items():
            assert ("default" in prop) != (key in schema.get("required", [])), key


def test_defaults_mark_mandatory_keys_missing():
    d = specs.schema_defaults(specs.load_schema("gap_analysis", "vcn_aoi"))
    # kpi_media_path is optional in the container (default ""): not mandatory
    assert d == {"inference_results_dir": "???", "train_config": "???", "kpi_media_path": "",
                 "results_dir": "???", "min_recall": 1.0, "top_k_per_label": 50, "threshold": -1.0}


def test_overrides_win_and_parse_as_numbers(tmp_path):
    spec = write(tmp_path, {"inference_results_dir": "/a", "train_config": "/t.yaml",
                            "kpi_media_path": "/m", "results_dir": "/r", "min_recall": 0.5,
                            "top_k_per_label": 10})
    cfg = specs.resolve("gap_analysis", "vcn_aoi", spec, ["min_recall=1", "top_k_per_label=3",
                                                          "results_dir=/r2"], ALIASES)
    assert cfg["min_recall"] == 1.0 and isinstance(cfg["min_recall"], float)
    assert cfg["top_k_per_label"] == 3 and cfg["results_dir"] == "/r2"
    cfg = specs.resolve("gap_analysis", "vcn_aoi", spec, ["min_recall=0"], ALIASES)
    assert cfg["min_recall"] == 0.0  # the container accepts 0
    assert cfg["threshold"] == -1.0


def test_string_keys_keep_their_text(tmp_path):
    spec = write(tmp_path, {"inference_results_dir": "/a", "train_config": "/t.yaml",
                            "kpi_media_path": 2024, "results_dir": "???"})
    cfg = specs.resolve("gap_analysis", "vcn_aoi", spec, ["results_dir=2024_01_01"], ALIASES)
    assert cfg["results_dir"] == "2024_01_01" and cfg["kpi_media_path"] == "2024"


@pytest.mark.parametrize("text", ["/data/exp/rca", "out/run_1", "2024_01_01/x", "1/2", "true/x",
                                  "null/", "/", "../1e5", "-1/inf", "./nan"])
def test_path_texts_skip_omegaconf_with_the_same_result(text):
    from omegaconf import OmegaConf

    expected = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={text}"]), resolve=False)["v"]
    values, raw = specs.parse_overrides([f"results_dir={text}"])
    assert values == {"results_dir": expected} and raw == {"results_dir": text}
    assert type(values["results_dir"]) is type(expected)


def test_aliases_in_spec_and_overrides_emit_notices(tmp_path, capsys):
    spec = write(tmp_path, {"inference_csv": "/a", "train_config": "/t.yaml", "kpi_media_path": "/m"})
    cfg = specs.resolve("gap_analysis", "vcn_aoi", spec, ["output_dir=/o"], ALIASES)
    assert cfg["inference_results_dir"] == "/a" and cfg["results_dir"] == "/o"
    err = capsys.readouterr().err
    assert "'inference_csv'" in err and "'output_dir'" in err


def test_missing_value_names_the_key(tmp_path):
    spec = write(tmp_path, "inference_results_dir: /a\ntrain_config: ???\nkpi_media_path: /m\n")
    with pytest.raises(UsageError, match=r"train_config, results_dir"):
        specs.resolve("gap_analysis", "vcn_aoi", spec, [], ALIASES)
    cfg = specs.resolve("gap_analysis", "vcn_aoi", spec, [], ALIASES, allow_missing=True)
    assert cfg["train_config"] == "???"


@pytest.mark.parametrize("override, needle", [
    ("top_k_per_label=2.5", "top_k_per_label: expected an integer, got 2.5"),
    ("top_k_per_label=abc", "top_k_per_label: expected an integer, got 'abc'"),
    # no "off" (the old wrong-side mode): the container has none
    ("top_k_per_label=null", "top_k_per_label: expected an integer, got None"),
    ("top_k_per_label=0", "top_k_per_label: 0 is out of range (must be in [1, inf))"),
    ("top_k_per_label=-1", "top_k_per_label: -1 is out of range"),
    ("min_recall=yes", "min_recall: expected a number"),
    ("min_recall=1.5", "min_recall: 1.5 is out of range (must be in [0, 1])"),
    ("nope=1", "unknown key(s) 'nope'"),
    ("a.b=1", "not a plain key name"),
    ("novalue", "is not key=value"),
])
def test_bad_values_are_one_line_errors(tmp_path, override, needle):
    spec = write(tmp_path, {"inference_results_dir": "/a", "train_config": "/t", "kpi_media_path": "/m",
                            "results_dir": "/r"})
    with pytest.raises(UsageError) as exc:
        specs.resolve("gap_analysis", "vcn_aoi", spec, [override], ALIASES)
    assert needle in str(exc.value)


def test_spec_file_problems(tmp_path):
    with pytest.raises(UsageError, match="spec file not found"):
        specs.resolve("gap_analysis", "vcn_aoi", tmp_path / "none.yaml", [], ALIASES)
    with pytest.raises(UsageError, match="must hold a mapping"):
        specs.resolve("gap_analysis", "vcn_aoi", write(tmp_path, "- a\n- b\n"), [], ALIASES)
    with pytest.raises(UsageError, match="unknown key"):
        specs.resolve("gap_analysis", "vcn_aoi", write(tmp_path, {"bogus": 1}), [], ALIASES)
    with pytest.raises(UsageError, match="both 'output_dir'"):
        specs.resolve("gap_analysis", "vcn_aoi", write(tmp_path, {"output_dir": "/a", "results_dir": "/b"}),
                      [], ALIASES)


def test_registry_is_lazy_and_lists_valid_choices():
    assert set(registry.ACTIONS) == {("gap_analysis", "vcn_aoi"), ("embedding", "image_embeddings"),
                                     ("tmm", "nearest_neighbors")}
    with pytest.raises(UsageError, match="valid: vcn_aoi"):
        registry.check("gap_analysis", "other")
    mod = registry.load("gap_analysis", "vcn_aoi")
    assert mod.ALIASES == ALIASES and callable(mod.run)
