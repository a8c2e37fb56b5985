"""The training loop (one process or torchrun DDP): official recipe, EMA, AMP, checkpoints with exact resume,
TensorBoard scalars, periodic validation loss and sampled lip-audio correlation on held-out clips."""

from __future__ import annotations

import contextlib
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from kdtalker.data.dataset import MotionWindows
from kdtalker.data.layouts import layout_named
from kdtalker.data.prepare import prepare_data
from kdtalker.diffusion.checkpoint import kdtalker_state_dict
from kdtalker.diffusion.loss import diffusion_loss
from kdtalker.diffusion.mask_drop import MaskDrop
from kdtalker.diffusion.motion import MotionNorm
from kdtalker.diffusion.schedulers import OneStepSampler
from kdtalker.distributed import DistInfo, cleanup_distributed, setup_distributed
from kdtalker.errors import CheckpointError, ConfigError, KDTalkerError
from kdtalker.fileio import atomic_path
from kdtalker.generators import GeneratorObjective
from kdtalker.motion_layout import MotionLayout
from kdtalker.training.checkpoint import (
    checkpoint_path,
    checkpoints_newest_first,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from kdtalker.training.distributed import ResumableSampler
from kdtalker.training.ema import EMA
from kdtalker.training.optim import build_optimizer, cosine_with_warmup
from kdtalker.training.validation import sampled_lip_correlation, validation_loss

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainResult:
    """What a run ends with: its final step, the per-step losses it computed, the model and the last metrics."""

    step: int
    losses: list[float]
    model: torch.nn.Module
    out_dir: Path
    last_checkpoint: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_model_state(model: torch.nn.Module, ckpt: Any, source: str) -> None:
    """Load the 'model' entry of an official-layout checkpoint (or a bare prefixed state) into the denoiser, by the
    model's own rule (strict; a multi-signal model takes the official file with its motion branch at init)."""
    model.load_state(kdtalker_state_dict(ckpt, source), source)


TRAINING_STATE = ("model", "optimizer", "scheduler", "step")


def _missing_state(ckpt: Any) -> list[str]:
    return [k for k in TRAINING_STATE if not isinstance(ckpt, dict) or k not in ckpt]


def _resolve_resume(train_cfg: DictConfig, out_dir: Path, log=tqdm.write) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to resume from and its contents: train.resume's file, or with `auto` the newest readable one."""
    resume = train_cfg.get("resume")
    if resume in (None, False, "none", "null"):
        return None
    if resume == "auto":
        candidates = checkpoints_newest_first(out_dir)
        skipped = []
        for path in candidates:
            try:
                ckpt = load_checkpoint(path)
            except CheckpointError as exc:
                reason = str(exc)
            else:
                missing = _missing_state(ckpt)
                if not missing:
                    if skipped:
                        log(f"resume: using {path.name}; skipped " + "; ".join(skipped))
                    return path, ckpt
                reason = f"it has no {', '.join(missing)} entry"
            skipped.append(f"{path.name} ({reason.split(' (')[0].split('; ')[0]})")
        if skipped:
            raise CheckpointError(
                f"none of the {len(skipped)} checkpoints in {out_dir} can be resumed from: {'; '.join(skipped)}; "
                "delete them, or start afresh in another train.out_dir (or train.resume=null)"
            )
        return None
    path = Path(str(resume))
    if not path.is_file():
        raise ConfigError(f"train.resume={resume}: no such checkpoint file")
    ckpt = load_checkpoint(path)
    missing = _missing_state(ckpt)
    if missing:
        raise ConfigError(
            f"train.resume={resume} holds no training state (no {', '.join(missing)}): it is a model-only file; to "
            f"start training from its weights use train.init_from={resume} train.resume=null"
        )
    return path, ckpt


def train(cfg: DictConfig) -> TrainResult:
    """Train the denoiser described by cfg (kdtalker/configs/train.yaml); resumes from cfg.train.resume."""
    tc = cfg.train
    info, device = setup_distributed(cfg.device)
    try:
        return _train(cfg, tc, info, device)
    finally:
        cleanup_distributed(info)


def _train(cfg: DictConfig, tc: DictConfig, info: DistInfo, device: torch.device) -> TrainResult:
    run = _set_up(cfg, tc, info, device)
    try:
        return _loop(run)
    finally:
        run.bar.close()
        if run.writer is not None:
            run.writer.close()


@dataclass
class _Data:
    """The training windows, split over the processes, and the held-out ones (None without a validation split)."""

    train_set: MotionWindows
    val_set: MotionWindows | None
    sampler: ResumableSampler
    local_batch: int  # windows per process and step
    steps_per_epoch: int
    layout: MotionLayout  # the shards' motion layout (data.layout): the model's motion_dim, the logged loss split


@dataclass
class _Run:
    """A training run once set up: its data, model and optimisers (resumed), and the position the loop advances."""

    cfg: DictConfig
    tc: DictConfig
    info: DistInfo
    device: torch.device
    out_dir: Path
    seed: int
    data: _Data
    model: torch.nn.Module
    net: torch.nn.Module  # the model, DDP-wrapped when distributed
    scheduler: Any
    objective: GeneratorObjective | None
    disc_optimizer: torch.optim.Optimizer | None
    optimizer: torch.optim.Optimizer
    lr_schedule: torch.optim.lr_scheduler.LambdaLR
    ema: EMA | None
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    generator: torch.Generator
    mask_drop: MaskDrop | None
    result: TrainResult
    writer: Any = None  # TensorBoard's SummaryWriter on rank 0, None on the others
    bar: Any = None  # the progress bar (tqdm), silent on the other ranks
    step: int = 0
    best_val: float | None = None


def _set_up(cfg: DictConfig, tc: DictConfig, info: DistInfo, device: torch.device) -> _Run:
    """Seeds, data, model, optimisers, EMA, AMP, then the resume checkpoint's state and the run's log folder."""
    out_dir = Path(tc.out_dir)
    seed = int(cfg.seed)
    if cfg.get("torch_threads"):
        # On a shared CPU, one intra-op thread per process avoids oversubscription (often many times faster).
        torch.set_num_threads(int(cfg.torch_threads))
    seed_everything(seed + info.rank)

    # The resume file first: a wrong one is said at once, not after the data is prepared.
    found = _resolve_resume(tc, out_dir, log=tqdm.write if info.is_main else (lambda line: None))
    data = _training_data(cfg, tc, info, seed)

    # Model, optimiser, schedule, EMA.
    model = instantiate(cfg.model).to(device)
    layout = data.layout
    if getattr(model, "motion_dim", layout.dim) != layout.dim:
        raise ConfigError(
            f"model.motion_dim={model.motion_dim} but data.layout={layout.name} has {layout.dim} channels; "
            f"set model.motion_dim={layout.dim} (experiment=table5_facevid2vid does for Face-vid2vid)"
        )
    window = int(cfg.data.window)
    if getattr(model, "window", window) != window:
        raise ConfigError(f"data.window={window} but model.window={model.window}; they must match")
    if tc.get("init_from"):
        ckpt = load_checkpoint(tc.init_from)
        load_model_state(model, ckpt, str(tc.init_from))
    # a multi-signal model learns its single-signal and unconditional modes from mask-drop
    mask_drop = MaskDrop(**tc.mask_drop) if "motion" in getattr(model, "signals", ()) else None
    if mask_drop is not None and layout.name != "liveportrait":
        raise ConfigError(
            f"the multi-signal model drives LivePortrait's keypoint regions; data.layout={layout.name} has none"
        )
    scheduler = instantiate(cfg.diffusion)
    objective, disc_optimizer = _generator_objective(cfg, model, scheduler, info, device)
    optimizer = build_optimizer(
        model, tc.lr, tc.betas, tc.eps, tc.weight_decay, list(tc.no_decay), objective.encoder if objective else None
    )
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(int(tc.warmup_steps), int(tc.get("schedule_steps") or tc.max_steps))
    )
    ema = EMA(model, tc.ema.decay) if tc.ema.enabled else None
    amp_dtype = AMP_DTYPES.get(str(tc.precision)) if device.type == "cuda" else None
    if str(tc.precision) not in ("fp32", *AMP_DTYPES):
        raise ConfigError(f"train.precision={tc.precision!r} is not one of fp32, bf16, fp16")
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)
    generator = torch.Generator(device=device).manual_seed(seed * 1000 + info.rank)
    run = _Run(
        cfg=cfg,
        tc=tc,
        info=info,
        device=device,
        out_dir=out_dir,
        seed=seed,
        data=data,
        model=model,
        net=model,
        scheduler=scheduler,
        objective=objective,
        disc_optimizer=disc_optimizer,
        optimizer=optimizer,
        lr_schedule=lr_schedule,
        ema=ema,
        scaler=scaler,
        amp_dtype=amp_dtype,
        generator=generator,
        mask_drop=mask_drop,
        result=TrainResult(0, [], model, out_dir),
    )
    if found is not None:
        _resume(run, *found)
    run.result.step = run.step

    if info.enabled:
        # The parameters no forward reads stay out of DDP's buckets, so that it need not search the graph for unused
        # ones after every backward (find_unused_parameters); they keep their loaded values and are never trained.
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, model.unused_parameter_names())
        run.net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_dir / "config.yaml") as tmp:  # the run's resolved settings, next to its checkpoints
            OmegaConf.save(cfg, tmp, resolve=True)
        from torch.utils.tensorboard import SummaryWriter

        run.writer = SummaryWriter(str(out_dir / "tb"), purge_step=run.step if run.step else None)
    run.bar = tqdm(
        total=int(tc.max_steps),
        initial=run.step,
        desc="train",
        unit="step",
        **({} if info.is_main else {"disable": True}),
    )  # TQDM_DISABLE=1 still silences it
    return run


