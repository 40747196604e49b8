"""Every generated block of README.md, README.zh-CN.md and docs/*.md, from committed result files.

    python -m benchmarks.docs              # list each block and whether it matches its generator
    python -m benchmarks.docs --write      # rewrite every block from the committed results
    python -m benchmarks.docs --check      # exit 1 if any block differs from what its generator writes

    python -m benchmarks.docs --measure-explore RUN[:LABEL] ...   # time the explorer (explore --measure's
                                           # requests) on each run's checkpoint -> docs/results/explore-times.json
    python -m benchmarks.docs --measure-saliency   # scratch backward vs torch autograd -> docs/results/saliency-agreement.json
    python -m benchmarks.docs --measure-augment    # crop_flip's time per batch -> docs/results/augment-cost.json

One entry point writes every block, so a newcomer (and ``tests/test_docs.py``) has one
command to run. A block lies between two HTML comments, invisible on the repository page::

    <!-- generated:NAME (python -m benchmarks.docs --write; do not edit) -->
    ...
    <!-- /generated:NAME -->

Two older blocks keep their own markers and their own generators, which this module calls:
the Speed section (``benchmarks.readme``, markers ``BEGIN``/``END`` there, from
benchmarks/results) and the verification table (``scratchcnn.parity.format_table``, from
docs/verification.json). ``python -m benchmarks.readme --write`` (run by ``make bench``) and
``python -m scratchcnn.parity --write`` still work and write into docs/speed.md and
docs/verification.md.

Sources: docs/verification.json (parity), benchmarks/results/*.json (speed),
docs/results/cifar10/*/metrics.json and time.txt (the full CIFAR-10 runs; the presets' among them
make the lessons tables), docs/results/lessons-10k/*/metrics.json (the short lessons, through
``scratchcnn.compare``'s own table), docs/results/explore-times.json,
docs/results/saliency-agreement.json and docs/results/augment-cost.json (written by the
``--measure-*`` options above).
"""
import argparse
import datetime
import json
import platform
import re
import sys
from pathlib import Path

from benchmarks import readme as RM

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RESULTS = DOCS / "results"
VERIFICATION = DOCS / "verification.json"
EXPLORE_TIMES = RESULTS / "explore-times.json"
SALIENCY = RESULTS / "saliency-agreement.json"
AUGMENT = RESULTS / "augment-cost.json"

BEGIN = "<!-- generated:{name} (python -m benchmarks.docs --write; do not edit) -->"
END = "<!-- /generated:{name} -->"
_BLOCK = re.compile(r"<!-- generated:(?P<name>[\w-]+)[^>]*-->\n(?P<body>.*?)\n?<!-- /generated:(?P=name) -->", re.S)

# The files holding generated blocks, and the blocks each must hold (a block removed by
# mistake fails the check instead of silently leaving its numbers unchecked).
EXPECTED = {
    "README.md": ["headline-en", "lessons-readme"],
    "README.zh-CN.md": ["headline-zh", "lessons-readme-zh"],
    "docs/training-and-recipes.md": ["cifar10", "augment"],
    "docs/networks-and-presets.md": ["lessons-cifar10", "lessons"],
    "docs/study-and-explorer.md": ["explore-times", "saliency"],
    "docs/verification.md": ["verification", "saliency"],
    "docs/speed.md": ["speed"],
}
SPEED_DOC = "docs/speed.md"
VERIFICATION_DOC = "docs/verification.md"


def _pct(x):
    return f"{100 * x:.2f}%"


def _iv(sp, lang="en"):
    if lang == "zh":
        return f"{sp['ratio']:.2f} 倍（95% 置信区间 {sp['low']:.2f}-{sp['high']:.2f} 倍）"
    return f"{sp['ratio']:.2f}x (95% interval {sp['low']:.2f}-{sp['high']:.2f}x)"


# ------------------------------------------------------------------ sources

def verification():
    return json.loads(VERIFICATION.read_text())


def speed():
    return RM.load(RM.RESULTS)


def _cpu(result):
    """(model name, family, model) of the CPU a benchmark result was measured on."""
    return RM.R.cpu_id(result.get("machine", {}))


