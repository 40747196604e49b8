"""The benchmark harness: its statistics on data with known answers, the README generator on
small fake results and on the committed ones, the machine probes' code, and one tiny worker."""
import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks import _common as C
from benchmarks import _report as R
from benchmarks import _stats as S
from benchmarks import readme as RM
from benchmarks._workload import FC3_WEIGHT_BYTES, MFLOP_PER_IMAGE, STREAM_BYTES

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- statistics

def test_centre_is_the_median_of_per_round_medians():
    rounds = [[1.0, 1.0, 100.0], [2.0, 2.0, 2.0, 9.0], [3.0, 50.0, 3.0]]
    # per-round medians 1, 2, 3: a slow step in every round does not move it; the pooled median would be 2.5
    assert S.centre(rounds) == 2.0
    assert np.median(sum(rounds, [])) == 2.5
    with pytest.raises(ValueError):
        S.centre([[1.0], []])


def test_bootstrap_interval_of_a_constant_ratio_is_exact_even_when_the_machine_drifts():
    """Round k of both configurations ran at the same time; the resampling must keep them paired.
    Here the machine slows down 1x..3x from round to round but config a always takes 2x as long as b:
    the paired interval is exactly [2, 2]. Unpaired resampling would give a wide one."""
    rng = np.random.default_rng(1)
    drift = np.linspace(1.0, 3.0, 12)
    b = [list(d * (1 + 0.01 * rng.random(5))) for d in drift]
    a = [[2 * t for t in r] for r in b]
    ratio, lo, hi = S.bootstrap_ratio(a, b, n_boot=2000, seed=3)
    assert ratio == pytest.approx(2.0) and lo == pytest.approx(2.0) and hi == pytest.approx(2.0)


def test_bootstrap_interval_matches_its_definition():
    """Known answer: a against constant b; round medians 1..9 of a. The interval must be the 2.5/97.5
    percentiles of the medians of resampled rounds, computed here independently, and contain the ratio."""
    a = [[float(m), float(m)] for m in range(1, 10)]
    b = [[1.0]] * 9
    ratio, lo, hi = S.bootstrap_ratio(a, b, n_boot=3000, seed=7)
    assert ratio == 5.0
    idx = np.random.default_rng(7).integers(0, 9, size=(3000, 9))
    expected = np.percentile(np.median(np.arange(1.0, 10.0)[idx], axis=1), [2.5, 97.5])
    assert (lo, hi) == pytest.approx(tuple(expected))
    assert 2.0 <= lo < 5.0 < hi <= 8.0
    with pytest.raises(ValueError):
        S.bootstrap_ratio(a, b[:8])


def test_summary_figures():
    s = S.summary([[0.010, 0.012], [0.011, 0.020]], batch=32, flop_per_image=MFLOP_PER_IMAGE * 1e6)
    # round medians 11 ms and 15.5 ms -> centre 13.25 ms
    assert s["median_ms"] == pytest.approx(13.25)
    assert s["min_ms"] == pytest.approx(10.0) and s["n"] == 4 and s["rounds"] == 2
    assert s["images_per_s"] == pytest.approx(32 / 0.01325)
    assert s["gflops"] == pytest.approx(MFLOP_PER_IMAGE * 1e6 * 32 / 0.01325 / 1e9)


class _FakeWorker:
    """Stands in for C.Worker: replies with a step time that encodes who ran and when."""
    log = []

    def __init__(self, key, ms):
        self.key, self.ms, self.settles = key, ms, 0

    def call(self, **msg):
        _FakeWorker.log.append(self.key)
        return {"times": [self.ms / 1e3] * msg["n"]}

    def settle(self):
        self.settles += 1