def _training_data(cfg: DictConfig, tc: DictConfig, info: DistInfo, seed: int) -> _Data:
    """Rank 0 builds the (synthetic) shards and statistics first, the others then read them; the split per rank."""
    if info.is_main:
        files = prepare_data(cfg.data, build=True)
    info.barrier()
    if not info.is_main:
        files = prepare_data(cfg.data, build=False)
    if info.is_main:
        for line in files.notes:  # how many clips data.select kept
            tqdm.write(line)
    layout = layout_named(cfg.data.layout, "data.layout")
    norm = MotionNorm.load(files.norm, layout)
    window = int(cfg.data.window)
    train_set = MotionWindows(files.train, norm, window, int(cfg.data.samples_per_clip), seed, train=True)
    val_set = MotionWindows(files.val, norm, window, 1, seed, train=False) if files.val else None

    if tc.batch_size % info.world_size:
        raise ConfigError(f"train.batch_size={tc.batch_size} must divide evenly over {info.world_size} processes")
    local_batch = tc.batch_size // info.world_size
    sampler = ResumableSampler(train_set, info, seed=seed, with_epoch=True)
    steps_per_epoch = sampler.num_samples // local_batch
    if steps_per_epoch == 0:
        raise ConfigError(
            f"{len(train_set)} training windows per epoch are fewer than train.batch_size={tc.batch_size}; "
            "add clips, raise data.samples_per_clip or lower the batch size"
        )
    return _Data(train_set, val_set, sampler, local_batch, steps_per_epoch, layout)


