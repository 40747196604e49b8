"""The documentation: its numbers are generated, its commands run, its links resolve.

1. Every generated block of README.md, README.zh-CN.md and docs/*.md is exactly what
   ``python -m benchmarks.docs --write`` writes from the committed result files (a figure typed
   by hand, or results committed without regenerating the docs, fails here).
2. Every shell block marked ``<!-- runnable -->`` (the line right before its ```bash fence) runs
   and exits 0. The blocks of one document run in order in one temporary folder (a later block
   may use a run an earlier one trained), with ``examples/`` copied in. ``scratchcnn`` and
   ``python`` there are small stand-ins for this interpreter, and ``scratchcnn`` shrinks every
   run: one epoch, at most 256 training and 64 test images (never more than the command asked
   for), no progress bar. The docs show the sizes a reader wants; the test checks the commands
   and flags exist and work together. The extractor is a regular expression of our own: the
   plugins that run Markdown code blocks (pytest-markdown-docs, phmdoctest) run Python blocks, or
   need their own markup per block, and none shrinks the runs.
3. Every relative link between README.md, README.zh-CN.md and docs/*.md points at a file that
   exists, and every #anchor at a heading of that file (GitHub's slugs).
"""
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import docs as D  # noqa: E402

PAGES = [ROOT / "README.md", ROOT / "README.zh-CN.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = re.compile(r"^<!-- runnable -->\n```bash\n(.*?)^```", re.S | re.M)
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _rel(p):
    return str(p.relative_to(ROOT))


# ------------------------------------------------------------------ 1. generated blocks

def test_every_generated_block_is_what_the_generator_writes():
    """After new results: python -m benchmarks.docs --write, and commit the docs with them."""
    assert D.problems() == []


def test_the_generated_blocks_check_catches_a_hand_edited_figure(tmp_path):
    for rel in D.EXPECTED:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    assert D.problems(tmp_path) == []
    readme = tmp_path / "README.md"
    text = readme.read_text()
    figure = re.search(r"\*\*(\d+\.\d+)%\*\* test accuracy", text).group(1)
    readme.write_text(text.replace(f"**{figure}%** test accuracy", "**70.00%** test accuracy"))
    zh = tmp_path / "README.zh-CN.md"
    zh.write_text(zh.read_text().replace("<!-- /generated:headline-zh -->", "").replace(
        "<!-- generated:headline-zh", "<!-- was generated:headline-zh"))
    speed = tmp_path / "docs" / "speed.md"
    speed.write_text(speed.read_text().replace("faster than the tutorial's PyTorch loop", "faster than PyTorch", 1))
    found = {(rel, name) for rel, name, _ in D.problems(tmp_path)}
    assert found == {("README.md", "headline-en"), ("README.zh-CN.md", "headline-zh"), ("docs/speed.md", "speed")}


def test_both_landing_pages_show_the_same_generated_numbers():
    numbers = re.compile(r"\d+\.\d+(?:e-\d+)?%?")
    for en, zh in ((D.headline("en"), D.headline("zh")), (D.lessons_readme("en"), D.lessons_readme("zh"))):
        assert sorted(numbers.findall(en)) == sorted(numbers.findall(zh))


def test_the_lessons_tables_have_a_row_per_preset_run_in_the_presets_order():
    """Every committed full-CIFAR-10 run of a preset with the tutorial's recipe is a row of the
    guide's table (scratch before torch) and its accuracy is in the landing page's."""
    from scratchcnn.architecture import PRESETS
    runs = D.lesson_runs()
    archs = [r["config"]["arch"] for _, r in runs]
    assert archs == sorted(archs, key=list(PRESETS).index) and {"tutorial", "k1", "bn"} <= set(archs)
    guide, landing = D.lessons_cifar10(), D.lessons_readme()
    for name, run in runs:
        acc = f"{100 * run['epochs'][-1]['test_acc']:.2f}%"
        assert f"| `{name}` | {run['config']['arch']} | {run['config']['backend']} | tutorial | 20 | {acc} |" in guide
        assert f"**{acc}** {run['config']['backend']}" in landing


def test_write_then_check_round_trips(tmp_path):
    for rel in D.EXPECTED:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        text = (ROOT / rel).read_text()
        (tmp_path / rel).write_text(D.rewrite(text, {n: "stale" for n in D.blocks_of(text)}))
    assert {name for _, name, _ in D.problems(tmp_path)} == set(D.blocks_of("".join(
        (ROOT / rel).read_text() for rel in D.EXPECTED)))
    D.write_all(tmp_path)
    assert D.problems(tmp_path) == []


# ------------------------------------------------------------------ 2. runnable blocks

def runnable_blocks(page):
    """The ```bash blocks right after a <!-- runnable --> line, in order."""
    return RUNNABLE.findall(page.read_text())


_SHRINK = '''#!{python}
"""scratchcnn, as tests/test_docs.py runs a documented command: every run shrunk."""
import os, sys
args = sys.argv[1:]
if args[:1] == ["train"] and "--resume" not in args:
    def cap(flag, most):
        if flag in args:
            i = args.index(flag) + 1
            args[i] = str(min(int(args[i]), most))
        elif "folder" not in args:      # a folder's split may be smaller than the cap
            args.extend([flag, str(most)])
    cap("--epochs", 1)
    cap("--train-size", 256)
    cap("--test-size", 64)
    args.append("--no-progress")
os.execv(sys.executable, [sys.executable, "-m", "scratchcnn", *args])
'''


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """A bin folder whose scratchcnn and python are this interpreter (scratchcnn shrunk)."""
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "scratchcnn").write_text(_SHRINK.format(python=sys.executable))
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for name in ("scratchcnn", "python"):
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir


