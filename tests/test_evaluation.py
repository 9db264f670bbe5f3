"""RGBTSemSegEvaluator against an independent, pixel-by-pixel computation of every metric."""

from __future__ import annotations

import json
import math
import uuid

import cv2
import numpy as np
import pytest
import torch

import sartm_d2  # noqa: F401  (compat patches before detectron2)

# isort: split
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation.testing import flatten_results_dict, print_csv_format

from sartm_d2.config import add_sartm_config
from sartm_d2.evaluation import RGBTSemSegEvaluator

CLASSES = ["unlabeled", "car", "person", "bike", "cone"]
COLORS = [(0, 0, 0), (64, 0, 128), (64, 64, 0), (0, 128, 192), (192, 128, 128)]
ABSENT = 3  # "bike": in no label and never predicted
H, W = 12, 16


def _register(tmp_path, num_images=6, seed=0, name=None):
    """Write random label PNGs (with 255s, without class ABSENT) and register a fake MFNet-like set."""
    rng = np.random.default_rng(seed)
    name = name or f"test_eval_{uuid.uuid4().hex[:8]}"
    records = []
    for i in range(num_images):
        label = rng.choice([0, 1, 2, 4], size=(H, W)).astype(np.uint8)
        label[rng.random((H, W)) < 0.15] = 255
        path = str(tmp_path / f"label_{i}.png")
        cv2.imwrite(path, label)
        image = str(tmp_path / f"img_{i}.png")
        condition = "day" if i % 2 == 0 else "night"
        records.append(
            {
                "file_name": image,
                "thermal_file_name": image,
                "sem_seg_file_name": path,
                "image_id": f"{i:05d}{condition[0].upper()}",
                "condition": condition,
            }
        )
    DatasetCatalog.register(name, lambda r=records: r)
    MetadataCatalog.get(name).set(
        stuff_classes=CLASSES,
        stuff_colors=COLORS,
        ignore_label=255,
        evaluator_type="sem_seg",
        conditions=["day", "night"],
    )
    return name, records


def _random_logits(rng, k, absent=None):
    logits = torch.from_numpy(rng.standard_normal((k, H, W)).astype(np.float32))
    if absent is not None:
        logits[absent] = -100.0
    return logits


# ---------------------------------------------------------------- independent reference
def _reference_counts(pairs, k):
    """counts[(gt, pred)] by a plain loop over every pixel of every (pred, gt) pair; 255 skipped."""
    counts = {}
    for pred, gt in pairs:
        for p, g in zip(pred.ravel().tolist(), gt.ravel().tolist()):
            if g == 255:
                continue
            counts[(g, p)] = counts.get((g, p), 0) + 1
    return counts


def _reference_metrics(counts, names):
    k = len(names)
    tp = [counts.get((c, c), 0) for c in range(k)]
    gt = [sum(counts.get((c, p), 0) for p in range(k)) for c in range(k)]
    pr = [sum(counts.get((g, c), 0) for g in range(k)) for c in range(k)]
    total = sum(gt)
    iou, acc = [], []
    for c in range(k):
        union = gt[c] + pr[c] - tp[c]
        iou.append(tp[c] / union if union else None)
        acc.append(tp[c] / gt[c] if gt[c] else None)
    present_iou = [v for v in iou if v is not None]
    present_acc = [v for v in acc if v is not None]
    res = {
        "mIoU": 100 * sum(present_iou) / len(present_iou),
        "mIoU_all": 100 * sum(v or 0.0 for v in iou) / k,
        "fwIoU": 100 * sum(iou[c] * gt[c] / total for c in range(k) if gt[c]),
        "mACC": 100 * sum(present_acc) / len(present_acc),
        "mACC_all": 100 * sum(v or 0.0 for v in acc) / k,
        "pACC": 100 * sum(tp) / total,
    }
    for c, n in enumerate(names):
        res[f"IoU-{n}"] = float("nan") if iou[c] is None else 100 * iou[c]
        res[f"ACC-{n}"] = float("nan") if acc[c] is None else 100 * acc[c]
    return res


def _assert_metrics_equal(got, expected, prefix=""):
    for key, value in expected.items():
        assert f"{prefix}{key}" in got, f"missing {prefix}{key}"
        g = got[f"{prefix}{key}"]
        if math.isnan(value):
            assert math.isnan(g), f"{prefix}{key}: {g} != nan"
        else:
            assert g == pytest.approx(value, rel=1e-9, abs=1e-9), f"{prefix}{key}"


