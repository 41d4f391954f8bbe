"""Image encoders for ``embedding image_embeddings`` (local runner).

``load_encoder(model, model_path, model_config_path=None, device="auto")`` returns an
:class:`Encoder`: ``identity`` (JSON-able dict: model, model_path, dim, and revision /
config hash when known) and ``encode(list[PIL.Image]) -> float32 (n, dim)``. SigLIP/CLIP
rows are ``get_image_features`` as is, NOT L2-normalised, because that is what the
data-services container writes (cosine consumers normalise themselves). For pipelining,
``preprocess(image)`` (thread-safe, runs in the decoding workers) and
``encode_arrays(stacked)`` split the same work in two.

Encoders:

* ``SigLIP`` / ``CLIP``: Hugging Face transformers models (``get_image_features``).
  ``model_path`` is a Hub id, resolved from the local Hugging Face cache first (no
  network needed; ``HF_HUB_OFFLINE=1`` forbids downloads), or a local snapshot folder
  (``save_pretrained`` output: config.json, weights, preprocessor_config.json).
  A TAO ``.pth``/``.ckpt`` checkpoint needs ``model_config_path``: a Hugging Face
  ``config.json`` (or a folder holding one, optionally with preprocessor_config.json)
  that describes the architecture; the checkpoint's state dict (optionally nested under
  ``state_dict``/``model`` and prefixed ``model.``/``module.``) is loaded into it and every
  image-tower weight must be present. A TAO experiment YAML is not understood here:
  that checkpoint needs the container.
  GPU (torch.cuda) when present, else CPU; float32 on both, as the container runs.
  Works with transformers 4.x and 5.x (5.x returns an output object from
  ``get_image_features``; its projected features are taken).
* ``baseline`` (local runner only, not a container ``model`` value): weight-free and
  deterministic (16x16 grayscale thumbnail, standardised, + 16-bin per-channel colour
  histograms), 304-d, unit-length rows. For offline demos and CPU tests only: it is never
  used in place of a requested SigLIP/CLIP model.

torch / transformers are imported only when a SigLIP/CLIP encoder is loaded.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tao_aoi.cli import UsageError
from tao_aoi.contract import ENCODER_METADATA_KEY

MODELS = ("SigLIP", "CLIP", "baseline")
TAO_CHECKPOINT_SUFFIXES = (".pth", ".ckpt", ".pt")
BASELINE_THUMB = 16
BASELINE_BINS = 16
BASELINE_DIM = BASELINE_THUMB * BASELINE_THUMB + 3 * BASELINE_BINS
BASELINE_PATH = "tao_aoi.encoders.baseline/v1"
# model_type values in config.json each family accepts.
_FAMILY_TYPES = {"SigLIP": ("siglip",), "CLIP": ("clip",)}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
NOT_CACHED_HINT = ("not in the local Hugging Face cache; download it on a networked machine "
                   "(huggingface-cli download <id>) or pass a local snapshot dir as model_path")


def canonical_model(name: str) -> str:
    for m in MODELS:
        if str(name).strip().lower() == m.lower():
            return m
    raise UsageError(f"model={name!r} is not one of {', '.join(MODELS)}")


def _short_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


class Encoder:
    """Common interface; subclasses implement ``preprocess`` and ``encode_arrays``."""

    identity: dict[str, Any]
    device: str = "cpu"

    @property
    def dim(self) -> int:
        return int(self.identity["dim"])

    def preprocess(self, image) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode_arrays(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, images: Sequence) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.encode_arrays(np.stack([self.preprocess(im) for im in images]))


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (x / norms).astype(np.float32)


class BaselineEncoder(Encoder):
    """Weight-free deterministic encoder: layout + colour, nothing semantic."""

    def __init__(self) -> None:
        self.identity = {"model": "baseline", "model_path": BASELINE_PATH, "dim": BASELINE_DIM,
                         "note": "weight-free thumbnail+histogram encoder for demos/tests"}

    def preprocess(self, image) -> np.ndarray:
        from PIL import Image

        rgb = image.convert("RGB")
        thumb = np.asarray(rgb.convert("L").resize((BASELINE_THUMB, BASELINE_THUMB), Image.BOX),
                           dtype=np.float64).ravel()
        std = thumb.std()
        thumb = (thumb - thumb.mean()) / std if std > 1e-9 else np.zeros_like(thumb)
        thumb /= np.sqrt(thumb.size)  # unit-norm block (when not constant)
        hist = np.asarray(rgb.histogram(), dtype=np.float64).reshape(3, BASELINE_BINS, -1).sum(axis=2)
        hist /= np.maximum(hist.sum(axis=1, keepdims=True), 1.0)
        hist = np.sqrt(hist) / np.sqrt(3.0)  # Hellinger; unit-norm block
        return np.concatenate([thumb, hist.ravel()]).astype(np.float32)

    def encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        return _normalize_rows(batch)


def pick_device(device: str = "auto") -> str:
    import torch

    device = (device or "auto").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("device=cuda but torch sees no CUDA GPU; use device=auto or device=cpu")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise UsageError(f"device={device!r}: use auto, cuda or cpu")
    return device


def _size_get(size, key):
    if size is None:
        return None
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


class HFEncoder(Encoder):
    """A transformers SigLIP/CLIP model; image features from ``get_image_features``.

    Preprocessing has a fast path: the worker threads only decode, resize and crop with
    PIL (C code, the GIL released) and hand over uint8 arrays; rescaling and normalising
    happen batched in torch on the encoder's device. It is used only when, at load time,
    it reproduces the model's own image processor bit for bit on a test image (else the
    processor runs per image in the workers): the container feeds the processor's pixels,
    and any difference there would show in the vectors."""

    def __init__(self, model, processor, identity: dict, device: str) -> None:
        import torch

        self.device = device
        # float32 on GPU too: the container runs the model in float32, and fp16 would give
        # other vectors than it writes.
        self.dtype = torch.float32
        self.model = model.to(device=device, dtype=self.dtype).eval()
        self.processor = processor
        self.identity = identity
        self._plan = self._fast_plan(processor)
        if self._plan is not None and not self._fast_matches_processor():
            self._plan = None

    @staticmethod
    def _fast_plan(proc) -> dict | None:
        name = type(proc).__name__
        if not name.startswith(("SiglipImageProcessor", "CLIPImageProcessor")):
            return None
        if getattr(proc, "do_pad", False) or not getattr(proc, "do_resize", True):
            return None
        size = getattr(proc, "size", None)
        h, w, short = (_size_get(size, k) for k in ("height", "width", "shortest_edge"))
        if h and w:
            resize = ("exact", int(h), int(w))
        elif short:
            resize = ("shortest", int(short), 0)
        else:
            return None
        crop = None
        if getattr(proc, "do_center_crop", False):
            cs = getattr(proc, "crop_size", None)
            ch, cw = _size_get(cs, "height"), _size_get(cs, "width")
            if not (ch and cw):
                return None
            crop = (int(ch), int(cw))
        scale = float(proc.rescale_factor) if getattr(proc, "do_rescale", True) else 1.0
        mean = std = None
        if getattr(proc, "do_normalize", True):
            mean = [float(v) for v in proc.image_mean]
            std = [float(v) for v in proc.image_std]
        return {"resize": resize, "crop": crop, "resample": int(getattr(proc, "resample", 3)),
                "scale": scale, "mean": mean, "std": std}

    def _fast_matches_processor(self) -> bool:
        from PIL import Image

        yy, xx = np.mgrid[0:37, 0:53]
        test = np.stack([(xx * 5) % 256, (yy * 7) % 256, (xx * yy) % 256], axis=-1).astype("uint8")
        img = Image.fromarray(test)
        try:
            ref = self._processor_pixels(img)
            fast = self._normalise(np.stack([self._pil_pixels(img)])).float().cpu().numpy()[0]
        except Exception:
            return False
        return ref.shape == fast.shape and np.array_equal(ref, fast)

    def _processor_pixels(self, image) -> np.ndarray:
        rgb = image.convert("RGB")
        return np.asarray(self.processor(images=[rgb], return_tensors="np")["pixel_values"][0],
                          dtype=np.float32)

    def _pil_pixels(self, image) -> np.ndarray:
        plan = self._plan
        rgb = image.convert("RGB")
        kind, a, b = plan["resize"]
        if kind == "exact":
            target = (b, a)  # PIL takes (width, height)
        else:
            w, h = rgb.size
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(a * long / short)
            target = (a, new_long) if w <= h else (new_long, a)
        if rgb.size != target:
            rgb = rgb.resize(target, resample=plan["resample"])
        if plan["crop"]:
            ch, cw = plan["crop"]
            w, h = rgb.size
            top, left = (h - ch) // 2, (w - cw) // 2
            if top < 0 or left < 0:
                raise ValueError("crop larger than the resized image")
            rgb = rgb.crop((left, top, left + cw, top + ch))
        return np.asarray(rgb, dtype=np.uint8)

    def _normalise(self, batch: np.ndarray):
        import torch

        plan = self._plan
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
        # The same float arithmetic as transformers' numpy image processors: rescale in
        # float64, round to float32, then normalise in float32.
        x = (x.permute(0, 3, 1, 2).to(torch.float64) * plan["scale"]).to(torch.float32)
        if plan["mean"] is not None:
            mean = torch.tensor(plan["mean"], device=self.device).view(1, -1, 1, 1)
            std = torch.tensor(plan["std"], device=self.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x

    def preprocess(self, image) -> np.ndarray:
        """uint8 HWC (fast path) or float32 CHW processor output; encode_arrays takes both."""
        if self._plan is not None:
            return self._pil_pixels(image)
        return self._processor_pixels(image)

    def encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if batch.dtype == np.uint8:
            pixels = self._normalise(batch)
        else:
            pixels = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        pixels = pixels.to(dtype=self.dtype)
        with torch.inference_mode():
            out = self.model.get_image_features(pixel_values=pixels)
        # transformers 4.x returns the features tensor; 5.x an output object whose
        # pooler_output holds the same projected features.
        feats = out if isinstance(out, torch.Tensor) else out.pooler_output
        return feats.float().cpu().numpy().astype(np.float32, copy=False)


def _hf_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def resolve_hub_id(model_id: str) -> tuple[Path, str | None]:
    """A Hub id -> (local snapshot folder, revision). Cache first; download only when allowed."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - comes with transformers
        raise UsageError("huggingface_hub is not installed; pass a local snapshot dir as model_path") from None
    try:
        folder = Path(snapshot_download(model_id, local_files_only=True))
    except Exception:
        if _hf_offline():
            raise UsageError(f"model_path {model_id!r} is {NOT_CACHED_HINT} (HF_HUB_OFFLINE is set)") from None
        try:
            folder = Path(snapshot_download(
                model_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
        except Exception as exc:
            raise UsageError(f"model_path {model_id!r} is {NOT_CACHED_HINT} (download failed: "
                             f"{type(exc).__name__})") from None
    return folder, folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else None


def _read_config(folder: Path) -> tuple[dict, bytes]:
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise UsageError(f"{folder} has no config.json; model_path must be a Hugging Face "
                         f"snapshot folder (save_pretrained output)")
    raw = cfg_file.read_bytes()
    try:
        return json.loads(raw), raw
    except json.JSONDecodeError as exc:
        raise UsageError(f"{cfg_file} is not valid JSON: {exc}") from None


def _check_family(model: str, config: dict, where: str) -> None:
    mtype = str(config.get("model_type", "")).lower()
    if mtype not in _FAMILY_TYPES[model]:
        raise UsageError(f"model={model} but {where} describes model_type={mtype or '?'!r}; "
                         f"set model to match the weights (expected one of "
                         f"{', '.join(_FAMILY_TYPES[model])})")


def _model_class(model: str, config: dict):
    import transformers

    return transformers.CLIPModel if model == "CLIP" else transformers.SiglipModel


def _image_processor(folder: Path | None, model: str, config: dict):
    import transformers

    kwargs: dict[str, Any] = {}
    major = int(transformers.__version__.split(".")[0])
    if major >= 5:
        kwargs["backend"] = "pil"  # same numbers with or without torchvision
    else:
        kwargs["use_fast"] = False
    if folder is not None and (folder / "preprocessor_config.json").is_file():
        return transformers.AutoImageProcessor.from_pretrained(str(folder), **kwargs)
    vision = config.get("vision_config", config)
    size = int(vision.get("image_size", 224))
    if model == "CLIP":
        return transformers.CLIPImageProcessor(size={"shortest_edge": size},
                                               crop_size={"height": size, "width": size})
    return transformers.SiglipImageProcessor(size={"height": size, "width": size})


def _load_hf(model: str, model_path: str, device: str) -> HFEncoder:
    import transformers

    given = Path(model_path).expanduser()
    if given.is_dir():
        folder, revision, shown_path = given.resolve(), None, str(given.resolve())
    else:
        if given.exists():
            raise UsageError(f"model_path {model_path} is a file; expected a Hugging Face id, a "
                             f"snapshot folder, or a TAO .pth/.ckpt (with model_config_path)")
        if not _HUB_ID.match(model_path) or model_path.startswith((".", "/", "~")):
            raise UsageError(f"model_path {model_path} does not exist")
        folder, revision = resolve_hub_id(model_path)
        shown_path = model_path
    config, raw = _read_config(folder)
    _check_family(model, config, f"{folder}/config.json")
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        net = _model_class(model, config).from_pretrained(str(folder))
        processor = _image_processor(folder, model, config)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load {model} from {model_path}: {' '.join(str(exc).split())[:300]}") from None
    identity = {"model": model, "model_path": shown_path, "dim": _feature_dim(model, config),
                "config_sha256": _short_sha(raw)}
    if revision:
        identity["revision"] = revision
    return HFEncoder(net, processor, identity, device)


def _feature_dim(model: str, config: dict) -> int:
    if model == "CLIP":
        return int(config.get("projection_dim", 512))
    vision = config.get("vision_config", config)
    return int(vision.get("hidden_size", 768))


def _strip_prefix(state: dict, wanted: set[str]) -> dict:
    """Strip the key prefix ('model.', 'module.', ...) that best matches the model's keys."""
    best, best_hits = state, len(wanted.intersection(state))
    prefixes = {k.split(".", 1)[0] + "." for k in state if "." in k}
    for p in prefixes:
        stripped = {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
        hits = len(wanted.intersection(stripped))
        if hits > best_hits:
            best, best_hits = stripped, hits
    return best


def _tao_config(model: str, ckpt: Path, model_path: str,
                model_config_path: str | None) -> tuple[Path, bytes, dict]:
    """(config.json path, its bytes, its content) for a TAO checkpoint: the checkpoint and its
    Hugging Face architecture config checked before torch is imported."""
    if not model_config_path:
        raise UsageError(f"model_path {model_path} is a TAO checkpoint: set model_config_path "
                         f"to the model configuration it was trained with")
    if not ckpt.is_file():
        raise UsageError(f"TAO checkpoint {model_path} does not exist")
    cfg_path = Path(model_config_path).expanduser()
    cfg_file = cfg_path / "config.json" if cfg_path.is_dir() else cfg_path
    if not cfg_file.is_file():
        raise UsageError(f"model_config_path {model_config_path} does not exist")
    raw = cfg_file.read_bytes()
    try:
        config = json.loads(raw)
    except json.JSONDecodeError:
        config = None
    if not isinstance(config, dict) or "model_type" not in config:
        raise UsageError(f"model_config_path {model_config_path} is not a Hugging Face config.json "
                         f"(no model_type); the local runner loads TAO checkpoints only with an HF "
                         f"architecture config -- run this checkpoint with the data-services container")
    _check_family(model, config, str(cfg_file))
    return cfg_file, raw, config


def _tao_state(ckpt: Path, model_path: str) -> dict:
    """The checkpoint's weights (unwrapped from a Lightning / training-loop dict)."""
    import torch

    try:
        state = torch.load(str(ckpt), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(f"cannot read TAO checkpoint {model_path} as a plain state dict "
                         f"({type(exc).__name__}); run it with the data-services container") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state:
        raise UsageError(f"TAO checkpoint {model_path} holds no state dict")
    return state


def _load_image_tower(net, state: dict, model: str, model_path: str,
                      model_config_path: str) -> None:
    """Load the checkpoint into ``net``; every image-tower weight must be there (the text
    tower may be absent: only images are embedded)."""
    wanted = set(net.state_dict())
    state = _strip_prefix(state, wanted)
    image_keys = {k for k in wanted if k.startswith(("vision_model.", "visual_projection."))}
    missing = sorted(k for k in image_keys if k not in state and not k.endswith("position_ids"))
    if missing:
        raise UsageError(f"TAO checkpoint {model_path} does not fit the {model} architecture of "
                         f"{model_config_path}: {len(missing)} image-tower weights missing "
                         f"(e.g. {missing[0]})")
    try:
        net.load_state_dict({k: v for k, v in state.items() if k in wanted}, strict=False)
    except RuntimeError as exc:
        raise UsageError(f"TAO checkpoint {model_path} does not fit {model_config_path}: "
                         f"{' '.join(str(exc).split())[:300]}") from None


def _load_tao_checkpoint(model: str, model_path: str, model_config_path: str | None,
                         device: str) -> HFEncoder:
    ckpt = Path(model_path).expanduser()
    cfg_file, raw, config = _tao_config(model, ckpt, model_path, model_config_path)
    import transformers

    transformers.logging.set_verbosity_error()
    cls = _model_class(model, config)
    hf_config = transformers.AutoConfig.for_model(**config)
    net = cls._from_config(hf_config) if hasattr(cls, "_from_config") else cls(hf_config)
    _load_image_tower(net, _tao_state(ckpt, model_path), model, model_path, model_config_path)
    processor = _image_processor(cfg_file.parent, model, config)
    identity = {"model": model, "model_path": str(ckpt.resolve()),
                "dim": _feature_dim(model, config), "config_sha256": _short_sha(raw),
                "model_config_path": str(cfg_file.resolve()), "format": "tao-checkpoint"}
    return HFEncoder(net, processor, identity, device)


def load_encoder(model: str, model_path: str | None = None, model_config_path: str | None = None,
                 device: str = "auto") -> Encoder:
    """Build the requested encoder or raise UsageError; never falls back to another one."""
    model = canonical_model(model)
    if model == "baseline":
        return BaselineEncoder()
    if not model_path:
        raise UsageError(f"model={model} needs model_path (a Hugging Face id or snapshot folder)")
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise UsageError(f"model={model} needs torch and transformers (pip install "
                         f"'tao-aoi[embeddings]'); model=baseline needs neither") from None
    dev = pick_device(device)
    if str(model_path).lower().endswith(TAO_CHECKPOINT_SUFFIXES):
        enc: Encoder = _load_tao_checkpoint(model, str(model_path), model_config_path, dev)
    else:
        enc = _load_hf(model, str(model_path), dev)
    enc.identity["device"] = dev
    return enc


def same_encoder(a: dict | None, b: dict | None) -> bool:
    """Two identities describe the same encoder (model, model_path and dim all equal)."""
    if not a or not b:
        return False
    return all(str(a.get(k)) == str(b.get(k)) for k in ("model", "model_path", "dim"))


def identity_metadata(identity: dict) -> dict[bytes, bytes]:
    """The Arrow schema metadata entry that records ``identity`` on an embedding parquet."""
    return {ENCODER_METADATA_KEY.encode(): json.dumps(identity, sort_keys=True).encode()}


def read_encoder_identity(path: str | Path) -> dict | None:
    """The encoder identity a parquet records (schema metadata only), None when absent."""
    import pyarrow.parquet as pq

    raw = (pq.read_schema(str(path)).metadata or {}).get(ENCODER_METADATA_KEY.encode())
    if raw is None:
        return None
    try:
        ident = json.loads(raw)
    except ValueError:
        return None
    return ident if isinstance(ident, dict) else None


def describe(identity: dict | None) -> str:
    if not identity:
        return "unknown encoder (no tao_aoi.encoder metadata)"
    return f"{identity.get('model')} {identity.get('model_path')} (dim {identity.get('dim')})"


def save_random_model(model: str, folder: str | Path, *, hidden: int = 32, layers: int = 2,
                      heads: int = 2, image_size: int = 32, patch: int = 8,
                      projection_dim: int = 24, seed: int = 0) -> Path:
    """Write a randomly initialised SigLIP/CLIP of the real architecture (config, weights,
    image-processor config) to ``folder``: for tests and benchmarks, where no weights can
    be downloaded. ``hidden=768, layers=12, heads=12, image_size=224, patch=16`` gives
    the shape of siglip-base-patch16-224."""
    import torch
    import transformers

    model = canonical_model(model)
    if model == "baseline":
        raise ValueError("baseline has no weights")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    text = dict(hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=1,
                num_attention_heads=heads, vocab_size=64, max_position_embeddings=16)
    vision = dict(hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers,
                  num_attention_heads=heads, image_size=image_size, patch_size=patch)
    folder = Path(folder)
    if model == "CLIP":
        cfg = transformers.CLIPConfig(text_config=text, vision_config=vision,
                                      projection_dim=projection_dim)
        net = transformers.CLIPModel(cfg)
        proc = transformers.CLIPImageProcessor(size={"shortest_edge": image_size},
                                               crop_size={"height": image_size, "width": image_size})
    else:
        cfg = transformers.SiglipConfig(text_config=text, vision_config=vision)
        net = transformers.SiglipModel(cfg)
        proc = transformers.SiglipImageProcessor(size={"height": image_size, "width": image_size})
    net.save_pretrained(str(folder))
    # The full processor (image processor + a tiny word-level tokenizer built offline), as a
    # Hub snapshot has it: the container loads AutoProcessor / SiglipProcessor, which need
    # the tokenizer files too; this runner reads only the image-processor part.
    processor_cls = transformers.CLIPProcessor if model == "CLIP" else transformers.SiglipProcessor
    processor_cls(image_processor=proc, tokenizer=_tiny_tokenizer()).save_pretrained(str(folder))
    return folder


def _tiny_tokenizer():
    import tokenizers
    import transformers

    vocab = {t: i for i, t in enumerate(["<unk>", "<pad>", "<s>", "</s>", "a", "photo", "of"])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>",
                                                pad_token="<pad>", bos_token="<s>", eos_token="</s>")


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".ckpt", ".pt", ".msgpack", ".h5")


def cache_identity(encoder: Encoder) -> dict:
    """What an embedding cache is keyed by: the encoder identity (without ``dim``, which
    is only known after the first batch) plus what else changes the vectors: the device,
    the torch / transformers versions, and for local weights a fingerprint of the weight
    files (name, size, mtime_ns) so re-saved weights at the same path miss the cache."""
    ident = {k: v for k, v in encoder.identity.items() if k != "dim"}
    ident["device"] = str(getattr(encoder, "device", ident.get("device", "cpu")))
    if ident.get("model") != "baseline":
        try:
            import torch
            import transformers
            ident["torch"] = torch.__version__
            ident["transformers"] = transformers.__version__
        except ImportError:
            pass
        path = Path(str(ident.get("model_path", "")))
        files: list[Path] = []
        if path.is_file():
            files = [path]
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
        if files:
            stamp = "\n".join(f"{p.name}\t{p.stat().st_size}\t{p.stat().st_mtime_ns}" for p in files)
            ident["weights_fingerprint"] = _short_sha(stamp.encode())
    else:
        ident["baseline_dim"] = BASELINE_DIM
    return ident


def identity_key(identity: dict) -> str:
    """Folder name, inside an embedding cache, of the vectors of the encoder with this
    :func:`cache_identity`."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