def test_rounds_run_every_worker_once_per_round_in_a_seeded_random_order():
    def run(seed):
        _FakeWorker.log = []
        workers = {k: _FakeWorker(k, ms) for k, ms in (("a", 1), ("b", 2), ("c", 3), ("d", 4))}
        times, orders = C.run_rounds(workers, 12, lambda k: {"cmd": "steps", "n": 2}, seed)
        return workers, times, orders, list(_FakeWorker.log)
    workers, times, orders, log = run(seed=11)
    assert log == [k for order in orders for k in order]                    # the order is the one recorded
    assert all(sorted(order) == ["a", "b", "c", "d"] for order in orders)   # each worker once per round
    assert len({tuple(o) for o in orders}) > 6                              # not one fixed order
    assert len({o[0] for o in orders}) == 4                                 # nobody always goes first
    assert times["c"] == [[0.003, 0.003]] * 12
    assert all(w.settles == 12 for w in workers.values())
    assert run(seed=11)[2] == orders and run(seed=12)[2] != orders          # seeded


def test_thread_counts_go_from_all_cores_to_one():
    assert C.thread_counts(2) == [2, 1]
    assert C.thread_counts(6) == [6, 5, 4, 3, 2, 1]
    assert C.thread_counts(16) == [16, 8, 4, 2, 1]
    assert C.thread_counts(12) == [12, 8, 4, 2, 1]


def test_stream_bytes_count_fc3s_16_mib_arrays():
    assert FC3_WEIGHT_BYTES == 8192 * 512 * 4 == 16 * 2**20
    assert STREAM_BYTES["fc3 backward (with its SGD update)"] == 6 * 16 * 2**20


def test_nominal_peak():
    # 2 cores x 2 pipes x 16 lanes x 2 FLOP x 4.2 GHz
    assert C.nominal_peak(2, 4.2) == pytest.approx(537.6)


# ---------------------------------------------------------------- tables and the README section

def _fake_step():
    """A small step result as benchmarks.step writes it: 3 rounds of 2 steps, 1 thread count."""
    def row(config, ms, sp=None):
        r = {"median_ms": ms, "p10_ms": ms * 0.9, "p90_ms": ms * 1.2, "min_ms": ms * 0.8, "n": 6, "rounds": 3,
             "images_per_s": 32 / ms * 1e3, "gflops": MFLOP_PER_IMAGE * 32 / ms, "config": config, "threads": 2,
             "device": "cuda" if config == "torch-cuda" else "cpu", "rounds_s": [[ms / 1e3] * 2] * 3}
        if r["device"] == "cpu":
            r["fraction_of_measured_peak"] = r["gflops"] / 500.0
        if sp:
            r["speedup"] = {"ratio": sp[0], "low": sp[1], "high": sp[2]}
            r["compared_with"] = R.counterpart(config)
        return r
    results = {"scratch@2": row("scratch", 20.0), "scratch+nodrop@2": row("scratch+nodrop", 16.0),
               "torch@2": row("torch", 50.0, (2.5, 2.3, 2.7)), "torch+nodrop@2": row("torch+nodrop", 40.0, (2.5, 2.4, 2.6)),
               "torch+channels_last@2": row("torch+channels_last", 44.0, (2.2, 2.1, 2.3)),
               "torch+compile@2": row("torch+compile", 48.0, (2.4, 2.2, 2.6)),
               "torch-cuda@2": row("torch-cuda", 2.0, (0.1, 0.09, 0.11))}
    results["torch+compile@2"]["compile_s"] = 14.6
    return {"benchmark": "step", "date": "2026-11-30 01:00:00",
            "machine": {"cpu": "AMD EPYC", "logical_cpus": 2},
            "quiet_check": {"forced": False}, "load_during_run": {"disturbed": False, "others_cpu_share": 0.01},
            "results": results, "rounds": 3, "steps_per_round": 2, "seed": 5,
            "machine_limits": {"2": {"fma_gflops": 500.0, "triad_gbs": 40.0, "copy_gbs": 45.0}},
            "headline": {"threads": 2, "best_torch": "torch+channels_last",
                         "vs_tutorial": {"config": "torch", "ratio": 2.5, "low": 2.3, "high": 2.7},
                         "vs_best": {"config": "torch+channels_last", "ratio": 2.2, "low": 2.1, "high": 2.3}}}


