"""Training throughput of every model, its FLOPs per image and model FLOP utilisation.

Each model is built from its configs (``model=autoencoder``: the six-class mix at 64×64;
``experiment=density``: the PixelCNN at 32×32; ``experiment=sersic``: the Sérsic network at
64×64) on a few hundred simulated galaxies, rendered once into ``benchmarks/_work/throughput``.

- Training images/s of a hand-driven step on one batch held in memory: the model's
  ``_shared_step`` (views, preprocessing, forward, loss), backward, gradient clipping where
  the config clips, optimiser step, ``zero_grad(set_to_none=True)``. Warm-up steps are
  excluded and nothing synchronises host and device inside the timed loop. Variants on the
  CPU: ``fp32`` (all threads), ``fp32_1thread``, ``channels_last`` (model and batch),
  ``compile`` (``torch.compile`` of the step's loss, cold Inductor cache; compile seconds
  apart), ``bf16`` and ``bf16_channels_last`` (bfloat16 autocast, where the CPU's bf16 matmul
  beats float32 by 20%). On a GPU, when there is one, the same as ``cuda_*`` (bf16 always,
  no thread variant) and ``cuda_bf16_copy_pageable`` / ``cuda_bf16_copy_pinned`` (the batch
  copied from host memory at every step: pageable, or pinned and ``non_blocking``).
- Images/s of iterating the training DataLoader alone: 0 and 2 workers (on a GPU also 2
  workers with pin_memory).
- FLOPs per training image: ``torch.utils.flop_counter.FlopCounterMode`` over one step's
  forward and backward, divided by the batch size (matmuls and convolutions).
- The machine's matmul peak: best of 5 ``torch.mm`` of square matrices (2048² on the CPU,
  8192² on a GPU), GFLOP/s: float32 on all threads and on one, and bfloat16.
- MFU = images/s × FLOPs/image / the peak of the variant's dtype and threads (on a GPU the
  float32 variants' convolutions may run in TF32, cuDNN's default).
- ``morpho-train`` as one process (``trainer=cpu``, all threads) and as two DDP processes
  (``trainer=ddp_cpu``, half the threads each), same per-device batch, no validation:
  images/s over all ranks from :class:`morpho.callbacks.TrainingThroughput`, start-up and
  warm-up batches excluded.

Usage::

    python benchmarks/throughput.py --quick     # about 7 min on 2 idle cores, 2-3 of them compiling
    python benchmarks/throughput.py             # longer timings
    python benchmarks/throughput.py --models autoencoder --no-ddp --no-compile

Prints every figure, then one JSON line: ``images_per_second``, ``mfu`` and ``best_variant``
per model (the fastest hand-driven variant, on a GPU where there is one), the same with
``_cpu`` (the fastest on the CPU), then the details.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import gc
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir
from torch.utils.flop_counter import FlopCounterMode

from morpho.config import config_dir
from morpho.utils import available_cpus, torch_threads

HERE = Path(__file__).resolve().parent
MODELS = {
    "autoencoder": ["model=autoencoder", "data=simulated"],
    "pixelcnn": ["experiment=density"],
    "sersic": ["experiment=sersic"],
}
# Warm-up steps (also per rank of morpho-train); seconds aimed at per timed variant (at
# least min_steps steps) and per morpho-train run (after its warm-up); DataLoader epochs.
QUICK = {"warmup": 2, "seconds": 3.0, "min_steps": 3, "lightning_seconds": 6.0, "loader_epochs": 2}
FULL = {
    "warmup": 5,
    "seconds": 15.0,
    "min_steps": 10,
    "lightning_seconds": 30.0,
    "loader_epochs": 5,
}
SIZES = {"cpu": 2048, "cuda": 8192}  # side of the matmul peak's matrices
LAUNCH_VARS = ("LOCAL_RANK", "RANK", "GROUP_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK")
LAUNCH_PREFIXES = ("MASTER_", "PL_", "TORCHELASTIC_", "SLURM_", "HYDRA_")


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    device: str  # "cpu" or "cuda"
    threads: int
    channels_last: bool = False
    compile: bool = False
    bf16: bool = False
    copy: str | None = None  # None: batch on the device; "pageable" / "pinned": copied per step


def _overrides(model: str, args) -> list[str]:
    return [
        *MODELS[model],
        f"paths.data_dir={args.workdir}",
        f"data.prepare.n_galaxies={args.n_galaxies}",
        "data.num_workers=0",
    ]


def build(model: str, args):
    """The config, the set-up DataModule (data simulated on first use) and the module."""
    overrides = [*_overrides(model, args), f"paths.output_dir={args.workdir / 'runs'}"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    torch.manual_seed(cfg.seed)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = hydra.utils.instantiate(cfg.model)
    module.preprocessor = copy.deepcopy(datamodule.preprocessor)  # as MorphoModule.setup
    # Without a Trainer, self.log only warns: a no-op spares every variant the warning
    # and torch.compile a Python warnings call.
    module.log = module.log_dict = _no_log
    batch = next(iter(datamodule.train_dataloader()))  # augmented, as in training
    batch = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    return cfg, datamodule, module.train(), batch


def _no_log(*args, **kwargs) -> None:
    return None


def _to(batch: dict, device, *, channels_last: bool, non_blocking: bool = False) -> dict:
    out = {k: v.to(device, non_blocking=non_blocking) for k, v in batch.items()}
    if channels_last:
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(module, clip: float | None, variant: Variant, device):
    """``step(batch)``: loss, backward, clipping, optimiser step; no host-device sync."""
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    params = [p for p in module.parameters() if p.requires_grad]
    loss_of = functools.partial(module._shared_step, stage="train")
    if variant.compile:
        loss_of = torch.compile(loss_of)

    def step(batch: dict) -> None:
        if variant.copy is not None:
            pinned = variant.copy == "pinned"
            batch = _to(batch, device, channels_last=variant.channels_last, non_blocking=pinned)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant.bf16):
            loss = loss_of(batch)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def run_variant(base, cfg, batch: dict, variant: Variant, plan: dict) -> dict:
    """Images/s and seconds per step after warm-up; for ``compile``, the compile seconds.

    The number of timed steps aims at ``plan["seconds"]``, from the warm-up's pace.
    """
    device = torch.device(variant.device)
    module = copy.deepcopy(base).to(device)
    if variant.channels_last:
        module = module.to(memory_format=torch.channels_last)
    if variant.copy is None:
        batch = _to(batch, device, channels_last=variant.channels_last)
    elif variant.copy == "pinned":
        batch = {k: v.pin_memory() for k, v in batch.items()}
    step = make_step(module, cfg.trainer.get("gradient_clip_val"), variant, device)
    warmup = max(plan["warmup"], 3) if variant.compile else plan["warmup"]
    with torch_threads(variant.threads):
        try:
            clock = [time.perf_counter()]
            for _ in range(warmup):
                step(batch)
                _sync(device)  # warm-up only: times each step
                clock.append(time.perf_counter())
            pace = clock[-1] - clock[-2]
            steps = max(plan["min_steps"], round(plan["seconds"] / pace))
            start = time.perf_counter()
            for _ in range(steps):
                step(batch)
            _sync(device)
            seconds = (time.perf_counter() - start) / steps
        finally:
            torch._dynamo.reset()
    out = {"images_per_second": len(batch["image"]) / seconds, "seconds_per_step": seconds}
    out["steps"] = steps
    if variant.compile:
        out["compile_seconds"] = clock[1] - clock[0] - seconds
    return out


def flops_per_image(base, batch: dict) -> float:
    """FLOPs of one training step's forward and backward per image (float32, CPU)."""
    module = copy.deepcopy(base)
    with FlopCounterMode(display=False) as counter:
        module._shared_step(batch, "train").backward()
    return counter.get_total_flops() / len(batch["image"])


