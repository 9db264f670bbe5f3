"""The browser demo (demo/web.py): its work without the page, then the page itself in a real browser.

The browser tests start ``python demo/web.py`` once (module-scoped) on a free loopback port with a
tiny random model, and drive Debian's Chromium with Playwright (its Python package only; the
browser comes from ``apt-get install chromium``, never from ``playwright install``). Without
Chromium, Playwright or Gradio they skip with the reason; with ``SARTM_REQUIRE_BROWSER_TESTS=1``
(set by ``.ci/run``) they fail instead. Screenshots are kept under ``output/test_artifacts/``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_MODEL, demo_cli

import sartm_d2  # noqa: F401  (compat patches before detectron2)

# isort: split
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from sartm_d2 import get_sartm_cfg
from sartm_d2.data.degradations import setting_names
from sartm_d2.data.io import read_rgbt
from sartm_d2.data.synthetic import render_scene
from sartm_d2.engine import RGBTPredictor

DEMO_DIR = os.path.join(ROOT, "demo")
WEB = os.path.join(DEMO_DIR, "web.py")
CHROMIUM = os.environ.get("SARTM_CHROMIUM", "/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("SARTM_REQUIRE_BROWSER_TESTS") == "1"
ARTIFACTS = os.path.join(ROOT, "output", "test_artifacts")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
H, W = 128, 160
SERVER_START_S = 240  # importing torch, detectron2 and Gradio on 2 busy cores
RESULT_S = 120


def _browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not os.path.isfile(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    for module, extra in (("playwright", "pip install playwright"),
                          ("gradio", "pip install 'sartm-d2[web]'")):
        if importlib.util.find_spec(module) is None:
            return f"Python package {module} missing ({extra})"
    return None


def require_browser():
    reason = _browser_missing()
    if reason is None:
        return
    if REQUIRE_BROWSER:
        pytest.fail(f"SARTM_REQUIRE_BROWSER_TESTS=1 but the browser tests cannot run: {reason}")
    pytest.skip(f"browser tests skipped: {reason}")


# ---------------------------------------------------------------- shared files
@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """(config, weights) of a tiny random SARTM with the trust-estimating "reliability" fusion.

    Its high-resolution decoder weights are scaled up so that the random model predicts several
    classes (a plain random one predicts one class everywhere, which would make the legend trivial).
    """
    folder = tmp_path_factory.mktemp("web_model")
    config = folder / "tiny.yaml"
    config.write_text(
        f"""
_BASE_: ["{os.path.join(ROOT, 'configs', 'synthetic.yaml')}", "{TINY_MODEL}"]
MODEL:
  DEVICE: cpu
  SARTM:
    FUSION: reliability
    DISTILL: {{ENABLED: False}}
"""
    )
    torch.manual_seed(0)
    model = build_model(get_sartm_cfg(str(config)))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "sem_seg_head.decoder.conv_s" in name or "output_upscaling" in name:
                param.mul_(10.0)
    DetectionCheckpointer(model, save_dir=str(folder)).save("model_final")
    return str(config), str(folder / "model_final.pth")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Generated synthetic scenes as uploads: a day and a night RGB + thermal pair, an RGBT PNG."""
    folder = tmp_path_factory.mktemp("web_inputs")
    out = {}
    for name, day in (("day", True), ("night", False)):
        rgb, thermal, _ = render_scene(np.random.default_rng([7, day]), H, W, day)
        out[name] = (str(folder / f"{name}_rgb.png"), str(folder / f"{name}_thermal.png"))
        assert cv2.imwrite(out[name][0], rgb[:, :, ::-1]) and cv2.imwrite(out[name][1], thermal)
        out[f"{name}_rgbt"] = str(folder / f"{name}_rgbt.png")
        assert cv2.imwrite(out[f"{name}_rgbt"], np.dstack([rgb[:, :, ::-1], thermal]))
    out["text"] = str(folder / "notes.txt")
    with open(out["text"], "w") as f:
        f.write("not an image\n")
    return out


