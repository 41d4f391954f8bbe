"""The standard-library parquet footer reader against files written by pyarrow / pandas."""
from __future__ import annotations

import json
import struct

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tao_aoi.hooks.parquet_meta import ParquetMetaError, parse_footer, read_meta


def test_many_dtypes_and_list_columns(tmp_path):
    df = pd.DataFrame({
        "filepath": ["a.jpg", "b.jpg", "c.jpg"],
        "embedding": [np.arange(4, dtype=np.float32) * k for k in range(3)],
        "siamese_score": [0.1, 0.5, 0.9],
        "count": np.array([1, 2, 3], dtype=np.int64),
        "small": np.array([1, 2, 3], dtype=np.int8),
        "flag": [True, False, True],
        "when": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"]),
        "label": pd.Categorical(["PASS", "BRIDGE", "PASS"]),
        "maybe": [1.0, None, 3.0],
        "nested": [{"x": 1, "y": "a"}, {"x": 2, "y": "b"}, {"x": 3, "y": "c"}],
        "tags": [["u", "v"], [], ["w"]],
    })
    path = tmp_path / "many.parquet"
    df.to_parquet(path, index=False)
    meta = read_meta(path)
    assert meta.num_rows == 3
    assert meta.columns == list(df.columns)          # nested groups reported by top-level name
    assert "pandas" in meta.key_value_metadata
    assert meta.created_by and "parquet" in meta.created_by


def test_custom_schema_metadata_and_row_groups(tmp_path):
    encoder = {"model": "SigLIP", "model_path": "google/siglip-base-patch16-224", "dim": 768}
    table = pa.table({"filepath": [f"p{i}" for i in range(1000)],
                      "embedding": pa.array([[float(i)] * 8 for i in range(1000)], pa.list_(pa.float32()))})
    table = table.replace_schema_metadata({"tao_aoi.encoder": json.dumps(encoder), "note": "héllo ✓"})
    path = tmp_path / "emb.parquet"
    pq.write_table(table, path, row_group_size=100)   # ten row groups to skip over
    meta = read_meta(path)
    assert meta.num_rows == 1000
    assert meta.columns == ["filepath", "embedding"]
    assert json.loads(meta.key_value_metadata["tao_aoi.encoder"]) == encoder
    assert meta.key_value_metadata["note"] == "héllo ✓"


def test_zero_rows_keeps_schema(tmp_path):
    path = tmp_path / "empty.parquet"
    pd.DataFrame({"filepath": pd.Series([], dtype=str), "label": pd.Series([], dtype=str)}).to_parquet(path)
    meta = read_meta(path)
    assert meta.num_rows == 0
    assert meta.columns == ["filepath", "label"]


def test_many_columns_use_long_list_headers(tmp_path):
    path = tmp_path / "wide.parquet"
    pd.DataFrame({f"c{i}": [i] for i in range(40)}).to_parquet(path, index=False)
    assert read_meta(path).columns == [f"c{i}" for i in range(40)]


@pytest.mark.parametrize("cut", [1, 8, 30, 200])
def test_truncated_files_raise_clearly(tmp_path, cut):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"a": range(100)}).to_parquet(path)
    data = path.read_bytes()
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(data[:-cut])
    with pytest.raises(ParquetMetaError, match="bad.parquet"):
        read_meta(bad)


def test_corrupt_footers_raise_instead_of_hanging(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"a": range(10)}).to_parquet(path)
    data = bytearray(path.read_bytes())
    footer_len = struct.unpack("<I", data[-8:-4])[0]
    start = len(data) - 8 - footer_len
    rng = np.random.default_rng(0)
    for trial in range(200):
        broken = bytearray(data)
        for pos in rng.integers(start, len(data) - 8, size=3):
            broken[pos] = int(rng.integers(0, 256))
        target = tmp_path / f"c{trial}.parquet"
        target.write_bytes(bytes(broken))
        try:
            read_meta(target)        # may still decode: flipped bytes in a string are harmless
        except ParquetMetaError:
            pass
    # a footer length pointing before the start of the file
    broken = bytearray(data)
    broken[-8:-4] = struct.pack("<I", len(data) * 2)
    (tmp_path / "len.parquet").write_bytes(bytes(broken))
    with pytest.raises(ParquetMetaError, match="corrupt footer length"):
        read_meta(tmp_path / "len.parquet")
    # a list claiming more elements than bytes left
    with pytest.raises(ParquetMetaError):
        parse_footer(b"\x19\xfc\xff\xff\xff\x0f")


def test_not_parquet(tmp_path):
    (tmp_path / "x.parquet").write_text("filepath,label\na,PASS\n")
    with pytest.raises(ParquetMetaError, match="missing PAR1 magic"):
        read_meta(tmp_path / "x.parquet")
    (tmp_path / "tiny.parquet").write_bytes(b"PAR1")
    with pytest.raises(ParquetMetaError, match="too short"):
        read_meta(tmp_path / "tiny.parquet")
