"""Official SAM2 checkpoint -> SARTM: round trip with sam2's own model, error messages, converter tool."""

import logging
import os
import re
import runpy
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import TINY_HIERA, tiny_cfg
from torch import nn

from sartm_d2.modeling.backbone import SAM2HieraLoRABackbone
from sartm_d2.modeling.sam2_checkpoint import convert_sam2_state_dict, load_sam2_checkpoint

TOOL = Path(__file__).resolve().parents[1] / "tools" / "convert_sam2_checkpoint.py"
K = 5  # classes: the decoder has K + 1 mask tokens, SAM2 has 4 -> re-initialised, never loaded
TINY = TINY_HIERA
BACKBONE_PREFIXES = ("backbone.trunk.", "backbone.neck.", "backbone.conv_s0.", "backbone.conv_s1.")
HEAD_PREFIXES = (
    "sem_seg_head.decoder.transformer.",
    "sem_seg_head.decoder.output_upscaling.",
    "sem_seg_head.pe_layer.",
    "sem_seg_head.no_mask_embed.",
)


class _Head(nn.Module):
    """Stand-in with the attributes of SARTM's SAM2MaskDecoderHead, built from sam2's classes."""

    def __init__(self, dim=256):
        super().__init__()
        from sam2.modeling.position_encoding import PositionEmbeddingRandom
        from sam2.modeling.sam.mask_decoder import MaskDecoder
        from sam2.modeling.sam.transformer import TwoWayTransformer

        self.decoder = MaskDecoder(
            transformer_dim=dim,
            transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=2048, num_heads=8),
            num_multimask_outputs=K,
            use_high_res_features=True,
            pred_obj_scores=False,
        )
        del self.decoder.conv_s0, self.decoder.conv_s1  # the backbone owns them
        self.pe_layer = PositionEmbeddingRandom(dim // 2)
        self.no_mask_embed = nn.Embedding(1, dim)


def _registered_head(backbone):
    from detectron2.modeling import SEM_SEG_HEADS_REGISTRY, build_sem_seg_head

    if "SAM2MaskDecoderHead" not in SEM_SEG_HEADS_REGISTRY:
        pytest.skip("SAM2MaskDecoderHead is not registered")
    cfg = tiny_cfg()
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = K
    return build_sem_seg_head(cfg, backbone.output_shape())


class _Model(nn.Module):
    def __init__(self, backbone, head=None):
        super().__init__()
        self.backbone = backbone
        if head is not None:
            self.sem_seg_head = head


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """sam2's own SAM2.1-t model, every float tensor randomised, saved as {"model": state_dict}."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    sam = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=None, device="cpu").eval()
    with torch.no_grad():
        for t in sam.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn_like(t) * 0.05)
    sd = {k: v.clone() for k, v in sam.state_dict().items()}
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": sd}, path)
    return sam, sd, str(path)


@pytest.mark.parametrize("head_kind", ["sam2_classes", "registered"])
def test_round_trip_every_tensor(official, head_kind):
    sam, sd, path = official
    torch.manual_seed(1)
    backbone = SAM2HieraLoRABackbone(size="t", d_model=256, lora_rank=4)
    head = _Head() if head_kind == "sam2_classes" else _registered_head(backbone)
    model = _Model(backbone, head)
    report = load_sam2_checkpoint(model, path)

    state = model.state_dict()
    expected = convert_sam2_state_dict(sd)
    assert set(report["loaded"]) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
    # Everything SARTM takes from SAM2 was loaded; only LoRA and class-count-dependent parts were not.
    for key in state:
        if key.startswith(BACKBONE_PREFIXES + HEAD_PREFIXES) and "lora_" not in key:
            assert key in expected, key
    assert len([k for k in report["loaded"] if k.startswith("sem_seg_head.")]) > 0
    assert "sam_mask_decoder.mask_tokens.weight" in report["reinitialised"]
    assert any(k.startswith("sam_mask_decoder.output_hypernetworks_mlps.") for k in report["reinitialised"])
    assert "sam_mask_decoder.obj_score_token.weight" in report["ignored"]
    assert any(k.startswith("memory_attention.") for k in report["ignored"])
    iou_token = state["sem_seg_head.decoder.iou_token.weight"]
    assert not torch.equal(iou_token, sd["sam_mask_decoder.iou_token.weight"])  # re-initialised

    # The loaded backbone reproduces sam2's own forward_image (incl. conv_s0/conv_s1) per modality.
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours = backbone(torch.cat([x, x.flip(-1)]))
        fpn = sam.forward_image(x)["backbone_fpn"]
    torch.testing.assert_close(ours["sfm"][:1], fpn[2], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours["ifp"][:1], fpn[1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours["ffp"][:1], fpn[0], atol=1e-4, rtol=1e-4)


def test_the_log_summarises_ignored_keys_by_module_and_lists_them_at_debug(official, caplog):
    _, sd, path = official
    model = _Model(SAM2HieraLoRABackbone(size="t", d_model=256, lora_rank=4))  # no head: a second reason
    name = "sartm_d2.modeling.sam2_checkpoint"
    with caplog.at_level(logging.DEBUG, logger=name):
        report = load_sam2_checkpoint(model, path)
    records = [r for r in caplog.records if r.name == name]
    (info,) = [r.getMessage() for r in records if r.levelno == logging.INFO]
    debug = "\n".join(r.getMessage() for r in records if r.levelno == logging.DEBUG)

    ignored = report["ignored"]
    assert len(ignored) == len(sd) - len(report["loaded"]) - len(report["reinitialised"])
    # One entry per top-level module of the checkpoint ("memory_attention (N)"), and per reason when
    # it is not the default one; the counts add up to every ignored key.
    assert f"ignored {len(ignored)} keys: " in info, info
    head, summary = info.split(f"ignored {len(ignored)} keys: ")
    assert head.startswith(f"Loaded SAM2 checkpoint {path}: ")
    entries = re.findall(r"(\w+) \((\d+)(?:, ([^)]+))?\)(?:, |$)", summary)
    assert ", ".join(f"{m} ({n}{', ' + r if r else ''})" for m, n, r in entries) == summary
    found = Counter({(m, r or "not used by SARTM"): int(n) for m, n, r in entries})
    assert len(found) == len(entries)
    assert found == Counter((k.split(".")[0], report["ignored_reasons"][k]) for k in ignored)
    assert found[("memory_attention", "not used by SARTM")] > 50
    assert found[("memory_encoder", "not used by SARTM")] > 0
    assert found[("sam_mask_decoder", "the model has no 'sem_seg_head.decoder.transformer'")]
    # Short: module names, no key names; every key is in the DEBUG lines.
    assert len(info) < 800 + len(path) and not [k for k in ignored if "." in k and k in info]
    assert all(repr(k) in debug for k in ignored)


def _tiny_official(tmp_path, edit=None, name="ckpt.pt"):
    """A tiny backbone and an official-format checkpoint of the same architecture (fast error tests)."""
    torch.manual_seed(2)
    backbone = SAM2HieraLoRABackbone(size="custom", d_model=32, lora_rank=2, **TINY)
    rename = {"trunk.": "image_encoder.trunk.", "neck.": "image_encoder.neck."}
    rename |= {"conv_s0.": "sam_mask_decoder.conv_s0.", "conv_s1.": "sam_mask_decoder.conv_s1."}
    sd = {}
    for key, value in backbone.state_dict().items():
        if "lora_" not in key:
            prefix = next(p for p in rename if key.startswith(p))
            sd[rename[prefix] + key[len(prefix) :]] = torch.randn_like(value)
    sd["sam_mask_decoder.transformer.layers.0.norm1.weight"] = torch.ones(32)
    sd["sam_mask_decoder.mask_tokens.weight"] = torch.zeros(4, 32)
    sd["maskmem_tpos_enc"] = torch.zeros(7, 1, 1, 64)
    if edit is not None:
        edit(sd)
    path = tmp_path / name
    torch.save({"model": sd}, path)
    return _Model(backbone), sd, str(path)


def test_backbone_only_model_reports_head_keys_as_ignored(tmp_path):
    model, sd, path = _tiny_official(tmp_path)
    report = load_sam2_checkpoint(model, path)
    assert len(report["loaded"]) == len([k for k in model.state_dict() if "lora_" not in k])
    assert model.backbone.trunk.pos_embed.equal(sd["image_encoder.trunk.pos_embed"])
    key = "sam_mask_decoder.transformer.layers.0.norm1.weight"
    assert key in report["ignored"]
    assert "no 'sem_seg_head.decoder.transformer'" in report["ignored_reasons"][key]
    assert report["reinitialised"] == ["sam_mask_decoder.mask_tokens.weight"]
    assert report["ignored_reasons"]["maskmem_tpos_enc"] == "not used by SARTM"


@pytest.fixture
def remove_new_log_handlers():
    """Remove the handlers that a test's setup() attached (to its captured stdout and log.txt)."""
    names = ("sartm_d2", "detectron2", "fvcore")
    before = {n: list(logging.getLogger(n).handlers) for n in names}
    yield
    for n in names:
        logger = logging.getLogger(n)
        for handler in [h for h in logger.handlers if h not in before[n]]:
            logger.removeHandler(handler)


def test_after_train_nets_setup_the_console_has_the_summary_and_log_txt_every_key(
    tmp_path, capsys, remove_new_log_handlers
):
    from detectron2.engine import default_argument_parser

    from sartm_d2.engine import setup

    model, _, path = _tiny_official(tmp_path)
    setup(default_argument_parser().parse_args(["OUTPUT_DIR", str(tmp_path / "out")]))
    report = load_sam2_checkpoint(model, path)
    for handler in logging.getLogger("sartm_d2").handlers:
        handler.flush()
    shown, log_txt = capsys.readouterr().out, (tmp_path / "out" / "log.txt").read_text()
    summary = "ignored 2 keys: maskmem_tpos_enc (1), sam_mask_decoder (1, the model has no"
    assert summary in shown and summary in log_txt
    keys = [repr(k) for k in report["loaded"] + report["ignored"]]
    assert not [k for k in keys if k in shown]  # the DEBUG lists: in log.txt only
    assert all(k in log_txt for k in keys)


def test_wrong_shape_names_key_and_shapes(tmp_path):
    def bigger(sd):  # what a larger SAM2 size (e.g. b+ into t) looks like
        sd["image_encoder.trunk.pos_embed"] = torch.zeros(1, 112, 7, 7)

    model, _, path = _tiny_official(tmp_path, bigger)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as err:
        load_sam2_checkpoint(model, path)
    msg = str(err.value)
    assert "image_encoder.trunk.pos_embed" in msg and "(1, 112, 7, 7)" in msg and "(1, 8, 7, 7)" in msg
    assert path in msg
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing half-loaded


def test_architecture_mismatch_is_an_error(tmp_path):
    def extra_block(sd):
        sd["image_encoder.trunk.blocks.9.attn.qkv.weight"] = torch.zeros(48, 16)

    model, _, path = _tiny_official(tmp_path, extra_block, "extra.pt")
    with pytest.raises(ValueError, match=r"no place for.*blocks\.9\.attn\.qkv\.weight"):
        load_sam2_checkpoint(model, path)

    def drop(sd):
        sd.pop("image_encoder.neck.convs.0.conv.bias")

    model, _, path = _tiny_official(tmp_path, drop, "miss.pt")
    with pytest.raises(ValueError, match=r"lacks 1 tensors.*backbone\.neck\.convs\.0\.conv\.bias"):
        load_sam2_checkpoint(model, path)


def test_bad_files(tmp_path):
    model, sd, _ = _tiny_official(tmp_path)
    missing = str(tmp_path / "nowhere" / "sam2.1_hiera_tiny.pt")
    with pytest.raises(FileNotFoundError, match=r"nowhere.*facebookresearch/sam2"):
        load_sam2_checkpoint(model, missing)
    torch.save({"state_dict": sd}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt.*\{'model': state_dict\}"):
        load_sam2_checkpoint(model, str(tmp_path / "other.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pt"):
        load_sam2_checkpoint(model, str(tmp_path / "junk.pt"))
    torch.save({"model": convert_sam2_state_dict(sd)}, tmp_path / "converted.pth")
    with pytest.raises(ValueError, match="MODEL.WEIGHTS"):
        load_sam2_checkpoint(model, str(tmp_path / "converted.pth"))


def test_converter_tool_writes_detectron2_loadable_file(tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    model, sd, path = _tiny_official(tmp_path)
    out = tmp_path / "out" / "sam2_sartm.pth"
    assert runpy.run_path(str(TOOL))["main"]([path, str(out)]) == 0
    assert os.listdir(out.parent) == ["sam2_sartm.pth"]  # no temporary file left behind
    written = torch.load(out, map_location="cpu", weights_only=True)
    assert written["__author__"] == "sam2" and written["matching_heuristics"] is False
    assert written["model"].keys() == convert_sam2_state_dict(sd).keys()
    assert "sem_seg_head.decoder.transformer.layers.0.norm1.weight" in written["model"]
    assert not any(k.startswith(("sam_mask_decoder.", "maskmem")) for k in written["model"])

    DetectionCheckpointer(model).load(str(out))
    state = model.state_dict()
    for key, value in convert_sam2_state_dict(sd).items():
        if key.startswith("backbone."):
            assert torch.equal(state[key], value), key


def test_a_converted_sam2_file_starts_training_but_is_refused_for_inference(tmp_path):
    from sartm_d2.engine import RGBTCheckpointer

    model, sd, _ = _tiny_official(tmp_path)
    # What tools/convert_sam2_checkpoint.py writes, for this backbone-only model's part of SAM2.
    converted = {k: v for k, v in convert_sam2_state_dict(sd).items() if k.startswith("backbone.")}
    out = tmp_path / "sam2_sartm.pth"
    torch.save({"model": converted, "__author__": "sam2", "matching_heuristics": False}, out)
    # Training from MODEL.WEIGHTS: the SAM2 tensors load; LoRA keeps its init.
    lora_before = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}
    RGBTCheckpointer(model).load(str(out), checkpointables=[], fresh=())
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in converted.items())
    assert lora_before and all(torch.equal(state[k], v) for k, v in lora_before.items())
    # Inference needs a trained checkpoint: the missing parts are named.
    with pytest.raises(ValueError, match="missing from the checkpoint"):
        RGBTCheckpointer(model).load(str(out))