def _run(evaluator, records, rng, k, absent=None, drop_gt_name_every=3):
    """Feed every record; some inputs carry only file_name (GT found through the catalog) and a
    wrong-size "sem_seg", which the evaluator must not use."""
    evaluator.reset()
    preds = []
    for i, rec in enumerate(records):
        inp = dict(rec, sem_seg=torch.zeros(3, 5, dtype=torch.int64), height=H, width=W)
        if i % drop_gt_name_every == 0:
            inp = {"file_name": rec["file_name"], "height": H, "width": W}
        logits = _random_logits(rng, k, absent)
        preds.append(logits.argmax(0).numpy())
        evaluator.process([inp], [{"sem_seg": logits}])
    return evaluator.evaluate(), preds


def _gts(records, remap=False):
    out = []
    for rec in records:
        gt = cv2.imread(rec["sem_seg_file_name"], cv2.IMREAD_UNCHANGED).astype(np.int64)
        if remap:
            gt = np.where(gt == 255, 255, np.where(gt == 0, 255, gt - 1))
        out.append(gt)
    return out


# ---------------------------------------------------------------- tests
def test_metrics_match_independent_computation(tmp_path):
    name, records = _register(tmp_path)
    out_dir = tmp_path / "out"
    evaluator = RGBTSemSegEvaluator(name, distributed=False, output_dir=str(out_dir))
    results, preds = _run(evaluator, records, np.random.default_rng(1), len(CLASSES), absent=ABSENT)
    res = results["sem_seg"]
    gts = _gts(records)

    expected = _reference_metrics(_reference_counts(zip(preds, gts), len(CLASSES)), CLASSES)
    _assert_metrics_equal(res, expected)
    for cond in ("day", "night"):
        idx = [i for i, r in enumerate(records) if r["condition"] == cond]
        counts = _reference_counts([(preds[i], gts[i]) for i in idx], len(CLASSES))
        _assert_metrics_equal(res, _reference_metrics(counts, CLASSES), prefix=f"{cond}/")

    # The absent class is excluded from Detectron2's mIoU and counts 0 in the papers' mIoU_all.
    assert math.isnan(res["IoU-bike"]) and math.isnan(res["ACC-bike"])
    present = [res[f"IoU-{n}"] for n in CLASSES if n != "bike"]
    assert res["mIoU"] == pytest.approx(sum(present) / 4)
    assert res["mIoU_all"] == pytest.approx(sum(present) / 5)
    assert res["mIoU_all"] < res["mIoU"]

    # Detectron2's reporting/hooks accept the result: flat floats under "sem_seg".
    print_csv_format(results)
    flat = flatten_results_dict(results)
    assert all(isinstance(v, float) for v in flat.values())
    assert "sem_seg/night/mIoU_all" in flat


def test_files_written_and_readable(tmp_path):
    name, records = _register(tmp_path)
    out_dir = tmp_path / "out"
    evaluator = RGBTSemSegEvaluator(name, distributed=False, output_dir=str(out_dir))
    results, preds = _run(evaluator, records, np.random.default_rng(2), len(CLASSES), absent=ABSENT)
    counts = _reference_counts(zip(preds, _gts(records)), len(CLASSES))
    expected_conf = np.array([[counts.get((g, p), 0) for p in range(5)] for g in range(5)])

    saved = json.loads((out_dir / "sem_seg_results.json").read_text())
    assert saved["protocol"]["dataset"] == name
    assert saved["protocol"]["num_classes"] == 5
    assert saved["protocol"]["background"].startswith("included")
    assert saved["protocol"]["images_per_condition"] == {"day": 3, "night": 3}
    for key, value in results["sem_seg"].items():
        assert saved["metrics"][key] == (None if math.isnan(value) else pytest.approx(value))

    np.testing.assert_array_equal(np.load(out_dir / "confusion_matrix.npy"), expected_conf)
    conf_json = json.loads((out_dir / "confusion_matrix.json").read_text())
    assert conf_json["class_names"] == CLASSES and conf_json["rows"] == "ground truth"
    np.testing.assert_array_equal(np.array(conf_json["matrix"]), expected_conf)
    day_night = np.array(conf_json["per_condition"]["day"]) + np.array(conf_json["per_condition"]["night"])
    np.testing.assert_array_equal(day_night, expected_conf)
    png = cv2.imread(str(out_dir / "confusion_matrix.png"), cv2.IMREAD_COLOR)
    assert png is not None and png.shape[0] > 100 and png.shape[1] > 100