@pytest.fixture(scope="module")
def web(model_files, server_process, tmp_path_factory):
    """demo/web.py as a module (WebDemo, build_page, ...) and a WebDemo on the tiny model, in-process.

    (It asks for ``server_process`` so that the page boots on the other core meanwhile.)
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(DEMO_DIR)  # as `python demo/web.py` sees its neighbours (drawing, ...)
        spec = importlib.util.spec_from_file_location("sartm_web", WEB)
        module = importlib.util.module_from_spec(spec)
        mp.setitem(sys.modules, "sartm_web", module)  # its dataclass resolves annotations through it
        spec.loader.exec_module(module)
        config, weights = model_files
        predictor = RGBTPredictor(get_sartm_cfg(config, ["MODEL.WEIGHTS", weights]))
        workdir = str(tmp_path_factory.mktemp("web_workdir"))
        yield module, module.WebDemo(predictor, workdir, max_pixels=200_000, max_frames=5)


# ---------------------------------------------------------------- without a browser
@pytest.mark.slow
def test_help_needs_no_gradio_and_is_quiet(server_process, tmp_path):
    """``python demo/web.py --help`` works where Gradio cannot be imported, and prints nothing on stderr.

    (It asks for ``server_process`` so that the page boots on the other core meanwhile.)
    """
    (tmp_path / "gradio").mkdir()
    (tmp_path / "gradio" / "__init__.py").write_text("raise ImportError('no Gradio in this test')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, WEB, "--help"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "--onnx" in proc.stdout and "--max-pixels" in proc.stdout and "127.0.0.1" in proc.stdout


def test_sartm_d2_never_imports_gradio():
    for folder, _, files in os.walk(os.path.join(ROOT, "sartm_d2")):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as f:
                    text = f.read()
                assert "import gradio" not in text and "from gradio" not in text, name


def test_segment_files_and_settings(web, pairs):
    module, app = web
    result = app.segment_files(*pairs["day"], "rgbt")
    assert result.pred.shape == (H, W) and result.panel.dtype == np.uint8
    assert result.trust is None or result.trust.shape == (2,)
    # Downloads: class ids as a 1-channel PNG, and the colour of each class.
    labels = cv2.imread(result.files[0], cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(labels, result.pred)
    mask = cv2.imread(result.files[1], cv2.IMREAD_COLOR)[:, :, ::-1]
    np.testing.assert_array_equal(mask, np.asarray(app.colors, np.uint8)[result.pred])
    assert {name for name, _, _ in result.shares} == {app.classes[k] for k in np.unique(result.pred)}
    assert abs(sum(share for _, _, share in result.shares) - 1.0) < 1e-6
    # One RGBT PNG is the same input as its two files.
    np.testing.assert_array_equal(app.segment_files(pairs["day_rgbt"], None, "rgbt").pred, result.pred)
    # One camera: the other upload may be left out; a degraded stream changes what the model sees.
    thermal_only = app.segment_files(None, pairs["day"][1], "thermal")
    np.testing.assert_array_equal(app.segment_files(*pairs["day"], "thermal").pred, thermal_only.pred)
    assert not np.array_equal(thermal_only.pred, result.pred)
    np.testing.assert_array_equal(app.segment_files(pairs["day"][0], None, "rgb").pred,
                                  app.segment_files(*pairs["day"], "rgb").pred)
    degraded = app.segment_files(*pairs["day"], "thermal-bright-2")
    assert not np.array_equal(degraded.panel, result.panel)
    # A degraded setting is the predictor's (its test mapper degrades, seeded by the upload's name), and
    # the panel shows the thermal image the model saw.
    rgb, thermal = read_rgbt({"file_name": pairs["day"][0], "thermal_file_name": pairs["day"][1]})
    noisy = app.segment_files(*pairs["day"], "thermal-noise-3")
    want = app.predictor(rgb, thermal, "thermal-noise-3", image_id="day_rgb")["sem_seg"].argmax(0).numpy()
    np.testing.assert_array_equal(noisy.pred, want)
    seen = app.predictor.prepare(rgb, thermal, "thermal-noise-3", image_id="day_rgb")["image"][3].numpy()
    plain = module.draw_panel(rgb, thermal, noisy.pred, app.metadata, trust=noisy.trust)
    np.testing.assert_array_equal(module.draw_panel(rgb, seen, noisy.pred, app.metadata, trust=noisy.trust),
                                  noisy.panel)
    assert not np.array_equal(plain, noisy.panel)
    assert [name for _, name in module.setting_choices(app.settings)] == setting_names()


def test_bad_inputs_get_clear_errors(web, pairs, tmp_path):
    module, app = web
    InputError = module.InputError
    rgb, thermal = pairs["day"]
    with pytest.raises(InputError, match=r"Could not decode image 'notes\.txt'"):
        app.segment_files(pairs["text"], thermal)
    corrupt = str(tmp_path / "corrupt.png")
    with open(rgb, "rb") as f:
        data = f.read()
    with open(corrupt, "wb") as f:
        f.write(data[: len(data) // 3])
    with pytest.raises(InputError, match=r"'corrupt\.png'"):
        app.segment_files(corrupt, thermal)
    small = str(tmp_path / "small_thermal.png")
    cv2.imwrite(small, np.zeros((H // 2, W), np.uint8))
    with pytest.raises(InputError, match=r"sizes differ: 'day_rgb\.png' is 160x128 and 'small_thermal\.png'"):
        app.segment_files(rgb, small)
    big = str(tmp_path / "big.png")
    cv2.imwrite(big, np.zeros((480, 640, 3), np.uint8))  # 307200 pixels > max_pixels 200000
    with pytest.raises(InputError, match=r"'big\.png' is 640x480 .* over the page's limit of 200000 pixels"):
        app.segment_files(big, None, "rgb")
    with pytest.raises(InputError, match=r"'day_rgbt\.png' is a 4-channel RGBT image, which holds its own"):
        app.segment_files(pairs["day_rgbt"], thermal)
    with pytest.raises(InputError, match="not a 4-channel RGBT PNG"):
        app.segment_files(rgb, None, "rgbt")
    with pytest.raises(InputError, match="choose the input setting 'thermal only'"):
        app.segment_files(None, thermal, "rgbt")
    with pytest.raises(InputError, match="Upload an RGB image"):
        app.segment_files(None, None)
    with pytest.raises(InputError, match="Unknown input setting"):
        app.segment_files(rgb, thermal, "rgb-nonsense-9")


def _write_clip(path, frames, grey=False):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (W, H), not grey)
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (H, W) if grey else (H, W, 3), dtype=np.uint8))
    writer.release()
    return str(path)


def test_clip(web, tmp_path):
    module, app = web
    rgb, thermal = module.write_example_clip(str(tmp_path), H, W, frames=3)
    seen = []
    result = app.segment_clip(rgb, thermal, "rgbt", progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)] and len(result.frames) == 3
    with zipfile.ZipFile(result.files[0]) as zf:
        names = zf.namelist()
    assert len(names) == 6 and sum(n.endswith("_labels.png") for n in names) == 3
    InputError = module.InputError
    rgb4, th3 = _write_clip(tmp_path / "rgb4.avi", 4), _write_clip(tmp_path / "th3.avi", 3, grey=True)
    with pytest.raises(InputError, match=r"Frame counts differ: 'rgb4\.avi' has 4 frames and 'th3\.avi' has"):
        app.segment_clip(rgb4, th3)
    rgb6, th6 = _write_clip(tmp_path / "rgb6.avi", 6), _write_clip(tmp_path / "th6.avi", 6, grey=True)
    with pytest.raises(InputError, match="6 frames, over the page's limit of 5"):
        app.segment_clip(rgb6, th6)


# ---------------------------------------------------------------- in a browser
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python demo/web.py`` in a subprocess, with its own TMPDIR and working directory."""

    def __init__(self, model_files, folder):
        config, weights = model_files
        self.ready = False
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.tmp = os.path.join(folder, "tmp")
        self.cwd = os.path.join(folder, "cwd")
        os.makedirs(self.tmp)
        os.makedirs(self.cwd)
        self.log_path = os.path.join(folder, "server.log")
        self.log = open(self.log_path, "w")
        env = {**os.environ, "TMPDIR": self.tmp, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, WEB, "--config-file", config, "--port", str(self.port), "--max-pixels", "400000",
             "--opts", "MODEL.WEIGHTS", weights],
            cwd=self.cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def wait_ready(self):
        if self.ready:
            return
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"demo/web.py exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    if r.status == 200:
                        self.ready = True
                        return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"demo/web.py did not answer within {SERVER_START_S} s:\n{self.output()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server_process(model_files, tmp_path_factory, request):
    """``python demo/web.py`` started, not yet waited for (None when the browser tests cannot run, or when
    none of this module's selected tests needs the page: ``pytest -m "not slow"``)."""
    wanted = any("server" in item.fixturenames for item in request.session.items
                 if item.module is request.module)
    if _browser_missing() is not None or not wanted:
        yield None
        return
    srv = Server(model_files, str(tmp_path_factory.mktemp("web_server")))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def server(server_process):
    """The page, answering."""
    require_browser()
    server_process.wait_ready()
    return server_process


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium_profile")), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser, server):
    """A fresh page (a new Gradio session); requests off the loopback are refused and recorded."""
    page = browser.new_page()
    page.offsite = []

    def route(r):
        if r.request.url.startswith(("http://127.0.0.1", "data:", "blob:")):
            r.continue_()
        else:
            page.offsite.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(server.url)
    page.wait_for_selector("#status", timeout=RESULT_S * 1000)
    yield page
    page.close()


