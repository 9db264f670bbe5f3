"""RGB-T semantic segmentation evaluator: Detectron2's metrics plus the RGB-T papers' mIoU.

Two mIoU conventions coexist in the literature and differ by several points on MFNet/FMB:

* Detectron2 (``SemSegEvaluator``): the mean over classes that *occur* (union of prediction and
  ground truth non-empty); a class absent from both is left out.
* The RGB-T papers (SARTM, CRM_RGBTSeg, ...): the mean over *all* K classes, a class absent from
  both prediction and ground truth counting 0 (``mIoU_all``; likewise ``mACC_all``).

Both are reported and named. The protocol (background class included or mapped to ignore) comes
from the config and is printed with the results, so a number is never quoted without it.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from tabulate import SEPARATING_LINE, tabulate

from ..data import get_classes
from ..data.degradations import setting_kind
from ..data.io import check_label_values, read_label, remap_background

__all__ = ["RGBTSemSegEvaluator", "confusion_matrix", "segmentation_metrics", "write_settings_table"]

logger = logging.getLogger(__name__)


def confusion_matrix(
    pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_label: int = 255
) -> np.ndarray:
    """Confusion matrix (rows = ground truth, columns = prediction) of one image, ``ignore_label`` skipped.

    One ``np.bincount`` over ``gt * K + pred``: linear in the pixel count, no per-class loop.
    """
    valid = gt != ignore_label
    index = gt[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_metrics(conf: np.ndarray, class_names: list[str]) -> OrderedDict:
    """Metrics (percent) of a K x K confusion matrix (rows = ground truth, columns = prediction).

    ``mIoU``/``mACC``/``fwIoU``/``pACC`` and per-class ``IoU-<name>``/``ACC-<name>`` follow
    Detectron2's SemSegEvaluator: a class's IoU is NaN when it occurs neither in prediction nor in
    ground truth, its accuracy NaN when it has no ground-truth pixel, and the means skip NaNs.
    ``mIoU_all``/``mACC_all`` average over all K classes with those NaNs counted as 0 (RGB-T papers).
    """
    conf = conf.astype(np.float64)
    k = len(class_names)
    if conf.shape != (k, k):
        raise ValueError(f"Confusion matrix of shape {conf.shape} does not match {k} class names.")
    tp = np.diag(conf)
    gt_pixels = conf.sum(axis=1)
    pred_pixels = conf.sum(axis=0)
    union = gt_pixels + pred_pixels - tp
    iou_valid = union > 0
    acc_valid = gt_pixels > 0
    iou = np.full(k, np.nan)
    acc = np.full(k, np.nan)
    iou[iou_valid] = tp[iou_valid] / union[iou_valid]
    acc[acc_valid] = tp[acc_valid] / gt_pixels[acc_valid]
    total = gt_pixels.sum()

    def _mean(values: np.ndarray, valid: np.ndarray) -> float:
        return float(values[valid].mean()) if valid.any() else float("nan")

    res = OrderedDict()
    res["mIoU"] = 100 * _mean(iou, iou_valid)
    res["mIoU_all"] = 100 * float(np.nan_to_num(iou, nan=0.0).sum() / k)
    fw_iou = (iou[acc_valid] * gt_pixels[acc_valid]).sum() / total if total else float("nan")
    res["fwIoU"] = 100 * float(fw_iou)
    res["mACC"] = 100 * _mean(acc, acc_valid)
    res["mACC_all"] = 100 * float(np.nan_to_num(acc, nan=0.0).sum() / k)
    res["pACC"] = 100 * float(tp.sum() / total) if total else float("nan")
    for i, name in enumerate(class_names):
        res[f"IoU-{name}"] = 100 * float(iou[i])
    for i, name in enumerate(class_names):
        res[f"ACC-{name}"] = 100 * float(acc[i])
    return res


class RGBTSemSegEvaluator(DatasetEvaluator):
    """Confusion-matrix evaluator for RGB-T semantic segmentation, overall and per condition.

    Ground truth is read from each record's ``sem_seg_file_name`` at its original size (never the
    mapper's possibly resized ``sem_seg``), checked against the class count and remapped like the
    training labels when ``background_as_ignore``. Confusion matrices are summed over processes;
    only the main process computes, logs, writes files and returns results.

    From a config: ``RGBTSemSegEvaluator(cfg, dataset_name, output_dir)`` (``from_config`` reads
    DATASETS.BACKGROUND_AS_IGNORE, TEST.PER_CONDITION, TEST.SAVE_CONFUSION_MATRIX and
    MODEL.SEM_SEG_HEAD.IGNORE_VALUE); extra keywords such as ``distributed=False`` pass through.
    """

    @configurable
    def __init__(
        self,
        dataset_name: str,
        *,
        distributed: bool = True,
        output_dir: str | None = None,
        background_as_ignore: bool = False,
        per_condition: bool = True,
        save_confusion_matrix: bool = True,
        ignore_label: int = 255,
    ):
        """
        Args:
            dataset_name: a registered dataset; its classes come from ``sartm_d2.data.get_classes``.
            distributed: gather confusion matrices from all processes before computing metrics.
            output_dir: where to write ``sem_seg_results.json`` and the confusion matrix (None: nowhere).
            background_as_ignore: map label 0 to ignore and shift 1..K to 0..K-1 (the 14-class FMB
                protocol); must match how the model was trained (DATASETS.BACKGROUND_AS_IGNORE).
            per_condition: also report metrics per record ``condition`` (MFNet day/night).
            save_confusion_matrix: write the matrix as .npy/.json and a PNG heat map to output_dir.
            ignore_label: label value excluded from every metric.
        """
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._background_as_ignore = background_as_ignore
        self._per_condition = per_condition
        self._save_confusion_matrix = save_confusion_matrix
        self._ignore_label = ignore_label
        self._class_names = list(get_classes(dataset_name, background_as_ignore)[0])
        self._num_classes = len(self._class_names)
        # Raw label ids before remapping: background_as_ignore drops class 0 from the K names.
        self._num_raw_classes = self._num_classes + int(background_as_ignore)
        self._background_name = get_classes(dataset_name, False)[0][0] if background_as_ignore else None
        self._records_by_file: dict[str, dict] | None = None
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: str | None = None):
        return {
            "dataset_name": dataset_name,
            "output_dir": output_dir,
            "background_as_ignore": cfg.DATASETS.BACKGROUND_AS_IGNORE,
            "per_condition": cfg.TEST.PER_CONDITION,
            "save_confusion_matrix": cfg.TEST.SAVE_CONFUSION_MATRIX,
            "ignore_label": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        }

    def reset(self):
        k = self._num_classes
        self._conf = np.zeros((k, k), dtype=np.int64)
        self._cond_conf: dict[str, np.ndarray] = {}
        self._num_images = 0
        self._cond_images: dict[str, int] = {}

    # ------------------------------------------------------------------ accumulation
    def _record_for(self, inp: dict) -> dict:
        """The dataset record of a model input (mapper outputs carry the record's fields)."""
        if "sem_seg_file_name" in inp:
            return inp
        if self._records_by_file is None:
            self._records_by_file = {r["file_name"]: r for r in DatasetCatalog.get(self._dataset_name)}
        record = self._records_by_file.get(inp.get("file_name"))
        if record is None or "sem_seg_file_name" not in record:
            raise ValueError(
                f"Cannot find the ground truth of input {inp.get('file_name')!r}: it has no "
                f"'sem_seg_file_name' and no record of dataset {self._dataset_name!r} with that "
                "file_name has one."
            )
        return record

    def _read_gt(self, path: str) -> np.ndarray:
        gt = read_label(path)
        check_label_values(gt, self._num_raw_classes, path, self._ignore_label)
        if self._background_as_ignore:
            gt = remap_background(gt, self._ignore_label)
        return gt

    def process(self, inputs, outputs):
        """Add each image's confusion matrix to the overall and per-condition sums.

        Args:
            inputs: the model inputs (mapper dicts holding the record's fields).
            outputs: model outputs, each ``{"sem_seg": K x H x W}`` at the input's original size.
        """
        for inp, out in zip(inputs, outputs):
            logits = out["sem_seg"]
            if logits.dim() != 3 or logits.shape[0] != self._num_classes:
                raise ValueError(
                    f"The model's sem_seg output has shape {tuple(logits.shape)}, but dataset "
                    f"{self._dataset_name!r} with DATASETS.BACKGROUND_AS_IGNORE={self._background_as_ignore} "
                    f"has {self._num_classes} classes: set MODEL.SEM_SEG_HEAD.NUM_CLASSES to match "
                    "(the 14- vs 15-class FMB protocols differ by BACKGROUND_AS_IGNORE)."
                )
            pred = logits.argmax(dim=0).to("cpu", torch.int64).numpy()
            record = self._record_for(inp)
            gt_path = record["sem_seg_file_name"]
            gt = self._read_gt(gt_path)
            if pred.shape != gt.shape:
                raise ValueError(
                    f"Prediction of size {pred.shape} for {gt_path} does not match its label of size "
                    f"{gt.shape}: the model must return sem_seg at the original size "
                    "(the input's 'height'/'width')."
                )
            conf = confusion_matrix(pred, gt, self._num_classes, self._ignore_label)
            self._conf += conf
            self._num_images += 1
            condition = inp.get("condition", record.get("condition"))
            if self._per_condition and condition is not None:
                if condition not in self._cond_conf:
                    self._cond_conf[condition] = np.zeros_like(self._conf)
                    self._cond_images[condition] = 0
                self._cond_conf[condition] += conf
                self._cond_images[condition] += 1

    # ------------------------------------------------------------------ results
    def _gather(self) -> bool:
        """Sum every process's state into this one; return False on non-main processes."""
        if not self._distributed:
            return True
        comm.synchronize()
        states = comm.all_gather((self._conf, self._cond_conf, self._num_images, self._cond_images))
        if not comm.is_main_process():
            return False
        self.reset()
        for conf, cond_conf, num_images, cond_images in states:
            self._conf += conf
            self._num_images += num_images
            for cond, matrix in cond_conf.items():
                self._cond_conf.setdefault(cond, np.zeros_like(self._conf))
                self._cond_conf[cond] = self._cond_conf[cond] + matrix
                self._cond_images[cond] = self._cond_images.get(cond, 0) + cond_images[cond]
        return True

    def _conditions(self) -> list[str]:
        """Conditions in the dataset's declared order (metadata "conditions"), unknown ones after."""
        declared = list(MetadataCatalog.get(self._dataset_name).get("conditions", []))
        return [c for c in declared if c in self._cond_conf] + sorted(set(self._cond_conf) - set(declared))

    def protocol(self) -> OrderedDict:
        """The evaluation protocol, printed and saved with every result."""
        if self._background_as_ignore:
            background = (
                f"ignored (label 0 {self._background_name!r} -> {self._ignore_label}, ids shifted by -1)"
            )
        else:
            background = "included (label 0 is a class)"
        return OrderedDict(
            dataset=self._dataset_name,
            num_classes=self._num_classes,
            class_names=self._class_names,
            background=background,
            ignore_label=self._ignore_label,
            num_images=self._num_images,
            images_per_condition=dict(self._cond_images),
            confusion_matrix="rows = ground truth, columns = prediction (pixels)",
            mIoU="mean IoU over classes present in prediction or ground truth (Detectron2)",
            mIoU_all="mean IoU over all classes, a class absent from both counting 0 (RGB-T papers)",
        )

    def evaluate(self):
        """Gather, compute, log one table and write files; None on non-main processes (as Detectron2)."""
        if not self._gather():
            return None
        if self._num_images == 0:
            logger.warning(f"RGBTSemSegEvaluator on {self._dataset_name}: no image was processed.")
        with np.errstate(invalid="ignore", divide="ignore"):
            res = segmentation_metrics(self._conf, self._class_names)
            per_cond = OrderedDict(
                (c, segmentation_metrics(self._cond_conf[c], self._class_names)) for c in self._conditions()
            )
        for cond, metrics in per_cond.items():
            res.update((f"{cond}/{key}", value) for key, value in metrics.items())
        logger.info("\n" + self._format_table(res, per_cond))
        if self._output_dir:
            self._write_files(res, per_cond)
        return OrderedDict({"sem_seg": res})

    def _format_table(self, res: dict, per_cond: dict) -> str:
        """Per-class IoU/Acc (overall, then per condition) and the summary rows, one table."""

        def cell(value: float):
            return None if np.isnan(value) else value

        groups = [("", res)] + [(f"{c} ", m) for c, m in per_cond.items()]
        headers = ["class"] + [f"{prefix}{col}" for prefix, _ in groups for col in ("IoU", "Acc")]
        rows = []
        for name in self._class_names:
            rows.append([name] + [cell(m[f"{col}-{name}"]) for _, m in groups for col in ("IoU", "ACC")])
        summary = [
            ("mean, classes present (Detectron2 mIoU / mACC)", "mIoU", "mACC"),
            ("mean, all classes, absent = 0 (papers mIoU_all / mACC_all)", "mIoU_all", "mACC_all"),
            ("frequency-weighted IoU / pixel accuracy", "fwIoU", "pACC"),
        ]
        rows.append(SEPARATING_LINE)
        for label, iou_key, acc_key in summary:
            rows.append([label] + [cell(m[key]) for _, m in groups for key in (iou_key, acc_key)])
        proto = self.protocol()
        cond_text = ", ".join(f"{c}: {n}" for c, n in proto["images_per_condition"].items())
        title = (
            f"Semantic segmentation results on {proto['dataset']} (%; '-' = undefined: class absent)\n"
            f"Protocol: {proto['num_classes']} classes, background {proto['background']}, label "
            f"{proto['ignore_label']} ignored; {proto['num_images']} images"
            f"{f' ({cond_text})' if cond_text else ''}"
        )
        table = tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".2f", missingval="-")
        return f"{title}\n{table}"

    def _write_files(self, res: dict, per_cond: dict):
        PathManager.mkdirs(self._output_dir)

        def finite(value: float):
            return None if np.isnan(value) else value

        results = {
            "protocol": self.protocol(),
            "metrics": OrderedDict((k, finite(v)) for k, v in res.items()),
        }
        with PathManager.open(os.path.join(self._output_dir, "sem_seg_results.json"), "w") as f:
            json.dump(results, f, indent=2)
        if not self._save_confusion_matrix:
            return
        with PathManager.open(os.path.join(self._output_dir, "confusion_matrix.npy"), "wb") as f:
            np.save(f, self._conf)
        matrices = {
            "class_names": self._class_names,
            "rows": "ground truth",
            "columns": "prediction",
            "matrix": self._conf.tolist(),
            "per_condition": {c: self._cond_conf[c].tolist() for c in per_cond},
        }
        with PathManager.open(os.path.join(self._output_dir, "confusion_matrix.json"), "w") as f:
            json.dump(matrices, f)
        with PathManager.open(os.path.join(self._output_dir, "confusion_matrix.png"), "wb") as f:
            f.write(confusion_matrix_png(self._conf, self._class_names, title=self._dataset_name))
        logger.info(f"Wrote sem_seg_results.json and confusion_matrix.{{npy,json,png}} to {self._output_dir}")


