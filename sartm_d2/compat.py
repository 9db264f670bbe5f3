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

4. Dependencies warn at import about their own code, which no user of this project can act on, so
   every command line would start with them. Each known warning is silenced here, and only where it
   arises: matched by category, message and the module that warns (see ``KNOWN_IMPORT_WARNINGS``
   and ``KNOWN_LAZY_WARNINGS``). Any other warning, ours included, is shown as usual.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
import warnings

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


# (category, message regex, regex of the module the warning is attributed to, modules whose first
# import emits it). These are imported here, under the filter, so the filter ends with the import.
KNOWN_IMPORT_WARNINGS = (
    # fvcore/nn/focal_loss.py and detectron2/modeling/box_regression.py call torch.jit.script at
    # import; torch >= 2.9 deprecates it (the warning is raised inside torch.jit._script).
    (FutureWarning, r"`torch\.jit\.script` is deprecated", r"torch\.jit\._script",
     ("fvcore.nn", "detectron2.modeling")),
)
# (category, message regex, module regex): imports that happen on first use inside a dependency,
# so their filter stays installed; the module regex keeps it to that one import.
KNOWN_LAZY_WARNINGS = (
    # openai-clip's clip/clip.py runs `from pkg_resources import packaging` (setuptools >= 80.9 warns).
    (UserWarning, r"pkg_resources is deprecated as an API", r"clip\.clip"),
)


@contextlib.contextmanager
def _ignoring(known):
    with warnings.catch_warnings():
        for category, message, module, *_ in known:
            warnings.filterwarnings("ignore", message=message, category=category, module=module + r"\Z")
        yield


def quiet_dependency_imports() -> None:
    """Import the modules of ``KNOWN_IMPORT_WARNINGS`` with exactly those warnings ignored, and
    install the filters of ``KNOWN_LAZY_WARNINGS``. A module imported before this already warned."""
    with _ignoring(KNOWN_IMPORT_WARNINGS):
        for *_, modules in KNOWN_IMPORT_WARNINGS:
            for name in modules:
                importlib.import_module(name)
    for category, message, module in KNOWN_LAZY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module + r"\Z")


PATCHED = apply()
quiet_dependency_imports()