def matmul_peak(device, dtype, threads: int, size: int, repeats: int = 5) -> float:
    """GFLOP/s: the best of ``repeats`` timings of ``torch.mm`` of two size×size matrices."""
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    per_timing = 20 if device.type == "cuda" else 1  # enough work between two syncs
    best = float("inf")
    with torch_threads(threads):
        out = torch.mm(a, b)  # warm-up
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            for _ in range(per_timing):
                torch.mm(a, b, out=out)
            _sync(device)
            best = min(best, (time.perf_counter() - start) / per_timing)
    return 2 * size**3 / best / 1e9


def machine_peaks(device, threads: int, size: int) -> dict[str, float]:
    """Matmul GFLOP/s on ``device``: ``fp32``, ``bf16`` and, on a CPU, ``fp32_1thread``."""
    peaks = {"fp32": matmul_peak(device, torch.float32, threads, size)}
    if device.type == "cpu" and threads > 1:
        peaks["fp32_1thread"] = matmul_peak(device, torch.float32, 1, size)
    peaks["bf16"] = matmul_peak(device, torch.bfloat16, threads, size)
    return peaks


def variants(peaks: dict, threads: int, *, compile: bool) -> list[Variant]:
    """The variants to run: on the CPU, and on the GPU when there is one (``cuda_*``)."""
    out = []
    for device, prefix in (("cpu", ""), ("cuda", "cuda_")):
        if device not in peaks:
            continue
        bf16 = device == "cuda" or peaks[device]["bf16"] > 1.2 * peaks[device]["fp32"]
        v = functools.partial(Variant, device=device, threads=threads)
        out.append(v(f"{prefix}fp32"))
        if device == "cpu" and threads > 1:
            out.append(v("fp32_1thread", threads=1))
        out.append(v(f"{prefix}channels_last", channels_last=True))
        if compile:
            out.append(v(f"{prefix}compile", compile=True))
        if bf16:
            out.append(v(f"{prefix}bf16", bf16=True))
            out.append(v(f"{prefix}bf16_channels_last", channels_last=True, bf16=True))
        if device == "cuda":
            out.append(v(f"{prefix}bf16_copy_pageable", bf16=True, copy="pageable"))
            out.append(v(f"{prefix}bf16_copy_pinned", bf16=True, copy="pinned"))
    return out


