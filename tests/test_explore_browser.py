"""scratchcnn explore in a real browser: headless Chromium driven by Playwright.

It loads the page, picks a misclassified image, opens pool2 and conv1, clicks one output pixel and checks
the numbers written out there against the scratch model, switches to gradients and
to the torch backend, checks the browser console stayed clean, and saves a
screenshot. Needs Debian's ``chromium`` (``apt-get install chromium``) and
Playwright for Python (the "browser" extra, which ``make test`` installs; Playwright's
own browser download is not used). It skips without them, except in CI (CI=true,
set by ``.ci/run``, which also installs chromium), where a missing one is a failure.

The README's screenshot comes from this test on a trained run::

    EXPLORE_CHECKPOINT=runs/study/checkpoint.pth EXPLORE_SCREENSHOT=docs/explore.png \\
        python -m pytest tests/test_explore_browser.py
"""
import os
import shutil
import threading

import numpy as np
import pytest

from scratchcnn.data import load_dataset, to_float
from scratchcnn.explore.analysis import Explorer
from scratchcnn.explore.http import make_server
from scratchcnn.model import CIFAR10Model

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread_per_pool")]


def _missing():
    why = []
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        why.append("Chromium (Debian: apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        why.append("Playwright for Python (pip install playwright, or pip install -e '.[browser]')")
    return why


@pytest.fixture(scope="module")
def browser():
    missing = _missing()
    if missing:
        message = "the browser test needs " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; .ci/run should have installed it")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium") or shutil.which("chromium-browser"),
                              args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A served Explorer: $EXPLORE_CHECKPOINT's run, else a seeded untrained model on synthetic data.
    Yields (url, the checkpoint's scratch model in eval mode, the browsed test split)."""
    from scratchcnn.checkpoint import load_checkpoint, save_checkpoint

    path = os.environ.get("EXPLORE_CHECKPOINT")
    if not path:
        path = str(tmp_path_factory.mktemp("run") / "checkpoint.pth")
        config = {"dataset": "synthetic", "seed": 0, "test_size": 60, "normalize_stats": None}
        save_checkpoint(path, model=CIFAR10Model(rng=5).state_dict(), optimizer={}, epoch=1,
                        metrics=[{"epoch": 1, "train_loss": 2.2, "train_acc": 0.2, "test_acc": 0.2}], config=config)
    ckpt = load_checkpoint(path)
    cfg = ckpt["config"]
    data = load_dataset(cfg.get("dataset", "synthetic"), cfg.get("data_dir", "data"), False, cfg.get("seed", 0),
                        None, cfg.get("test_size") or None)[1]
    model = CIFAR10Model(rng=0)
    model.load_state_dict(ckpt["model"])
    srv = make_server(Explorer(path, data), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/", model.eval(), data, cfg.get("normalize_stats")
    srv.shutdown()
    srv.server_close()


def _text_float(page, selector):
    return float(page.inner_text(selector))


def test_page_end_to_end(browser, site, tmp_path):
    url, model, data, normalize = site
    page = browser.new_page(viewport={"width": 1500, "height": 1250})
    page.set_default_timeout(120_000)         # a shared 2-core machine can be slow; nothing here should hang
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))

    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=120_000)

    # Pick an image: show only the misclassified ones, take the first.
    page.check("#filter-wrong")
    page.wait_for_selector("#grid[data-query*='wrong=1']")
    thumb = page.locator(".thumb").first
    index = int(thumb.get_attribute("data-image").split(":")[1])
    thumb.click()
    page.wait_for_selector(f"#image-caption:has-text('test:{index},')")   # (the page's CSP forbids eval)
    x = to_float(data.x[index:index + 1], normalize)
    acts = model.forward_intermediates(x)
    logits = acts["fc4"][0].astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    pred = int(probs.argmax())
    assert pred != data.y[index], "the misclassified filter showed a correctly classified image"
    shown = page.inner_text(f"#prob-bars .bar[data-class='{pred}'] .num")
    assert abs(float(shown.rstrip("%")) - 100 * probs[pred]) <= 0.006, shown

    # Open a layer: conv1, 32 channels.
    page.click(".layer[data-layer='pool2']")
    page.wait_for_selector("body[data-shown='scratch pool2 forward']")
    assert page.locator("#layer-maps canvas").count() == 32
    page.click(".layer[data-layer='conv1']")
    page.wait_for_selector("body[data-shown='scratch conv1 forward']")
    assert page.inner_text("#layer-title").startswith("conv1 output: shape 32×32×32")
    assert page.locator("#layer-maps canvas").count() == 32

    # Click one output pixel: channel 5 at (y=10, x=20); each map is drawn 96 px wide (3 px per pixel).
    channel, y, x_ = 5, 10, 20
    page.click(f"#layer-maps canvas[data-channel='{channel}']", position={"x": 3 * x_ + 1.5, "y": 3 * y + 1.5})
    page.wait_for_selector("#pixel-view:not([hidden]) #px-value")
    assert page.inner_text("#pixel-title") == f"conv1[channel {channel}] at (y={y}, x={x_})"
    expected = float(acts["conv1"][0, channel, y, x_])
    value, computed = _text_float(page, "#px-value"), _text_float(page, "#px-computed")
    total, bias = _text_float(page, "#px-sum"), _text_float(page, "#px-bias")
    assert abs(value - expected) <= 1e-7 * max(abs(expected), 1e-3)           # 8 significant digits shown
    assert abs(computed - expected) <= 1e-5 * max(abs(expected), 1.0)        # float64 sum vs float32 conv
    assert abs(bias - float(model.conv1.bias.data[channel])) <= 1e-7
    assert abs(total + bias - computed) <= 1e-6 * max(abs(computed), 1.0)
    assert page.locator("#pixel-blocks .block").count() == 3                  # R, G, B
    box = page.locator(f"#layer-maps canvas[data-channel='{channel}']").bounding_box()
    mark = page.locator(".marker").bounding_box()                              # the clicked pixel, outlined
    assert abs(mark["x"] - (box["x"] + x_ * box["width"] / 32)) < 1 and abs(mark["width"] - box["width"] / 32) < 1
    assert abs(mark["y"] - (box["y"] + y * box["height"] / 32)) < 1

    # Switch to the gradients of the predicted class: maps, saliency and Grad-CAM overlays.
    page.select_option("#mode", "gradient")
    page.wait_for_selector("body[data-shown='scratch conv1 gradient']")
    assert page.inner_text("#layer-title").startswith(f"ds/d(conv1 output), s = logit of '{data.classes[pred]}'")
    diff = float(page.get_attribute("#diff", "data-value"))
    assert 0 <= diff < 1e-5
    changed = page.evaluate("""() => {
        const px = (id) => document.getElementById(id).getContext('2d').getImageData(0, 0, 160, 160).data;
        const a = px('input-big'), b = px('saliency');
        let n = 0;
        for (let i = 0; i < a.length; i += 4) if (Math.abs(a[i] - b[i]) + Math.abs(a[i + 1] - b[i + 1]) > 30) n++;
        return n;
    }""")
    assert changed > 500, "the saliency overlay was not drawn over the image"

    # The torch backend shows the same gradients, and says by how much they differ.
    page.select_option("#backend", "torch")
    page.wait_for_selector("body[data-shown='torch conv1 gradient']")
    page.wait_for_selector("#grid[data-query*='backend=torch']")          # the grid shows torch's predictions
    assert "torch gets" in page.inner_text("#grid-info")
    assert page.locator(".marker").count() == 1                               # still marks the explained pixel
    assert float(page.get_attribute("#diff", "data-value")) < 1e-5

    shot = tmp_path / "explore.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 50_000
    if os.environ.get("EXPLORE_SCREENSHOT"):
        page.screenshot(path=os.environ["EXPLORE_SCREENSHOT"])

    # The other tabs: the filters (conv1's weight range as the page prints it) and the run's curves.
    page.click(".tab[data-tab='filters']")
    page.wait_for_selector("#filters-range:has-text('conv2 weights')")
    assert page.locator("#filters-conv1 canvas").count() == 32
    lo = float(page.inner_text("#filters-range").split("conv1 weights ")[1].split(" ..")[0])
    assert abs(lo - float(model.conv1.weight.data.min())) <= 1e-4 * max(1.0, abs(lo))
    page.click(".tab[data-tab='run']")
    page.wait_for_selector("#run-source:has-text('epochs')")

    # Your own picture: a PNG of test image `index` analyses to the same prediction.
    from PIL import Image
    png = tmp_path / "mine.png"
    Image.fromarray(data.x[index].transpose(1, 2, 0)).save(png)
    page.click(".tab[data-tab='explore']")
    page.set_input_files("#upload", str(png))
    page.wait_for_selector("#image-caption:has-text('your picture')")
    assert page.inner_text("#image-caption").endswith(f"predicted: {data.classes[pred]}")
    page.close()
    assert not problems, problems
