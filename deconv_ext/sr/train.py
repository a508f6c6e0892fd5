"""Training loop: Adam on MSE of Y / 255, random patches, cosine learning-rate decay, checkpoints,
AMP on CUDA, DistributedDataParallel when launched by torchrun (RANK / WORLD_SIZE in the environment)."""
import json
import math
import os
import time

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from . import data as srdata
from .infer import load_checkpoint, read_image, upscale_y
from .model import FSRCNN, PRESETS


def _dist_info():
    """(rank, world_size, local_rank); (0, 1, 0) when not launched by torchrun."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def _resolve_device(name, local_rank):
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def _load_training_images(data_dir):
    if data_dir:
        return [read_image(p) for p in srdata.list_images(data_dir)]
    return [srdata.skimage_image(n) for n in srdata.TRAIN_IMAGES]


def _load_heldout(scale, data_dir):
    """(name, (HR Y, LR Y)) for the in-training progress signal: the skimage held-out photographs, plus the
    images of --heldout-data when given."""
    named = [(n, srdata.skimage_image(n)) for n in srdata.HELDOUT_IMAGES]
    if data_dir:
        named += [(os.path.splitext(os.path.basename(p))[0], read_image(p)) for p in srdata.list_images(data_dir)]
    return [(n, srdata.make_pair(img, scale)) for n, img in named]


def _parse_shrinks(text):
    factors = tuple(float(f) for f in str(text).split(",") if f.strip())
    if not factors or not all(0 < f <= 1 for f in factors):
        raise ValueError(f"--shrinks: expected comma-separated factors in (0, 1], got {text!r}")
    return factors


class Diagnostics:
    """Per-layer optimisation health, one `diag` line per weight tensor every --diag-every steps:

    |g|      gradient norm of the loss (unscaled, i.e. after GradScaler.unscale_)
    upd/w    ||w_after - w_before|| / ||w_before|| of this optimiser step (Adam moves every element by about
             lr * m / (sqrt(v) + eps), so upd/w ~ lr / typical |w| when the gradient's sign is consistent)
    drift    ||w - w_start|| / ||w_start||, w_start = the weights when this process started
    sqrt(v)/eps  median over the tensor of Adam's bias-corrected sqrt(v) divided by eps: when this is near 1 or
             below, eps (not the gradient) sets the step size and the layer is effectively frozen
    """

    def __init__(self, model, opt, every):
        self.opt, self.every = opt, every
        self.params = [(n, p) for n, p in model.named_parameters() if p.dim() > 1]
        self.start = {n: p.detach().clone() for n, p in self.params}
        self.before = None

    def due(self, step):
        return self.every and step % self.every == 0

    def snapshot(self):
        self.before = {n: p.detach().clone() for n, p in self.params}

    def lines(self, step):
        out = []
        for n, p in self.params:
            w0, w = self.before[n], p.detach()
            g = p.grad.norm().item() if p.grad is not None else float("nan")
            state = self.opt.state.get(p, {})
            ratio = float("nan")
            if "exp_avg_sq" in state:
                group = next(gr for gr in self.opt.param_groups if any(q is p for q in gr["params"]))
                t = float(state["step"])
                v_hat = state["exp_avg_sq"] / (1 - group["betas"][1] ** t)
                ratio = (v_hat.sqrt().median() / group["eps"]).item()
            out.append(f"diag step {step} {n:<16} |w| {w.norm().item():.3e} |g| {g:.3e} "
                       f"upd/w {(w - w0).norm().item() / max(w0.norm().item(), 1e-30):.2e} "
                       f"drift {(w - self.start[n]).norm().item() / max(self.start[n].norm().item(), 1e-30):.3f} "
                       f"sqrt(v)/eps {ratio:.2e}")
        self.before = None
        return out


def _param_groups(model, lr, deconv_lr_mult):
    deconv = [p for n, p in model.named_parameters() if n.startswith("deconv.")]
    body = [p for n, p in model.named_parameters() if not n.startswith("deconv.")]
    return [{"params": body, "lr": lr, "base_lr": lr},
            {"params": deconv, "lr": lr * deconv_lr_mult, "base_lr": lr * deconv_lr_mult}]


def _cosine(step, steps, final_frac):
    """Cosine decay from 1 to final_frac over `steps`."""
    t = min(step, steps) / max(1, steps)
    return final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * t))


def heldout_psnr(model, pairs):
    """Mean Y-PSNR (shave = scale) of the model on (HR Y, LR Y) pairs; cheap progress signal."""
    from .evaluate import psnr_y

    return float(np.mean([psnr_y(upscale_y(model, lr, tile=0), hr, model.scale) for hr, lr in pairs]))


def train(args):
    rank, world, local_rank = _dist_info()
    config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    device = _resolve_device(args.device, local_rank)
    if args.threads:
        torch.set_num_threads(args.threads)
    distributed = world > 1
    if distributed:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    is_main = rank == 0
    if args.batch % world:
        raise ValueError(f"--batch {args.batch} must be divisible by the number of processes ({world})")
    per_rank_batch = args.batch // world

    torch.manual_seed(args.seed)  # same initial weights on every rank (DDP also broadcasts them)
    model = FSRCNN(args.scale, *PRESETS[args.preset], center=args.center).to(device)
    if args.init:  # every layer but the scale-specific deconvolution (the paper's fine-tuning recipe)
        load_checkpoint(args.init, model, init=True)
    if args.deconv_init_std is not None:
        nn.init.normal_(model.deconv.weight, 0.0, args.deconv_init_std)
    opt = torch.optim.Adam(_param_groups(model, args.lr, args.deconv_lr_mult), eps=args.adam_eps)
    use_amp = device.type == "cuda" and not args.no_amp
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    sampler = srdata.PatchSampler(_load_training_images(args.data), args.scale, args.patch,
                                  seed=args.seed * 1000 + rank,  # per-rank seeded patch stream
                                  shrinks=_parse_shrinks(args.shrinks))

    os.makedirs(args.out, exist_ok=True)
    latest = os.path.join(args.out, "latest.pt")
    step = origin = 0  # the cosine schedule runs from `origin` to args.steps
    if args.resume:
        path = latest if args.resume == "auto" else args.resume
        ckpt = load_checkpoint(path, model, resume=True)
        opt.load_state_dict(ckpt["optimizer"])
        for group in opt.param_groups:
            group["eps"] = args.adam_eps  # the command line's --adam-eps wins over the saved one
        for group, fresh in zip(opt.param_groups, _param_groups(model, args.lr, args.deconv_lr_mult)):
            group["base_lr"] = fresh["base_lr"]  # the command line's --lr / --deconv-lr-mult win over the saved ones
        scaler.load_state_dict(ckpt["scaler"])
        # resuming with another number of processes: rank 0 continues the saved stream, the other ranks
        # keep their own fresh (seed, rank) streams, so no two ranks ever draw the same patches
        if len(ckpt["sampler"]) == world or rank == 0:
            sampler.set_state(ckpt["sampler"][rank])
        step = ckpt["step"]
        origin = step if args.warm_restart else ckpt.get("origin", 0)
        if is_main:
            print(f"resumed from {path} at step {step}", flush=True)

    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if distributed else model
    heldout = _load_heldout(args.scale, args.heldout_data) if is_main and args.eval_every else []
    diag = Diagnostics(model, opt, args.diag_every) if is_main and args.diag_every else None
    log = open(os.path.join(args.out, "train.log"), "a") if is_main else None

    def save(path):
        states = [sampler.state()]
        if distributed:
            gathered = [None] * world
            dist.all_gather_object(gathered, sampler.state())
            states = gathered
        if is_main:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                        "sampler": states, "step": step, "origin": origin, "args": config}, path + ".tmp")
            os.replace(path + ".tmp", path)

    def say(msg):
        if is_main:
            log.write(msg + "\n")
            log.flush()

    if is_main:
        say(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {json.dumps(config, sort_keys=True)} world={world} "
            f"device={device} threads={torch.get_num_threads()}")
    bar = None
    if is_main and not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=args.steps, initial=step, desc=f"x{args.scale}", dynamic_ncols=True, mininterval=1.0)
    mse = args.loss == "mse"  # else l1; train_psnr is an MSE reading, logged for MSE only
    loss_fn = nn.functional.mse_loss if mse else nn.functional.l1_loss
    t0, run_loss, run_n = time.time(), 0.0, 0
    model.train()
    while step < args.steps:
        frac = _cosine(step - origin, args.steps - origin, args.final_lr_frac)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * frac
        lr_np, hr_np = sampler.sample(per_rank_batch)
        x, y = torch.from_numpy(lr_np).to(device), torch.from_numpy(hr_np).to(device)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            out = net(x)
        loss = loss_fn(out.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        diag_now = diag is not None and diag.due(step + 1)
        if diag_now:
            scaler.unscale_(opt)  # so that |g| is the loss's own gradient (a no-op without AMP)
            diag.snapshot()
        scaler.step(opt)
        scaler.update()
        step += 1
        run_loss += loss.item()
        run_n += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.2e}", psnr=f"{-10 * math.log10(max(loss.item(), 1e-12)):.2f}")
        last = step == args.steps
        if args.log_every and (step % args.log_every == 0 or last):
            mean = run_loss / run_n
            msg = f"step {step} loss {mean:.3e} " + \
                  (f"train_psnr {-10 * math.log10(mean):.2f} " if mse else "") + \
                  f"lr {args.lr * frac:.2e} elapsed {time.time() - t0:.0f}s"
            if heldout and (step % args.eval_every == 0 or last):
                model.eval()
                k = len(srdata.HELDOUT_IMAGES)  # heldout_psnr: the skimage three, comparable with older logs
                msg += f" heldout_psnr {heldout_psnr(model, [p for _, p in heldout[:k]]):.3f}"
                if len(heldout) > k:  # then the mean over --heldout-data and each of its images
                    msg += f" heldout_data_psnr {heldout_psnr(model, [p for _, p in heldout[k:]]):.3f} [" + \
                           " ".join(f"{n}:{heldout_psnr(model, [p]):.2f}" for n, p in heldout[k:]) + "]"
                model.train()
            say(msg)
            run_loss, run_n = 0.0, 0
        if diag_now:
            for line in diag.lines(step):
                say(line)
        if args.ckpt_every and step % args.ckpt_every == 0 and not last:
            save(latest)
    if bar is not None:
        bar.close()
    save(latest)
    save(os.path.join(args.out, "final.pt"))
    weights = os.path.join(args.out, f"fsrcnn_x{args.scale}.pt")
    if is_main:
        torch.save(model.state_dict(), weights)
        say(f"# done: {step} steps in {time.time() - t0:.0f}s -> {weights}")
        print(f"wrote {weights}", flush=True)
        log.close()
    if distributed:
        if args.check_ddp_sync:
            _check_ddp_sync(model, world, is_main)
        dist.barrier()
        dist.destroy_process_group()
    return model


def _check_ddp_sync(model, world, is_main):
    """Compare every rank's final parameters with rank 0's (DDP must keep them bit-identical)."""
    flat = torch.cat([p.detach().reshape(-1).cpu() for p in model.parameters()])
    gathered = [None] * world
    dist.all_gather_object(gathered, flat)
    if not all(torch.equal(gathered[0], g) for g in gathered[1:]):
        raise RuntimeError("DDP ranks ended with different weights")
    if is_main:
        print(f"ddp weights identical on {world} ranks", flush=True)
