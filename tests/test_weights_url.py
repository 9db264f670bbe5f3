"""Weights by URL, served by a local HTTP server: MODEL.SAM2.CHECKPOINT and MODEL.SARTM.DISTILL.CLIP_WEIGHTS
are downloaded once into Detectron2's cache (a temporary one here) and read from it afterwards, checked
against the publisher's SHA-256 (a bad file is deleted and named), and fail with one clear error without
network; local paths download nothing; MODEL.WEIGHTS URLs still load through detectron2's checkpointer."""

from __future__ import annotations

import glob
import hashlib
import http.server
import io
import logging
import os
import re
import socket
import threading
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, TINY_HIERA, tiny_cfg
from detectron2.utils.file_io import PathManager
from iopath.common.file_io import HTTPURLHandler
from torch import nn

from sartm_d2.engine import RGBTCheckpointer
from sartm_d2.file_io import OFFICIAL_SHA256, publisher_sha256, resolve_weights
from sartm_d2.modeling import load_pretrained
from sartm_d2.modeling.backbone import SAM2HieraLoRABackbone
from sartm_d2.modeling.sam2_checkpoint import read_sam2_checkpoint
from sartm_d2.modeling.text_teacher import ClipTextTeacher, cache_path, get_text_embeddings

NAMES = ["car", "person"]
TEMPLATE = "a photo of a {}."
SAM2_KEY, CLIP_KEY = "MODEL.SAM2.CHECKPOINT", "MODEL.SARTM.DISTILL.CLIP_WEIGHTS"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _http_handlers() -> list[HTTPURLHandler]:
    return [h for h in getattr(PathManager, "_path_handlers", {}).values() if type(h) is HTTPURLHandler]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Downloads go to a temporary cache ($FVCORE_CACHE), never the user's; the URL map starts empty."""
    folder = tmp_path / "iopath_cache"
    monkeypatch.setenv("FVCORE_CACHE", str(folder))
    assert _http_handlers(), "detectron2's PathManager has no HTTPURLHandler"
    for handler in _http_handlers():
        monkeypatch.setattr(handler, "cache_map", {})
    return folder


def _new_process() -> None:
    """What the next run sees: only the cache on disk (the handlers' URL -> file map is per process)."""
    for handler in _http_handlers():
        handler.cache_map.clear()


