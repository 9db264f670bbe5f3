"""Make the README's screenshot of the web page (docs/web_demo.png) from the real page.

Starts ``demo/web.py`` with the model arguments given after ``--``, opens it in Debian's Chromium
(Playwright's Python package drives it; no browser is downloaded), clicks one of the page's
generated examples, and saves the page, downscaled to a small palette PNG::

    python docs/web_screenshot.py --example "night, 160x128" -- \\
        --config-file configs/synthetic.yaml --opts MODEL.WEIGHTS output/synthetic/model_final.pth
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", default="night, 160x128", help="the example button to click")
    parser.add_argument("--setting", default=None, help="an input setting to pick after it (its menu label)")
    parser.add_argument("--output", default=os.path.join(ROOT, "docs", "web_demo.png"))
    parser.add_argument("--width", type=int, default=1000, help="width of the saved PNG in pixels")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("web_args", nargs=argparse.REMAINDER, help="-- then demo/web.py's model arguments")
    args = parser.parse_args(argv)
    web_args = args.web_args[1:] if args.web_args[:1] == ["--"] else args.web_args

    from PIL import Image
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen([sys.executable, os.path.join(ROOT, "demo", "web.py"), "--port", str(port),
                               *web_args], cwd=ROOT)
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"demo/web.py did not start (exit status {server.poll()}).")
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                time.sleep(0.5)
        with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=args.chromium, args=CHROMIUM_ARGS, headless=True,
                viewport={"width": 1400, "height": 900},
            )
            page = context.new_page()
            page.goto(url)
            status = "(document.querySelector('#status .sartm-status') || {innerText: ''}).innerText"
            done = f"b => {{ const s = {status}; return s !== b && s.includes('Done'); }}"
            before = page.evaluate(status)
            page.locator("#examples").get_by_text(args.example, exact=True).click()
            page.wait_for_function(done, arg=before, timeout=300_000)
            if args.setting:
                before = page.evaluate(status)
                page.locator("#setting input").click()
                page.get_by_role("option", name=args.setting).click()
                page.wait_for_function(done, arg=before, timeout=300_000)
            page.wait_for_timeout(500)  # images finish drawing
            raw = os.path.join(profile, "page.png")
            page.screenshot(path=raw, full_page=True)
            context.close()
            image = Image.open(raw).convert("RGB")
            image = image.resize((args.width, round(image.height * args.width / image.width)), Image.LANCZOS)
            image.quantize(256, method=Image.Quantize.MEDIANCUT).save(args.output, optimize=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return args.output


if __name__ == "__main__":
    print(main())