def _resume(run: _Run, path: Path, ckpt: dict[str, Any]) -> None:
    """Continue `run` from a checkpoint: model, generator parts, optimisers, EMA, AMP scale, step, RNG streams."""
    info = run.info
    load_model_state(run.model, ckpt, str(path))
    _load_generator_state(run.objective, run.disc_optimizer, ckpt, str(path))
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.lr_schedule.load_state_dict(ckpt["scheduler"])
    if run.ema is not None and ckpt.get("model_ema"):
        run.ema.load_model_state(kdtalker_state_dict(ckpt, str(path), ema=True), ckpt.get("ema_num_updates", 0))
    if ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    run.step, run.best_val = int(ckpt["step"]), ckpt.get("best_val")
    states = ckpt.get("rng") or []
    if len(states) == info.world_size:
        set_rng_state(states[info.rank], run.generator)
    elif info.is_main:
        tqdm.write(
            f"resume: checkpoint was written by {len(states)} processes, now {info.world_size}; "
            "random streams restart from the seed"
        )
    if info.is_main:
        tqdm.write(f"resumed from {path} at step {run.step}")


def _loop(run: _Run) -> TrainResult:
    """Step until train.max_steps: loss, backward, clipping, optimiser (+ discriminator), schedule, EMA; logs,
    validation and checkpoints at their periods."""
    tc, data, model, device, result = run.tc, run.data, run.model, run.device, run.result
    workers = int(tc.num_workers)
    # One loader for the whole run: its workers persist across epochs (the sampler hands them the epoch with each
    # index). It draws its workers' base seed from its own generator, not from the global RNG, which would
    # otherwise be one draw ahead of the saved state after a mid-epoch resume.
    loader = DataLoader(
        data.train_set,
        batch_size=data.local_batch,
        sampler=data.sampler,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(run.seed * 1_000_003),
    )
    log_every, ckpt_every = int(tc.log_every), int(tc.ckpt_every)
    losses = _LossLog(device)
    model.train()
    while run.step < tc.max_steps:
        # The data position is a pure function of the step: epoch, then the batches already used in it.
        epoch, done_in_epoch = divmod(run.step, data.steps_per_epoch)
        data.sampler.set_epoch(epoch)
        data.train_set.set_epoch(epoch)
        data.sampler.skip = done_in_epoch * data.local_batch
        for batch in loader:
            losses.pending.append(_step(run, {k: v.to(device, non_blocking=True) for k, v in batch.items()}))
            run.bar.update(1)
            step, last = run.step, run.step == tc.max_steps
            logs = step % log_every == 0 or last
            validates = bool(tc.val_every) and (step % int(tc.val_every) == 0 or last)
            saves = step % ckpt_every == 0 or last
            if logs or validates or saves:
                result.losses.extend(losses.flush(step))
            if logs:
                means = losses.means(step % log_every or log_every)
                run.bar.set_postfix(loss=f"{means['loss']:.4f}")
                if run.writer is not None:
                    for k, v in means.items():
                        run.writer.add_scalar(f"train/{k}", v, step)
            if validates:
                result.metrics = _validate(run)
                val_loss = result.metrics.get("val/loss")
                if val_loss is not None and (run.best_val is None or val_loss < run.best_val):
                    run.best_val = val_loss
            if saves:
                result.last_checkpoint = _save(run)
            if step >= tc.max_steps:
                break
    result.step = run.step
    return result


