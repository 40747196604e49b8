"""scratchcnn explore in a real browser: headless Chromium driven by Playwright.

The page is driven the way a learner drives it, with the mouse and the keyboard, and every
number it shows is checked against the scratch model: the probabilities, a hovered value,
a convolution written out, a gradient written out beside torch and a finite difference,
a weight gradient. The formula panel must always belong to what is on screen (another
image, backend, mode or class updates it; another layer closes it). The other tabs
(filters, the run's curves, the confusion matrix whose cells open their images), an upload
(a good one and a broken one), a network of every kind, and a clean console are checked
too. Needs Debian's ``chromium`` (``apt-get install chromium``) and Playwright for Python
(the "browser" extra, which ``make test`` installs; Playwright's own browser download is
not used). It skips without them, except in CI (CI=true, set by ``.ci/run``, which also
installs chromium), where a missing one is a failure.

The README's screenshots come from this test on a trained run::

    EXPLORE_CHECKPOINT=runs/study/checkpoint.pth EXPLORE_SCREENSHOTS=docs \\
        python -m pytest tests/test_explore_browser.py
"""
import json
import os
import shutil
import threading

import numpy as np
import pytest

from scratchcnn.data import load_dataset, to_float
from scratchcnn.explore.analysis import Explorer
from scratchcnn.explore.http import make_server
from scratchcnn.model import CIFAR10Model, Network
from scratchcnn.study.saliency import scratch_class_gradients

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