def test_background_as_ignore_remaps_ground_truth(tmp_path):
    name, records = _register(tmp_path)
    evaluator = RGBTSemSegEvaluator(name, distributed=False, background_as_ignore=True)
    names = CLASSES[1:]
    results, preds = _run(evaluator, records, np.random.default_rng(3), len(names))
    res = results["sem_seg"]
    expected = _reference_metrics(_reference_counts(zip(preds, _gts(records, remap=True)), 4), names)
    _assert_metrics_equal(res, expected)
    assert "IoU-unlabeled" not in res
    assert "ignored" in evaluator.protocol()["background"]


def test_table_names_both_conventions(tmp_path, caplog):
    name, records = _register(tmp_path)
    evaluator = RGBTSemSegEvaluator(name, distributed=False)
    with caplog.at_level("INFO", logger="sartm_d2.evaluation.sem_seg_evaluation"):
        _run(evaluator, records, np.random.default_rng(4), len(CLASSES))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "mIoU_all" in text and "Detectron2 mIoU" in text
    assert f"results on {name}" in text and "Protocol: 5 classes, background included" in text
    assert "night IoU" in text and "person" in text


def test_from_config_reads_keys(tmp_path):
    name, records = _register(tmp_path)
    cfg = get_cfg()
    add_sartm_config(cfg)
    cfg.TEST.PER_CONDITION = False
    cfg.TEST.SAVE_CONFUSION_MATRIX = False
    cfg.DATASETS.BACKGROUND_AS_IGNORE = True
    out_dir = tmp_path / "cfg_out"
    evaluator = RGBTSemSegEvaluator(cfg, name, str(out_dir), distributed=False)
    results, _ = _run(evaluator, records, np.random.default_rng(5), 4)
    assert not any("/" in key for key in results["sem_seg"])  # no day/night keys
    assert "IoU-car" in results["sem_seg"] and "IoU-unlabeled" not in results["sem_seg"]
    assert (out_dir / "sem_seg_results.json").exists()
    assert not (out_dir / "confusion_matrix.npy").exists()


def test_bad_inputs_give_clear_errors(tmp_path):
    name, records = _register(tmp_path, num_images=2)
    evaluator = RGBTSemSegEvaluator(name, distributed=False)
    rng = np.random.default_rng(6)
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        evaluator.process([records[0]], [{"sem_seg": _random_logits(rng, 4)}])
    with pytest.raises(ValueError, match="original size"):
        evaluator.process([records[0]], [{"sem_seg": torch.zeros(5, H + 1, W)}])
    bad = cv2.imread(records[1]["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
    bad[0, 0] = 7
    cv2.imwrite(records[1]["sem_seg_file_name"], bad)
    with pytest.raises(ValueError, match=r"label_1\.png.*7"):
        evaluator.process([records[1]], [{"sem_seg": _random_logits(rng, 5)}])


def _distributed_worker(rank, world_size, init_file, name, records, shards, out_file):
    import torch.distributed as dist
    from detectron2.utils import comm

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        DatasetCatalog.register(name, lambda r=records: r)
        MetadataCatalog.get(name).set(stuff_classes=CLASSES, stuff_colors=COLORS, conditions=["day", "night"])
        evaluator = RGBTSemSegEvaluator(name, distributed=True)
        evaluator.reset()
        for i in shards[rank]:
            evaluator.process([records[i]], [{"sem_seg": torch.from_numpy(np.load(f"{out_file}.{i}.npy"))}])
        results = evaluator.evaluate()
        if comm.is_main_process():
            with open(out_file, "w") as f:
                json.dump(results["sem_seg"], f)
        else:
            assert results is None
        comm.synchronize()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_two_processes_equal_single_process(tmp_path):
    import torch.multiprocessing as mp

    name, records = _register(tmp_path)
    rng = np.random.default_rng(7)
    out_file = str(tmp_path / "dist.json")
    logits = [_random_logits(rng, 5) for _ in records]
    for i, lg in enumerate(logits):
        np.save(f"{out_file}.{i}.npy", lg.numpy())
    single = RGBTSemSegEvaluator(name, distributed=False)
    single.reset()
    for rec, lg in zip(records, logits):
        single.process([rec], [{"sem_seg": lg}])
    expected = single.evaluate()["sem_seg"]

    shards = [[0, 1, 3], [2, 4, 5]]  # uneven day/night split across ranks
    mp.spawn(
        _distributed_worker,
        args=(2, str(tmp_path / "init"), name, records, shards, out_file),
        nprocs=2,
        join=True,
    )
    got = json.loads(open(out_file).read())
    assert set(got) == set(expected)
    for key, value in expected.items():
        if math.isnan(value):
            assert got[key] is None or math.isnan(got[key])
        else:
            assert got[key] == pytest.approx(value, rel=1e-12)
