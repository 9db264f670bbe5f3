"""Input discovery: paths given on a command line -> RGB/thermal pairs, read like the loader.

The demo, the video and web pages and ``tools/export_model.py --parity-input`` take their inputs
through it.

:func:`find_inputs` turns ``--input`` (and ``--thermal``) paths into pairs. Accepted inputs:

- an RGB image plus its thermal image (``--input rgb.png --thermal t.png``, several in order);
- a 4-channel R,G,B,T PNG (MFNet ``images/<name>.png``), thermal = channel 4;
- a folder with paired subfolders matched by file stem: ``rgb/`` + ``thermal/`` (PST900, also
  ``RGB/`` + ``Thermal/``) or ``Visible/`` + ``Infrared/`` (FMB); subfolder names are matched
  case-insensitively, other subfolders (``labels/``, ``Label/``, ``depth/``) are ignored;
- a folder of 4-channel RGBT PNGs (MFNet ``images/``);
- a glob pattern (quoted) of 4-channel RGBT PNGs;
- with ``modality="rgb"`` or ``"thermal"`` (one camera: failed, blinded or absent), images of that
  camera alone, as files, folders or glob patterns; the other stream is not computed.

Image files are those of ``sartm_d2.data.io.IMAGE_EXTENSIONS`` (what the dataset loader reads).
:func:`load_pair` reads one pair through ``sartm_d2.data.io``, as the data loader does (with a rig,
pairs of the rig's two sizes, the thermal image in its own frame).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass

import cv2

from ..modalities import MODALITIES
from .io import IMAGE_EXTENSIONS, read_rgb, read_rgbt, read_thermal
from .rig import Rig

__all__ = [
    "PAIR_FOLDER_LAYOUTS",
    "RGBTInput",
    "find_inputs",
    "find_pairs_in_folder",
    "load_pair",
    "read_rgbt_image",
]

# (RGB subfolder, thermal subfolder) of a folder of pairs, compared case-insensitively.
PAIR_FOLDER_LAYOUTS = (("rgb", "thermal"), ("visible", "infrared"))


@dataclass(frozen=True)
class RGBTInput:
    """One demo input: ``thermal_path == rgb_path`` means a 4-channel RGBT PNG (thermal = channel 4);
    a path of None means that camera is missing (single-modality input)."""

    name: str
    rgb_path: str | None
    thermal_path: str | None

    def record(self) -> dict:
        """The dataset-record fields that ``sartm_d2.data.io.read_rgbt`` reads."""
        return {"file_name": self.rgb_path, "thermal_file_name": self.thermal_path, "image_id": self.name}


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _images_by_stem(folder: str) -> dict[str, str]:
    """Image files of ``folder`` keyed by stem; two files with one stem are an error (ambiguous pair)."""
    found: dict[str, str] = {}
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if not (os.path.isfile(path) and entry.lower().endswith(IMAGE_EXTENSIONS)):
            continue
        stem = _stem(entry)
        if stem in found:
            raise ValueError(
                f"Folder {folder!r} holds two images named {stem!r} ({os.path.basename(found[stem])!r} and "
                f"{entry!r}); keep one so that the pair is unambiguous."
            )
        found[stem] = path
    return found


def find_pairs_in_folder(folder: str) -> list[RGBTInput]:
    """Pairs of a folder: paired subfolders (see the module docstring) or 4-channel RGBT images.

    Every RGB image must have a thermal image of the same stem and vice versa; unmatched names are
    listed in the error rather than skipped, so a half-copied folder cannot pass unnoticed.
    """
    subdirs = {e.lower(): e for e in os.listdir(folder) if os.path.isdir(os.path.join(folder, e))}
    for rgb_dir, thermal_dir in PAIR_FOLDER_LAYOUTS:
        if rgb_dir in subdirs and thermal_dir in subdirs:
            rgb_folder = os.path.join(folder, subdirs[rgb_dir])
            thermal_folder = os.path.join(folder, subdirs[thermal_dir])
            rgb = _images_by_stem(rgb_folder)
            thermal = _images_by_stem(thermal_folder)
            only_rgb = sorted(set(rgb) - set(thermal))
            only_thermal = sorted(set(thermal) - set(rgb))
            if only_rgb or only_thermal:
                raise ValueError(
                    f"Unmatched names in {folder!r}: without a thermal image in {thermal_folder!r}: "
                    f"{only_rgb}; without an RGB image in {rgb_folder!r}: {only_thermal}. Every image needs "
                    "a partner with the same name (extension may differ)."
                )
            if not rgb:
                raise ValueError(f"No images in {rgb_folder!r} and {thermal_folder!r} ({IMAGE_EXTENSIONS}).")
            return [RGBTInput(s, rgb[s], thermal[s]) for s in sorted(rgb)]
    images = _images_by_stem(folder)
    if not images:
        layouts = " or ".join(f"{a}/ + {b}/" for a, b in PAIR_FOLDER_LAYOUTS)
        raise ValueError(
            f"Folder {folder!r} has neither paired subfolders ({layouts}) nor images: expected a folder "
            "of pairs or of 4-channel RGBT PNGs (MFNet images/)."
        )
    return [RGBTInput(s, p, p) for s, p in sorted(images.items())]


def _expand(path: str) -> list[str]:
    """A path as given, or the sorted matches of a glob pattern; a path that is neither is an error."""
    if os.path.exists(path):
        return [path]
    if glob.has_magic(path):
        matches = sorted(glob.glob(os.path.expanduser(path)))
        if not matches:
            raise FileNotFoundError(f"No file matches the pattern {path!r}.")
        return matches
    raise FileNotFoundError(f"Input not found: {path!r}.")


def find_inputs(
    inputs: Sequence[str], thermal: Sequence[str] | None = None, modality: str = "rgbt"
) -> list[RGBTInput]:
    """Resolve ``--input`` (and ``--thermal``) paths into RGB-T pairs, in order.

    With ``thermal``, ``inputs[i]`` and ``thermal[i]`` are the i-th pair (files only). Without it,
    each input is a 4-channel RGBT image, a folder (:func:`find_pairs_in_folder`) or a glob pattern.
    With ``modality`` "rgb" or "thermal", each input (file, folder or pattern) is an image of that
    camera alone. Output names are the stems; two inputs with one name would overwrite each other.
    """
    if not inputs:
        raise ValueError("No input given: pass --input with image files or folders.")
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}.")
    items: list[RGBTInput] = []
    if modality != "rgbt":
        if thermal:
            raise ValueError(f"--modality {modality} takes the images of one camera: drop --thermal.")
        for given in inputs:
            for path in _expand(given):
                found = _images_by_stem(path) if os.path.isdir(path) else {_stem(path): path}
                if not found:
                    raise ValueError(f"No images in {path!r} ({IMAGE_EXTENSIONS}).")
                for name, p in sorted(found.items()):
                    items.append(RGBTInput(name, p, None) if modality == "rgb" else RGBTInput(name, None, p))
    elif thermal:
        if len(thermal) != len(inputs):
            raise ValueError(
                f"--input has {len(inputs)} path(s) but --thermal has {len(thermal)}; give one thermal "
                "image per RGB image, in the same order (or no --thermal for folders and RGBT PNGs)."
            )
        for rgb_path, thermal_path in zip(inputs, thermal):
            for path in (rgb_path, thermal_path):
                if not os.path.isfile(path):
                    kind = "a folder" if os.path.isdir(path) else "not found"
                    raise FileNotFoundError(
                        f"With --thermal, every input must be an image file; {path!r} is {kind}."
                    )
            items.append(RGBTInput(_stem(rgb_path), rgb_path, thermal_path))
    else:
        for given in inputs:
            for path in _expand(given):
                if os.path.isdir(path):
                    items.extend(find_pairs_in_folder(path))
                else:
                    items.append(RGBTInput(_stem(path), path, path))
    names: dict[str, list[str]] = {}
    for item in items:
        names.setdefault(item.name, []).append(item.rgb_path)
    clashes = {n: p for n, p in names.items() if len(p) > 1}
    if clashes:
        raise ValueError(f"Several inputs share an output name (their file stem): {clashes}. Rename them.")
    return items


def read_rgbt_image(path: str, fix: str, where: str = ""):
    """The decoded image of a file that must be a 4-channel R,G,B,T image (MFNet layout).

    The one check of the demo's image and stream inputs: an image with another channel count is
    an error naming the file (``where`` adds context, e.g. which folder) and ``fix``, the remedy in
    the caller's options. None when OpenCV cannot decode the file: the reader then says why.
    """
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is not None and (img.ndim != 3 or img.shape[2] != 4):
        channels = 1 if img.ndim == 2 else img.shape[2]
        raise ValueError(
            f"{path!r}{where} has {channels} channel(s), so it is not a 4-channel R,G,B,T image (MFNet "
            f"layout): {fix}."
        )
    return img


def load_pair(item: RGBTInput, thermal_16bit_norm: str = "percentile", rig: Rig | None = None):
    """Read a pair exactly like the data loader: (rgb uint8 HxWx3, thermal float32 HxW in 0..255);
    the missing image of a single-modality input is None.

    With ``rig`` (cameras that are not pixel-aligned) the two images must be of the rig's sizes (else
    its error, naming the file and the rig file) and the thermal image stays in its own frame: the
    predictors take it so and warp it themselves (``RGBTPredictor(cfg, rig=)``).
    """
    if item.rgb_path is None or item.thermal_path is None:
        path = item.thermal_path if item.rgb_path is None else item.rgb_path
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if img is not None and img.ndim == 3 and img.shape[2] == 4:  # an RGBT image: keep one stream
            rgb, thermal = read_rgbt({"file_name": path, "thermal_file_name": path}, thermal_16bit_norm)
            return (None, thermal) if item.rgb_path is None else (rgb, None)
        if item.rgb_path is None:
            return None, read_thermal(path, thermal_16bit_norm)
        return read_rgb(path), None
    if item.thermal_path == item.rgb_path:
        read_rgbt_image(
            item.rgb_path,
            "pass its thermal image with --thermal, or a folder with rgb/ + thermal/ (or Visible/ + "
            "Infrared/), or run with one camera (--modality rgb or thermal)",
        )
    return read_rgbt(item.record(), thermal_16bit_norm, rig, warp=False)