def test_step_table_names_the_best_pytorch_configuration_and_gives_no_cpu_share_for_the_gpu():
    table = R.step_table(_fake_step()).splitlines()
    best = [ln for ln in table if "best PyTorch configuration" in ln]
    assert len(best) == 1 and best[0].startswith("| torch, channels_last **(best")
    gpu = next(ln for ln in table if ln.startswith("| torch on the GPU"))
    assert "| GPU |" in gpu and "- (GPU)" in gpu and "%" not in gpu
    nodrop = next(ln for ln in table if ln.startswith("| torch without dropout"))
    assert "2.50x (2.40-2.60) vs scratch (fused) without dropout" in nodrop
    assert "(compile: 15 s, not timed)" in next(ln for ln in table if ln.startswith("| torch, torch.compile"))
    assert R.best_torch(_fake_step())["config"] == "torch+channels_last"      # the GPU row is never "best"


def test_readme_section_carries_the_headline_interval_machine_and_date(tmp_path):
    (tmp_path / "step.json").write_text(json.dumps(_fake_step()))
    text = RM.generate(RM.load(tmp_path))
    assert ("scratch takes 20.0 ms, 2.50x faster than the tutorial's PyTorch loop (95% interval 2.30-2.70x), "
            "and 2.20x faster than the best PyTorch configuration measured, torch, channels_last "
            "(95% interval 2.10-2.30x)") in text
    assert "2 vCPUs of AMD EPYC, 2026-11-30 (quiet before and during the run)" in text
    assert "2 thread(s): 500 GFLOP/s, STREAM triad 40 GB/s" in text


def test_readme_section_marks_forced_results_and_reads_results_without_intervals(tmp_path):
    old = _fake_step()
    old["quiet_check"]["forced"] = True
    del old["headline"]
    for r in old["results"].values():
        r.pop("speedup", None)
    old["results"]["torch-nodrop@2"] = old["results"].pop("torch+nodrop@2")        # the harness's old name
    (tmp_path / "step.json").write_text(json.dumps(old))
    text = RM.generate(RM.load(tmp_path))
    assert "FORCED: the machine was busy before the run" in text
    assert "2.50x faster than the tutorial's PyTorch loop (no interval" in text
    assert "| torch without dropout | 2 | 40.00 |" in text