STATUS_JS = "(document.querySelector('#status .sartm-status') || {innerText: ''}).innerText"


def _status(page) -> str:
    """The status line alone (without Gradio's progress overlay on it)."""
    return page.evaluate(STATUS_JS)


def _upload(page, first=None, second=None):
    for elem, path in (("#first", first), ("#second", second)):
        clear = page.locator(f"{elem} button[aria-label='Clear']")
        if clear.count():
            clear.first.click()
        if path:
            page.locator(f"{elem} input[type=file]").set_input_files(path)
            page.locator(elem).get_by_text(os.path.basename(path)[:8]).first.wait_for()


def _wait_result(page, before: str, expect: str = "Done") -> str:
    """Wait for a new status (the status numbers requests) and return it; it must say ``expect``."""
    page.wait_for_function(
        f"before => {{ const s = {STATUS_JS};"
        " return s !== before && (s.includes('Done') || s.includes('Error')); }",
        arg=before, timeout=RESULT_S * 1000,
    )
    status = _status(page)
    assert expect in status, status
    return status


def _run(page, first, second, expect="Done") -> str:
    before = _status(page)
    _upload(page, first, second)
    page.locator("#run").click()
    return _wait_result(page, before, expect)


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def _png(url: str) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(_fetch(url), np.uint8), cv2.IMREAD_UNCHANGED)