def cifar10_runs():
    """[(folder name, load_run dict, wall time text or None)] of docs/results/cifar10/*."""
    from scratchcnn.compare import load_run
    out = []
    for d in sorted((RESULTS / "cifar10").iterdir()):
        if (d / "metrics.json").exists():
            out.append((d.name, load_run(str(d)), _wall_time(d / "time.txt")))
    return out


def _wall_time(path):
    if not path.exists():
        return None
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", path.read_text())
    if not m:
        return None
    parts = [float(p) for p in m.group(1).split(":")]
    secs = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return f"{int(secs // 60)} min {int(secs % 60)} s"


# ------------------------------------------------------------------ blocks

def headline(lang):
    """The landing pages' headline numbers (en or zh)."""
    v, s = verification(), speed()
    gc, r64, r32, fused = v["gradcheck"], v["float64"], v["float32"], v["fused_vs_torch"]
    h = RM.headline(s["step"])
    ep = RM._epoch_row(s, "torch")
    epoch_sp = ep["speedup"]["epoch_s"] if ep and ep.get("speedup") else None
    # the epoch figure goes beside the step's only when both were measured on the same kind of CPU
    epoch_cpu = _cpu(s["epoch"]) if "epoch" in s else None
    step_cpu = _cpu(s["step"])
    elsewhere = epoch_sp is not None and epoch_cpu != step_cpu
    where_en = (f" ({RM.R.machine_line(s['epoch'])}, {s['epoch']['date'][:10]}: another CPU)"
                if elsewhere else "")
    where_zh = (f"（另一种 CPU：{RM.R.cpu_name(s['epoch']['machine'])}，{s['epoch']['date'][:10]}）"
                if elsewhere else "")
    runs = cifar10_runs()
    tutorial = [(n, r) for n, r, _ in runs if r["config"].get("recipe") == "tutorial"
                and r["config"].get("arch", "tutorial") == "tutorial"] or [(n, r) for n, r, _ in runs[:1]]
    name, run = tutorial[0]
    cfg, last = run["config"], run["epochs"][-1]
    by_backend = [(r["config"].get("backend"), _pct(r["epochs"][-1]["test_acc"])) for _, r in tutorial]
    acc_en = " and ".join(f"**{acc}**{' test accuracy' if i == 0 else ''} with the {b} backend"
                          for i, (b, acc) in enumerate(by_backend))
    acc_zh = "，".join(f"{b} 后端 **{acc}**" for b, acc in by_backend)
    where = f"`docs/results/cifar10/{name}/metrics.json`" if len(tutorial) == 1 else "`docs/results/cifar10/`"
    n_test = "10,000"
    machine = f"{RM.R.machine_line(s['step'])}, {s['step']['date'][:10]}"
    m = s["step"].get("machine", {})
    machine_zh = f"{RM.R.cpu_name(m)} 的 {m.get('logical_cpus', '?')} 个 vCPU，{s['step']['date'][:10]}"
    if lang == "zh":
        lines = [
            f"- **与 PyTorch 数值一致。** 每个层的反向传播都通过 float64 中心差分梯度检验（{gc['passed']}/{gc['total']} "
            f"项低于 1e-7，最差 {gc['worst']:.1e}）；教程网络训练 {r64['steps']['steps']} 步 SGD 之后，权重与 PyTorch 的"
            f"相对误差为 {r64['steps']['weights']:.1e}（float64）和 {r32['steps']['weights']:.1e}（float32）；"
            f"`scratchcnn train` 实际运行的快速路径 {fused['steps']} 步后为 {fused['weights']:.1e}（float32）。"
            f"详见 [验证](docs/verification.md)。",
            f"- **CPU 上更快。** 批大小 32、{h['threads']} 线程的一个训练步：比教程的 PyTorch 循环快 "
            f"{_iv(h['vs_tutorial'], 'zh')}，比测得最快的 PyTorch 配置快 {_iv(h['vs_best'], 'zh')}"
            + (f"（{machine_zh}）" if elsewhere else "")
            + (f"；一个完整 epoch（含评估）快 {_iv(epoch_sp, 'zh')}{where_zh}" if epoch_sp else "")
            + ("；详见 [速度](docs/speed.md)。" if elsewhere else f"（{machine_zh}；详见 [速度](docs/speed.md)）。"),
            f"- **真实数据。** 在完整的 CIFAR-10 上（JPEG 版本，50,000 张训练图、{n_test} 张测试图），"
            f"教程的训练配置（`--recipe {cfg.get('recipe')}`，{last['epoch']} 个 epoch）"
            f"的测试集准确率：{acc_zh}（{where}；"
            f"详见 [训练与配方](docs/training-and-recipes.md#real-cifar-10-results)）。",
        ]
    else:
        lines = [
            f"- **The same numbers as PyTorch.** Every layer's backward passes float64 central-difference "
            f"checks ({gc['passed']}/{gc['total']} below 1e-7, worst {gc['worst']:.1e}); after "
            f"{r64['steps']['steps']} SGD steps the tutorial network's weights match torch's to "
            f"{r64['steps']['weights']:.1e} (float64) and {r32['steps']['weights']:.1e} (float32) relative error, "
            f"and the fast path that `scratchcnn train` runs to {fused['weights']:.1e} after {fused['steps']} "
            f"steps (float32). [Verification](docs/verification.md).",
            f"- **Fast on a CPU.** One training step of batch 32 at {h['threads']} threads is "
            f"{_iv(h['vs_tutorial'])} faster than the tutorial's PyTorch loop and {_iv(h['vs_best'])} faster "
            f"than the best PyTorch configuration measured"
            + (f" ({machine})" if elsewhere else "")
            + (f"; one epoch end to end, evaluation included, {_iv(epoch_sp)}{where_en}" if epoch_sp else "")
            + ("" if elsewhere else f" ({machine})") + ". [Speed](docs/speed.md).",
            f"- **Real data.** On the full CIFAR-10 (the JPEG copy: 50,000 training and {n_test} test images), "
            f"the tutorial's recipe (`--recipe {cfg.get('recipe')}`, {last['epoch']} epochs) reaches "
            f"{acc_en} ({where}). "
            f"[Training and recipes](docs/training-and-recipes.md#real-cifar-10-results).",
        ]
    return "\n".join(lines)