def write_settings_table(
    summary: dict[str, dict], dataset_name: str, output_dir: str | None, seen_kinds=()
) -> str:
    """One table of the input settings of a dataset (rows) by mIoU overall and per condition.

    Args:
        summary: setting name -> the evaluator's "sem_seg" metrics of that setting.
        dataset_name: for the title.
        output_dir: where ``settings.json`` (every setting's metrics) is written; None: nowhere.
        seen_kinds: the degradation families the model was trained on (INPUT.DEGRADATION_AUG_KINDS
            with augmentation on): each degraded setting is marked "seen" or "unseen" (held out).
    Returns:
        the table, also logged.
    """
    conditions = sorted({k.split("/", 1)[0] for m in summary.values() for k in m if "/" in k})
    headers = ["setting", "family", "mIoU_all", "mIoU"] + [f"{c} mIoU_all" for c in conditions]
    rows, families = [], {}
    for setting, m in summary.items():
        kind = setting_kind(setting)
        families[setting] = None if kind is None else "seen" if kind in seen_kinds else "unseen"
        keys = ["mIoU_all", "mIoU"] + [f"{c}/mIoU_all" for c in conditions]
        values = [None if np.isnan(m.get(k, np.nan)) else m[k] for k in keys]
        rows.append([setting, families[setting], *values])
    table = tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".2f", missingval="-")
    text = (f"Input settings on {dataset_name} (mIoU_all: all classes, papers' convention; %; family: seen = "
            f"trained with its degradation family, unseen = held out)\n{table}")
    logger.info("\n" + text)
    if output_dir:
        PathManager.mkdirs(output_dir)
        clean = {s: {k: (None if np.isnan(v) else v) for k, v in m.items()} for s, m in summary.items()}
        with PathManager.open(os.path.join(output_dir, "settings.json"), "w") as f:
            json.dump({"dataset": dataset_name, "seen_kinds": list(seen_kinds), "families": families,
                       "settings": clean}, f, indent=2)
    return text


def confusion_matrix_png(conf: np.ndarray, class_names: list[str], title: str = "") -> bytes:
    """A row-normalised heat map (each row: where that ground-truth class went) as PNG bytes.

    Uses a bare ``matplotlib.figure.Figure`` with the Agg canvas: no pyplot global state, no display.
    """
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = len(class_names)
    rows = conf.sum(axis=1, keepdims=True).astype(np.float64)
    norm = np.divide(conf, rows, out=np.zeros(conf.shape, dtype=np.float64), where=rows > 0)
    size = max(4.0, 0.55 * k + 2.5)
    fig = Figure(figsize=(size + 1.0, size))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the ground-truth row")
    ax.set_xticks(range(k), labels=class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), labels=class_names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(f"Confusion matrix (row-normalised){': ' + title if title else ''}")
    if k <= 25:
        for i in range(k):
            for j in range(k):
                if norm[i, j] >= 0.005:
                    color = "white" if norm[i, j] > 0.5 else "black"
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7, color=color)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()