@pytest.fixture
def server():
    """An HTTP server on a free loopback port: ``files`` (URL path -> bytes) and the ``requests`` it got."""
    files: dict[str, bytes] = {}
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # keep the test output clean
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        yield SimpleNamespace(base=base, files=files, requests=requests)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Model(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = SAM2HieraLoRABackbone(size="custom", d_model=32, lora_rank=2, **TINY_HIERA)


def _tiny_sam2() -> tuple[bytes, dict]:
    """A tiny checkpoint in the official SAM2 format ({"model": state_dict}, SAM2's key names)."""
    rename = {"trunk.": "image_encoder.trunk.", "neck.": "image_encoder.neck.",
              "conv_s0.": "sam_mask_decoder.conv_s0.", "conv_s1.": "sam_mask_decoder.conv_s1."}  # fmt: skip
    sd = {}
    for key, value in _Model(seed=0).backbone.state_dict().items():
        if "lora_" not in key:
            prefix = next(p for p in rename if key.startswith(p))
            sd[rename[prefix] + key[len(prefix) :]] = torch.randn_like(value)
    buf = io.BytesIO()
    torch.save({"model": sd}, buf)
    return buf.getvalue(), sd


def _tiny_clip_bytes() -> bytes:
    import clip

    torch.manual_seed(0)
    model = clip.model.CLIP(
        embed_dim=32, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16,
        context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=1,
    )  # fmt: skip
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def test_sam2_checkpoint_url_is_downloaded_once_then_read_from_the_cache(server, cache, monkeypatch, capsys):
    body, sd = _tiny_sam2()
    path = "/segment_anything_2/092824/sam2.1_hiera_tiny.pt"
    server.files[path] = body
    url = server.base + path
    monkeypatch.setitem(OFFICIAL_SHA256, url, _sha(body))  # checked like the official files
    cfg = tiny_cfg()
    cfg.MODEL.SAM2.CHECKPOINT = url

    model = _Model(seed=1)
    report = load_pretrained(model, cfg)
    assert server.requests == [path]
    assert "sam2.1_hiera_tiny.pt" in capsys.readouterr().err  # the progress bar
    cached = cache / "segment_anything_2" / "092824" / "sam2.1_hiera_tiny.pt"
    assert cached.read_bytes() == body
    assert len(report["loaded"]) == len(sd)
    assert model.backbone.trunk.pos_embed.equal(sd["image_encoder.trunk.pos_embed"])

    _new_process()
    again = _Model(seed=2)
    load_pretrained(again, cfg)
    assert server.requests == [path]  # the second run read the cache: the server saw no second request
    assert again.backbone.trunk.pos_embed.equal(sd["image_encoder.trunk.pos_embed"])


def test_clip_url_is_checked_against_the_hash_it_names(server, cache, tmp_path):
    body = _tiny_clip_bytes()
    path = f"/clip/models/{_sha(body)}/ViT-tiny.pt"  # CLIP's URL layout: the folder is the file's SHA-256
    server.files[path] = body
    teacher = ClipTextTeacher(weights=server.base + path, model_name="tiny")
    text_cache = str(tmp_path / "text")

    cache_path(NAMES, teacher=teacher, template=TEMPLATE, cache_dir=text_cache)
    assert server.requests == []  # the text cache key needs no download
    emb = get_text_embeddings(NAMES, teacher, template=TEMPLATE, cache_dir=text_cache)
    assert server.requests == [path]
    local = tmp_path / "ViT-tiny.pt"
    local.write_bytes(body)
    expected = get_text_embeddings(NAMES, ClipTextTeacher(weights=str(local), model_name="tiny"),
                                   template=TEMPLATE, cache_dir=str(tmp_path / "text_local"))
    assert emb.shape == (2, 32)
    torch.testing.assert_close(emb, expected)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))

    _new_process()
    teacher.encode(["a photo of a car."])  # a cache miss in a new run: the weights come from the disk cache
    assert server.requests == [path]
    assert torch.equal(get_text_embeddings(NAMES, teacher, template=TEMPLATE, cache_dir=text_cache), emb)


def test_a_file_that_fails_the_check_is_deleted_and_named(server, cache, tmp_path):
    good, bad = b"published weights" * 64, b"tampered" * 64
    path = f"/clip/models/{_sha(good)}/ViT-B-32.pt"
    url = server.base + path
    server.files[path] = bad
    cached = cache / "clip" / "models" / _sha(good) / "ViT-B-32.pt"
    with pytest.raises(ValueError) as info:
        resolve_weights(url, key=CLIP_KEY)
    msg = str(info.value)
    for part in (url, CLIP_KEY, str(cached), _sha(good), _sha(bad), "deleted"):
        assert part in msg, part
    assert not cached.exists()

    server.files[path] = good  # the next run downloads it anew
    assert resolve_weights(url, key=CLIP_KEY) == str(cached)
    assert cached.read_bytes() == good and server.requests == [path, path]

    cached.write_bytes(good[:-1])  # damaged in the cache later: refused and deleted as well
    with pytest.raises(ValueError, match="deleted"):
        resolve_weights(url, key=CLIP_KEY)
    assert not cached.exists()

    # An explicit hash and cache folder (the arguments behind the defaults).
    other = tmp_path / "other_cache"
    server.files["/any/name.pt"] = good
    got = resolve_weights(server.base + "/any/name.pt", key=SAM2_KEY, cache_dir=str(other), sha256=_sha(good))
    assert got == str(other / "any" / "name.pt")
    with pytest.raises(ValueError, match=_sha(bad)):
        resolve_weights(server.base + "/any/name.pt", key=SAM2_KEY, cache_dir=str(other), sha256=_sha(bad))


