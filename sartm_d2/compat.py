"""Import-time compatibility for detectron2 0.6 on today's Pillow, numpy and pure-Python installs.

detectron2 is installed from the registry's ``pb1-detectron2==0.6`` sdist, which ships no C++
sources (see ``scripts/setup_env.sh``). Three things then break at import or use, each fixed here,
once, before any detectron2 module is imported (``sartm_d2/__init__.py`` imports this first):

1. Pillow >= 10 removed ``Image.LINEAR``; detectron2 uses it as a default argument at class
   definition time (``data/transforms/transform.py``). It was always an alias of ``BILINEAR``.
2. numpy >= 1.24 removed the aliases ``np.int``, ``np.float``, ``np.bool``, ``np.object``,
   ``np.str`` (``SemSegEvaluator`` and 18 more uses). They were aliases of the builtins.
3. Without the compiled ``detectron2._C``, ``import detectron2.layers`` fails because a few ops
   (deformable conv, rotated boxes, ROIAlignRotated) import it at module level. Semantic
   segmentation never calls them; a stand-in module raises a clear error if anything does.

A detectron2 built from source with its ops keeps its real ``_C``: the stand-in is only installed
when the real one cannot be imported. Every patch only adds a missing name; nothing is replaced.
"""

from __future__ import annotations

import importlib
import sys
import types

_NUMPY_ALIASES = {"int": int, "float": float, "bool": bool, "object": object, "str": str, "complex": complex}


class _MissingCompiledOps(types.ModuleType):
    """Stand-in for ``detectron2._C`` that fails loudly on first use instead of at import.

    Only the build-information queries of ``detectron2.utils.collect_env`` (which
    ``default_setup`` logs) answer, saying that no extension was built.
    """

    @staticmethod
    def get_compiler_version() -> str:
        return "none (pure-Python detectron2, no C++ ops)"

    get_cuda_version = get_compiler_version

    @staticmethod
    def has_cuda() -> bool:
        return False

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(
            f"detectron2._C.{name} is a compiled op, and this detectron2 was installed as pure Python "
            "(no C++ extension). SARTM never needs it; if your code does, build detectron2 from "
            "source with its ops (https://detectron2.readthedocs.io/en/latest/tutorials/install.html)."
        )


def _patch_pillow() -> list[str]:
    from PIL import Image

    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR
        return ["PIL.Image.LINEAR"]
    return []


def _patch_numpy() -> list[str]:
    import warnings

    import numpy as np

    added = []
    for name, value in _NUMPY_ALIASES.items():
        with warnings.catch_warnings():
            # numpy 2 warns ("will be defined as the NumPy scalar") and raises for removed aliases.
            warnings.simplefilter("ignore", FutureWarning)
            present = hasattr(np, name)
        if not present:
            setattr(np, name, value)
            added.append(f"numpy.{name}")
    return added


def _patch_detectron2_c() -> list[str]:
    if "detectron2._C" in sys.modules:
        return []
    try:
        importlib.import_module("detectron2._C")
        return []
    except ImportError:
        pass
    stub = _MissingCompiledOps("detectron2._C")
    sys.modules["detectron2._C"] = stub
    import detectron2

    detectron2._C = stub
    return ["detectron2._C"]


def apply() -> list[str]:
    """Apply every needed patch; return the names that were added (empty when none was needed)."""
    return _patch_pillow() + _patch_numpy() + _patch_detectron2_c()


PATCHED = apply()