def test_step_history_records_each_runs_headline_and_the_readme_gives_the_range(tmp_path):
    from benchmarks import step as ST
    for k, (tut, low, best) in enumerate([(2.5, 2.3, 2.2), (3.1, 2.9, 2.6)]):
        run = _fake_step()
        run["date"] = f"2026-11-30 0{k}:00:00"
        run["headline"]["vs_tutorial"].update(ratio=tut, low=low)
        run["headline"]["vs_best"]["ratio"] = best
        run["results"]["torch@1"] = {**run["results"]["torch@2"], "threads": 1, "rounds_s": [[0.05] * 2] * 3,
                                     "speedup": {"ratio": 2.0 + k, "low": 1.9 + k, "high": 2.1 + k}}
        run["results"]["torch+malloc@1"] = {**run["results"]["torch@1"], "config": "torch+malloc",
                                            "median_ms": 40.0, "rounds_s": [[0.04] * 2] * 3}
        run["results"]["scratch@1"] = {**run["results"]["scratch@2"], "threads": 1, "rounds_s": [[0.02] * 2] * 3}
        (tmp_path / "step.json").write_text(json.dumps(run))
        assert ST.append_history(tmp_path, run) == k + 1
    hist = json.loads((tmp_path / ST.HISTORY).read_text())
    assert [h["date"] for h in hist] == ["2026-11-30 00:00:00", "2026-11-30 01:00:00"]
    assert hist[1]["scratch_ms"] == 20.0 and hist[1]["clean"] and hist[1]["best_torch"] == "torch+channels_last"
    text = RM.generate(RM.load(tmp_path))
    assert ("over the 2 recorded run(s) of this benchmark on this kind of CPU (2 of them quiet throughout; "
            "`benchmarks/results/step_history.json`), scratch's step ranged 20.0-20.0 ms and was "
            "2.50-3.10x (lowest interval bound 2.30x) faster than the tutorial's PyTorch loop, "
            "2.20-2.60x (lowest interval bound 2.10x) faster than the best PyTorch configuration of each run, "
            "and at 1 thread 2.00-3.00x (lowest interval bound 1.90x) faster than the tutorial's loop and "
            "2.00-2.00x (lowest interval bound 2.00x) faster than the best configuration measured at 1 thread") in text
    assert hist[0]["vs_best_1_thread"]["config"] == "torch+malloc"
    other = [{**hist[0], "cpu": "Intel Xeon"}]                   # runs on another CPU are not mixed in
    assert "records no run on AMD EPYC" in RM.history_line(other, _fake_step())
    # nor runs on another generation behind the same model name (a Zen 3 and a Zen 5 both say "AMD EPYC")
    zen5, zen3 = _fake_step(), _fake_step()
    zen5["machine"].update(cpu_family="26", cpu_model="2")
    zen3["machine"].update(cpu_family="25", cpu_model="1")
    zen3["headline"]["vs_best"]["ratio"] = 1.4
    both = [ST.history_entry(zen5), ST.history_entry(zen3)]
    assert [(h["cpu_family"], h["cpu_model"]) for h in both] == [("26", "2"), ("25", "1")]
    line = RM.history_line(both, zen3)
    assert "over the 1 recorded run(s) of this benchmark on this kind of CPU (1 of them" in line
    assert "1.40-1.40x" in line and "2.20" not in line
    assert "records no run on AMD EPYC (family 19 model 17)" in RM.history_line(
        both, {"machine": {"cpu": "AMD EPYC", "cpu_family": "19", "cpu_model": "17"}})
    assert R.machine_line(zen3) == "2 vCPUs of AMD EPYC (family 25 model 1)"


def test_epoch_benchmark_summary_table_and_readme_section(tmp_path):
    from benchmarks import epoch as EP
    def run(loop, ev, wall):
        return {"loop_s": loop, "eval_s": ev, "epoch_s": loop + ev, "wall_s": wall, "images": 50000, "test_acc": 0.5}
    runs = {"scratch": [run(15.0, 1.0, 20.0), run(16.0, 1.0, 21.0), run(15.5, 1.0, 22.0)],
            "torch": [run(45.0, 3.0, 52.0), run(51.0, 3.0, 57.0), run(46.5, 3.0, 53.0)]}
    rows = EP.summarise(runs, seed=1)
    sc, to = rows
    assert sc["epoch_s"] == 16.5 and sc["images_per_s"] == pytest.approx(50000 / 15.5) and "speedup" not in sc
    assert to["epoch_s"] == 49.5 and to["wall_s"] == 53.0
    assert to["speedup"]["epoch_s"]["ratio"] == pytest.approx(3.0)      # 49.5 / 16.5
    assert to["speedup"]["wall_s"]["ratio"] == pytest.approx(53 / 21)
    assert to["speedup"]["epoch_s"]["low"] <= 3.0 <= to["speedup"]["epoch_s"]["high"]
    ep = {"benchmark": "epoch", "date": "2026-11-30 02:00:00", "machine": {"cpu": "AMD EPYC", "logical_cpus": 2},
          "quiet_check": {"forced": False}, "load_during_run": {"disturbed": False}, "rounds": 3,
          "dataset": "folder cifar-jpg", "recipe": "tutorial", "train_images": 50000, "rows": rows}
    table = R.epoch_table(ep)
    assert "| torch | 46.5 | 3.0 | 49.5 | 1075 | 53.0 | 3.00x (" in table
    (tmp_path / "step.json").write_text(json.dumps(_fake_step()))
    (tmp_path / "epoch.json").write_text(json.dumps(ep))
    text = RM.generate(RM.load(tmp_path))
    assert "`scratchcnn train --recipe tutorial --epochs 1` per backend on folder cifar-jpg (50,000" in text
    assert table in text