def _step(run: _Run, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | float]:
    """One optimisation step on a batch -> its values on the device (loss terms, grad_norm) and the lr it used."""
    tc, objective = run.tc, run.objective
    with _autocast(run.device, run.amp_dtype):
        out = _loss(
            run.net,
            run.scheduler,
            objective,
            batch,
            float(tc.audio_noise_prob),
            run.generator,
            run.mask_drop,
            _split(run.data.layout),
        )
    fake = out.pop("fake", None)
    loss = out["loss"]
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.unscale_(run.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), float(tc.grad_clip))
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.disc_optimizer is not None:  # the GAN's discriminator step, on the window just generated
        with _autocast(run.device, run.amp_dtype):
            d_out = objective.discriminator_loss(fake, batch["x0"], batch["audio"])
        run.disc_optimizer.zero_grad(set_to_none=True)
        d_out["loss_d"].backward()
        run.disc_optimizer.step()
        out.update(d_out)
    lr = run.optimizer.param_groups[0]["lr"]
    run.lr_schedule.step()
    run.step += 1
    if run.ema is not None and run.step % int(tc.ema.every) == 0:
        run.ema.update(run.model)
    return {**{k: v.detach() for k, v in out.items()}, "grad_norm": grad_norm.detach(), "lr": lr}