def serve(explorer):
    srv = make_server(explorer, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A served Explorer: $EXPLORE_CHECKPOINT's run, else a seeded untrained model on synthetic data.
    Yields (url, the checkpoint's scratch model in eval mode, the browsed test split, normalize stats)."""
    from scratchcnn.checkpoint import load_checkpoint, save_checkpoint

    path = os.environ.get("EXPLORE_CHECKPOINT")
    if not path:
        path = str(tmp_path_factory.mktemp("run") / "checkpoint.pth")
        config = {"dataset": "synthetic", "seed": 0, "test_size": 60, "normalize_stats": None}
        save_checkpoint(path, model=CIFAR10Model(rng=5).state_dict(), optimizer={}, epoch=2,
                        metrics=[{"epoch": 1, "train_loss": 2.2, "train_acc": 0.2, "test_loss": 2.1, "test_acc": 0.2},
                                 {"epoch": 2, "train_loss": 1.7, "train_acc": 0.4, "test_loss": 1.9, "test_acc": 0.3}],
                        config=config)
    ckpt = load_checkpoint(path)
    cfg = ckpt["config"]
    data = load_dataset(cfg.get("dataset", "synthetic"), cfg.get("data_dir", "data"), False, cfg.get("seed", 0),
                        None, cfg.get("test_size") or None)[1]
    model = Network(ckpt["arch"])
    model.load_state_dict(ckpt["model"])
    srv, url = serve(Explorer(path, data))
    yield url, model.eval(), data, cfg.get("normalize_stats")
    srv.shutdown()
    srv.server_close()


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.set_default_timeout(120_000)         # a shared 2-core machine can be slow; nothing here should hang
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text} ({m.location.get('url')})")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=120_000)
    return page, problems


def _float(page, selector):
    return float(page.inner_text(selector))


def _shots(page, name, top=False):
    """Save a README screenshot when EXPLORE_SCREENSHOTS names a folder (top: of the page's top)."""
    folder = os.environ.get("EXPLORE_SCREENSHOTS")
    if folder:
        if top:
            page.evaluate("() => window.scrollTo(0, 0)")
        page.screenshot(path=os.path.join(folder, name))


def formula_for(page, backend, layer, mode, index, image, target):
    key = f"{backend} {layer} {mode} {','.join(map(str, index))} {image} {target}"
    page.wait_for_selector(f"#formula[data-for='{key}']")


def test_page_end_to_end(browser, site, tmp_path):
    url, model, data, normalize = site
    page, problems = open_page(browser, url)

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
    # In forward mode too the saliency overlay shows the explanation, not the bare photo.
    changed = page.evaluate("""() => {
        const px = (id) => document.getElementById(id).getContext('2d').getImageData(0, 0, 160, 160).data;
        const a = px('input-big'), b = px('saliency');
        let n = 0;
        for (let i = 0; i < a.length; i += 4) if (Math.abs(a[i] - b[i]) + Math.abs(a[i + 1] - b[i + 1]) > 30) n++;
        return n;
    }""")
    assert changed > 500, "the saliency overlay was not drawn over the image"

    # Open layers by kind: a max-pool's 32 maps, then conv1.
    page.click(".layer[data-layer='pool2']")
    page.wait_for_selector("body[data-shown='scratch pool2 forward']")
    assert page.locator("#layer-maps canvas").count() == 32
    page.click(".layer[data-layer='conv1']")
    page.wait_for_selector("body[data-shown='scratch conv1 forward']")
    assert page.inner_text("#layer-title").startswith("conv1 output: shape 32×32×32")
    assert page.locator("#layer-maps canvas").count() == 32
    assert page.locator("#legends .legend").count() == 1 and "0 = white" in page.inner_text("#legends")   # signed: diverging

    # Hover one pixel: channel 5 at (y=10, x=20); each map is drawn 96 px wide (3 px per pixel).
    channel, y, x_ = 5, 10, 20
    canvas = f"#layer-maps canvas[data-channel='{channel}']"
    expected = float(acts["conv1"][0, channel, y, x_])
    page.hover(canvas, position={"x": 3 * x_ + 1.5, "y": 3 * y + 1.5})
    readout = page.inner_text("#readout")
    assert readout.startswith(f"conv1 ch {channel} (y {y}, x {x_}) = ")
    assert abs(float(readout.split("= ")[1]) - expected) <= 1e-3 * abs(expected)

    # Click it: the sum written out, the clicked pixel outlined, its receptive field on the image.
    page.click(canvas, position={"x": 3 * x_ + 1.5, "y": 3 * y + 1.5})
    image = f"test:{index}"
    formula_for(page, "scratch", "conv1", "forward", [channel, y, x_], image, pred)
    assert page.inner_text("#formula-title") == f"conv1[channel {channel}] at (y={y}, x={x_})"
    value, computed = _float(page, "#fx-value"), _float(page, "#fx-computed")
    total, bias = _float(page, "#px-sum"), _float(page, "#px-bias")
    assert abs(value - expected) <= 1e-7 * max(abs(expected), 1e-3)           # 8 significant digits shown
    assert abs(computed - expected) <= 1e-5 * max(abs(expected), 1.0)        # float64 sum vs float32 conv
    assert abs(bias - float(model.conv1.bias.data[channel])) <= 1e-7
    assert abs(total + bias - computed) <= 1e-6 * max(abs(computed), 1.0)
    assert page.locator("#pixel-blocks .block").count() == 3                  # R, G, B
    widths = page.evaluate("""() => [...document.querySelectorAll('#pixel-blocks table')].map(
        (t) => new Set([...t.querySelectorAll('td')].map((td) => Math.round(td.getBoundingClientRect().width))).size)""")
    assert widths and set(widths) == {1}, widths                              # every cell of a table alike
    # The same on numbers of different lengths, as a trained checkpoint's are (the seeded untrained
    # model's all print alike, so the check above passes on it either way; the browser widened the
    # columns holding longer numbers until the tables were laid out fixed).
    mixed = page.evaluate("""async () => {
        const {matrix} = await import('/static/js/formula.js');
        const m = matrix([[-0.0412, 0.001, 0.002], [0.003, -0.0305, 0.004], [0.001, 0.002, 0.003]], () => "", "mixed");
        document.querySelector('#pixel-blocks .block').append(m);
        const cells = [...m.querySelectorAll('td')];
        const out = {texts: cells.map((td) => td.textContent),
                     widths: cells.map((td) => Math.round(td.getBoundingClientRect().width))};
        m.remove();
        return out;
    }""")
    assert mixed["texts"][:3] == ["-0.0412", "0.0010", "0.0020"], mixed              # 7 and 6 characters
    assert len(set(mixed["widths"])) == 1, mixed
    assert page.inner_text("#pixel-blocks .block >> nth=0").split(":")[0] in ("R", "G", "B")
    box = page.locator(canvas).bounding_box()
    mark = page.locator("#layer-maps .marker").bounding_box()                  # the clicked pixel, outlined
    assert abs(mark["x"] - (box["x"] + x_ * box["width"] / 32)) < 1.5 and abs(mark["width"] - box["width"] / 32) < 1
    assert abs(mark["y"] - (box["y"] + y * box["height"] / 32)) < 1.5
    assert page.get_attribute("#rf", "data-region") == f"{y - 1},{y + 1},{x_ - 1},{x_ + 1}"
    panel = page.locator("#formula").bounding_box()
    assert panel["y"] < 1100 and panel["y"] + 40 > 0, "the formula panel is not on screen"
    _shots(page, "explore.png", top=True)

    # The panel follows the screen. Another image: the same pixel, of that image.
    other = page.locator(".thumb").nth(1)
    index2 = int(other.get_attribute("data-image").split(":")[1])
    other.click()
    x2 = to_float(data.x[index2:index2 + 1], normalize)
    acts2 = model.forward_intermediates(x2)
    pred2 = int(acts2["fc4"][0].argmax())
    formula_for(page, "scratch", "conv1", "forward", [channel, y, x_], f"test:{index2}", pred2)
    assert abs(_float(page, "#fx-value") - float(acts2["conv1"][0, channel, y, x_])) <= 1e-6
    # Gradient mode: the same pixel's gradient, written out backward, beside torch and a finite difference.
    page.select_option("#mode", "gradient")
    formula_for(page, "scratch", "conv1", "gradient", [channel, y, x_], f"test:{index2}", pred2)
    ref = scratch_class_gradients(model, x2, pred2)
    g = float(ref["grads"]["conv1"][0, channel, y, x_])
    assert abs(_float(page, "#fx-value") - g) <= 1e-6 * max(abs(g), 1e-6)
    assert page.inner_text("#formula-context").startswith("backward")
    assert "act1" in page.inner_text("#formula-context")                     # sent back through the ReLU
    s, t, fd = _float(page, "#fx-scratch"), _float(page, "#fx-torch"), _float(page, "#fx-fd")
    assert s == pytest.approx(g, rel=1e-6, abs=1e-12) and abs(t - s) <= 1e-5 * max(abs(s), 1e-3)
    assert abs(fd - s) <= 1e-4 * max(abs(s), 1e-3)
    # Another class: the gradient of that class's logit.
    target = (pred2 + 1) % len(data.classes)
    page.select_option("#target", str(target))
    formula_for(page, "scratch", "conv1", "gradient", [channel, y, x_], f"test:{index2}", target)
    ref = scratch_class_gradients(model, x2, target)
    assert abs(_float(page, "#fx-value") - float(ref["grads"]["conv1"][0, channel, y, x_])) <= 1e-6
    # The torch backend: its value, and the header says by how much it differs from scratch.
    page.select_option("#backend", "torch")
    formula_for(page, "torch", "conv1", "gradient", [channel, y, x_], f"test:{index2}", target)
    page.wait_for_selector("#grid[data-query*='backend=torch']")          # the grid shows torch's predictions
    assert "torch gets" in page.inner_text("#grid-info")
    assert float(page.get_attribute("#diff", "data-value")) < 1e-5
    assert page.get_attribute("#diff", "data-what").startswith("ds/dconv1[channel 5]")

    # Click a gradient map: the BACKWARD formula of that number (conv2's input: conv2 sent it back).
    page.click(".layer[data-layer='drop1']")
    page.wait_for_selector("body[data-shown='torch drop1 gradient']")
    assert page.is_visible("#formula-empty") and page.get_attribute("#formula", "data-for") == ""   # closed
    page.click("#layer-maps canvas[data-channel='2']", position={"x": 3 * 7 + 1.5, "y": 3 * 30 + 1.5})
    formula_for(page, "torch", "drop1", "gradient", [2, 30, 7], f"test:{index2}", target)
    assert "conv2 (Conv2d)" in page.inner_text("#formula-context")
    assert page.locator("#pixel-blocks .block").count() == 6 and page.locator("#fx-fd").count() == 1
    page.click("#pixel-blocks >> xpath=preceding-sibling::button[1]")        # show all 32 output channels
    assert page.locator("#pixel-blocks .block").count() == 32
    _shots(page, "explore-backward.png")

    # A weight gradient: conv2's ds/dW, one tap, its sum over positions.
    page.click(".layer[data-layer='conv2']")
    page.wait_for_selector("body[data-shown='torch conv2 gradient']")
    wbox = page.locator("#weight-canvas").bounding_box()
    px = wbox["width"] / (32 * 4 - 1)
    page.click("#weight-canvas", position={"x": (3 * 4 + 1) * px + px / 2, "y": (2 * 4 + 2) * px + px / 2})  # f 2, c 3, (2, 1)
    formula_for(page, "torch", "conv2", "weight", [2, 3, 2, 1], f"test:{index2}", target)
    assert page.inner_text("#formula-title") == "ds/dconv2.weight[2, 3, 2, 1]"
    assert abs(_float(page, "#fx-computed") - _float(page, "#fx-value")) <= 1e-5 * max(abs(_float(page, "#fx-value")), 1e-4)

    # The keyboard: Tab to a map, arrows, Enter; a layer button by Enter.
    page.select_option("#backend", "scratch")
    page.select_option("#mode", "forward")
    page.focus(".layer[data-layer='input']")
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-shown='scratch input forward']")
    assert page.inner_text("#layer-title").startswith("the input image: shape 3×32×32")
    assert [page.inner_text(f"#layer-maps .chan >> nth={k}") for k in range(3)] == ["R", "G", "B"]
    page.focus(".layer[data-layer='act1']")
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-shown='scratch act1 forward']")
    assert "0 .." in page.inner_text("#legends")                           # ReLU output: sequential scale
    page.focus("#layer-maps canvas[data-channel='4']")
    for key in ("ArrowRight", "ArrowRight", "ArrowDown", "Enter"):
        page.keyboard.press(key)
    formula_for(page, "scratch", "act1", "forward", [4, 1, 2], f"test:{index2}", target)
    assert page.inner_text("#formula-body").startswith("act1[4, 1, 2] = max(conv1[4, 1, 2], 0)")
    page.keyboard.press("Escape")
    page.wait_for_selector("#formula-empty:visible")
    # Per-channel colour scales: each map's caption gives its own range.
    page.select_option("#scale", "channel")
    assert "±" in page.inner_text("#layer-maps .chan >> nth=0")

    # The other tabs: the badge is the explore tab's only.
    page.click(".tab[data-tab='filters']")
    page.wait_for_selector("#filters-body[data-loaded='1']")
    assert not page.is_visible("#diff")
    assert page.locator("#filters-conv1 canvas").count() == 32
    lo = float(page.inner_text(".filters-range[data-layer='conv1']").split("weights ")[1].split(" ..")[0])
    assert abs(lo - float(model.conv1.weight.data.min())) <= 1e-3 * max(1.0, abs(lo))
    page.click(".tab[data-tab='run']")
    page.wait_for_selector("#run-source:has-text('epochs')")
    page.wait_for_selector("#confusion[data-backend='scratch']")
    orange = page.evaluate("""() => {           // the test loss is drawn (#e8590c)
        const d = document.getElementById('curve-loss').getContext('2d').getImageData(0, 40, 440, 190).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] > 220 && d[i + 1] > 70 && d[i + 1] < 110 && d[i + 2] < 40) n++;
        return n;
    }""")
    assert orange > 50, "the test loss curve is missing"
    pred_all = model.forward(to_float(data.x, normalize)).argmax(1)
    cm = np.zeros((len(data.classes), len(data.classes)), int)
    np.add.at(cm, (data.y, pred_all), 1)
    i, j = (int(v) for v in np.unravel_index(np.where(np.eye(len(cm)) == 1, -1, cm).argmax(), cm.shape))
    assert page.inner_text(f".cm[data-true='{i}'][data-pred='{j}']") == str(cm[i, j])
    _shots(page, "explore-run.png")
    page.click(f".cm[data-true='{i}'][data-pred='{j}']")
    page.wait_for_selector(f"#grid[data-query*='cls={i}&pred={j}']")
    assert page.is_visible("#diff") and page.locator(".thumb").count() == min(cm[i, j], 48)

    # Your own picture: a broken file is said once, in plain words; a PNG of a test image analyses alike.
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not really a png")
    page.set_input_files("#upload", str(bad))
    page.wait_for_selector("#upload-msg.bad")
    msg = page.inner_text("#upload-msg")
    assert msg.startswith("the upload is not an image") and "Error" not in msg and not page.is_visible("#error")
    expected = "console error: Failed to load resource: the server responded with a status of 400 (Bad Request) " \
               f"({url}api/upload)"
    assert problems.count(expected) == 1                  # the browser logs the refused upload itself
    problems.remove(expected)
    from PIL import Image
    png = tmp_path / "mine.png"
    Image.fromarray(data.x[index].transpose(1, 2, 0)).save(png)
    page.set_input_files("#upload", str(png))
    page.wait_for_selector("#image-caption:has-text('your picture')")
    assert page.inner_text("#image-caption").endswith(f"predicted: {data.classes[pred]}")

    # The Dreams tab on this checkpoint (its own test covers every control): a class dream beside
    # its top-9 test images and occlusion, for the guide's screenshot.
    page.click(".tab[data-tab='dreams']")
    page.wait_for_selector("#tab-dreams[data-dream^='scratch class:']")
    page.wait_for_selector("#tab-dreams[data-occlusion^='scratch ']")
    assert page.locator("#dream-top button").count() == 9
    _shots(page, "explore-dreams.png", top=True)
    page.close()
    assert not problems, problems


