#!/usr/bin/env python3
"""The same MAE as sapling, written plainly in PyTorch, as a reference (like llm.c's).

Two uses, both starting from a case folder written by sapling:

    sapling bench reference-case --preset tiny --device cpu --case-dir /tmp/case
    python3 benches/torch_mae.py check /tmp/case     # same weights, images, masks: compare
    python3 benches/torch_mae.py check /tmp/case --record numbers.json   # also keep torch's
    python3 benches/torch_mae.py bench /tmp/case --batch 32 --steps 10   # images/s
    python3 benches/torch_mae.py bench /tmp/case --device cuda           # ... on a GPU
    python3 benches/torch_mae.py first-loss /tmp/case --weights mae.pth  # see benches/import.sh

`check` replays sapling's steps (same initial weights, batches, masks, learning rates) and
compares the loss and the global gradient norm of every step, and the weights after the last
step; it exits non-zero past the tolerance. `bench` times training steps of the case's model
shapes on random data and prints one JSON line.

The model follows sapling's `model::mae` exactly: patches in MAE's `nchpwq -> nhwpqc` order,
the encoder embeds only the kept patches, fixed sin-cos tables (loaded from the case), pre-norm
blocks with fused qkv and exact GELU, decoder with mask tokens, norm-pix target with the
unbiased variance and eps 1e-6, MSE averaged over removed patches; AdamW with weight decay on
linear weight matrices only, global-norm clipping.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        h = self.heads
        q, k, v = self.qkv(x).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
        q = q * (d // h) ** -0.5
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MAE(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        d, dd, p, ch = c["dim"], c["decoder_dim"], c["patch_size"], c["in_chans"]
        eps, r = c["layer_norm_eps"], c["mlp_ratio"]
        self.L = (c["img_size"] // p) ** 2
        self.K = self.L - int(self.L * c["mask_ratio"])
        self.patch_embed = nn.Linear(p * p * ch, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.register_buffer("pos_embed", torch.zeros(1, 1 + self.L, d))
        self.blocks = nn.ModuleList([Block(d, c["heads"], r, eps) for _ in range(c["depth"])])
        self.norm = nn.LayerNorm(d, eps=eps)
        self.decoder_embed = nn.Linear(d, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.register_buffer("decoder_pos_embed", torch.zeros(1, 1 + self.L, dd))
        self.decoder_blocks = nn.ModuleList(
            [Block(dd, c["decoder_heads"], r, eps) for _ in range(c["decoder_depth"])]
        )
        self.decoder_norm = nn.LayerNorm(dd, eps=eps)
        self.decoder_pred = nn.Linear(dd, p * p * ch)

    def load_sapling(self, tensors):
        """Loads sapling's `model_tensors` (timm names; the patch embedding as a conv)."""
        t = dict(tensors)
        w = t.pop("patch_embed.proj.weight")  # [D, C, p, p] -> [D, p*p*C] in (row, col, chan)
        t["patch_embed.weight"] = w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)
        t["patch_embed.bias"] = t.pop("patch_embed.proj.bias")
        missing, unexpected = self.load_state_dict(t, strict=False)
        assert not missing and not unexpected, (missing, unexpected)

    def patchify(self, imgs):
        p = self.c["patch_size"]
        b, ch, h, w = imgs.shape
        x = imgs.reshape(b, ch, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (h // p) * (w // p), p * p * ch)

    def forward(self, imgs, ids_shuffle):
        patches = self.patchify(imgs)
        b, L, pd = patches.shape
        K = self.K
        ids_keep = ids_shuffle[:, :K]
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        visible = torch.gather(patches, 1, ids_keep.unsqueeze(-1).expand(-1, -1, pd))
        pos = self.pos_embed[0, 1:][ids_keep]
        x = self.patch_embed(visible) + pos
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))
        dd = x.shape[-1]
        mask_tokens = self.mask_token.expand(b, L - K, dd)
        x_ = torch.cat([x[:, 1:], mask_tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dd))
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        target = patches
        if self.c["norm_pix"]:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)  # unbiased, as MAE
            target = (target - mean) / (var + 1e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(dim=-1)
        mask = torch.ones(b, L, device=patches.device)
        mask.scatter_(1, ids_keep, 0.0)
        return (loss * mask).sum() / mask.sum()


def adamw(model, o):
    """Weight decay on linear weight matrices only, as sapling's `optim::decay`."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim == 2 else no_decay).append(p)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": o["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=0.0,
        betas=(o["beta1"], o["beta2"]),
        eps=o["eps"],
    )


def step(model, opt, imgs, ids, lr, clip):
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss = model(imgs, ids)
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    if clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    opt.step()
    return loss.item(), norm.item()


def load_case(folder):
    with open(os.path.join(folder, "case.json")) as f:
        case = json.load(f)
    model = MAE(case["config"]["model"])
    model.load_sapling(load_file(os.path.join(folder, "weights.safetensors")))
    return case, model


def check(args):
    case, model = load_case(args.case)
    tensors = load_file(os.path.join(args.case, "case.safetensors"))
    images, ids = tensors["images"], tensors["ids_shuffle"]
    opt = adamw(model, case["config"]["optim"])
    clip = case["config"]["optim"]["clip_grad"]
    worst = 0.0
    torch_losses, torch_norms = [], []
    print(f"{'step':>4} {'loss sapling':>14} {'loss torch':>14} {'norm sapling':>14} {'norm torch':>14}")
    for s, lr in enumerate(case["lrs"]):
        loss, norm = step(model, opt, images[s], ids[s], lr, clip)
        torch_losses.append(loss)
        torch_norms.append(norm)
        ls, ns = case["losses"][s], case["grad_norms"][s]
        print(f"{s + 1:>4} {ls:>14.7f} {loss:>14.7f} {ns:>14.7f} {norm:>14.7f}")
        worst = max(worst, abs(loss - ls) / abs(ls), abs(norm - ns) / abs(ns))
    final = load_file(os.path.join(args.case, "final.safetensors"))
    ref = MAE(case["config"]["model"])
    ref.load_sapling(final)
    ours = dict(model.named_parameters())
    # The key third of each qkv bias has an exactly zero true gradient (softmax ignores a
    # constant added to a row of scores), so Adam turns rounding noise there into full-size
    # steps of either sign; it is reported apart.
    wdiff, kdiff = 0.0, 0.0
    for n, p in ref.named_parameters():
        d = (p - ours[n]).detach().abs()
        if n.endswith("attn.qkv.bias"):
            third = d.shape[0] // 3
            kdiff = max(kdiff, d[third : 2 * third].max().item())
            d = torch.cat([d[:third], d[2 * third :]])
        wdiff = max(wdiff, d.max().item())
    print(f"largest relative difference of loss / grad norm: {worst:.2e} (tolerance {args.tol:.0e})")
    print(
        f"largest weight difference after {len(case['lrs'])} steps: {wdiff:.2e} "
        f"(tolerance {args.weight_tol:.0e}); key biases: {kdiff:.2e}"
    )
    ok = worst <= args.tol and wdiff <= args.weight_tol
    print("MATCH" if ok else "MISMATCH")
    if args.record:
        # PyTorch's own numbers, at full precision: what tests/suite/pytorch_numbers.rs holds.
        with open(args.record, "w") as f:
            json.dump({"losses": torch_losses, "grad_norms": torch_norms}, f, indent=1)
        print(f"wrote PyTorch's losses and gradient norms to {args.record}")
    return 0 if ok else 1


def bench(args):
    torch.set_num_threads(args.threads or os.cpu_count())
    dev = torch.device(args.device)
    # A GPU runs asynchronously: each phase is timed up to a synchronisation.
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    case, model = load_case(args.case)
    model.to(dev)
    c = case["config"]["model"]
    opt = adamw(model, case["config"]["optim"])
    clip = case["config"]["optim"]["clip_grad"]
    b, s = args.batch, c["img_size"]
    g = torch.Generator().manual_seed(0)
    imgs = torch.randn(b, c["in_chans"], s, s, generator=g).to(dev)
    ids = torch.argsort(torch.rand(b, model.L, generator=g), dim=1).to(dev)
    times = {"forward": [], "backward": [], "optimizer": []}
    for i in range(args.steps + 2):
        for grp in opt.param_groups:
            grp["lr"] = 1e-8
        opt.zero_grad(set_to_none=True)
        sync()
        t0 = time.perf_counter()
        loss = model(imgs, ids)
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip > 0 else float("inf"))
        opt.step()
        sync()
        t3 = time.perf_counter()
        if i >= 2:
            times["forward"].append(t1 - t0)
            times["backward"].append(t2 - t1)
            times["optimizer"].append(t3 - t2)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    total = sum(med.values())
    print(
        json.dumps(
            {
                "impl": "pytorch",
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "device": str(dev),
                "preset": case["config"]["preset"],
                "micro_batch": b,
                "images_per_sec": b / total,
                "forward_ms": med["forward"] * 1e3,
                "backward_ms": med["backward"] * 1e3,
                "optimizer_ms": med["optimizer"] * 1e3,
                # The caching allocator's high-water mark (reserved, as sapling's pool figure).
                "peak_memory": torch.cuda.max_memory_reserved(dev) if dev.type == "cuda" else None,
            }
        )
    )
    return 0


def first_loss(args):
    """The loss PyTorch computes from a MAE-layout `.pth` on the case's first batch and masks."""
    with open(os.path.join(args.case, "case.json")) as f:
        case = json.load(f)
    model = MAE(case["config"]["model"])
    sd = torch.load(args.weights, map_location="cpu", weights_only=True)
    sd = {k: v for k, v in sd.get("model", sd).items() if k not in ("pos_embed", "decoder_pos_embed")}
    # sapling's fixed tables, as the case wrote them (the .pth holds the same sin-cos values).
    tables = load_file(os.path.join(args.case, "weights.safetensors"))
    for k in ("pos_embed", "decoder_pos_embed"):
        sd[k] = tables[k]
    model.load_sapling(sd)
    tensors = load_file(os.path.join(args.case, "case.safetensors"))
    with torch.no_grad():
        loss = model(tensors["images"][0], tensors["ids_shuffle"][0]).item()
    ours = case["losses"][0]
    rel = abs(loss - ours) / abs(ours)
    print(f"step-0 loss: pytorch {loss:.7f}, sapling {ours:.7f}, relative difference {rel:.2e}")
    return 0 if rel <= args.tol else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="replay a sapling reference case and compare")
    c.add_argument("case")
    c.add_argument("--tol", type=float, default=1e-4, help="relative, loss and grad norm")
    c.add_argument("--weight-tol", type=float, default=5e-5, help="absolute, final weights")
    c.add_argument("--record", help="write PyTorch's losses and grad norms (JSON) to this file")
    bp = sub.add_parser("bench", help="images/s of a training step")
    bp.add_argument("case")
    bp.add_argument("--batch", type=int, default=32)
    bp.add_argument("--steps", type=int, default=5)
    bp.add_argument("--threads", type=int, default=0)
    bp.add_argument("--device", default="cpu", help="cpu, or cuda (cuda:N) for a GPU")
    lp = sub.add_parser("first-loss", help="the first step's loss from a MAE-layout .pth")
    lp.add_argument("case", help="a reference case written with --init-from WEIGHTS")
    lp.add_argument("--weights", required=True)
    lp.add_argument("--tol", type=float, default=1e-5, help="relative")
    a = ap.parse_args()
    run = {"check": check, "bench": bench, "first-loss": first_loss}[a.cmd]
    sys.exit(run(a))


if __name__ == "__main__":
    main()
