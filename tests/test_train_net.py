"""train_net.py end to end on a generated synthetic set: train, resume exactly, eval-only, 2 CPU processes."""

import json
import os

import pytest
import torch
from detectron2.engine import HookBase, default_argument_parser

import sartm_d2  # noqa: F401
import train_net
from sartm_d2.data import register_all_rgbt
from sartm_d2.data.datasets import SYNTHETIC_CLASSES
from sartm_d2.data.synthetic import generate_synthetic_rgbt
from sartm_d2.engine import launch

TINY = [
    "MODEL.SAM2.SIZE", "custom", "MODEL.SAM2.D_MODEL", "32", "MODEL.SAM2.CUSTOM.EMBED_DIM", "8",
    "MODEL.SAM2.CUSTOM.STAGES", "[1, 2, 1, 1]", "MODEL.SAM2.CUSTOM.GLOBAL_ATT_BLOCKS", "[2]",
    "MODEL.SARTM.LORA.RANK", "4", "MODEL.SARTM.CMX_NUM_HEADS", "2", "MODEL.SARTM.AUX_HEAD.CONVS_DIM", "16",
    "SOLVER.IMS_PER_BATCH", "4", "SOLVER.WARMUP_ITERS", "2", "SOLVER.BASE_LR", "0.001",
    "DATALOADER.NUM_WORKERS", "0", "SEED", "3",
]


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("d2data")
    generate_synthetic_rgbt(str(root), seed=1, num_train=12, num_val=4, num_test=6, height=64, width=96)
    register_all_rgbt(str(root), only=["synthetic"])
    emb = tmp_path_factory.mktemp("emb") / "text.pt"
    torch.save({"embeddings": torch.randn(len(SYNTHETIC_CLASSES), 16), "class_names": SYNTHETIC_CLASSES}, emb)
    return root, str(emb)


def _args(out, emb, *extra, eval_only=False, resume=False, iters=6):
    argv = ["--config-file", "configs/synthetic.yaml"]
    argv += ["--eval-only"] if eval_only else []
    argv += ["--resume"] if resume else []
    opts = TINY + ["MODEL.SARTM.DISTILL.TEACHER", "file", "MODEL.SARTM.DISTILL.EMBEDDINGS_FILE", emb,
                   "SOLVER.MAX_ITER", str(iters), "SOLVER.CHECKPOINT_PERIOD", "3", "TEST.EVAL_PERIOD", "0",
                   "OUTPUT_DIR", str(out), *extra]
    return default_argument_parser().parse_args(argv + opts)


def _trainable_state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


class _Interrupt(Exception):
    pass


class _StopAfter(HookBase):
    def __init__(self, iteration):
        self.iteration = iteration

    def after_step(self):
        if self.trainer.iter == self.iteration:
            raise _Interrupt


def test_train_resume_and_eval_only(synthetic_root, tmp_path, monkeypatch):
    _, emb = synthetic_root
    full = tmp_path / "full"
    results = train_net.main(_args(full, emb))
    metrics = results["sem_seg"]
    assert {"mIoU", "mIoU_all", "fwIoU", "mACC", "pACC", "night/mIoU", "day/mIoU"} <= set(metrics)
    assert all(0 <= metrics[k] <= 100 for k in ("mIoU_all", "pACC"))
    assert (full / "model_final.pth").is_file() and (full / "model_0000002.pth").is_file()
    assert not [p for p in os.listdir(full) if ".tmp" in p]
    events = [json.loads(line) for line in (full / "metrics.json").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(e["total_loss"])) for e in events if "total_loss" in e)

    # Interrupted after iteration 3 (checkpoint of iteration 2 on disk), then --resume.
    part = tmp_path / "part"
    original_hooks = train_net.Trainer.build_hooks
    monkeypatch.setattr(train_net.Trainer, "build_hooks", lambda self: original_hooks(self) + [_StopAfter(3)])
    with pytest.raises(_Interrupt):
        train_net.main(_args(part, emb))
    monkeypatch.undo()
    assert (part / "last_checkpoint").read_text() == "model_0000002.pth"
    assert not (part / "model_final.pth").exists()
    resumed = train_net.main(_args(part, emb, resume=True))

    a, b = _trainable_state(full / "model_final.pth"), _trainable_state(part / "model_final.pth")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["sem_seg"] == pytest.approx(metrics, nan_ok=True)

    # --eval-only with the final weights (prepared for inference: LoRA merged) reproduces the
    # training run's final test metrics.
    again = train_net.main(_args(tmp_path / "eval", emb, "MODEL.WEIGHTS", str(full / "model_final.pth"),
                                 eval_only=True))
    assert again["sem_seg"] == pytest.approx(metrics, nan_ok=True)


def test_validation_on_a_test_split_is_refused(synthetic_root, tmp_path):
    _, emb = synthetic_root
    with pytest.raises(ValueError, match="DATASETS.VAL.*synthetic_rgbt_test.*must not use a test split"):
        train_net.setup(_args(tmp_path, emb, "DATASETS.VAL", "('synthetic_rgbt_test',)"))


def test_two_cpu_processes(synthetic_root, tmp_path, monkeypatch):
    root, emb = synthetic_root
    monkeypatch.setenv("DETECTRON2_DATASETS", str(root))
    out = tmp_path / "ddp"
    args = _args(out, emb, iters=2)
    args.num_gpus = 2
    launch(train_net.main, 2, args=(args,))
    assert (out / "model_final.pth").is_file()
    result = json.loads((out / "inference" / "synthetic_rgbt_test" / "sem_seg_results.json").read_text())
    text = json.dumps(result)
    # Both processes' predictions were gathered: the protocol counts all 6 test images.
    assert result["protocol"]["num_images"] == 6, text[:400]