class _LossLog:
    """Per-step values kept on the device until they are needed (a log line, a validation, a checkpoint): one host
    sync then, not one per step; a non-finite loss is caught at that point, before anything is saved."""

    def __init__(self, device: torch.device):
        self.device = device
        self.pending: list[dict[str, torch.Tensor | float]] = []
        self.running: dict[str, float] = {}  # sums since the last log line

    def flush(self, step: int) -> list[float]:
        """The pending steps' losses (the last one is `step`), their values added to the running sums."""
        if not self.pending:
            return []
        names = list(self.pending[0])
        values = torch.stack(
            [
                torch.stack([torch.as_tensor(p[k], dtype=torch.float32, device=self.device) for k in names])
                for p in self.pending
            ]
        ).tolist()
        first = step - len(self.pending) + 1
        losses = []
        for offset, row in enumerate(values):
            loss_value = row[names.index("loss")]
            if not math.isfinite(loss_value):
                raise KDTalkerError(
                    f"training loss became {loss_value} at step {first + offset}; lower train.lr "
                    "or resume from an earlier checkpoint"
                )
            losses.append(loss_value)
            for name, value in zip(names, row):
                self.running[name] = self.running.get(name, 0.0) + value
        self.pending.clear()
        return losses

    def means(self, steps: int) -> dict[str, float]:
        """The running sums over `steps` steps, then cleared for the next log line."""
        means = {k: v / steps for k, v in self.running.items()}
        self.running.clear()
        return means


def _save(run: _Run) -> Path | None:
    """A checkpoint of the run at its step (rank 0 writes it, with every rank's RNG state) -> its path on rank 0."""
    info, ema, objective = run.info, run.ema, run.objective
    states = info.gather(rng_state(run.generator))
    path = None
    if info.is_main:
        path = run.model.save_pretrained(
            checkpoint_path(run.out_dir, run.step),
            ema_model=ema.averaged_model(run.model) if ema is not None else None,
            optimizer=run.optimizer.state_dict(),
            scheduler=run.lr_schedule.state_dict(),
            epoch=run.step // run.data.steps_per_epoch,
            step=run.step,
            best_val=run.best_val,
            cfg=OmegaConf.to_container(run.cfg, resolve=True),
            ema_num_updates=ema.num_updates if ema is not None else 0,
            rng=states,
            scaler=run.scaler.state_dict() if run.scaler.is_enabled() else None,
            **_generator_state(objective, run.disc_optimizer),
        )
    info.barrier()
    return path


def _validate(run: _Run) -> dict[str, float]:
    """Validation loss and sampled lip-audio correlation on the held-out clips (rank 0), logged at the run's step."""
    tc, model, device, seed = run.tc, run.model, run.device, run.seed
    val_set = run.data.val_set
    metrics: dict[str, float] = {}
    if run.info.is_main and val_set is not None:
        lips = run.data.layout.expression_channels(tuple(run.cfg.data.lip_keypoints))
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), _autocast(device, run.amp_dtype):
            losses = validation_loss(
                model,
                lambda b, g: _loss(model, run.scheduler, run.objective, b, 0.0, g, None, _split(run.data.layout)),
                val_set,
                int(tc.val_batch_size),
                device,
                seed,
            )
            metrics.update({f"val/{k}": v for k, v in losses.items()})
            clips = val_set.clips[: int(tc.val_sample_clips)]
            if clips:
                corr = sampled_lip_correlation(
                    model, run.scheduler, clips, lips, int(tc.val_sample_frames), int(tc.val_sample_steps), device, seed
                )
                metrics.update({f"val/{k}": v for k, v in corr.items()})
        for k, v in metrics.items():
            run.writer.add_scalar(k, v, run.step)
        tqdm.write(f"step {run.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    run.info.barrier()
    return metrics


def _autocast(device: torch.device, dtype: torch.dtype | None):
    """bf16/fp16 autocast on CUDA; a no-op context on CPU or in fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _loss(
    net,
    scheduler,
    objective: GeneratorObjective | None,
    batch: dict[str, torch.Tensor],
    audio_noise_prob: float,
    generator: torch.Generator,
    mask_drop: MaskDrop | None,
    split: tuple[slice, slice],
) -> dict[str, torch.Tensor]:
    """The training loss of one batch: the diffusion loss, or a Table 4 generator's objective (`split`: the layout's
    pose and expression channels, for the logged terms)."""
    args = (batch["x0"], batch["ref"], batch["ori"], batch["audio"])
    if objective is not None:
        return objective.loss(net, *args, audio_noise_prob=audio_noise_prob, generator=generator, split=split)
    return diffusion_loss(
        net, scheduler, *args, audio_noise_prob=audio_noise_prob, generator=generator, mask_drop=mask_drop, split=split
    )


def _split(layout: MotionLayout) -> tuple[slice, slice]:
    """The layout's head pose (angles and translation) and expression channels."""
    return layout.span("yaw", "t"), layout.slice("exp")


