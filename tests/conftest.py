"""Every test module may import detectron2 first: sartm_d2's compatibility fixes are applied here."""

import sartm_d2  # noqa: F401
