"""The training loop: :func:`run` turns a :class:`~symscale.train.config.RunConfig` into a run directory.

One run streams the training split once (or ``epochs`` times over a fixed subset), counting data ``D`` in
atoms, and evaluates on a fixed validation subset at log-spaced token counts; every evaluation appends a
line to ``metrics.jsonl`` and writes ``checkpoint.pt`` atomically, so an interrupted run resumes
(``resume=True``) with the same data order and random streams and produces the same evaluation points.
See ``docs/training.md`` for the compute accounting (``C = 3 κ N D × multiplier``).
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..atomic import write_text
from ..errors import ConfigError
from ..data.prefetch import Prefetcher, to_device
from ..outputs import check_output_dir, mark_dir
from . import checkpoint as ckpt_mod
from .compile import CompileGate, configure_cpu_allocator
from .config import RunConfig, load_config, parse_config
from .guards import resolve_device
from .loss import LossFunction
from .metrics import (EvalSchedule, MetricsLog, compute_multiplier, evaluate, evaluation_points, run_summary,
                      write_json_atomic)
from .optim import (build_optimizer, clip_gradients, cosine_factor, eval_mode, hidden_parameters,
                    parameter_groups, set_lr, train_mode)
from .precision import Precision, resolve_precision

FLOPS_PROBE_BATCHES = 3  # training batches whose step FLOPs are measured
StepCallback = Callable[[dict[str, Any]], None]


@dataclass
class RunSetup:
    """Everything :func:`run` builds before the first step."""

    device: torch.device
    dtype: torch.dtype
    model: torch.nn.Module          # the ForceFieldModel (what the checkpoint stores)
    net: torch.nn.Module            # what is trained and evaluated (model, or FrameAveraging(model))
    spec: dict
    optimizer: torch.optim.Optimizer
    loader: Any
    val_batches: list
    loss_fn: LossFunction
    budget: int
    eval_points: list[int]
    params: int
    kappa: float
    flops_per_token: float
    multiplier: float
    precision: Precision
    hidden: list[str] = field(default_factory=list)
    compile: dict | None = None     # the torch.compile decision, once made (summary.json "compile")


def prepare(cfg: RunConfig, device: torch.device, dataset=None) -> RunSetup:
    """Open the data (unless ``dataset`` is given), build model / optimiser / loaders, measure κ and the
    FLOPs of a training step."""
    from ..data import open_dataset
    from ..data.loader import StreamingLoader
    from ..models import build, count_parameters

    precision = resolve_precision(cfg.dtype, cfg.tf32, device)
    dtype = precision.weights
    if dataset is None:
        dataset = open_dataset(cfg.data.path, where=cfg.data.where)
    norm = dataset.normalization
    options = dict(cfg.model.options)
    options.setdefault("cutoff", cfg.data.cutoff)
    model = build(cfg.model.family, cfg.model.width, **options)
    model.set_normalization(norm["e0"], norm["energy_scale"], norm["force_scale"])
    model = model.to(device=device, dtype=dtype)
    net = model
    if cfg.symmetry.frame_averaging:
        from .symmetry import FrameAveraging

        net = FrameAveraging(model)
    spec = ckpt_mod.model_spec(cfg.model.family, cfg.model.width, options, cfg.symmetry.frame_averaging)

    hidden: set[str] | None = None
    lr = cfg.optimizer.lr
    if cfg.mup is not None:
        lr = cfg.mup.lr if cfg.mup.lr is not None else cfg.optimizer.lr
        hidden = hidden_parameters(model, lambda w: build(cfg.model.family, w, **options), cfg.model.width)
        hidden = {f"model.{n}" for n in hidden} if net is not model else hidden
    groups = parameter_groups(net, lr, hidden, cfg.mup.base_width if cfg.mup else None, cfg.model.width)
    optimizer = build_optimizer(groups, cfg.optimizer)

    n_train = len(dataset.split("train"))
    if isinstance(cfg.data.subset, int) and cfg.data.subset > n_train:
        raise ConfigError(f"data.subset: {cfg.data.subset} structures requested but the training split of "
                          f"{dataset.path} has {n_train}")
    loader = StreamingLoader(dataset, "train", batch_size=cfg.batch_size, cutoff=cfg.data.cutoff,
                             seed=cfg.seed, epochs=cfg.loader_epochs, max_neighbors=cfg.data.max_neighbors,
                             subset=cfg.data.subset, dtype=dtype)
    if cfg.tokens is not None:
        if cfg.tokens > loader.total_tokens:
            raise ConfigError(f"tokens: {cfg.tokens} exceeds the {loader.total_tokens} atoms of "
                              f"{cfg.loader_epochs} epoch(s) of the training data; set epochs for "
                              f"multi-epoch training")
        budget = int(cfg.tokens)
    else:
        budget = max(1, int(round((cfg.epochs or 1.0) * loader.tokens_per_epoch)))
    n_val = len(dataset.split("val")) if "val" in dataset.split_names() else 0
    if n_val == 0:
        raise ConfigError(f"data.path: {dataset.path} has no validation split to evaluate on")
    val_loader = StreamingLoader(dataset, "val", batch_size=cfg.batch_size, cutoff=cfg.data.cutoff,
                                 seed=cfg.seed, max_neighbors=cfg.data.max_neighbors, dtype=dtype,
                                 subset=min(cfg.data.val_size, n_val) if cfg.data.val_size else None,
                                 shuffle=False)
    val_batches = list(val_loader)
    # the elements the model will see: eval, md and the calculator refuse others (checkpoint "elements")
    model.trained_elements = tuple(int(z) for z in np.unique(dataset.numbers[dataset.atom_indices(
        np.asarray(loader.indices))]))
    # default: budget / 1000, but at least one batch (points inside the first batch would all merge into
    # the evaluation after step 1)
    batch_tokens = math.ceil(cfg.batch_size * loader.tokens_per_epoch / max(1, len(loader.indices)))
    first = cfg.evaluation.first_tokens or max(1, budget // 1000, batch_tokens)
    points = evaluation_points(budget, cfg.evaluation.points, first)

    params = count_parameters(model)
    loss_fn = LossFunction(norm["energy_scale"], norm["force_scale"], cfg.loss.energy_weight,
                           cfg.loss.force_weight, cfg.loss.energy, cfg.loss.forces)
    kappa, flops_per_token = _measure_compute(cfg, model, net, dataset, device, dtype, loss_fn)
    n_frames = getattr(net, "n_frames", 1)
    return RunSetup(device, dtype, model, net, spec, optimizer, loader, val_batches, loss_fn, budget, points,
                    params, kappa, flops_per_token, compute_multiplier(cfg.symmetry, n_frames), precision,
                    sorted(hidden or []))


def _measure_compute(cfg: RunConfig, model, net, dataset, device, dtype,
                     loss_fn: LossFunction) -> tuple[float, float]:
    """κ of the bare model on the fixed reference batch of :mod:`symscale.models.flops` (so κ does not
    depend on the dataset), and the measured FLOPs per atom of a full training step (forward, loss incl.
    symmetry loss, backward; optimiser update excluded) averaged over the first
    :data:`FLOPS_PROBE_BATCHES` training batches, read by a separate loader (the run's order is untouched).
    """
    from ..data.loader import StreamingLoader
    from ..models.flops import measure_kappa, reference_batch, training_step_flops

    ref = reference_batch(cutoff=cfg.data.cutoff, dtype=dtype).to(device)
    kappa = float(measure_kappa(model, ref)["kappa"])
    probe = StreamingLoader(dataset, "train", batch_size=cfg.batch_size, cutoff=cfg.data.cutoff,
                            seed=cfg.seed, max_neighbors=cfg.data.max_neighbors, subset=cfg.data.subset,
                            dtype=dtype)
    gen = torch.Generator().manual_seed(cfg.seed)

    def loss_of(out, b):
        loss = loss_fn(out, b)
        if cfg.symmetry.loss is not None:
            from .symmetry import symmetry_loss

            sym, _ = symmetry_loss(net, b, cfg.symmetry.loss.rotations, gen, outputs=out)
            loss = loss + cfg.symmetry.loss.weight * sym
        return loss

    flops, tokens = 0.0, 0
    for k, b in enumerate(probe):
        if k >= FLOPS_PROBE_BATCHES:
            break
        b = b.to(device, dtype)
        flops += float(training_step_flops(net, b, loss_of)["flops"])
        tokens += b.tokens
    return kappa, flops / max(tokens, 1)


def run(config: RunConfig | dict | str | os.PathLike, out: str | os.PathLike | None = None,
        resume: bool = False, quiet: bool = True, callback: StepCallback | None = None) -> Path:
    """Train one model; return its run directory.

    Args:
        config: a :class:`RunConfig`, a mapping, or the path of a run YAML file.
        out: run directory (overrides ``config.out``; default ``runs/<run_id>``).
        resume: continue from ``out/checkpoint.pt`` (starts fresh when there is none).
        quiet: no progress bar.
        callback: called after every optimiser step with ``{"step", "tokens", "loss", "grad_norm"}``
            (progress hooks; an exception raised there interrupts the run like Ctrl-C).

    Raises:
        ConfigError / DataError: bad configuration or data (one line).
        KeyboardInterrupt: re-raised after recording ``status: running`` with the reason.
    """
    if isinstance(config, (str, os.PathLike)):
        cfg = load_config(config)
    else:
        cfg = parse_config(config)
    run_dir = check_output_dir(out or cfg.out or Path("runs") / cfg.run_id(), "run", flag="out")
    ckpt_path = run_dir / ckpt_mod.CHECKPOINT_NAME
    resuming = resume and ckpt_path.is_file()
    if not resuming and (ckpt_path.exists() or MetricsLog(run_dir / "metrics.jsonl").read()):
        # (a directory left by a run stopped before its first evaluation holds nothing to keep)
        raise ConfigError(f"out: {run_dir} already holds a run; pass --resume to continue it or choose "
                          f"another directory")
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        configure_cpu_allocator()  # freed activations reused, not page-faulted every step (train/compile.py)
    from ..data import open_dataset

    dataset = open_dataset(cfg.data.path, where=cfg.data.where)
    cfg = cfg.model_copy(update={"out": str(run_dir), "data": cfg.data.model_copy(
        update={"fingerprint": _data_fingerprint(cfg, dataset)})})
    resolved_yaml = cfg.to_yaml()
    if resuming:
        _check_same_config(run_dir, cfg)
    _seed_everything(cfg.seed)
    s = prepare(cfg, device, dataset)  # every configuration / data error surfaces here, before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    mark_dir(run_dir, "run")
    with s.precision.matmul_settings():  # TF32 on or off for this run, the process's setting restored after
        return _train(cfg, s, run_dir, resolved_yaml, resuming, quiet, callback)


def _data_fingerprint(cfg: RunConfig, dataset) -> str:
    """The dataset's content fingerprint, which must equal ``data.fingerprint`` when the config gives one."""
    found = dataset.fingerprint
    if cfg.data.fingerprint is not None and cfg.data.fingerprint != found:
        raise ConfigError(f"data.fingerprint: {dataset.path} has content {found[:12]}, not the "
                          f"{cfg.data.fingerprint[:12]} this run was configured with (the data changed)")
    return found


def _train(cfg: RunConfig, s: RunSetup, run_dir: Path, resolved_yaml: str, resuming: bool, quiet: bool,
           callback: StepCallback | None) -> Path:
    model, net, loader, opt = s.model, s.net, s.loader, s.optimizer
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    ckpt_path = run_dir / ckpt_mod.CHECKPOINT_NAME
    aug_gen = torch.Generator().manual_seed(cfg.seed + 7919)
    counters = {"step": 0, "tokens": 0, "train_time_s": 0.0, "flops_measured": 0.0}
    schedule = EvalSchedule(s.eval_points)
    if resuming:
        ck = ckpt_mod.load_checkpoint(ckpt_path, map_location="cpu", resume=True)
        model.load_state_dict(ck["model_state"])
        opt.load_state_dict(ck["optimizer"])
        loader.load_state_dict(ck["loader"])
        ckpt_mod.set_rng_state(ck["rng"])
        aug_gen.set_state(ck["rng"]["augment"])
        counters.update({k: ck["counters"][k] for k in counters})
        metrics.truncate_after(int(counters["step"]))
        schedule.consume(int(counters["tokens"]))
        train_mode(opt)  # the checkpoint holds the evaluation weights; back to training weights
    else:
        write_text(run_dir / "config.yaml", resolved_yaml)
        write_text(metrics.path, "")
    write_json_atomic(run_dir / "summary.json", run_summary(cfg, s, counters, "running", None))

    mult, loss_fn, prec = s.multiplier, s.loss_fn, s.precision
    status, reason = "completed", None
    progress = None if quiet else _progress(s.budget, counters["tokens"], cfg.run_id())

    def do_eval() -> bool:
        """Evaluate, log, checkpoint; False when the validation loss is not finite (no checkpoint)."""
        eval_mode(opt)
        m = evaluate(net, s.val_batches, loss_fn, s.device, s.dtype, autocast=prec.autocast)
        D = int(counters["tokens"])
        record = {"step": int(counters["step"]), "tokens": D, "params": s.params, "kappa": s.kappa,
                  "compute": 3.0 * s.kappa * s.params * D * mult,
                  "flops_measured": float(counters["flops_measured"]),
                  "train_time_s": float(counters["train_time_s"]), **m, **prec.record()}
        metrics.append(record)
        if not math.isfinite(m["loss"]):
            train_mode(opt)
            return False
        ckpt_mod.save_checkpoint(ckpt_path, {
            "model": s.spec, "model_state": model.state_dict(), "optimizer": opt.state_dict(),
            "loader": loader.state_dict(), "rng": {**ckpt_mod.rng_state(), "augment": aug_gen.get_state()},
            "counters": dict(counters, kappa=s.kappa, params=s.params), "dtype": cfg.dtype,
            "elements": list(model.trained_elements), "config": cfg.model_dump(mode="json")})
        train_mode(opt)
        schedule.consume(D)
        write_json_atomic(run_dir / "summary.json", run_summary(cfg, s, counters, "running", None, record))
        if progress is not None:
            progress[0].update(progress[1], description=f"{cfg.run_id()} val loss {m['loss']:.4g}")
        return True

    net.train()
    gate = CompileGate(cfg.compile, model.force_mode, net)
    s.compile = gate.record
    pinned = cfg.loader_workers > 0 and s.device.type == "cuda"
    it = iter(Prefetcher(loader, cfg.loader_workers, pin_memory=pinned))
    try:
        while counters["tokens"] < s.budget:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            batch = to_device(batch, s.device, s.dtype, non_blocking=pinned)
            if cfg.symmetry.augment:
                from .symmetry import random_rotations, rotate_batch

                R = random_rotations(batch.n_structures, aug_gen, dtype=batch.pos.dtype, device=s.device)
                batch = rotate_batch(batch, R)
            if cfg.optimizer.name == "adamw":
                set_lr(opt, cosine_factor(int(counters["step"]), counters["tokens"] / s.budget,
                                          cfg.optimizer.warmup_steps, cfg.optimizer.min_lr_ratio))
            opt.zero_grad(set_to_none=True)
            with prec.autocast_context():
                pred = prec.outputs(gate.forward(batch))  # energies and forces in float32 under bfloat16 autocast
                loss = loss_fn(pred, batch)
                if cfg.symmetry.loss is not None:
                    from .symmetry import symmetry_loss

                    sym, _ = symmetry_loss(net, batch, cfg.symmetry.loss.rotations, aug_gen, outputs=pred)
                    loss = loss + cfg.symmetry.loss.weight * sym
            lval = float(loss.detach())
            if not math.isfinite(lval):
                status, reason = "diverged", (f"non-finite loss ({lval}) at step {counters['step'] + 1}, "
                                              f"tokens {counters['tokens'] + batch.tokens}")
                break
            loss.backward()
            gnorm = clip_gradients(net.parameters(), cfg.optimizer.grad_clip)
            if not math.isfinite(gnorm) or gnorm > cfg.optimizer.diverge_grad_norm:
                status, reason = "diverged", (f"gradient norm {gnorm:.3g} at step {counters['step'] + 1} "
                                              f"exceeds optimizer.diverge_grad_norm "
                                              f"({cfg.optimizer.diverge_grad_norm:g})")
                break
            opt.step()
            counters["step"] += 1
            counters["tokens"] += batch.tokens
            counters["flops_measured"] += s.flops_per_token * batch.tokens
            step_s = time.perf_counter() - t0
            counters["train_time_s"] += step_s
            gate.observe(step_s, remaining_steps=(s.budget - counters["tokens"]) / max(1, batch.tokens))
            if callback is not None:
                callback({"step": counters["step"], "tokens": counters["tokens"], "loss": lval,
                          "grad_norm": gnorm})
            if progress is not None:
                progress[0].update(progress[1], completed=min(counters["tokens"], s.budget))
            if schedule.due(counters["tokens"]) and counters["tokens"] < s.budget and not do_eval():
                status, reason = "diverged", f"non-finite validation loss at step {counters['step']}"
                break
        if status == "completed" and counters["step"] > 0 and not _evaluated_at(metrics, counters["step"]):
            if not do_eval():  # the end of training is always an evaluation point
                status, reason = "diverged", f"non-finite validation loss at step {counters['step']}"
        if status == "completed" and counters["step"] == 0:
            status, reason = "diverged", "no training step was run (empty training data?)"
    except BaseException as exc:  # Ctrl-C, a callback, or a crash: record it, keep the last checkpoint
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped by {type(exc).__name__}"
        write_json_atomic(run_dir / "summary.json", run_summary(
            cfg, s, counters, "running", f"{why} at step {counters['step']}; resume with --resume"))
        raise
    finally:
        it.close()  # background loader processes stop here
        if progress is not None:
            progress[0].stop()
    # "final": the last evaluation with a finite loss, i.e. the weights in checkpoint.pt (metrics.jsonl
    # keeps a diverged run's non-finite one, as the string "nan")
    finite = [r for r in metrics.read() if isinstance(r["loss"], (int, float)) and math.isfinite(r["loss"])]
    write_json_atomic(run_dir / "summary.json",
                      run_summary(cfg, s, counters, status, reason, finite[-1] if finite else None))
    return run_dir


def _evaluated_at(metrics: MetricsLog, step: int) -> bool:
    rows = metrics.read()
    return bool(rows) and int(rows[-1]["step"]) == step


def _check_same_config(run_dir: Path, cfg: RunConfig) -> None:
    import yaml

    path = run_dir / "config.yaml"
    if not path.exists():
        return
    saved = parse_config(yaml.safe_load(path.read_text()), source=str(path)).model_dump(mode="json")
    new = cfg.model_dump(mode="json")
    for key in new:  # the loader's processes and compilation may change on resume: the batches do not
        if key not in ("out", "loader_workers", "compile") and saved.get(key) != new[key]:
            raise ConfigError(f"{key}: differs from the run being resumed ({path}); resume with the same "
                              f"config or start a new run directory")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _progress(total: int, done: int, label: str):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    p = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} atoms"),
                 TimeElapsedColumn(), transient=False)
    task = p.add_task(label, total=total, completed=done)
    p.start()
    return p, task