def _downloads(page) -> dict[str, str]:
    hrefs = page.locator("#downloads a[href]").evaluate_all("els => els.map(e => e.href)")
    return {href.rsplit("/", 1)[-1].split("?")[0]: href for href in hrefs}


def _label(page) -> np.ndarray:
    [href] = [h for name, h in _downloads(page).items() if name.endswith("_labels.png")]
    return _png(href)


def _panel(page) -> np.ndarray:
    """The page's panel image, RGB."""
    return _png(page.locator("#panel img").first.get_attribute("src"))[:, :, ::-1]


def _legend(page) -> set[str]:
    return {t.strip() for t in page.locator("#legend .sartm-class").all_inner_texts()}


def _screenshot(page, name: str, tmp_dir) -> str:
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, name)
    page.screenshot(path=path, full_page=True)
    shutil.copy(path, os.path.join(str(tmp_dir), name))
    return path


CLASSES = ["background", "person", "car", "traffic sign", "road marking"]  # configs/synthetic.yaml


@pytest.mark.slow
def test_page_segments_an_uploaded_pair(page, pairs, tmp_path):
    status = _run(page, *pairs["day"])
    assert "day_rgb, 160x128 (WxH), input: both cameras" in status
    labels = _label(page)
    assert labels.shape == (H, W) and labels.dtype == np.uint8
    present = {CLASSES[k] for k in np.unique(labels)}
    assert len(present) >= 2  # the scaled random model predicts several classes
    assert _legend(page) == present  # the legend names exactly the classes present
    mask = _png(next(h for n, h in _downloads(page).items() if n.endswith("_mask.png")))
    assert mask.shape == (H, W, 3)
    assert page.locator("#panel img").first.is_visible()
    # The trust bar (the "reliability" fusion estimates each camera's trust), with its numbers as text.
    bar = page.locator("#sartm-trust-bar")
    assert bar.is_visible() and bar.locator(".sartm-bar").count() == 2
    text = bar.locator(".sartm-trust-text").inner_text()
    assert re.fullmatch(r"Trust per camera: RGB [01]\.\d\d, thermal [01]\.\d\d", text), text
    assert "Latency" in page.locator("#latency").inner_text()
    _screenshot(page, "web_pair_day.png", tmp_path)
    assert page.offsite == []  # the page needs nothing beyond this machine


@pytest.mark.slow
def test_examples_run_in_one_click(page, tmp_path):
    before = _status(page)
    page.locator("#examples").get_by_text("night, 640x480, one RGBT PNG", exact=True).click()
    status = _wait_result(page, before)
    assert "night_640x480_rgbt, 640x480 (WxH)" in status
    assert _label(page).shape == (480, 640)
    assert _legend(page) == {CLASSES[k] for k in np.unique(_label(page))}
    _screenshot(page, "web_example_night_640x480.png", tmp_path)


