"""train_net.py end to end on the suite's synthetic set: train, resume exactly, eval-only, 2 CPU processes."""

import json
import os

import pytest
import torch
from conftest import SYNTHETIC_SET
from detectron2.engine import HookBase, default_argument_parser

import sartm_d2  # noqa: F401
import train_net
from sartm_d2.data.datasets import SYNTHETIC_CLASSES
from sartm_d2.engine import launch
from sartm_d2.modeling.text_teacher import MiniLMTextTeacher

# The main job's config with the tiny model (configs/quick_schedules/).
CONFIG = "configs/quick_schedules/synthetic_instant_test.yaml"


@pytest.fixture(scope="module")
def synthetic_root(synthetic, tmp_path_factory):
    emb = tmp_path_factory.mktemp("emb") / "text.pt"
    torch.save({"embeddings": torch.randn(len(SYNTHETIC_CLASSES), 16), "class_names": SYNTHETIC_CLASSES}, emb)
    return synthetic, str(emb)


def _args(out, emb, *extra, eval_only=False, resume=False, iters=6):
    argv = ["--config-file", CONFIG]
    argv += ["--eval-only"] if eval_only else []
    argv += ["--resume"] if resume else []
    opts = ["SEED", "3", "MODEL.SARTM.DISTILL.TEACHER", "file", "MODEL.SARTM.DISTILL.EMBEDDINGS_FILE", emb,
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


@pytest.mark.slow
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
    with pytest.raises(ValueError, match="DATASETS.VAL contains 'synthetic_rgbt_test', a test split"):
        train_net.setup(_args(tmp_path, emb, "DATASETS.VAL", "('synthetic_rgbt_test',)"))


@pytest.mark.slow
def test_same_seed_same_weights_whatever_the_text_cache_state(synthetic_root, tmp_path, monkeypatch):
    """The first run on a machine (empty cache, the teacher is built) and the next (cache hit)."""
    _, emb = synthetic_root
    cache = tmp_path / "cache"
    teacher = ["MODEL.SARTM.DISTILL.TEACHER", "minilm", "MODEL.SARTM.DISTILL.CACHE_DIR", str(cache)]
    train_net.main(_args(tmp_path / "first", emb, *teacher, iters=3))
    assert len(list(cache.glob("text_minilm_*.pt"))) == 1

    def no_teacher(self, prompts):
        raise AssertionError("the cache holds the embeddings: the teacher must not be built")

    monkeypatch.setattr(MiniLMTextTeacher, "encode", no_teacher)
    train_net.main(_args(tmp_path / "second", emb, *teacher, iters=3))
    a = _trainable_state(tmp_path / "first" / "model_final.pth")
    b = _trainable_state(tmp_path / "second" / "model_final.pth")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_two_cpu_processes(synthetic_root, tmp_path, monkeypatch):
    root, emb = synthetic_root
    monkeypatch.setenv("DETECTRON2_DATASETS", str(root))
    out = tmp_path / "ddp"
    # SOLVER.REFERENCE_WORLD_SIZE 1 on 2 processes: detectron2's auto_scale_workers doubles the batch
    # (2 -> 4) and halves the schedule (4 -> 2 iterations).
    args = _args(out, emb, "SOLVER.REFERENCE_WORLD_SIZE", "1", "SOLVER.IMS_PER_BATCH", "2", iters=4)
    args.num_gpus = 2
    launch(train_net.main, 2, args=(args,))
    assert (out / "model_final.pth").is_file()
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == 1
    result = json.loads((out / "inference" / "synthetic_rgbt_test" / "sem_seg_results.json").read_text())
    text = json.dumps(result)
    # Both processes' predictions were gathered: the protocol counts every test image.
    assert result["protocol"]["num_images"] == SYNTHETIC_SET["num_test"], text[:400]
