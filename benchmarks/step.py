"""Training-step benchmark: scratch (fused) vs PyTorch CPU configurations, interleaved, 1..all threads.

    python -m benchmarks.step [--force] [--quick] [--rounds 16] [--steps-per-round 10] [--seed S]
                              [--threads N | --thread-counts 16,1] [--only scratch,torch,torch-cuda]
                              [--no-compile] [--no-settle] [--openblas-default] [--omp-passive]

On a machine with a GPU, the GPU rows alone (with scratch and the tutorial's
loop on all cores beside them) take a few minutes:

    python -m benchmarks.step --thread-counts $(nproc) --only scratch,torch,torch-cuda --out benchmarks/results/gpu
    python -m benchmarks.inference --out benchmarks/results/gpu

One worker process per configuration and thread count (numba's and torch's
thread pools never share a process). At each thread count, from all cores
down to 1 (benchmarks/README.md), the workers first warm up (numba kernels
from the cache, torch's first steps, torch.compile's compilation, which is
timed and reported apart), then take turns in ``--rounds`` rounds of
``--steps-per-round`` steps, in a fresh random order each round, each
worker's idle threads settling before the next starts. A step is forward +
backward + SGD-momentum update of one batch of 32 random images, dropout on
except in the "+nodrop" rows.

At all cores: scratch, scratch without dropout, the tutorial's PyTorch loop,
torch without dropout, and torch with channels_last, SGD(fused=True), both,
torch.compile, all three, glibc's allocator tuned ("+malloc", see
``_common.MALLOC_ENV``), and channels_last + fused SGD + malloc; below all
cores: the first four and torch+malloc. Each row's time
is the median of per-round medians, and each ratio to scratch has a paired
bootstrap 95% interval over rounds (benchmarks._stats). The FMA peak and the
memory bandwidth are measured at each thread count (benchmarks._peak).
"""
import os
import time

from benchmarks import _common as C
from benchmarks import _report as R
from benchmarks import _stats as S
from benchmarks._workload import MFLOP_PER_IMAGE, STREAM_BYTES, stage_flops

ALL_CORES_CONFIGS = ("scratch", "scratch+nodrop", "torch", "torch+nodrop", "torch+channels_last", "torch+fused_sgd",
                     "torch+channels_last+fused_sgd", "torch+compile", "torch+channels_last+fused_sgd+compile",
                     "torch+malloc", "torch+channels_last+fused_sgd+malloc")
SWEEP_CONFIGS = ("scratch", "scratch+nodrop", "torch", "torch+nodrop", "torch+malloc")
BATCH = 32


def configs_for(threads, all_cores, args, cuda):
    """[(key, config, env)] measured at ``threads``."""
    names = ALL_CORES_CONFIGS if threads == all_cores else SWEEP_CONFIGS
    if args.no_compile:
        names = tuple(n for n in names if "compile" not in n.split("+"))
    out = [(f"{n}@{threads}", n, None) for n in names]
    if threads == all_cores:
        if args.openblas_default:
            out.append((f"scratch-openblas-default@{threads}", "scratch",
                        {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None}))
        if args.omp_passive:
            out.append((f"scratch-omp-passive@{threads}", "scratch", {"OMP_WAIT_POLICY": "PASSIVE"}))
        if cuda:
            out.append((f"torch-cuda@{threads}", "torch-cuda", None))
    if args.only:
        out = [c for c in out if c[1] in args.only or c[0].rsplit("@", 1)[0] in args.only]
    return out


