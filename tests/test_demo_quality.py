"""A shorter run of the main job (configs/synthetic.yaml) learns the synthetic set, using thermal.

The README states the full `make demo` numbers; this bounds a 300-iteration run from below (it
measured mIoU_all 51 and night IoU person 68 / car 60 on the 2-core machine, see README), and checks
that the night classes that are visible only in thermal are lost when the thermal image is blanked.
Both runs are also evaluated with one camera missing ("rgb", "thermal"), and the same schedule with
modality dropout (configs/synthetic-anymodal.yaml) must keep the cold painted classes with the RGB
camera alone at night, where the model trained without dropout loses them.
"""

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.engine import default_argument_parser

import train_net
from sartm_d2.data import RGBTDatasetMapper, register_all_rgbt
from sartm_d2.data.synthetic import generate_synthetic_rgbt

pytestmark = pytest.mark.slow  # two 300-iteration trainings


def _short_run(config, root, out):
    register_all_rgbt(str(root), only=["synthetic"])
    args = default_argument_parser().parse_args([
        "--config-file", config, "SOLVER.MAX_ITER", "300", "TEST.EVAL_PERIOD", "0", "TEST.MODALITIES",
        "('missing',)", "SOLVER.CHECKPOINT_PERIOD", "100000", "MODEL.SARTM.DISTILL.CACHE_DIR",
        str(out / "cache"), "OUTPUT_DIR", str(out),
    ])
    results = train_net.main(args)
    return args, results["synthetic_rgbt_test/rgbt"]["sem_seg"], out, results


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate_synthetic_rgbt(str(root))
    yield root
    register_all_rgbt("datasets", only=["synthetic"])


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    return _short_run("configs/synthetic.yaml", data_root, tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def trained_anymodal(data_root, tmp_path_factory):
    return _short_run("configs/synthetic-anymodal.yaml", data_root, tmp_path_factory.mktemp("run_anymodal"))


def test_short_run_reaches_the_stated_floor(trained):
    _, metrics, _, _ = trained
    assert metrics["mIoU_all"] >= 40.0
    assert metrics["night/IoU-person"] >= 45.0 and metrics["night/IoU-car"] >= 40.0


def _night_iou(model, mapper, records, cls, blank_thermal=False):
    inter = union = 0
    for rec in records:
        d = mapper(rec)
        if blank_thermal:
            d["image"][3] = d["image"][3].mean()
        with torch.no_grad():
            pred = model([d])[0]["sem_seg"].argmax(0).numpy()
        gt = d["sem_seg"].numpy()
        valid = gt != 255
        inter += np.sum((pred == cls) & (gt == cls) & valid)
        union += np.sum(((pred == cls) | (gt == cls)) & valid)
    return 100.0 * inter / union


def test_night_warm_classes_need_the_thermal_image(trained):
    args, _, out, _ = trained
    cfg = train_net.setup(args)
    model = train_net.Trainer.build_model(cfg).eval()
    train_net.RGBTCheckpointer(model).load(str(out / "model_final.pth"))
    mapper = RGBTDatasetMapper(cfg, is_train=False)
    night = [r for r in DatasetCatalog.get("synthetic_rgbt_test") if r["condition"] == "night"]
    for cls in (1, 2):  # person, car
        with_thermal = _night_iou(model, mapper, night, cls, blank_thermal=False)
        without = _night_iou(model, mapper, night, cls, blank_thermal=True)
        assert with_thermal - without >= 20.0, (cls, with_thermal, without)


def test_modality_dropout_keeps_the_cold_classes_with_the_rgb_camera_alone(trained, trained_anymodal):
    """RGB only at night, traffic sign IoU: the dropout model keeps it, the fused-only model loses it.

    Measured on the 2-core machine (2026-12-02, 300 iterations each): fused-only 45.4 fused and 11.9
    RGB only; dropout 37.0 fused and 40.4 RGB only. (Thermal only at night shows no such gap on this
    set: the fused-only model keeps person and car, 66 / 55 against the dropout model's 59 / 46.)
    """
    def iou(run, setting):
        return run[3][f"synthetic_rgbt_test/{setting}"]["sem_seg"]["night/IoU-traffic sign"]

    assert iou(trained_anymodal, "rgb") >= 30.0
    assert iou(trained_anymodal, "rgb") >= 0.9 * iou(trained_anymodal, "rgbt")
    assert iou(trained_anymodal, "rgb") - iou(trained, "rgb") >= 15.0