def test_epoch_benchmark_runs_the_real_cli(tmp_path):
    from types import SimpleNamespace
    from benchmarks import epoch as EP
    args = SimpleNamespace(data_dir=None, recipe="tutorial", train_seed=0, arch="tutorial")
    r = EP.run_once("scratch", tmp_path / "run", args, {"train": 64, "test": 32})
    assert r["images"] == 64 and r["epoch_s"] == pytest.approx(r["loop_s"] + r["eval_s"])
    assert r["wall_s"] > r["epoch_s"] > 0
    cmd = EP.train_command("torch", tmp_path, SimpleNamespace(data_dir=Path("/d"), recipe="improved", train_seed=3,
                                                              arch="vgg"))
    assert cmd[cmd.index("--dataset") + 1:cmd.index("--dataset") + 4] == ["folder", "--data-dir", "/d"]
    assert "--train-size" not in cmd and cmd[cmd.index("--recipe") + 1] == "improved"
    assert cmd[cmd.index("--arch") + 1] == "vgg"
    # without --data-dir: the synthetic splits at sizes scratchcnn train accepts (it refused 50,000)
    from scratchcnn.data import check_sizes
    cmd = EP.train_command("scratch", tmp_path, SimpleNamespace(data_dir=None, recipe="tutorial", train_seed=0,
                                                                arch="vgg"))
    n_train, n_test = int(cmd[cmd.index("--train-size") + 1]), int(cmd[cmd.index("--test-size") + 1])
    assert (n_train, n_test) == (20000, 2000)
    check_sizes("synthetic", n_train, n_test, 32)


def test_readme_write_replaces_only_the_section():
    doc = f"# title\n\n## Speed\n\n{RM.BEGIN}\nold figures\n{RM.END}\n\n## After\n"
    new = RM.write(doc, "new figures")
    assert new == f"# title\n\n## Speed\n\n{RM.BEGIN}\nnew figures\n{RM.END}\n\n## After\n"
    assert RM.section_of(new) == "new figures"
    with pytest.raises(ValueError):
        RM.write("# no markers\n", "x")


def test_readme_check_fails_on_a_hand_edited_figure(tmp_path, capsys):
    (tmp_path / "step.json").write_text(json.dumps(_fake_step()))
    readme = tmp_path / "README.md"
    readme.write_text(f"## Speed\n\n{RM.BEGIN}\n{RM.END}\n")
    assert RM.main(["--write", "--results", str(tmp_path), "--readme", str(readme)]) == 0
    assert RM.main(["--check", "--results", str(tmp_path), "--readme", str(readme)]) == 0
    readme.write_text(readme.read_text().replace("2.50x faster", "3.00x faster"))
    assert RM.main(["--check", "--results", str(tmp_path), "--readme", str(readme)]) == 1
    assert "differs" in capsys.readouterr().err


def test_the_readme_speed_section_is_generated_from_the_committed_results():
    """A figure typed by hand into docs/speed.md's Speed section fails here. After new results:
    python -m benchmarks.readme --write (make bench does it)."""
    generated = RM.generate(RM.load(RM.RESULTS))
    assert RM.README == ROOT / "docs" / "speed.md"
    assert RM.section_of((ROOT / "docs" / "speed.md").read_text()) == generated


def test_rows_of_a_fake_step_keep_every_row():
    step = _fake_step()
    rows = R.rows(copy.deepcopy(step))
    assert [r["key"] for r in rows] == list(step["results"])
    assert R.config_of("torch-nodrop@1") == ("torch+nodrop", 1)


# ---------------------------------------------------------------- the probes' code and one real worker