def _with_runnable_blocks():
    """The pages with runnable blocks; a page whose blocks are exactly an earlier page's (the
    Chinese landing page repeats the English one's commands) is run once, under the first."""
    seen, pages = set(), []
    for p in PAGES:
        blocks = tuple(b.replace(".venv/bin/scratchcnn", "scratchcnn") for b in runnable_blocks(p))
        if blocks and blocks not in seen:
            seen.add(blocks)
            pages.append(p)
    return pages


def test_the_chinese_landing_page_runs_the_same_commands():
    assert runnable_blocks(ROOT / "README.zh-CN.md") == runnable_blocks(ROOT / "README.md")
    assert ROOT / "README.md" in _with_runnable_blocks()


@pytest.mark.slow
@pytest.mark.parametrize("page", _with_runnable_blocks(), ids=_rel)
def test_the_runnable_blocks_run(page, stand_ins, tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = dict(os.environ, PATH=f"{stand_ins}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               MPLBACKEND="Agg")
    for i, block in enumerate(runnable_blocks(page)):
        # The README's commands name the set-up's .venv/bin/scratchcnn: here, the stand-in.
        script = block.replace(".venv/bin/scratchcnn", "scratchcnn")
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (f"{_rel(page)}, runnable block {i + 1} exited {r.returncode}:\n{block}\n"
                                   f"--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}")


def test_the_shrinking_stand_in_keeps_flags_and_caps_sizes(stand_ins, tmp_path):
    """The stand-in only lowers sizes: --epochs 0 must still be refused (so a documented error
    stays an error), and a documented size below the cap is kept."""
    r = subprocess.run([str(stand_ins / "scratchcnn"), "train", "--epochs", "0"], capture_output=True, text=True,
                       cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert r.returncode == 2 and "--epochs" in r.stderr


def test_every_guide_starts_with_a_runnable_command():
    """Each guide says what it is for, then shows a command that works on the built-in dataset."""
    for page in sorted((ROOT / "docs").glob("*.md")):
        text = page.read_text()
        first_section = text.split("\n## ", 1)[0]
        assert "<!-- runnable -->" in first_section, _rel(page)
    for page in PAGES:
        assert "<!-- runnable -->\n" not in RUNNABLE.sub("", page.read_text()), \
            f"{_rel(page)}: a <!-- runnable --> line not right before a ```bash block"


def test_the_extractor_finds_marked_blocks_only(tmp_path):
    page = tmp_path / "x.md"
    page.write_text("```bash\nnot marked\n```\n\n<!-- runnable -->\n```bash\na\nb\n```\ntext\n"
                    "<!-- runnable -->\n```bash\nc\n```\n")
    assert runnable_blocks(page) == ["a\nb\n", "c\n"]


# ------------------------------------------------------------------ 3. links and anchors

def slug(heading):
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page):
    seen, out = {}, set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        m = re.match(r"#{1,6} (.*)", line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            out.add(s if n == 0 else f"{s}-{n}")
            seen[s] = n + 1
    return out


def test_slugs_are_githubs():
    assert slug("Past the tutorial's 70%") == "past-the-tutorials-70"
    assert slug('What "the same" means, layer by layer') == "what-the-same-means-layer-by-layer"
    assert slug("Earlier runs, not reproducible from committed files") == \
        "earlier-runs-not-reproducible-from-committed-files"
    assert slug("安装与第一次运行") == "安装与第一次运行"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_relative_link_and_anchor_resolves(page):
    bad = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue                                  # http(s), mailto: not checked offline
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert bad == []


def test_the_landing_pages_link_every_guide():
    guides = {p.name for p in (ROOT / "docs").glob("*.md")}
    for page in (ROOT / "README.md", ROOT / "README.zh-CN.md"):
        linked = {Path(t.partition("#")[0]).name for t in LINK.findall(page.read_text()) if t.startswith("docs/")}
        assert guides <= linked, (page.name, guides - linked)


def test_the_readme_is_a_landing_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150
    assert (ROOT / "README.md").read_text().splitlines()[0].count("README.zh-CN.md") == 1
    assert (ROOT / "README.zh-CN.md").read_text().splitlines()[0].count("README.md") == 1


def test_the_notebooks_links_into_the_docs_resolve():
    """The notebook's markdown cells point readers at the guides (they once said "README, 'Your
    own images'"): each relative link and anchor resolves."""
    import json
    nb = ROOT / "notebooks" / "walkthrough.ipynb"
    text = "\n".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "markdown")
    targets = [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]
    assert any("docs/" in t for t in targets)
    assert "(README," not in text
    for target in targets:
        path, _, anchor = target.partition("#")
        dest = (nb.parent / path).resolve()
        assert dest.exists(), target
        if anchor:
            assert anchor in anchors(dest), target


def test_every_figure_in_docs_is_shown_somewhere():
    linked = set()
    for page in PAGES:
        linked |= {(page.parent / t).resolve() for t in LINK.findall(page.read_text()) if t.endswith(".png")}
    assert sorted(p.name for p in (ROOT / "docs").glob("*.png") if p.resolve() not in linked) == []


def test_the_full_cifar10_lessons_prose_still_describes_the_committed_runs():
    """docs/networks-and-presets.md and both landing pages read the full-CIFAR-10 lessons in
    words: k1 ten points behind the tutorial, k5 ahead at every epoch and almost three points at
    the end (within a point of deep), deep behind for 8 epochs and ahead from the 9th,
    average pooling behind max pooling (in test and train accuracy), BatchNorm six points
    ahead and ahead from the first epoch; the torch backend within 0.02 points of scratch on k5
    and 0.16 on the tutorial's network, 0.24 on deep. New runs that say otherwise must come with new words."""
    runs = {r["config"]["arch"]: r["epochs"] for _, r in D.lesson_runs() if r["config"]["backend"] == "scratch"}
    final = {a: ep[-1] for a, ep in runs.items()}
    tut = final["tutorial"]["test_acc"]
    assert 0.09 < tut - final["k1"]["test_acc"] < 0.11                       # "cost ten points"
    assert all(k["test_acc"] > t["test_acc"] for k, t in zip(runs["k5"], runs["tutorial"]))  # "at every epoch"
    assert 0.025 < final["k5"]["test_acc"] - tut < 0.03                       # "almost three points"
    assert abs(final["k5"]["test_acc"] - final["deep"]["test_acc"]) < 0.01    # "within a point of k5"
    assert final["k5"]["train_acc"] > final["tutorial"]["train_acc"] + 0.05
    assert min(runs["k5"], key=lambda e: e["test_loss"]) is runs["k5"][-1]    # "lowest at the last epoch"
    torch_runs = {r["config"]["arch"]: r["epochs"] for _, r in D.lesson_runs() if r["config"]["backend"] == "torch"}
    torch = {a: ep[-1]["test_acc"] for a, ep in torch_runs.items()}
    assert abs(torch["k5"] - final["k5"]["test_acc"]) < 0.001                # "agree to 0.02 points"
    assert abs(torch["tutorial"] - tut) < 0.002                               # "to 0.16 on the tutorial's"
    assert abs(torch["deep"] - final["deep"]["test_acc"]) < 0.003             # "0.24 points from scratch"
    assert all(d["test_acc"] < t["test_acc"] for d, t in zip(torch_runs["deep"][:8], runs["tutorial"][:8]))
    assert 0.815 < torch_runs["deep"][-1]["train_acc"] < 0.825                 # "train accuracy 82.1%"
    assert tut - final["avgpool"]["test_acc"] > 0.01                          # beyond a point of noise
    assert final["avgpool"]["train_acc"] < final["tutorial"]["train_acc"]     # "learning less"
    assert all(a["test_acc"] < t["test_acc"] for a, t in zip(runs["avgpool"][4:], runs["tutorial"][4:]))
    deep, tutorial = runs["deep"], runs["tutorial"]                # "behind for 8 epochs, ahead from the 9th"
    assert all(d["test_acc"] < t["test_acc"] for d, t in zip(deep[:8], tutorial[:8]))
    assert all(d["test_acc"] > t["test_acc"] for d, t in zip(deep[8:], tutorial[8:]))
    assert 0.015 < final["deep"]["test_acc"] - tut < 0.02 and final["deep"]["train_acc"] > final["tutorial"]["train_acc"] + 0.05
    assert 0.055 < final["bn"]["test_acc"] - tut < 0.065                      # "adds six points"
    assert runs["bn"][0]["test_acc"] > runs["tutorial"][0]["test_acc"] + 0.1  # "ahead from the first epoch"


def test_the_lessons_prose_still_describes_the_committed_runs():
    """docs/networks-and-presets.md reads the lessons table in words (k1 and deep behind the
    tutorial, k5 a little ahead, average and max pooling within a point); new runs that say
    otherwise must come with new words."""
    from scratchcnn.compare import load_run
    acc = {p.name: load_run(str(p))["epochs"][-1]["test_acc"]
           for p in (ROOT / "docs" / "results" / "lessons-10k").iterdir()}
    assert acc["k1"] < acc["tutorial"] and acc["deep"] < acc["tutorial"] and acc["k5"] > acc["tutorial"]
    assert abs(acc["avgpool"] - acc["tutorial"]) < 0.01