@pytest.mark.slow
def test_thermal_only_changes_the_result(page, pairs, tmp_path):
    _run(page, *pairs["day"])
    both_labels, both_panel = _label(page), _panel(page)
    before = _status(page)
    page.locator("#setting input").click()
    page.get_by_role("option", name="thermal only (RGB missing)").click()
    status = _wait_result(page, before)  # a new setting re-runs the uploaded pair
    assert "input: thermal only" in status
    thermal_labels, thermal_panel = _label(page), _panel(page)
    assert not np.array_equal(thermal_labels, both_labels)
    assert thermal_panel.shape != both_panel.shape or not np.array_equal(thermal_panel, both_panel)
    assert _legend(page) == {CLASSES[k] for k in np.unique(thermal_labels)}
    assert "RGB 0.00" in page.locator("#sartm-trust-bar .sartm-trust-text").inner_text()  # missing: no trust
    _screenshot(page, "web_thermal_only.png", tmp_path)


@pytest.mark.slow
def test_text_file_error_then_a_pair_works(page, pairs, tmp_path):
    status = _run(page, pairs["text"], pairs["day"][1], expect="Error")
    assert "Could not decode image 'notes.txt'" in status
    assert page.locator("#panel img").count() == 0  # no stale result beside the error
    _screenshot(page, "web_error.png", tmp_path)
    _run(page, *pairs["night"])


@pytest.mark.slow
def test_two_users_at_once(browser, server, pairs):
    pages = [browser.new_page() for _ in range(2)]
    try:
        for p, which in zip(pages, ("day", "night")):
            p.goto(server.url)
            p.wait_for_selector("#status")
            _upload(p, *pairs[which])
        befores = [_status(p) for p in pages]
        for p in pages:
            p.locator("#run").click()
        for p, before, which in zip(pages, befores, ("day", "night")):
            assert f"{which}_rgb" in _wait_result(p, before)
            assert _label(p).shape == (H, W)
    finally:
        for p in pages:
            p.close()


@pytest.mark.slow
def test_label_png_equals_the_command_line_demo(page, pairs, model_files, tmp_path, monkeypatch):
    """Same pair, same model: the page's label PNG and panel are demo/demo.py's."""
    cli = demo_cli(monkeypatch)
    config, weights = model_files
    _run(page, *pairs["night"])
    argv = ["--config-file", config, "--input", pairs["night"][0], "--thermal", pairs["night"][1],
            "--output", str(tmp_path), "--opts", "MODEL.WEIGHTS", weights]
    args = cli.parse_args(argv)
    cfg = cli.setup_cfg(args)
    predictor = cli.build_predictor(args, cfg)
    item = cli.find_inputs(args.input, args.thermal)[0]
    rgb, thermal = cli.load_pair(item, cli.thermal_norm(args, cfg))
    np.testing.assert_array_equal(_label(page), predictor(rgb, thermal)["sem_seg"].argmax(0).numpy())
    [written] = cli.main(argv)
    np.testing.assert_array_equal(_panel(page), cv2.imread(written, cv2.IMREAD_COLOR)[:, :, ::-1])


@pytest.mark.slow
def test_clip_example_in_the_page(page, tmp_path):
    page.get_by_role("tab", name="Clip").click()
    before = _status(page)
    page.get_by_text("night, panning", exact=True).click()
    status = _wait_result(page, before)
    assert "(8 frames)" in status
    assert "per frame" in page.locator("#latency").inner_text()
    _screenshot(page, "web_clip.png", tmp_path)
    page.wait_for_function("document.querySelectorAll('#frames img').length >= 8", timeout=30_000)


@pytest.mark.slow
def test_stopping_the_server_removes_its_files(server):
    """Last: uploads, examples and downloads lived in one temporary folder, removed on stop."""
    assert [e for e in os.listdir(server.tmp) if e.startswith("sartm_web_")]
    # One model for every request of this module's tests.
    assert server.output().count("[Checkpointer] Loading from") == 1, server.output()
    server.stop()
    assert server.proc.returncode is not None
    assert os.listdir(server.tmp) == [], os.listdir(server.tmp)
    assert os.listdir(server.cwd) == []  # nothing written beside it either
