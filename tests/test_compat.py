"""The detectron2 0.6 compatibility layer (sartm_d2/compat.py) covers exactly what breaks."""

import numpy as np
import pytest
from PIL import Image

import sartm_d2  # noqa: F401  (applies the patches)
from sartm_d2 import compat


def test_removed_aliases_are_builtin_equivalents():
    assert Image.LINEAR == Image.BILINEAR
    assert np.int is int and np.float is float and np.object is object and np.str is str


def test_detectron2_modules_that_used_to_fail_import_and_run():
    from detectron2.data import transforms as T
    from detectron2.evaluation import SemSegEvaluator  # noqa: F401  (np.int at use)
    from detectron2.layers import ShapeSpec  # noqa: F401  (imports _C users at module level)

    # ExtentTransform's default interpolation is Image.LINEAR, resolved at class definition time.
    out = T.ExtentTransform((0, 0, 4, 4), (2, 2)).apply_image(np.zeros((4, 4, 3), np.uint8))
    assert out.shape == (2, 2, 3)


def test_compiled_op_stand_in_fails_with_a_clear_message():
    import detectron2

    if compat._MissingCompiledOps not in type(detectron2._C).__mro__:
        pytest.skip("this detectron2 has its compiled ops")
    assert "no C++ ops" in detectron2._C.get_compiler_version()
    with pytest.raises(RuntimeError, match="compiled op.*pure Python"):
        detectron2._C.deform_conv_forward()


def test_apply_is_idempotent():
    assert compat.apply() == []