def test_stream_kernels_compute_copy_and_triad():
    from benchmarks._peak import stream_copy, stream_triad
    rng = np.random.default_rng(0)
    b, c = rng.random(1000, dtype=np.float32), rng.random(1000, dtype=np.float32)
    a = np.zeros_like(b)
    stream_copy(a, b)
    assert np.array_equal(a, b)
    stream_triad(a, b, c, np.float32(3.0))
    np.testing.assert_allclose(a, b + np.float32(3.0) * c, rtol=1e-6)


def test_fma_peak_runs_independent_512_bit_chains():
    from benchmarks._peak import CHAINS, fma_flops, fma_instructions, fma_peak
    out = fma_peak(10, 2)
    # each chain: a <- a * 0.999999 + 1e-7, from start values t + 0.1 j; summed over 16 chains
    starts = np.array([t + 0.1 * j for t in range(2) for j in range(CHAINS)]).reshape(2, CHAINS)
    expect = starts * 0.999999 ** 10 + 1e-7 * sum(0.999999 ** k for k in range(10))
    np.testing.assert_allclose(out, np.repeat(expect.sum(axis=1)[:, None], 16, axis=1), rtol=1e-5)
    assert fma_flops(10, 2) == 2 * 10 * CHAINS * 16 * 2
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else ""
    if " avx512f" not in flags:
        pytest.skip("no AVX-512 on this CPU: the 512-bit vectors are split, and that is expected")
    fma = fma_instructions()
    assert fma["ymm"] == fma["xmm"] == 0 and fma["zmm"] >= CHAINS and fma["zmm"] % CHAINS == 0


def test_without_avx512_the_peak_probe_runs_chains_that_fit_16_ymm_registers():
    from benchmarks._peak import NARROW_CHAINS, fma_flops, fma_instructions, fma_peak_avx2, peak_kernel
    out = fma_peak_avx2(10, 2)
    starts = np.array([t + 0.1 * j for t in range(2) for j in range(NARROW_CHAINS)]).reshape(2, NARROW_CHAINS)
    expect = starts * 0.999999 ** 10 + 1e-7 * sum(0.999999 ** k for k in range(10))
    np.testing.assert_allclose(out, np.repeat(expect.sum(axis=1)[:, None], 16, axis=1), rtol=1e-5)
    assert fma_flops(10, 2, NARROW_CHAINS) == 2 * 10 * NARROW_CHAINS * 16 * 2
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else ""
    if " avx512f" in flags:
        assert peak_kernel()[1] == 16
        pytest.skip("this CPU has AVX-512: the 16-chain probe runs")
    assert peak_kernel() == (fma_peak_avx2, NARROW_CHAINS)
    fma = fma_instructions()
    # 6 chains of 16 floats = 12 ymm FMAs per iteration (or a multiple, unrolled), nothing spilled to zmm/xmm
    assert fma["zmm"] == fma["xmm"] == 0 and fma["ymm"] >= 2 * NARROW_CHAINS and fma["ymm"] % (2 * NARROW_CHAINS) == 0


@pytest.mark.slow
@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK),
                    reason="the peak-RSS reset needs a writable /proc/self/clear_refs (Linux)")
def test_a_worker_times_steps_and_measures_training_memory():
    w = C.Worker("scratch+nodrop", 1)
    try:
        assert w.info["config"] == "scratch+nodrop" and w.info["threads"] == 1
        mem = w.call(cmd="memory", n=1, batch=4)          # first: the momentum buffers do not exist yet
        # training must at least touch the 16 MiB fc3 momentum buffer (the old ru_maxrss figure could not)
        assert mem["training_adds_mib"] >= 16
        times = w.call(cmd="steps", n=2, batch=4)["times"]
        assert len(times) == 2 and all(t > 0 for t in times)
        w.settle()
        assert w.settles == 1 and w.spin_cpu_s >= 0
        with pytest.raises(RuntimeError, match="unknown command"):
            w.call(cmd="nonsense")
    finally:
        w.close()


