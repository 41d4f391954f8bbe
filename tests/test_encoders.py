"""Encoders: the real SigLIP / CLIP loading code on tiny random models of the real
architectures (no download), the TAO checkpoint path, Hub-cache resolution, baseline."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tao_aoi.cli import UsageError
from tao_aoi.encoders import BASELINE_DIM, NOT_CACHED_HINT, describe, load_encoder, same_encoder

pytest.importorskip("torch")
pytest.importorskip("transformers")




def images(n=7, seed=0):
    rng = np.random.default_rng(seed)
    # different sizes and modes: the processor must resize / convert
    out = []
    for i in range(n):
        arr = (rng.random((30 + 3 * i, 41 + i, 3)) * 255).astype("uint8")
        im = Image.fromarray(arr)
        out.append(im.convert("L") if i == 2 else im)
    return out


@pytest.mark.parametrize("model,dim", [("SigLIP", 32), ("CLIP", 24)])
def test_tiny_real_architecture_loads_and_encodes(tiny_models, model, dim):
    enc = load_encoder(model, str(tiny_models[model]), device="cpu")
    assert enc.identity["model"] == model
    assert enc.identity["model_path"] == str(tiny_models[model].resolve())
    assert enc.identity["dim"] == dim == enc.dim
    assert len(enc.identity["config_sha256"]) == 16
    x = enc.encode(images())
    assert x.dtype == np.float32 and x.shape == (7, dim)
    # raw get_image_features, as the container writes them: not unit length
    assert np.abs(np.linalg.norm(x, axis=1) - 1.0).min() > 1e-2
    assert np.ptp(x, axis=0).max() > 1e-3  # different images, different embeddings
    # deterministic across loads, and independent of how the images are batched
    again = load_encoder(model, str(tiny_models[model]), device="cpu").encode(images())
    np.testing.assert_allclose(x, again, atol=1e-6)
    pieces = np.concatenate([enc.encode(images()[i:i + 3]) for i in range(0, 7, 3)])
    np.testing.assert_allclose(x, pieces, atol=1e-5)


def test_model_family_must_match_the_weights(tiny_models):
    with pytest.raises(UsageError, match="model=CLIP but .* model_type='siglip'"):
        load_encoder("CLIP", str(tiny_models["SigLIP"]))


def test_model_name_is_case_insensitive_and_unknown_names_refused(tiny_models):
    assert load_encoder("siglip", str(tiny_models["SigLIP"])).identity["model"] == "SigLIP"
    with pytest.raises(UsageError, match="not one of SigLIP, CLIP, baseline"):
        load_encoder("DINO", str(tiny_models["SigLIP"]))


def test_missing_local_path_is_a_usage_error_not_a_fallback(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_encoder("SigLIP", str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no config.json"):
        load_encoder("SigLIP", str(tmp_path / "empty"))


def test_tao_checkpoint_without_config_is_refused(tmp_path):
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"not used")
    with pytest.raises(UsageError, match="TAO checkpoint: set model_config_path"):
        load_encoder("SigLIP", str(ckpt))


def test_tao_checkpoint_with_hf_config_matches_the_snapshot(tiny_models, tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = tiny_models["SigLIP"]
    state = load_file(str(folder / "model.safetensors"))
    ckpt = tmp_path / "siglip_tao.ckpt"
    # nested and prefixed the way training frameworks save it
    torch.save({"epoch": 3, "state_dict": {f"model.{k}": v for k, v in state.items()}}, ckpt)
    enc = load_encoder("SigLIP", str(ckpt), model_config_path=str(folder / "config.json"))
    ref = load_encoder("SigLIP", str(folder))
    np.testing.assert_allclose(enc.encode(images(3)), ref.encode(images(3)), atol=1e-6)
    assert enc.identity["format"] == "tao-checkpoint"
    assert enc.identity["model_path"] == str(ckpt.resolve())


def test_tao_checkpoint_that_does_not_fit_is_refused(tiny_models, tmp_path):
    import torch

    ckpt = tmp_path / "wrong.pth"
    torch.save({"state_dict": {"backbone.weight": torch.zeros(2)}}, ckpt)
    with pytest.raises(UsageError, match="image-tower weights missing"):
        load_encoder("SigLIP", str(ckpt), model_config_path=str(tiny_models["SigLIP"]))


def test_tao_checkpoint_with_tao_yaml_needs_the_container(tmp_path):
    ckpt = tmp_path / "m.pth"
    ckpt.write_bytes(b"x")
    spec = tmp_path / "experiment.yaml"
    spec.write_text("model:\n  backbone: siglip\n")
    with pytest.raises(UsageError, match="container"):
        load_encoder("SigLIP", str(ckpt), model_config_path=str(spec))


def _fake_hub_cache(cache: Path, repo: str, src: Path) -> str:
    revision = "0123456789abcdef0123456789abcdef01234567"
    base = cache / ("models--" + repo.replace("/", "--"))
    snap = base / "snapshots" / revision
    snap.mkdir(parents=True)
    for f in src.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(revision)
    return revision


def test_hub_id_resolves_from_the_local_cache_offline(tiny_models, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    cache = tmp_path / "hub"
    revision = _fake_hub_cache(cache, "acme/tiny-siglip", tiny_models["SigLIP"])
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = load_encoder("SigLIP", "acme/tiny-siglip")
    assert enc.identity["model_path"] == "acme/tiny-siglip"
    assert enc.identity["revision"] == revision
    ref = load_encoder("SigLIP", str(tiny_models["SigLIP"]))
    np.testing.assert_allclose(enc.encode(images(2)), ref.encode(images(2)), atol=1e-6)


def test_hub_id_not_cached_offline_says_what_to_do(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError) as err:
        load_encoder("SigLIP", "google/siglip-base-patch16-224")
    assert NOT_CACHED_HINT in str(err.value)
    assert "google/siglip-base-patch16-224" in str(err.value)


def test_baseline_is_deterministic_normalised_and_discriminates():
    enc = load_encoder("baseline", None)
    assert enc.identity["model"] == "baseline" and enc.dim == BASELINE_DIM
    x = enc.encode(images())
    assert x.shape == (7, BASELINE_DIM) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(x, load_encoder("baseline").encode(images()))
    # a flat grey image is far from a noisy one; an image is closest to itself
    flat = enc.encode([Image.new("RGB", (20, 20), (128, 128, 128))])[0]
    assert float(x[0] @ x[0]) > float(x[0] @ flat) + 0.1
    sims = x @ x.T
    assert (np.argmax(sims, axis=1) == np.arange(7)).all()


def test_identity_helpers():
    a = {"model": "SigLIP", "model_path": "google/siglip-base-patch16-224", "dim": 768}
    assert same_encoder(a, dict(a, revision="x"))
    assert not same_encoder(a, dict(a, model="CLIP"))
    assert not same_encoder(a, None)
    assert "SigLIP google/siglip-base-patch16-224 (dim 768)" == describe(a)
    assert "no tao_aoi.encoder metadata" in describe(None)
    json.dumps(load_encoder("baseline").identity)  # JSON-able


@pytest.mark.parametrize("model", ["SigLIP", "CLIP"])
def test_fast_preprocessing_reproduces_the_image_processor(tiny_models, model):
    # Worker threads only resize/crop (uint8); normalisation runs batched in torch. It must
    # equal the model's own image processor, including odd and extreme aspect ratios.
    enc = load_encoder(model, str(tiny_models[model]))
    assert enc._plan is not None
    rng = np.random.default_rng(2)
    ims = [Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8"))
           for h, w in [(30, 41), (57, 30), (10, 300), (301, 299), (32, 32)]]
    ref = np.stack([enc._processor_pixels(im) for im in ims])
    fast = enc._normalise(np.stack([enc.preprocess(im) for im in ims])).numpy()
    # bit for bit: the container feeds the processor's pixels to the model
    np.testing.assert_array_equal(fast, ref)
    np.testing.assert_array_equal(enc.encode_arrays(ref), enc.encode(ims))