def cifar10():
    """The committed full-CIFAR-10 runs as a table."""
    lines = ["| run (`docs/results/cifar10/`) | backend | recipe | network | epochs | test accuracy (final) | "
             "best (epoch) | test loss | train accuracy (running mean, train mode) | wall time of the run | "
             "one epoch's training loop (median) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    import statistics
    for name, run, wall in cifar10_runs():
        cfg, ep = run["config"], run["epochs"]
        best = max(ep, key=lambda m: m["test_acc"])
        loop = statistics.median(m["seconds"] for m in ep)
        ips = statistics.median(m["images_per_s"] for m in ep)
        lines.append(f"| `{name}` | {cfg.get('backend')} | {cfg.get('recipe')} | {cfg.get('arch', 'tutorial')} | "
                     f"{ep[-1]['epoch']} | **{_pct(ep[-1]['test_acc'])}** | {_pct(best['test_acc'])} "
                     f"({best['epoch']}) | {ep[-1]['test_loss']:.3f} | {_pct(ep[-1]['train_acc'])} | "
                     f"{wall or '-'} | {loop:.1f} s ({ips:,.0f} images/s) |")
    runs = cifar10_runs()
    m = runs[0][1].get("machine") or {}
    lines += ["", f"Machine: {m.get('cpus', '?')} CPUs of {m.get('cpu', '?')}, Python {m.get('python', '?')}, "
                  f"NumPy {m.get('numpy', '?')}, numba {m.get('numba', '?')}, torch {m.get('torch', '?')} "
                  f"(from each run's `metrics.json`); the wall time from its `time.txt` (`/usr/bin/time -v`). "
                  f"The machine was shared with other work during these runs, so the times are an upper bound."]
    return "\n".join(lines)


def lesson_runs():
    """[(folder name, load_run dict)] of the full-CIFAR-10 runs of presets with the tutorial's
    recipe (docs/results/cifar10/*), in the presets' order, scratch before torch."""
    from scratchcnn.architecture import PRESETS
    runs = [(n, r) for n, r, _ in cifar10_runs()
            if r["config"].get("recipe") == "tutorial" and r["config"].get("arch", "tutorial") in PRESETS]
    order = list(PRESETS)
    return sorted(runs, key=lambda nr: (order.index(nr[1]["config"].get("arch", "tutorial")),
                                         nr[1]["config"].get("backend") != "scratch"))


def lessons_cifar10():
    """The presets' full-CIFAR-10 runs through scratchcnn.compare's own table."""
    from scratchcnn.compare import format_table, summarise
    return format_table([summarise(r, f"`{n}`") for n, r in lesson_runs()])


# What each preset changes, for the landing pages' lessons table (en from the presets'
# own descriptions; zh written here).
_CHANGES_ZH = {"tutorial": "不变：教程的网络", "k1": "1x1 卷积核", "k5": "5x5 卷积核", "k7": "7x7 卷积核",
               "deep": "四个堆叠的 3x3 卷积", "avgpool": "平均池化代替最大池化",
               "bn": "每个卷积之后加 BatchNorm2d", "vgg": "更强的 VGG 式网络"}


def lessons_readme(lang="en"):
    """The landing pages' short lessons table: one row per preset run on the full CIFAR-10.
    No epoch times: these runs shared the machine with other work (the guide's full table
    has them with that caveat; benchmarks/ measures speed)."""
    from scratchcnn.architecture import PRESETS
    from scratchcnn.compare import summarise
    runs = lesson_runs()
    by_arch = {}
    for name, run in runs:
        by_arch.setdefault(run["config"].get("arch", "tutorial"), {})[run["config"].get("backend")] = summarise(run)
    zh = lang == "zh"
    lines = [("| 网络 | 改动 | 测试集准确率 | 参数量 | 每张图的乘加次数 | 最后一个卷积层的感受野 |" if zh else
              "| network | what it changes | test accuracy | parameters | mult-adds per image | "
              "receptive field of the last conv |"), "|---|---|---|---|---|---|"]
    for arch, rows in by_arch.items():
        r = rows.get("scratch") or next(iter(rows.values()))
        acc = " / ".join(f"**{_pct(rows[b]['final_test_acc'])}** {b}" for b in ("scratch", "torch") if b in rows)
        what = (_CHANGES_ZH[arch] if zh else "nothing: the tutorial's network" if arch == "tutorial" else
                PRESETS[arch][0].split(":")[0].replace("the tutorial's network with ", ""))
        lines.append(f"| `{arch}` | {what} | {acc} | {r['params']:,} | {r['macs'] / 1e6:.1f} M | "
                     f"{'x'.join(map(str, r['rf']))} |")
    epochs = runs[0][1]["epochs"][-1]["epoch"]
    guide = "docs/networks-and-presets.md#what-the-presets-teach-the-full-cifar-10"
    if zh:
        lines += ["", f"`--recipe tutorial`，{epochs} 个 epoch，随机种子 0；最后一个 epoch 之后在 10,000 张测试图上的"
                      f"准确率。每次运行的文件都在 `docs/results/cifar10/`；完整的表（最佳 epoch、测试损失、"
                      f"每个 epoch 的时间）和曲线图见 [网络与预设]({guide})。"]
    else:
        lines += ["", f"`--recipe tutorial`, {epochs} epochs, seed 0; test accuracy after the last epoch on the "
                      f"10,000 test images. Every run's files are in `docs/results/cifar10/`; the full table "
                      f"(best epoch, test loss, epoch times) and the figure: [Networks and presets]({guide})."]
    return "\n".join(lines)


def lessons():
    """docs/results/lessons-10k/* through scratchcnn.compare's own table."""
    from scratchcnn.compare import format_table, load_run, summarise
    from scratchcnn.architecture import PRESETS
    folders = sorted((RESULTS / "lessons-10k").iterdir(), key=lambda p: list(PRESETS).index(p.name)
                     if p.name in PRESETS else 99)
    rows = [summarise(load_run(str(f)), f.name) for f in folders if (f / "metrics.json").exists()]
    return format_table(rows)


def explore_times():
    data = json.loads(EXPLORE_TIMES.read_text())
    nets = list(data["networks"])
    labels = []
    for n in nets:
        for r in data["networks"][n]["requests"]:
            if r["request"] not in labels:
                labels.append(r["request"])
    head = "| request | " + " | ".join(f"{n}: median, max ms" for n in nets) + " |"
    lines = [head, "|---" * (len(nets) + 1) + "|"]
    for label in labels:
        cells = []
        for n in nets:
            r = next((r for r in data["networks"][n]["requests"] if r["request"] == label), None)
            cells.append(f"{r['median_ms']:.1f}, {r['max_ms']:.1f}" if r else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    slowest = max(((n, r) for n in nets for r in data["networks"][n]["requests"]), key=lambda nr: nr[1]["max_ms"])
    m = data["machine"]
    lines += ["", f"The slowest request measured: {slowest[1]['request']} ({slowest[0]}), "
                  f"{slowest[1]['max_ms']:.0f} ms at worst. Measured {data['date']} on {m['cpus']} CPUs of "
                  f"{m['cpu']} (load average {m['load_average']:.1f} at the start: the machine was shared), "
                  f"{data['repeats']} repeats of each request; the networks: "
                  + "; ".join(f"{n}, {data['networks'][n]['what']}" for n in nets)
                  + " (`docs/results/explore-times.json`)."]
    return "\n".join(lines)


def saliency():
    d = json.loads(SALIENCY.read_text())
    w = d["worst"]
    return (f"The hand-written backward in eval mode against `torch.autograd.grad` (logits, ds/d(output) of "
            f"every layer, ds/dx, the saliency map and Grad-CAM; {d['images']} images, {len(d['seeds'])} seeds "
            f"of the weights, 3 ways of choosing classes) agree to float64 {w['float64']['grads']:.1e} (Grad-CAM "
            f"{w['float64']['gradcam']:.1e}) and float32 {w['float32']['grads']:.1e} (Grad-CAM "
            f"{w['float32']['gradcam']:.1e}), relative to each array's max (measured {d['date']}, "
            f"`docs/results/saliency-agreement.json`; `tests/test_saliency.py` checks it with a margin).")


def augment():
    d = json.loads(AUGMENT.read_text())
    step = speed()["step"]
    sc = next((r for r in RM.R.rows(step) if r["key"] == f"scratch@{RM.headline(step)['threads']}"), None)
    share = (f", about {100 * d['ms_per_batch'] / sc['median_ms']:.1f}% of the scratch training step of "
             f"{sc['median_ms']:.1f} ms in [Speed](speed.md)") if sc else ""
    return (f"In plain NumPy it takes {d['ms_per_batch']:.2f} ms per batch of {d['batch']}, drawing the crops "
            f"and flips included (`scratchcnn.augment.augment_batch`; the crop and flip alone, `crop_flip`: "
            f"{d['crop_flip_ms_per_batch']:.2f} ms){share}. Median of {d['repeats']} `timeit` runs on "
            f"{d['machine']['cpus']} CPUs of {d['machine']['cpu']}, {d['date']}, load average "
            f"{d['machine']['load_average']:.1f} at the start (`docs/results/augment-cost.json`, written by "
            f"`python -m benchmarks.docs --measure-augment`)."
            + (" The machine was busy during this measurement and quiet during the step's, so the share is an "
               "upper bound." if d["machine"]["load_average"] > 1 else ""))


GENERATORS = {
    "headline-en": lambda: headline("en"),
    "headline-zh": lambda: headline("zh"),
    "cifar10": cifar10,
    "lessons": lessons,
    "lessons-cifar10": lessons_cifar10,
    "lessons-readme": lessons_readme,
    "lessons-readme-zh": lambda: lessons_readme("zh"),
    "explore-times": explore_times,
    "saliency": saliency,
    "augment": augment,
}


# ------------------------------------------------------------------ reading and writing

def blocks_of(text):
    """{name: body} of the generic blocks in ``text``."""
    return {m.group("name"): m.group("body") for m in _BLOCK.finditer(text)}


def rewrite(text, generated):
    """``text`` with each generic block's body replaced by ``generated[name]``."""
    def sub(m):
        name = m.group("name")
        if name not in generated:
            raise KeyError(f"no generator for the block {name!r}")
        begin = m.group(0).split("\n", 1)[0]
        return f"{begin}\n{generated[name]}\n{END.format(name=name)}"
    return _BLOCK.sub(sub, text)


def _verification_section(text):
    from scratchcnn import parity
    a, b = parity.MARKERS
    if a not in text or b not in text:
        return None
    return text.split(a, 1)[1].split(b, 1)[0].strip("\n")


def _write_verification(text, table):
    from scratchcnn import parity
    a, b = parity.MARKERS
    start, end = text.index(a), text.index(b)
    return text[:start + len(a)] + "\n" + table + "\n" + text[end:]


def problems(root=ROOT):
    """[(file, block, what)] for every block that is missing or differs from its generator."""
    from scratchcnn import parity
    cache = {}

    def gen(name):
        if name not in cache:
            cache[name] = GENERATORS[name]()
        return cache[name]

    bad = []
    for rel, names in EXPECTED.items():
        path = root / rel
        if not path.exists():
            bad.append((rel, "-", "the file is missing"))
            continue
        text = path.read_text()
        found = blocks_of(text)
        for name, body in found.items():
            if name not in GENERATORS:
                bad.append((rel, name, "no generator has this name"))
            elif body.strip("\n") != gen(name):
                bad.append((rel, name, "differs from what the generator writes"))
        for name in names:
            if name in ("speed", "verification"):
                continue
            if name not in found:
                bad.append((rel, name, "the block is missing"))
        if "speed" in names and RM.section_of(text) != RM.generate(speed()):
            bad.append((rel, "speed", "missing or differs from python -m benchmarks.readme"))
        if "verification" in names and _verification_section(text) != parity.format_table(verification()).strip("\n"):
            bad.append((rel, "verification", "missing or differs from scratchcnn.parity.format_table"))
    return bad


def write_all(root=ROOT):
    """Rewrite every block of every file in EXPECTED; returns the files changed."""
    from scratchcnn import parity
    generated = {name: fn() for name, fn in GENERATORS.items()}
    changed = []
    for rel, names in EXPECTED.items():
        path = root / rel
        text = old = path.read_text()
        text = rewrite(text, generated)
        if "speed" in names:
            text = RM.write(text, RM.generate(speed()))
        if "verification" in names:
            text = _write_verification(text, parity.format_table(verification()).strip("\n"))
        if text != old:
            path.write_text(text)
            changed.append(rel)
    return changed


# ------------------------------------------------------------------ measurements

def _machine():
    import os
    cpu = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpu = re.sub(r"\s+\d+-Core Processor$", "", cpu)
    return {"cpu": cpu, "cpus": os.cpu_count(), "load_average": os.getloadavg()[0]}


def _today():
    return datetime.date.today().isoformat()


def measure_explore(runs, repeats=5):
    """Run explore --measure's timings on each RUN[:LABEL] folder's checkpoint; returns the JSON dict."""
    from scratchcnn.checkpoint import load_checkpoint
    from scratchcnn.data import CIFAR10_CLASSES
    from scratchcnn.evaluate import dataset_split
    from scratchcnn.explore.analysis import Explorer
    from scratchcnn.explore.measure import measure

    out = {"date": _today(), "machine": _machine(), "repeats": repeats, "networks": {}}
    for spec in runs:
        folder, _, label = spec.partition(":")
        ckpt = str(Path(folder) / "checkpoint.pth")
        cfg = load_checkpoint(ckpt)["config"]
        data = dataset_split(cfg, None, None, "test")
        explorer = Explorer(ckpt, data, list(cfg.get("classes") or data.classes or CIFAR10_CLASSES))
        table = measure(explorer, repeats=repeats)
        rows = []
        for line in table.splitlines()[2:]:
            m = re.match(r"^(.*?)\s+([\d.]+)\s+([\d.]+)$", line)
            if m and not line.startswith("slowest"):
                rows.append({"request": m.group(1).strip(), "median_ms": float(m.group(2)),
                             "max_ms": float(m.group(3))})
        ep = cfg.get("epochs")
        what = (f"`--arch {cfg.get('arch', 'tutorial')}` trained {ep} epoch(s) on {cfg.get('train_size') or 'all'} "
                f"{cfg.get('dataset')} images")
        out["networks"][label or cfg.get("arch", "tutorial")] = {"what": what, "requests": rows}
    return out


def measure_saliency(seeds=(11, 12, 13)):
    """tests/test_saliency.py's comparison, its worst errors over ``seeds`` of the weights."""
    import numpy as np
    import torch

    from scratchcnn.data import make_synthetic, to_float
    from scratchcnn.model import CIFAR10Model
    from scratchcnn.study.saliency import grad_cam, saliency_map, scratch_class_gradients, torch_class_gradients
    from torch_reference import CIFAR10Model as TorchModel

    torch.set_num_threads(1)

    def rel(a, b):
        return float(np.abs(np.asarray(a, np.float64) - b).max()) / float(np.abs(b).max())

    worst = {d: {"grads": 0.0, "gradcam": 0.0} for d in ("float64", "float32")}
    for dname, dtype in (("float64", np.float64), ("float32", np.float32)):
        for seed in seeds:
            model = CIFAR10Model(dtype=dtype, rng=seed)
            t = TorchModel().double() if dtype == np.float64 else TorchModel()
            t.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
            t.eval()
            x = to_float(make_synthetic(5, seed=1).x).astype(dtype)
            for classes in (None, [0, 3, 7, 9, 2], 5):
                ours, ref = scratch_class_gradients(model, x, classes), torch_class_gradients(t, x, classes)
                g = max([rel(ours["logits"], ref["logits"])]
                        + [rel(ours["grads"][k], ref["grads"][k]) for k in ref["grads"]]
                        + [rel(saliency_map(ours["grads"]["input"]), saliency_map(ref["grads"]["input"]))])
                c = rel(grad_cam(ours["acts"]["conv2"], ours["grads"]["conv2"]),
                        grad_cam(ref["acts"]["conv2"], ref["grads"]["conv2"]))
                worst[dname]["grads"] = max(worst[dname]["grads"], g)
                worst[dname]["gradcam"] = max(worst[dname]["gradcam"], c)
    return {"date": _today(), "machine": _machine(), "images": 5, "seeds": list(seeds), "worst": worst}


def measure_augment(batch=32, repeats=7, number=200):
    import timeit

    import numpy as np

    from scratchcnn.augment import augment_batch, augment_params, crop_flip
    x = np.random.default_rng(0).integers(0, 256, (batch, 3, 32, 32), dtype=np.uint8)
    params = augment_params(batch, 0, 0, 1)

    def ms(fn):
        return 1000 * float(np.median(timeit.repeat(fn, repeat=repeats, number=number))) / number
    return {"date": _today(), "machine": _machine(), "batch": batch, "repeats": repeats, "number": number,
            "ms_per_batch": ms(lambda: augment_batch(x, seed=0, epoch=0, batch=1)),
            "crop_flip_ms_per_batch": ms(lambda: crop_flip(x, *params))}


def _save(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.docs", description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--write", action="store_true", help="rewrite every generated block")
    g.add_argument("--check", action="store_true", help="exit 1 if a generated block differs")
    g.add_argument("--measure-explore", nargs="+", metavar="RUN[:LABEL]",
                   help="time the explorer on these runs' checkpoints into docs/results/explore-times.json")
    g.add_argument("--measure-saliency", action="store_true", help="write docs/results/saliency-agreement.json")
    g.add_argument("--measure-augment", action="store_true", help="write docs/results/augment-cost.json")
    args = p.parse_args(argv)
    if args.measure_explore:
        _save(EXPLORE_TIMES, measure_explore(args.measure_explore))
        return 0
    if args.measure_saliency:
        _save(SALIENCY, measure_saliency())
        return 0
    if args.measure_augment:
        _save(AUGMENT, measure_augment())
        return 0
    if args.write:
        changed = write_all()
        print("rewrote " + (", ".join(changed) if changed else "nothing: every block was up to date"))
        return 0
    bad = problems()
    for rel, name, what in bad:
        print(f"{rel}: {name}: {what}", file=sys.stderr)
    if args.check:
        return 1 if bad else 0
    if not bad:
        print("every generated block matches its generator")
    return 0


if __name__ == "__main__":
    sys.exit(main())