def run(args):
    quiet = C.check_quiet(args.force)
    rounds, per_round = (3, 3) if args.quick else (args.rounds, args.steps_per_round)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    threads_list = sorted(args.thread_counts, reverse=True) if args.thread_counts else C.thread_counts(args.threads)
    import torch
    cuda = torch.cuda.is_available()
    results, infos, machine, spin, orders = {}, {}, {}, {}, {}
    monitor, workers_cpu = C.LoadMonitor().start(), 0.0
    for th in threads_list:
        print(f"measuring the FMA peak and the memory bandwidth at {th} thread(s) ...", flush=True)
        machine[th] = C.probe_machine(th, quick=args.quick)
        workers_cpu += machine[th].pop("cpu_s")
        workers = {}
        for key, config, env in configs_for(th, threads_list[0], args, cuda):
            print(f"starting {key} ...", flush=True)
            workers[key] = C.Worker(config, th, env=env)
            infos[key] = workers[key].info
            workers[key].call(cmd="steps", n=5, batch=BATCH)              # warm-up, discarded
            workers[key].settle()
        for w in workers.values():
            w.spin_cpu_s, w.settle_s, w.settles = 0.0, 0.0, 0
        times, orders[th] = C.run_rounds(workers, rounds, lambda k: {"cmd": "steps", "n": per_round, "batch": BATCH},
                                         seed + th, settle=not args.no_settle)
        profile = workers[f"scratch@{th}"].call(cmd="profile", n=max(per_round * 2, 6), batch=BATCH)["stages"]
        spin.update(C.spin_record(workers))
        for key, w in workers.items():
            workers_cpu += w.close()
        for key in workers:
            config = key.rsplit("@", 1)[0]
            s = S.summary(times[key], BATCH, MFLOP_PER_IMAGE * 1e6)
            s.update(config=config, threads=th, rounds_s=times[key],
                     device="cuda" if config.startswith("torch-cuda") else "cpu")
            if s["device"] == "cpu":
                s["fraction_of_measured_peak"] = s["gflops"] / machine[th]["fma_gflops"]
            if "compile_s" in infos[key]:
                s["compile_s"] = infos[key]["compile_s"]
            ref = f"{R.counterpart(config)}@{th}"
            if ref in times and ref != key:
                ratio, lo, hi = S.bootstrap_ratio(times[key], times[ref], seed=seed)
                s["compared_with"] = R.counterpart(config)
                s["speedup"] = {"ratio": ratio, "low": lo, "high": hi}
            results[key] = s
        results[f"scratch@{th}"]["profile_s"] = profile
    during = monitor.stop(workers_cpu)
    data = {"quiet_check": quiet, "load_during_run": during, "results": results, "workers": infos,
            "machine_limits": {str(k): v for k, v in machine.items()}, "cpu_mhz": C.cpu_mhz(),
            "seed": seed, "rounds": rounds, "steps_per_round": per_round, "batch": BATCH,
            "round_orders": {str(k): v for k, v in orders.items()}, "idle_threads": spin,
            "settle": not args.no_settle, "mflop_per_image": MFLOP_PER_IMAGE}
    head = R.headline({"results": results})
    if head and head["scratch"]:
        sc = f"scratch@{head['threads']}"
        data["headline"] = {"threads": head["threads"], "best_torch": head["best"]["config"]}
        for which in ("tutorial", "best"):
            row = head[which]
            if row is None:                         # the tutorial's loop was left out (--only)
                data["headline"][f"vs_{which}"] = None
                continue
            ratio, lo, hi = S.bootstrap_ratio(times_of(results, row["key"]), times_of(results, sc), seed=seed)
            data["headline"][f"vs_{which}"] = {"config": row["config"], "ratio": ratio, "low": lo, "high": hi}
    return data


def times_of(results, key):
    return results[key]["rounds_s"]


def limits_text(data):
    """What the machine can do at each thread count, and how the FMA peak compares with the nominal one:
    threads x 2 FMA pipes x lanes x 2 FLOP x clock, with 16 lanes when the probe compiled to 512-bit (zmm)
    FMAs, else 8."""
    machine = data.get("machine") or C.machine_info()
    first = next(iter(data["machine_limits"].values()))
    lanes = 16 if first["fma_instructions"]["zmm"] else 8
    mhz = data.get("cpu_mhz")
    lines = ["| threads | FMA peak GFLOP/s | nominal at the reported clock | implied clock GHz | STREAM copy GB/s | "
             "STREAM triad GB/s |", "|---|---|---|---|---|---|"]
    for th, m in sorted(data["machine_limits"].items(), key=lambda kv: -int(kv[0])):
        ghz = m["fma_gflops"] / C.nominal_peak(int(th), 1.0, lanes=lanes)
        nominal = f"{C.nominal_peak(int(th), mhz / 1e3, lanes=lanes):.0f}" if mhz else "-"
        lines.append(f"| {th} | {m['fma_gflops']:.0f} | {nominal} | {ghz:.2f} | {m['copy_gbs']:.1f} | "
                     f"{m['triad_gbs']:.1f} |")
    fma = first["fma_instructions"]
    chains = "16 independent chains of 512-bit FMAs" if fma["zmm"] else "6 independent chains of two 256-bit FMAs"
    lines += ["", f"FMA peak: {chains} per thread ({fma['zmm']} zmm, {fma['ymm']} ymm, "
              f"{fma['xmm']} xmm FMA instructions in the compiled loop). Nominal and implied clock assume 2 FMA "
              f"pipes of {lanes} float32 lanes per core (CPU flags: {', '.join(machine.get('fma_flags') or ['?'])}"
              + (f"; /proc/cpuinfo reports {mhz / 1e3:.2f} GHz, on a VM usually the base clock" if mhz else "")
              + "): a peak above the nominal one means the cores ran faster than the reported clock. Bandwidth: "
              f"STREAM copy/triad on arrays of {first['array_mib']} MiB, threads bound to cores."]
    return "\n".join(lines)