def _generator_objective(
    cfg: DictConfig, model: torch.nn.Module, scheduler, info: DistInfo, device: torch.device
) -> tuple[GeneratorObjective | None, torch.optim.Optimizer | None]:
    """cfg.generator -> (objective, discriminator optimiser); (None, None) for the paper's diffusion."""
    gen = cfg.get("generator") or {"kind": "diffusion"}
    one_pass = isinstance(scheduler, OneStepSampler)
    if gen["kind"] == "diffusion":
        if one_pass:
            raise ConfigError(
                f"generator=diffusion trains with a noise schedule; diffusion={type(scheduler).__name__} has none"
            )
        return None, None
    if info.enabled:
        raise ConfigError(
            f"generator={gen['kind']} trains in one process (its encoder/discriminator are not DDP-wrapped)"
        )
    if not one_pass:
        raise ConfigError(
            f"generator={gen['kind']} is sampled in one pass: it needs diffusion=one_step, "
            f"not {type(scheduler).__name__}"
        )
    disc_cfg = OmegaConf.to_container(gen["discriminator"], resolve=True) if gen.get("discriminator") else None
    objective = GeneratorObjective.build(
        str(gen["kind"]),
        scheduler.timestep,
        float(gen["reconstruction"]),
        float(gen["kl"]),
        float(gen["adversarial"]),
        backbone=instantiate(cfg.model) if "vae" in str(gen["kind"]) else None,
        discriminator=disc_cfg,
        motion_dim=model.motion_dim,
        audio_dim=model.audio_dim,
    ).to(device)
    disc_optimizer = None
    if objective.discriminator is not None:
        disc_optimizer = torch.optim.Adam(
            objective.discriminator.parameters(), lr=float(disc_cfg["lr"]), betas=tuple(disc_cfg["betas"])
        )
    return objective, disc_optimizer


def _generator_state(objective, disc_optimizer) -> dict[str, Any]:
    """Checkpoint entries of a Table 4 generator run (none for diffusion): its kind, training parts, their optimiser."""
    if objective is None:
        return {}
    return {
        "generator_kind": objective.kind,
        "generator_state": objective.state_dict(),
        "generator_optimizer": disc_optimizer.state_dict() if disc_optimizer is not None else None,
    }


def _load_generator_state(objective, disc_optimizer, ckpt: dict[str, Any], source: str) -> None:
    """Resume the encoder / discriminator; a checkpoint of another generator kind is refused."""
    kind = ckpt.get("generator_kind", "diffusion")
    wanted = objective.kind if objective is not None else "diffusion"
    if kind != wanted:
        raise ConfigError(f"{source} was trained with generator={kind}, this run is generator={wanted}")
    if objective is not None:
        objective.load_state_dict(ckpt["generator_state"])
        if disc_optimizer is not None:
            disc_optimizer.load_state_dict(ckpt["generator_optimizer"])