def _peak(variant: Variant, peaks: dict) -> float:
    peaks = peaks[variant.device]
    if variant.bf16:
        return peaks["bf16"]
    return peaks.get("fp32_1thread" if variant.threads == 1 else "fp32", peaks["fp32"])


def loader_rate(datamodule, workers: int, *, pin_memory: bool, epochs: int) -> float:
    """Images/s of iterating the training DataLoader, after one warm-up epoch."""
    hp = datamodule.hparams
    saved = hp.num_workers, hp.pin_memory
    hp.num_workers, hp.pin_memory = workers, pin_memory
    try:
        loader = datamodule.train_dataloader()
        for _ in loader:  # worker start-up, page cache
            pass
        start, seen = time.perf_counter(), 0
        for _ in range(epochs):
            for batch in loader:
                seen += len(batch["image"])
        rate = seen / (time.perf_counter() - start)
    finally:
        hp.num_workers, hp.pin_memory = saved
    del loader  # shut persistent workers down before the next loader forks its own
    gc.collect()
    return rate


def _launch_env(threads: int) -> dict[str, str]:
    """This environment without distributed-job variables, a free MASTER_PORT, threads."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in LAUNCH_VARS and not k.startswith(LAUNCH_PREFIXES)
    }
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        env["MASTER_PORT"] = str(sock.getsockname()[1])
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def lightning_rate(model: str, processes: int, timed_steps: int, args, plan: dict) -> dict:
    """Images/s over all ranks of ``morpho-train`` as ``processes`` CPU processes."""
    run = args.workdir / "runs" / f"{model}_{processes}proc"
    trainer = (
        ["trainer=cpu"] if processes == 1 else ["trainer=ddp_cpu", f"trainer.devices={processes}"]
    )
    overrides = [
        *_overrides(model, args),
        *trainer,
        "callbacks=none",
        "~logger",
        "test=false",
        f"++trainer.max_steps={plan['warmup'] + timed_steps}",
        "++trainer.max_epochs=-1",
        "++trainer.limit_val_batches=0",
        "++trainer.enable_checkpointing=false",
        "++trainer.enable_progress_bar=false",
        "++trainer.enable_model_summary=false",
        "+callbacks.throughput._target_=morpho.callbacks.TrainingThroughput",
        f"+callbacks.throughput.dirpath={run}",
        f"+callbacks.throughput.warmup_steps={plan['warmup']}",
        f"hydra.run.dir={run}",
    ]
    (run / "throughput.json").unlink(missing_ok=True)
    threads = max(args.threads // processes, 1)
    command = [str(Path(sys.executable).parent / "morpho-train"), *overrides]
    start = time.perf_counter()
    # A process group of its own, so that a timeout kills every rank.
    with subprocess.Popen(
        command,
        env=_launch_env(threads),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            _, stderr = proc.communicate(timeout=args.train_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"{' '.join(command)} ran over {args.train_timeout} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    record = json.loads((run / "throughput.json").read_text())
    record.update(threads_per_process=threads, wall_seconds=time.perf_counter() - start)
    return record


def bench_model(model: str, args, plan: dict, peaks: dict) -> dict:
    cfg, datamodule, base, batch = build(model, args)
    out = {"batch_size": len(batch["image"]), "image_shape": list(batch["image"].shape[1:])}
    epochs = plan["loader_epochs"]
    out["loader"] = {
        f"workers_{w}": loader_rate(datamodule, w, pin_memory=False, epochs=epochs) for w in (0, 2)
    }
    if "cuda" in peaks:
        out["loader"]["workers_2_pinned"] = loader_rate(
            datamodule, 2, pin_memory=True, epochs=epochs
        )
    out["flops_per_image"] = flops_per_image(base, batch)
    out["variants"], out["failed"] = {}, {}
    for variant in variants(peaks, args.threads, compile=args.compile):
        try:
            figures = run_variant(base, cfg, batch, variant, plan)
        except Exception as err:  # e.g. torch.compile on an unsupported set-up: report, go on
            if variant.name == "fp32":
                raise
            out["failed"][variant.name] = f"{type(err).__name__}: {err}"
            print(f"  {model:12s} {variant.name:20s} failed: {out['failed'][variant.name]}")
            continue
        peak = _peak(variant, peaks)
        figures["mfu"] = figures["images_per_second"] * out["flops_per_image"] / peak / 1e9
        out["variants"][variant.name] = figures
        rate = figures["images_per_second"]
        print(f"  {model:12s} {variant.name:20s} {rate:9.1f} images/s", flush=True)
    for suffix, names in (("", list(out["variants"])), ("_cpu", _cpu_names(out["variants"]))):
        out[f"best_variant{suffix}"] = max(
            names, key=lambda k: out["variants"][k]["images_per_second"]
        )
    if args.ddp:
        # About lightning_seconds of timed steps for a rank with half the threads.
        pace = 2 * out["variants"]["fp32"]["seconds_per_step"]
        timed = max(plan["min_steps"], round(plan["lightning_seconds"] / pace))
        out["lightning"] = {}
        for processes in (1, 2):
            try:
                out["lightning"][f"{processes}proc"] = lightning_rate(
                    model, processes, timed, args, plan
                )
            except RuntimeError as err:  # a failed or hung run: keep the other figures
                out["failed"][f"morpho-train {processes}proc"] = str(err)
                print(f"  {model:12s} morpho-train, {processes} process(es) failed: {err}")
    return out


def _cpu_names(figures: dict) -> list[str]:
    return [name for name in figures if not name.startswith("cuda_")]


def _print(result: dict) -> None:
    print(f"\n{result['cpu']}, {result['threads']} thread(s); GPU: {result['gpu']}")
    for device, peaks in result["matmul_peak_gflops"].items():
        print(
            f"matmul peak, {device}, GFLOP/s: "
            + ", ".join(f"{k} {v:.1f}" for k, v in peaks.items())
        )
    for model, r in result["models"].items():
        gflop = r["flops_per_image"] / 1e9
        shape = "×".join(map(str, r["image_shape"]))
        print(f"\n== {model}: batch {r['batch_size']} of {shape}, {gflop:.3f} GFLOP/image ==")
        print(f"{'variant':24s}{'images/s':>10s}{'vs fp32':>9s}{'MFU':>8s}{'compile s':>11s}")
        for name, v in r["variants"].items():
            rate = v["images_per_second"]
            fp32 = r["variants"].get("cuda_fp32" if name.startswith("cuda_") else "fp32", v)
            compiled = f"{v['compile_seconds']:11.1f}" if "compile_seconds" in v else ""
            ratio = rate / fp32["images_per_second"]
            print(f"{name:24s}{rate:10.1f}{ratio:9.2f}{v['mfu']:8.1%}{compiled}")
        cpu = r["best_variant_cpu"]
        dtype = "bf16" if cpu.startswith("bf16") else "fp32"
        mfu = r["variants"][cpu]["mfu"]
        print(f"best: {r['best_variant']}; on the CPU: {cpu}, MFU {mfu:.1%} of its {dtype} peak")
        for name, error in r["failed"].items():
            print(f"failed: {name}: {error[:500]}")
        rates = ", ".join(f"{k} {v:.0f}" for k, v in r["loader"].items())
        print(f"training DataLoader alone, images/s: {rates}")
        for rec in r.get("lightning", {}).values():
            print(
                f"morpho-train, {rec['world_size']} process(es) × {rec['threads_per_process']} "
                f"thread(s): {rec['images_per_second']:.1f} images/s over all ranks "
                f"({sum(rec['images'])} images in {max(rec['seconds']):.1f} s; "
                f"{rec['wall_seconds']:.0f} s in all)"
            )


def _summary(result: dict) -> dict:
    """The headline figures (best variant, and best CPU variant) and the details."""
    models = result["models"]

    def each(get) -> dict:
        return {m: get(r) for m, r in models.items()}

    summary = {}
    for suffix in ("", "_cpu"):
        best = f"best_variant{suffix}"
        summary[f"images_per_second{suffix}"] = each(
            lambda r, b=best: r["variants"][r[b]]["images_per_second"]
        )
        summary[f"mfu{suffix}"] = each(lambda r, b=best: r["variants"][r[b]]["mfu"])
        summary[best] = each(lambda r, b=best: r[b])
    summary.update(
        flops_per_image=each(lambda r: r["flops_per_image"]),
        variants=each(lambda r: {k: v["images_per_second"] for k, v in r["variants"].items()}),
        mfu_variants=each(lambda r: {k: v["mfu"] for k, v in r["variants"].items()}),
        compile_seconds=each(
            lambda r: {
                k: v["compile_seconds"] for k, v in r["variants"].items() if "compile_seconds" in v
            }
        ),
        loader_images_per_second=each(lambda r: r["loader"]),
    )
    if all("lightning" in r for r in models.values()):
        summary["morpho_train_images_per_second"] = each(
            lambda r: {k: v["images_per_second"] for k, v in r["lightning"].items()}
        )
    summary["failed"] = each(lambda r: list(r["failed"]))
    keys = ("matmul_peak_gflops", "cpu", "gpu", "threads", "machine", "quick", "total_seconds")
    summary.update({key: result[key] for key in keys})
    return summary


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = [
                line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
            ]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def _round(value):
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return round(value, 4 if abs(value) < 10 else 1) if isinstance(value, float) else value


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="shorter timings (about 7 min on 2 cores)"
    )
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="seconds aimed at per timed variant, twice that per morpho-train run "
        "(default 3 with --quick, else 15)",
    )
    parser.add_argument(
        "--threads", type=int, default=available_cpus(), help="torch threads (default: all cores)"
    )
    parser.add_argument(
        "--n-galaxies", type=int, default=640, help="simulated galaxies per model (80%% train)"
    )
    parser.add_argument(
        "--matmul-size",
        type=int,
        default=None,
        help="side of the peak's matrices (default: 2048 on the CPU, 8192 on a GPU)",
    )
    parser.add_argument(
        "--no-compile", dest="compile", action="store_false", help="skip the torch.compile variant"
    )
    parser.add_argument(
        "--no-ddp", dest="ddp", action="store_false", help="skip the morpho-train runs"
    )
    parser.add_argument(
        "--train-timeout", type=int, default=900, help="seconds allowed per morpho-train run"
    )
    parser.add_argument("--workdir", type=Path, default=HERE / "_work" / "throughput")
    args = parser.parse_args()
    args.workdir = args.workdir.resolve()
    return args


def main() -> None:
    args = _arguments()
    plan = dict(QUICK if args.quick else FULL)
    if args.seconds is not None:
        plan.update(seconds=args.seconds, lightning_seconds=2 * args.seconds)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    result = {
        "cpu": _cpu_name(),
        "gpu": torch.cuda.get_device_name() if "cuda" in devices else None,
        "threads": args.threads,
        "machine": platform.machine(),
        "quick": args.quick,
        "matmul_peak_gflops": {
            d: machine_peaks(torch.device(d), args.threads, args.matmul_size or SIZES[d])
            for d in devices
        },
        "models": {},
    }
    # A fresh Inductor cache: compile seconds are those of a first compilation.
    cache = tempfile.mkdtemp(prefix="inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    try:
        for model in args.models:
            peaks = result["matmul_peak_gflops"]
            result["models"][model] = bench_model(model, args, plan, peaks)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    result["total_seconds"] = time.perf_counter() - start
    _print(result)
    (args.workdir / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(_round(_summary(result))))


if __name__ == "__main__":
    main()