def profile_text(data):
    out = []
    for key, r in data["results"].items():
        prof = r.get("profile_s")
        if not prof:
            continue
        th = str(r["threads"])
        lim = data["machine_limits"][th]
        total = sum(prof.values())
        fl = stage_flops(data["batch"])
        out += ["", f"Where the scratch step's time goes ({th} thread(s), median per stage, sum {total * 1e3:.2f} ms):",
                "", "| stage | ms | share | GFLOP/s | % of FMA peak | GB/s | % of triad bandwidth |",
                "|---|---|---|---|---|---|---|"]
        for k, v in sorted(prof.items(), key=lambda kv: -kv[1]):
            g = fl[k] / v / 1e9 if k in fl else None
            b = STREAM_BYTES[k] / v / 1e9 if k in STREAM_BYTES else None
            out.append(f"| {k} | {v * 1e3:.3f} | {100 * v / total:.0f}% | "
                       + (f"{g:.0f} | {100 * g / lim['fma_gflops']:.0f}% | " if g else "| | ")
                       + (f"{b:.1f} | {100 * b / lim['triad_gbs']:.0f}% |" if b else "| |"))
    out += ["", "GB/s: the bytes the stage must move at the least (fc3's 16 MiB weight, its gradient and its "
            "momentum buffer; `benchmarks/_workload.py`) per second. The three together (48 MiB) exceed the "
            "last-level cache, so they stream from memory every step."]
    return "\n".join(out)


def spin_text(data):
    spin = data.get("idle_threads") or {}
    if not spin:
        return ""
    n = sum(v["settles"] for v in spin.values()) or 1
    cpu = sum(v["spin_cpu_s"] for v in spin.values())
    wait = sum(v["settle_s"] for v in spin.values())
    return (f"Idle threads: after a worker's turn its OpenMP threads went on using {1e3 * cpu / n:.1f} ms of CPU "
            f"on average before going to sleep; the next worker started only after that "
            f"({1e3 * wait / n:.1f} ms waited per turn)." if data.get("settle") else
            f"Idle threads: NOT settled between turns (--no-settle); {1e3 * cpu / n:.1f} ms of CPU per turn "
            f"was spent by idle workers while the next one ran.")


def markdown(data):
    parts = [R.step_table(data), ""]
    if data.get("headline") and data["headline"].get("vs_tutorial"):
        h = data["headline"]
        parts.append(f"At {h['threads']} thread(s) scratch is {R.fmt_ratio(h['vs_tutorial'])} faster than the "
                     f"tutorial's PyTorch loop and {R.fmt_ratio(h['vs_best'])} faster than the best PyTorch "
                     f"configuration ({R.label(h['best_torch'])}); 95% intervals from a paired bootstrap over "
                     f"{data['rounds']} rounds.")
    parts += ["", f"Each row: median of per-round medians over {data['rounds']} rounds of "
              f"{data['steps_per_round']} steps (round order random, seed {data['seed']}); p10-p90 over all steps; "
              f"{data['mflop_per_image']:.1f} MFLOP per image. Rows without dropout are compared with scratch "
              f"without dropout, all others with scratch (fused).", "", spin_text(data), "",
              "Machine limits, measured in the same run:", "", limits_text(data), profile_text(data)]
    return "\n".join(parts)