def test_a_network_of_every_kind_explores_in_the_browser(browser, tmp_path):
    """A hand-written spec of every kind (strides, a 3x2 kernel, BatchNorm, both poolings, Tanh,
    Sigmoid, LeakyReLU): every layer opens in both modes and one number of each is written out,
    equal to the map's; the views dispatch on kind, not on the tutorial's names."""
    from scratchcnn.architecture import resolve
    from scratchcnn.checkpoint import save_checkpoint
    from test_explore import ZOO

    arch = resolve(ZOO, 10, name="zoo")
    path = str(tmp_path / "checkpoint.pth")
    save_checkpoint(path, model=Network(arch, rng=1).state_dict(), optimizer={}, epoch=1, metrics=[],
                    config={"dataset": "synthetic", "seed": 0, "test_size": 20, "normalize_stats": None,
                            "arch": "zoo", "arch_spec": arch.to_json()})
    data = load_dataset("synthetic", n_train=10, n_test=20)[1]
    srv, url = serve(Explorer(path, data))
    try:
        page, problems = open_page(browser, url)
        info = json.loads(page.evaluate("() => fetch('/api/info').then((r) => r.text())"))
        assert [b.get_attribute("data-kind") for b in page.locator(".layer").all()] == [L["kind"] for L in info["layers"]]
        for L in info["layers"]:
            for mode in ("forward", "gradient"):
                if mode == "gradient" and L["kind"] == "Softmax":
                    continue
                page.select_option("#mode", mode)                      # (the layer's maps, again, in this mode)
                if mode == "forward":
                    page.click(f".layer[data-layer='{L['name']}']")
                page.wait_for_selector(f"body[data-shown='scratch {L['name']} {mode}']")
                if len(L["shape"]) == 3:
                    c, h, w = L["shape"]
                    cv = page.locator(f"#layer-maps canvas[data-channel='{c - 1}']")
                    b = cv.bounding_box()
                    cv.click(position={"x": b["width"] * (w - 0.5) / w, "y": b["height"] * (h // 2 + 0.5) / h})
                    index = [c - 1, h // 2, w - 1]
                elif L["kind"] == "Softmax" or L["name"] == info["logits"]:
                    page.click("#layer-maps .bar[data-class='3']")
                    index = [3]
                else:
                    cv = page.locator("#layer-maps canvas")
                    cv.click(position={"x": 1, "y": 1})
                    index = [0]
                key = f"scratch {L['name']} {mode} {','.join(map(str, index))}"
                page.wait_for_selector(f"#formula[data-for^='{key} ']")
                value, computed = _float(page, "#fx-value"), _float(page, "#fx-computed")
                assert abs(value - computed) <= 1e-5 * max(1.0, abs(value)), (L["name"], mode)
        page.close()
        assert not problems, problems
    finally:
        srv.shutdown()
        srv.server_close()


def test_dreams_tab_time_slider_and_confusion_cells(browser, tmp_path):
    """A run trained with --snapshots (a network of its own names): the Dreams tab dreams,
    fools and occludes through both backends; the time slider moves every view to a snapshot's
    weights (the probabilities equal that snapshot's, the filters are its, the curves get a
    marker) and plays; a confusion cell lists its images and one of them opens. No console errors."""
    from scratchcnn.backends import make_backend
    from scratchcnn.cli import main
    from scratchcnn.study.snapshots import load_snapshot
    from test_explore_dreams import SPEC

    (tmp_path / "net.json").write_text(json.dumps(SPEC))
    out = tmp_path / "run"
    assert main(["train", "--arch", str(tmp_path / "net.json"), "--dataset", "synthetic", "--train-size", "160",
                 "--test-size", "30", "--epochs", "2", "--snapshots", "2", "--lr", "0.05", "--seed", "1",
                 "--no-progress", "--out", str(out)]) == 0
    data = load_dataset("synthetic", n_train=10, n_test=30)[1]
    srv, url = serve(Explorer(str(out / "checkpoint.pth"), data))
    try:
        page, problems = open_page(browser, url)
        # Dreams: a class, then a channel of the first layer of kind Conv2d; a fooling image; occlusion.
        page.click(".tab[data-tab='dreams']")
        page.wait_for_selector("#tab-dreams[data-dream='scratch class:0 final']")
        page.wait_for_selector("#tab-dreams[data-occlusion^='scratch test:0 ']")
        assert page.locator("#dream-top button").count() == 9
        page.select_option("#dream-what", "channel")
        page.wait_for_selector("#tab-dreams[data-dream='scratch look:0 final']")
        assert page.input_value("#dream-layer") == "look" and "Conv2d" in page.inner_text("#dream-layer")
        page.select_option("#backend", "torch")
        page.wait_for_selector("#tab-dreams[data-dream='torch look:0 final']")
        page.click("#fool-go")
        page.wait_for_selector("#tab-dreams[data-fool^='torch test:0 ']")
        assert page.locator("#fool-bars-after .bar").count() == 10 and page.inner_text("#fool-message")
        page.select_option("#fool-method", "fgsm")
        page.click("#fool-go")
        page.wait_for_selector("#tab-dreams[data-fool*=' fgsm ']")
        # The time slider: snapshot 0 (epoch 1, step 2); the probabilities are that snapshot's.
        assert page.is_visible("#timeline") and page.get_attribute("#moment", "max") == "4"
        page.click(".tab[data-tab='explore']")
        page.fill("#moment", "0")
        page.dispatch_event("#moment", "change")
        page.wait_for_selector("body[data-moment='0']")
        assert page.inner_text("#moment-label").startswith("epoch 1, step 2")
        s = load_snapshot(str(out), 0)
        b = make_backend("scratch", arch=s["arch"])
        b.load_state_dict(s["model"])
        logits = b.predict(to_float(data.x[:1]))[0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        shown = float(page.inner_text(f"#prob-bars .bar[data-class='{int(probs.argmax())}'] .num").rstrip("%"))
        assert abs(shown - 100 * probs.max()) <= 0.006
        page.click(".tab[data-tab='filters']")
        page.wait_for_selector("#filters-body[data-snapshot='0']")
        page.click(".tab[data-tab='run']")
        page.wait_for_selector("#confusion[data-backend='torch']")
        marker = page.evaluate("""() => {         // the moment's line on the curves (#f08c00)
            const d = document.getElementById('curve-loss').getContext('2d').getImageData(0, 40, 440, 190).data;
            const xs = new Set();
            for (let i = 0; i < d.length; i += 4) if (d[i] > 230 && d[i + 1] > 120 && d[i + 1] < 160 && d[i + 2] < 30) xs.add((i / 4) % 440);
            return [...xs];
        }""")
        assert marker and max(marker) - min(marker) <= 3, marker
        page.click("#play")                                     # 1, 2, 3, then the checkpoint
        page.wait_for_selector("body[data-moment='final']", timeout=120_000)
        # A confusion cell: its images in the grid; one of them opens.
        cell = page.locator(".cm:not([disabled])").first
        i, j = cell.get_attribute("data-true"), cell.get_attribute("data-pred")
        cell.click()
        page.wait_for_selector(f"#grid[data-query*='cls={i}&pred={j}']")
        assert page.locator(".thumb").count() == int(cell.inner_text())
        thumb = page.locator(".thumb").last
        index = thumb.get_attribute("data-image").split(":")[1]
        thumb.click()
        page.wait_for_selector(f"#image-caption:has-text('test:{index},')")
        assert data.classes[int(i)] in page.inner_text("#image-caption")
        page.wait_for_load_state("networkidle")           # the image's maps too: closing aborts what is in flight
        page.close()
        assert not problems, problems
    finally:
        srv.shutdown()
        srv.server_close()