def test_the_load_monitor_counts_a_reaped_childs_cpu_as_the_benchmarks_own():
    import subprocess
    import sys
    mon = C.LoadMonitor().start()
    subprocess.run([sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass"],
                   check=True)
    rec = mon.stop(0.0)                      # told nothing about the child: it must find it itself
    assert rec["benchmark_cpu_s"] >= 1.0     # without it, the child's second counted as another process's


# ---------------------------------------------------------------- every preset network
def test_training_flops_of_a_preset_count_each_layer_with_weights_by_hand():
    from benchmarks.presets import train_flops_per_image
    from scratchcnn.architecture import load
    assert train_flops_per_image(load("tutorial", 10)) == pytest.approx(MFLOP_PER_IMAGE * 1e6)
    # k1: conv1 3->32 and conv2 32->32 with 1x1 kernels on 32x32, fc3 8192->512, fc4 512->10
    conv1, conv2, fc3, fc4 = 32 * 32 * 32 * 3, 32 * 32 * 32 * 32, 8192 * 512, 512 * 10
    # 2 FLOPs per multiply-add; forward + weight gradient everywhere, input gradient except for conv1
    assert train_flops_per_image(load("k1", 10)) == 2 * (2 * conv1 + 3 * (conv2 + fc3 + fc4))


def _fake_preset(ms):
    times = {c: [[t / 1e3] * 2 for _ in range(4)] for c, t in ms.items()}
    return times


def test_preset_summary_picks_the_faster_torch_row_and_the_table_shows_its_ratio():
    from benchmarks import presets as P
    times = _fake_preset({"scratch": 50.0, "scratch-layers": 100.0, "torch": 80.0, P.BEST: 60.0})
    rec = P.summarise("k5", times, flop_per_image=100e6, peak_gflops=400.0)
    assert rec["torch_best"] == P.BEST
    sp = rec["speedup"]
    assert sp[f"scratch vs {P.BEST}"]["ratio"] == pytest.approx(60 / 50)
    assert sp["scratch-layers vs torch"]["ratio"] == pytest.approx(80 / 100)
    # 32 images x 100 MFLOP in 50 ms = 64 GFLOP/s = 16% of a 400 GFLOP/s peak
    assert rec["rows"]["scratch"]["fma_peak_share"] == pytest.approx(64 / 400)
    rec.update(mflop_per_image=100.0, scratch_path="layers", layer_profile={"conv2 backward": 3.0, "sgd": 1.0},
               memory={"scratch": {"peak_during_training_mib": 300.0}, "torch": {"peak_during_training_mib": 900.0}})
    data = {"presets": {"k5": rec}}
    line = P.table(data).splitlines()[2]
    assert line.startswith("| k5 | 100 | layers | 50.0 | 100.0 | 80.0 | 60.0 | 1.20x (1.20-1.20) | 1.60x")
    assert "| 16% | 300 / 900 |" in line
    assert "conv2 backward 75%, sgd 25%" in P.profile_table(data)


def test_the_presets_benchmark_refuses_an_unknown_preset_in_one_line():
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-m", "benchmarks.presets", "--presets", "tutorial,k9", "--force"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "unknown preset(s) k9" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.slow
def test_a_worker_runs_any_preset_on_the_path_scratchcnn_train_would_choose():
    w = C.Worker("scratch+nodrop+arch=vgg", 1)
    try:
        assert w.info["arch"] == "vgg" and w.info["path"] == "layers"     # the fused path has no 64 channels
        assert len(w.call(cmd="steps", n=1, batch=4)["times"]) == 1
    finally:
        w.close()
    w = C.Worker("scratch+nodrop+arch=avgpool", 1)
    try:
        assert w.info["arch"] == "avgpool" and w.info["path"] == "fused"
        assert len(w.call(cmd="steps", n=1, batch=4)["times"]) == 1
        stages = w.call(cmd="layer_profile", n=1, batch=4)["stages"]
        assert {"conv1 forward", "conv1 backward", "fc4 backward", "sgd"} <= set(stages)
    finally:
        w.close()
    t = C.Worker("torch+nodrop+arch=vgg", 1)
    try:
        assert t.info["arch"] == "vgg" and len(t.call(cmd="steps", n=1, batch=4)["times"]) == 1
    finally:
        t.close()


def test_the_speed_section_shows_the_per_preset_table_when_presets_json_exists(tmp_path):
    from benchmarks import presets as P
    (tmp_path / "step.json").write_text(json.dumps(_fake_step()))
    assert "Every preset network" not in RM.generate(RM.load(tmp_path))
    rec = P.summarise("vgg", _fake_preset({"scratch": 90.0, "scratch-layers": 90.0, "torch": 45.0, P.BEST: 60.0}),
                      flop_per_image=200e6, peak_gflops=300.0)
    rec.update(mflop_per_image=200.0, scratch_path="layers", layer_profile={"conv2 backward": 1.0}, memory=None)
    data = {"date": "2026-12-03 08:00:00", "threads": 2, "rounds": 4, "steps_per_round": 2,
            "quiet_check": {"forced": True}, "presets": {"vgg": rec}}
    (tmp_path / "presets.json").write_text(json.dumps(data))
    text = RM.generate(RM.load(tmp_path))
    assert "**Every preset network** (`python -m benchmarks.presets`, 2 threads, 4 interleaved rounds" in text
    assert "FORCED" in text.split("**Every preset network**")[1].split("\n")[0]
    # torch's tutorial loop (45 ms) is the best here: scratch (90 ms) is half as fast
    assert "| vgg | 200 | layers | 90.0 | 90.0 | 45.0 | 45.0 | 0.50x (0.50-0.50) | 0.50x (0.50-0.50) |" in text
    assert "| vgg | conv2 backward 100% |" in text


def test_the_inference_benchmark_refuses_an_unknown_preset_in_one_line():
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-m", "benchmarks.inference", "--presets", "tutorial,k9", "--force"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "--presets: unknown network(s) k9; choose from tutorial, k1" in run.stderr
    assert "Traceback" not in run.stderr


def test_the_inference_table_names_each_network_and_the_path_scratch_ran():
    def row(config, mode, ms, arch, path=None, speedup=None):
        return {"config": config, "mode": mode, "median_ms": ms, "images_per_s": 500 / ms * 1e3, "arch": arch,
                "path": path, "speedup": speedup}
    tutorial_only = {"batch": 500, "rows": [row("scratch", "no_grad", 100.0, "tutorial", "fused"),
                                            row("torch", "no_grad", 200.0, "tutorial", None,
                                                {"ratio": 2.0, "low": 1.9, "high": 2.1})]}
    lines = R.inference_table(tutorial_only).splitlines()
    assert lines[0].startswith("| backend | mode | median ms per batch of 500 |")
    assert lines[1] == "|---|---|---|---|---|"
    assert lines[2] == "| scratch (fused_predict) | no_grad | 100.0 | 5000 | - |"
    assert lines[3] == "| torch | no_grad | 200.0 | 2500 | 2.00x (1.90-2.10) |"
    presets = {"batch": 500, "rows": tutorial_only["rows"] + [
        row("scratch+arch=vgg", "no_grad", 400.0, "vgg", "layers"),
        row("torch+arch=vgg", "inference_mode", 500.0, "vgg", None, {"ratio": 1.25, "low": 1.2, "high": 1.3})]}
    lines = R.inference_table(presets).splitlines()
    assert lines[0].startswith("| network | backend | mode |") and lines[1] == "|---|---|---|---|---|---|"
    assert lines[4] == "| vgg | scratch, numba layers | no_grad | 400.0 | 1250 | - |"
    assert lines[5] == "| vgg | torch | inference_mode | 500.0 | 1000 | 1.25x (1.20-1.30) |"