def plot(data):
    def draw(path):
        import matplotlib.pyplot as plt
        rows = R.rows(data)
        med = [r["median_ms"] for r in rows]
        lo = [r["median_ms"] - r["p10_ms"] for r in rows]
        hi = [r["p90_ms"] - r["median_ms"] for r in rows]
        colors = ["tab:blue" if r["config"].startswith("scratch") else "tab:orange" for r in rows]
        fig, ax = plt.subplots(figsize=(max(9, 0.6 * len(rows)), 5))
        ax.bar(range(len(rows)), med, yerr=[lo, hi], color=colors, capsize=3)
        ax.set_xticks(range(len(rows)), [f"{r['config']}@{r['threads']}" for r in rows], rotation=40, ha="right",
                      fontsize=8)
        ax.set_ylabel("ms per step (batch 32), median, p10-p90")
        ax.set_title(f"training step, scratchcnn vs PyTorch: {R.machine_line({'machine': C.machine_info()})}, "
                     f"{time.strftime('%Y-%m-%d')}", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    return draw


def main():
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=16)
    p.add_argument("--steps-per-round", type=int, default=10)
    p.add_argument("--seed", type=int, default=None, help="seed of the round order (default: a fresh one, recorded)")
    p.add_argument("--threads", type=int, default=None,
                   help="the largest thread count (default: every CPU this process may use)")
    p.add_argument("--thread-counts", type=lambda v: [int(t) for t in v.split(",")], default=None,
                   help="measure only these thread counts, e.g. 16 or 2,1 (the largest gets every configuration)")
    p.add_argument("--only", type=lambda v: set(v.split(",")), default=None,
                   help="measure only these configurations, e.g. scratch,torch,torch-cuda (scratch is always kept: "
                        "the ratios need it)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--no-settle", action="store_true",
                   help="do not wait for a worker's idle threads to stop spinning before the next starts")
    p.add_argument("--openblas-default", action="store_true",
                   help="also time scratch with OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset (OpenBLAS picks its kernel)")
    p.add_argument("--omp-passive", action="store_true",
                   help="also time scratch with OMP_WAIT_POLICY=PASSIVE (its OpenMP threads sleep at once when idle)")
    args = p.parse_args()
    if args.only:
        args.only |= {"scratch"}
    t0 = time.perf_counter()
    data = run(args)
    data["wall_s"] = time.perf_counter() - t0
    data["machine"] = C.machine_info()
    md = markdown(data) + "\n\nLibraries: " + "  \n".join(
        f"{k}: {C.versions_line(v)}" for k, v in data["workers"].items())
    saved = C.save("step", md, data, plot(data), out=args.out)
    n = append_history(args.out, saved)
    if n:
        print(f"appended this run's headline to {args.out / HISTORY} ({n} runs recorded)")


HISTORY = "step_history.json"


def history_entry(data):
    """This run's headline for the run-to-run record: the date, the CPU, whether the run was clean,
    scratch's step time, and scratch's ratio (with its interval) to the tutorial's loop and to the best
    PyTorch configuration (with dropout), at all cores and at 1 thread. None without a headline."""
    h = data.get("headline")
    if not h or not h.get("vs_tutorial"):
        return None
    one = data["results"].get("torch@1", {}).get("speedup")
    best_one, best = None, R.best_torch(data, threads=1)
    if best is not None and "scratch@1" in data["results"]:
        ratio, lo, hi = S.bootstrap_ratio(best["rounds_s"], data["results"]["scratch@1"]["rounds_s"],
                                          seed=data["seed"])
        best_one = {"config": best["config"], "ratio": ratio, "low": lo, "high": hi}
    m = data["machine"]
    return {"date": data["date"], "cpu": m["cpu"], "cpu_family": m.get("cpu_family"),
            "cpu_model": m.get("cpu_model"), "threads": h["threads"],
            "clean": not (data["quiet_check"].get("forced") or data["load_during_run"].get("disturbed")),
            "scratch_ms": data["results"][f"scratch@{h['threads']}"]["median_ms"], "best_torch": h["best_torch"],
            "vs_tutorial": h["vs_tutorial"], "vs_best": h["vs_best"], "vs_tutorial_1_thread": one,
            "vs_best_1_thread": best_one}


def append_history(out, data):
    """Append ``history_entry(data)`` (``data`` as ``C.save`` returned it, with its date) to
    ``out/step_history.json``, written atomically; the number of runs recorded, or 0 without a headline."""
    import json
    from scratchcnn.atomic import atomic_write
    entry = history_entry(data)
    if entry is None:
        return 0
    path = out / HISTORY
    runs = json.loads(path.read_text()) if path.exists() else []
    runs.append(entry)
    atomic_write(str(path), lambda f: f.write((json.dumps(runs, indent=1) + "\n").encode()))
    return len(runs)


if __name__ == "__main__":
    main()
