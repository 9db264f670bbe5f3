"""Parity of an exported graph with the PyTorch inference path, end to end, on real images.

The reference is what ``--eval-only`` computes: the test mapper (``RGBTDatasetMapper``, its resize
included) and the model's own ``forward``, which normalises and pads through ``preprocess_image``
and resizes through ``sem_seg_postprocess``. The graph gets the raw image, exactly what a runtime is
given. A step lost or changed on the way into the graph (a skipped normalisation, a resize outside
it, another thermal scaling) therefore shows up here, not only exporter rounding.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..data import RGBTDatasetMapper, read_label, read_rgbt, remap_background
from ..data.io import check_label_values
from ..evaluation import confusion_matrix, segmentation_metrics
from .runtime import OnnxSegmenter

__all__ = [
    "FP16_MIN_AGREEMENT",
    "FP32_MIN_AGREEMENT",
    "INT8_MAX_MIOU_DIFF",
    "INT8_MIN_AGREEMENT",
    "MAX_MIOU_DIFF",
    "MAX_TRUST_DIFF",
    "ParityReport",
    "ParitySample",
    "check_parity",
    "load_parity_samples",
    "max_miou_diff_for",
    "min_agreement_for",
    "read_ground_truth",
]

logger = logging.getLogger(__name__)

# Pixel agreement of the argmax (all pixels of all parity images) below which an export fails.
FP32_MIN_AGREEMENT = 0.999
FP16_MIN_AGREEMENT = 0.99
INT8_MIN_AGREEMENT = 0.99  # a quantized graph may move 1% of the pixels, not more
# Largest |mIoU(PyTorch) - mIoU(ONNX)| in points (mIoU_all, the papers' convention) that passes.
MAX_MIOU_DIFF = 0.1
INT8_MAX_MIOU_DIFF = 0.5  # int8's bound (fp32 and fp16 keep MAX_MIOU_DIFF)
# Largest |trust(PyTorch) - trust(ONNX)| (0..1 scale) that passes, for models that report trust.
# int8: 0.05, a twentieth of the scale. Trust is a sigmoid gate on pooled features, read as "trusted"
# (near 1) or "faded out" (near 0); an error of 0.05 cannot turn one into the other, while 8-bit
# activations (steps of 1/127 of each tensor's range, compounded through the backbone) make 1e-2
# too tight (benchmarks/RESULTS.md, INT8).
MAX_TRUST_DIFF = {"fp32": 1e-3, "fp16": 1e-2, "int8": 5e-2}


def min_agreement_for(dtype: str) -> float:
    return {"fp32": FP32_MIN_AGREEMENT, "fp16": FP16_MIN_AGREEMENT, "int8": INT8_MIN_AGREEMENT}[dtype]


def max_miou_diff_for(dtype: str) -> float:
    return INT8_MAX_MIOU_DIFF if dtype == "int8" else MAX_MIOU_DIFF


@dataclass
class ParitySample:
    """One parity image: its dataset record (the reference re-reads it) and the raw (4, H, W) input."""

    name: str
    record: dict
    image: np.ndarray


def load_parity_samples(
    records: Iterable[dict],
    thermal_16bit_norm: str,
    limit: int,
    size: tuple[int, int] | None = None,
) -> list[ParitySample]:
    """The first ``limit`` records whose image is ``size`` (HxW; None: the first image's size).

    Images of other sizes are skipped (the graph has one size); none left is an error listing the
    sizes seen.
    """
    samples: list[ParitySample] = []
    seen: dict[tuple[int, int], int] = {}
    for record in records:
        if len(samples) >= limit:
            break
        rgb, thermal = read_rgbt(record, thermal_16bit_norm)
        hw = rgb.shape[:2]
        seen[hw] = seen.get(hw, 0) + 1
        if size is None:
            size = hw
        if hw != tuple(size):
            continue
        image = np.concatenate([rgb.astype(np.float32), thermal[:, :, None]], axis=2).transpose(2, 0, 1)
        name = str(record.get("image_id", record["file_name"]))
        samples.append(ParitySample(name, dict(record), np.ascontiguousarray(image)))
    if not samples:
        sizes = ", ".join(f"{h}x{w} ({n})" for (h, w), n in seen.items()) or "none"
        raise ValueError(
            f"No parity image of the export size {size[0]}x{size[1]} (HxW); sizes seen: {sizes}. Pass images "
            "of that size or export at one of these sizes (--height/--width)."
            if size else "No parity image given."
        )
    if len(samples) < limit:
        logger.info("Parity on %d image(s) (fewer than the %d asked for).", len(samples), limit)
    return samples


@dataclass
class ParityReport:
    dtype: str
    num_images: int
    height: int
    width: int
    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    pixel_agreement: float
    worst_image_agreement: float
    miou_against: str  # "ground truth" or "PyTorch argmax"
    miou_torch: dict
    miou_onnx: dict
    min_agreement: float
    max_miou_diff: float
    torch_s_per_image: float
    onnx_s_per_image: float
    max_abs_trust_diff: float | None = None  # models whose fusion reports trust (graph output "trust")
    modality: str = "rgbt"  # the graph's cameras; PyTorch ran the test mapper's setting of that name
    images: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def table(self) -> str:
        camera = f", {self.modality} only (PyTorch: that setting)" if self.modality != "rgbt" else ""
        rows = [
            ("images", f"{self.num_images} at {self.height}x{self.width}{camera}"),
            ("max |logit difference|", f"{self.max_abs_logit_diff:.3g}"),
            ("mean |logit difference|", f"{self.mean_abs_logit_diff:.3g}"),
            ("argmax pixel agreement", f"{100 * self.pixel_agreement:.4f}% (worst image "
                                       f"{100 * self.worst_image_agreement:.4f}%; needs >= "
                                       f"{100 * self.min_agreement:g}%)"),
            (f"mIoU_all vs {self.miou_against}", f"PyTorch {self.miou_torch['mIoU_all']:.3f}, ONNX "
                                                 f"{self.miou_onnx['mIoU_all']:.3f} (max difference "
                                                 f"{self.max_miou_diff:g})"),
            (f"mIoU vs {self.miou_against}", f"PyTorch {self.miou_torch['mIoU']:.3f}, ONNX "
                                             f"{self.miou_onnx['mIoU']:.3f}"),
            *([("max |trust difference|", f"{self.max_abs_trust_diff:.3g}")]
              if self.max_abs_trust_diff is not None else []),
            ("median s per image",
             f"PyTorch {self.torch_s_per_image:.3f}, onnxruntime {self.onnx_s_per_image:.3f}"),
            ("result", "PASSED" if self.passed else "FAILED: " + "; ".join(self.failures)),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def read_ground_truth(record: dict, cfg) -> np.ndarray:
    """The label image of ``record`` as the evaluator reads it: values checked against
    MODEL.SEM_SEG_HEAD.NUM_CLASSES, background remapped to IGNORE_VALUE with
    DATASETS.BACKGROUND_AS_IGNORE (the INT8 search scores its estimates against the same labels)."""
    path = record["sem_seg_file_name"]
    gt = read_label(path)
    ignore = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
    background_as_ignore = cfg.DATASETS.BACKGROUND_AS_IGNORE
    check_label_values(gt, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES + int(background_as_ignore), path, ignore)
    return remap_background(gt, ignore) if background_as_ignore else gt


def check_parity(
    cfg,
    model: torch.nn.Module,
    onnx_model: str | OnnxSegmenter,
    samples: Sequence[ParitySample],
    dtype: str = "fp32",
    *,
    min_agreement: float | None = None,
    max_miou_diff: float | None = None,
    providers: Sequence[str] | None = None,
) -> ParityReport:
    """Run PyTorch (``model``, prepared, on the test mapper's output) and onnxruntime on ``samples``.

    ``model`` is the fp32 model the graph was traced from (also for an fp16 graph, whose loss against
    fp32 is what the fp16 bound limits), not an INFERENCE_DTYPE bf16 one.

    mIoU is taken against the ground truth when every record has a label, else against PyTorch's
    argmax. Fails (``report.failures``) below ``min_agreement`` (default: ``min_agreement_for(dtype)``)
    or when the two mIoU_all differ by more than ``max_miou_diff`` points (``max_miou_diff_for``).
    A one-camera graph is compared with PyTorch given the test mapper's input setting of its camera
    ("rgb" / "thermal": the model computes that stream only), on the same images.
    """
    if not samples:
        raise ValueError("check_parity needs at least one image.")
    min_agreement = min_agreement_for(dtype) if min_agreement is None else min_agreement
    max_miou_diff = max_miou_diff_for(dtype) if max_miou_diff is None else max_miou_diff
    segmenter = onnx_model if isinstance(onnx_model, OnnxSegmenter) else OnnxSegmenter(onnx_model, providers)
    mapper = RGBTDatasetMapper(cfg, is_train=False, setting=segmenter.modality)
    class_names = list(model.class_names)
    k = len(class_names)
    with_gt = all("sem_seg_file_name" in s.record for s in samples)
    conf_torch = np.zeros((k, k), np.int64)
    conf_onnx = np.zeros((k, k), np.int64)
    max_diff, sum_diff, values, agree, pixels, worst = 0.0, 0.0, 0, 0, 0, 1.0
    trust_diff = 0.0 if segmenter.has_trust else None
    torch_s, onnx_s = [], []
    finite = True
    model.eval()
    for sample in samples:
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model([mapper(sample.record)])[0]
        ref = out["sem_seg"].float().cpu().numpy()
        t1 = time.perf_counter()
        graph_out = segmenter.outputs(sample.image, source=sample.record["file_name"])
        onnx_s.append(time.perf_counter() - t1)
        logits, labels = graph_out["logits"], graph_out["labels"]
        if trust_diff is not None:
            if "trust" not in out:
                raise ValueError(f"{sample.name}: the graph outputs trust but the PyTorch model gives none.")
            trust_ref = out["trust"].float().cpu().numpy()
            trust_diff = max(trust_diff, float(np.abs(graph_out["trust"] - trust_ref).max()))
        torch_s.append(t1 - t0)
        if logits.shape != ref.shape:
            raise ValueError(f"{sample.name}: ONNX logits {logits.shape} but PyTorch {ref.shape}.")
        finite = finite and bool(np.isfinite(logits).all())
        diff = np.abs(logits.astype(np.float64) - ref)
        max_diff = max(max_diff, float(diff.max()))
        sum_diff += float(diff.sum())
        values += diff.size
        ref_labels = ref.argmax(0)
        same = int((labels == ref_labels).sum())
        agree += same
        pixels += ref_labels.size
        worst = min(worst, same / ref_labels.size)
        gt = read_ground_truth(sample.record, cfg) if with_gt else ref_labels
        ignore = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
        conf_torch += confusion_matrix(ref_labels, gt, k, ignore)
        conf_onnx += confusion_matrix(labels, gt, k, ignore)
    with np.errstate(invalid="ignore", divide="ignore"):
        m_torch = segmentation_metrics(conf_torch, class_names)
        m_onnx = segmentation_metrics(conf_onnx, class_names)
    keys = ("mIoU", "mIoU_all", "pACC")
    report = ParityReport(
        dtype=dtype, num_images=len(samples), height=segmenter.height, width=segmenter.width,
        max_abs_logit_diff=max_diff, mean_abs_logit_diff=sum_diff / max(values, 1),
        pixel_agreement=agree / max(pixels, 1), worst_image_agreement=worst,
        miou_against="ground truth" if with_gt else "PyTorch argmax",
        miou_torch={key: m_torch[key] for key in keys}, miou_onnx={key: m_onnx[key] for key in keys},
        min_agreement=min_agreement, max_miou_diff=max_miou_diff,
        torch_s_per_image=statistics.median(torch_s), onnx_s_per_image=statistics.median(onnx_s),
        max_abs_trust_diff=trust_diff, modality=segmenter.modality, images=[s.name for s in samples],
    )
    if not report.pixel_agreement >= min_agreement:
        report.failures.append(
            f"argmax agreement {100 * report.pixel_agreement:.4f}% < {100 * min_agreement:g}% ({dtype})"
        )
    miou_diff = abs(m_torch["mIoU_all"] - m_onnx["mIoU_all"])
    if not miou_diff <= max_miou_diff:  # NaN fails too
        report.failures.append(f"mIoU_all differs by {miou_diff:.3f} > {max_miou_diff:g} points")
    if not finite:
        report.failures.append("non-finite ONNX logits")
    if trust_diff is not None and not trust_diff <= MAX_TRUST_DIFF[dtype]:
        report.failures.append(f"trust differs by {trust_diff:.4f} > {MAX_TRUST_DIFF[dtype]:g}")
    return report