def test_without_network_one_error_names_the_url_the_key_and_the_local_file(cache, caplog):
    base = f"http://127.0.0.1:{_closed_port()}"
    url = base + "/segment_anything_2/092824/sam2.1_hiera_base_plus.pt"
    cfg = tiny_cfg()
    cfg.MODEL.SAM2.CHECKPOINT = url
    with pytest.raises(OSError) as info, caplog.at_level(logging.INFO):
        load_pretrained(_Model(seed=0), cfg)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # the error alone says it
    msg = str(info.value)
    local = os.path.join("weights", "sam2", "sam2.1_hiera_base_plus.pt")
    for part in (url, SAM2_KEY, "Without network access", local):
        assert part in msg, part

    clip_url = base + "/clip/models/" + "0" * 64 + "/ViT-B-32.pt"
    with pytest.raises(OSError) as info:
        ClipTextTeacher(weights=clip_url).encode(["a car"])
    for part in (clip_url, CLIP_KEY, os.path.join("weights", "clip", "ViT-B-32.pt")):
        assert part in str(info.value), part
    assert not [f for f in glob.glob(str(cache / "**"), recursive=True) if f.endswith((".pt", ".tmp"))]


def test_local_paths_download_nothing_and_fail_as_before(tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("a local path must not reach the downloader")

    monkeypatch.setattr(PathManager, "get_local_path", no_download)
    for path in ("", "weights/sam2/sam2.1_hiera_base_plus.pt", str(tmp_path / "x.pt")):
        assert resolve_weights(path, key=SAM2_KEY) == path
    missing = str(tmp_path / "nowhere" / "sam2.1_hiera_tiny.pt")
    with pytest.raises(FileNotFoundError, match=r"nowhere.*does not exist.*facebookresearch/sam2"):
        read_sam2_checkpoint(missing)
    with pytest.raises(FileNotFoundError, match=CLIP_KEY):
        ClipTextTeacher(weights=str(tmp_path / "ViT-B-32.pt")).fingerprint()
    body, sd = _tiny_sam2()
    (tmp_path / "sam2.pt").write_bytes(body)
    assert read_sam2_checkpoint(str(tmp_path / "sam2.pt")).keys() == sd.keys()


def test_model_weights_url_still_loads_through_detectron2s_checkpointer(server):
    trained = _Model(seed=0)
    buf = io.BytesIO()
    torch.save({"model": trained.state_dict()}, buf)
    server.files["/models/model_final.pth"] = buf.getvalue()
    model = _Model(seed=3)
    RGBTCheckpointer(model).load(server.base + "/models/model_final.pth")
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in model.state_dict().items())
    assert server.requests == ["/models/model_final.pth"]


def test_published_hashes_and_documented_urls():
    from clip.clip import _MODELS

    for url in _MODELS.values():  # CLIP names each file by its hash, as clip._download checks
        assert publisher_sha256(url) == url.split("/")[-2]
    assert publisher_sha256("https://example.com/weights/model.pt") is None
    assert len(OFFICIAL_SHA256) == 8
    for url, sha in OFFICIAL_SHA256.items():
        assert re.fullmatch(r"https://dl\.fbaipublicfiles\.com/segment_anything_2/"
                            r"(072824/sam2_hiera|092824/sam2\.1_hiera)_(tiny|small|base_plus|large)\.pt", url)
        assert re.fullmatch(r"[0-9a-f]{64}", sha) and publisher_sha256(url) == sha
    assert len(set(OFFICIAL_SHA256.values())) == 8
    # Every weights URL the README and the paper configs name is one whose hash is checked.
    documented = set()
    paper_configs = [f"configs/{c}.yaml" for c in ("Base-SARTM", "mfnet-hiera-t", "mfnet-hiera-l")]
    for name in ("README.md", *paper_configs):
        with open(os.path.join(ROOT, name)) as f:
            documented |= set(re.findall(r"https://[^\s`'\")|]+\.pt\b", f.read()))
    assert _MODELS["ViT-B/32"] in documented
    assert OFFICIAL_SHA256.keys() <= documented
    assert all(publisher_sha256(url) for url in documented), documented

