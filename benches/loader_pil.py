#!/usr/bin/env python3
"""The baseline a researcher would reach for, in one Python process on one core: a PyTorch-style
per-image loader (PIL decode, RandomResizedCrop(size, scale=(0.2, 1.0), ratio=(3/4, 4/3),
BICUBIC), RandomHorizontalFlip(0.5), ToTensor, Normalize(ImageNet mean/std)), collated into
micro-batches as torch's default collate does, timed in images/s.

    python3 benches/loader_pil.py --images 256 --warmup 32 DIR
    python3 benches/loader_pil.py --images 256 --warmup 32 'DIR/shards/set-{0..3}.tar' --json

Input: folders of images (searched recursively: jpg, jpeg, png, webp; the list shuffled each
epoch as a DataLoader with shuffle=True does) or WebDataset tar shards (read in order with
tarfile as a stream; a sample is the run of consecutive members sharing the key, the member's
path up to the first dot of its basename; its jpg/jpeg/png/webp member is the image). A
`{A..B}` brace pattern in an argument is expanded here, as WebDataset does. The input is read
again from the start whenever it runs out before --warmup + --images images.

The transforms are torchvision's own when `import torchvision` works; otherwise a faithful
reimplementation of torchvision 0.29's PIL path (RandomResizedCrop.get_params: ten tries, then
the centre-crop fallback; functional.resized_crop on a PIL image: img.crop((left, top,
left + w, top + h)) then img.resize((size, size), BICUBIC); hflip: transpose(FLIP_LEFT_RIGHT);
to_tensor: HWC uint8 -> CHW contiguous -> float32 / 255; normalize: sub_(mean).div_(std)), with
numpy in place of torch tensors. Needs Pillow and numpy.

The process is pinned to one core (--cpu, default 0) with OMP/MKL/OpenBLAS threads at 1, so the
rate is per core: the cores a loader needs are the images/s it must feed divided by this.
"""

import os

# Before numpy (or torch) is imported: one thread for every math library.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import io
import json
import math
import random
import re
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SCALE = (0.2, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)


def expand_braces(pattern):
    """`set-{0..3}.tar` -> set-0.tar .. set-3.tar (zero padding kept, as in `{00..03}`)."""
    m = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not m:
        return [pattern]
    a, b = m.group(1), m.group(2)
    width = len(a) if a.startswith("0") and len(a) > 1 else 0
    out = []
    for i in range(int(a), int(b) + 1):
        out += expand_braces(pattern[: m.start()] + str(i).zfill(width) + pattern[m.end():])
    return out


# --- transforms -----------------------------------------------------------------------------


class Reimplemented:
    """torchvision 0.29's PIL path, with Python's random in place of torch's generator."""

    name = "reimplementation of torchvision 0.29 (PIL path)"

    def __init__(self, size, seed):
        self.size = size
        self.rng = random.Random(seed)
        self.mean = np.array(MEAN, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.array(STD, dtype=np.float32).reshape(3, 1, 1)
        self.log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))

    def get_params(self, width, height):
        """RandomResizedCrop.get_params: (top, left, h, w)."""
        area = height * width
        for _ in range(10):
            target_area = area * self.rng.uniform(SCALE[0], SCALE[1])
            aspect_ratio = math.exp(self.rng.uniform(self.log_ratio[0], self.log_ratio[1]))
            w = int(round(math.sqrt(target_area * aspect_ratio)))
            h = int(round(math.sqrt(target_area / aspect_ratio)))
            if 0 < w <= width and 0 < h <= height:
                i = self.rng.randint(0, height - h)  # torch.randint(0, height - h + 1)
                j = self.rng.randint(0, width - w)
                return i, j, h, w
        # Fallback to central crop
        in_ratio = float(width) / float(height)
        if in_ratio < min(RATIO):
            w = width
            h = int(round(w / min(RATIO)))
        elif in_ratio > max(RATIO):
            h = height
            w = int(round(h * max(RATIO)))
        else:  # whole image
            w = width
            h = height
        i = (height - h) // 2
        j = (width - w) // 2
        return i, j, h, w

    def __call__(self, img):
        top, left, h, w = self.get_params(*img.size)
        # functional.resized_crop -> F_pil.crop, then F_pil.resize (skipped when already the size)
        img = img.crop((left, top, left + w, top + h))
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.BICUBIC)
        if self.rng.random() < 0.5:  # RandomHorizontalFlip: torch.rand(1) < p
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        # to_tensor: HWC uint8 -> CHW contiguous -> float / 255
        x = np.ascontiguousarray(np.array(img, dtype=np.uint8, copy=True).transpose(2, 0, 1))
        x = x.astype(np.float32) / 255
        # normalize: tensor.sub_(mean).div_(std)
        x -= self.mean
        x /= self.std
        return x


class Torchvision:
    """torchvision.transforms itself, with torch on one thread."""

    def __init__(self, size, seed):
        import torch
        import torchvision
        from torchvision import transforms as T

        torch.set_num_threads(1)
        torch.manual_seed(seed)
        self.name = f"torchvision {torchvision.__version__} (torch {torch.__version__})"
        self.t = T.Compose(
            [
                T.RandomResizedCrop(size, scale=SCALE, ratio=RATIO, interpolation=T.InterpolationMode.BICUBIC),
                T.RandomHorizontalFlip(0.5),
                T.ToTensor(),
                T.Normalize(MEAN, STD),
            ]
        )
        self.torch = torch

    def __call__(self, img):
        return self.t(img)


def make_transform(size, seed, force_reimpl):
    if not force_reimpl:
        try:
            return Torchvision(size, seed)
        except ImportError:
            pass
    return Reimplemented(size, seed)


# --- sources: each yields (name, a file object or bytes) forever -----------------------------


def folder_samples(dirs, seed):
    files = []
    for d in dirs:
        files += [p for p in Path(d).rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTS]
    files.sort()
    if not files:
        sys.exit(f"no {'/'.join(IMAGE_EXTS)} images under {' '.join(map(str, dirs))}")
    rng = random.Random(seed)
    while True:
        order = files[:]
        rng.shuffle(order)
        for p in order:
            yield str(p), p  # Image.open(path) reads the file, as an ImageFolder does


def sample_key(name):
    """WebDataset's key: the member's path up to the first dot of its basename."""
    d, _, base = name.rpartition("/")
    stem = base.split(".", 1)[0]
    return f"{d}/{stem}" if d else stem


def tar_samples(shards):
    for s in shards:
        if not os.path.isfile(s):
            sys.exit(f"no shard {s}")
    while True:
        n = 0
        for s in shards:
            with tarfile.open(s, mode="r|*") as tf:  # a stream, in order, as WebDataset reads it
                key, image = None, None
                for m in tf:
                    if not m.isfile():
                        continue
                    k = sample_key(m.name)
                    if k != key:
                        if image is not None:
                            n += 1
                            yield image
                        key, image = k, None
                    data = tf.extractfile(m).read()  # every member of the sample is read
                    base = m.name.rsplit("/", 1)[-1]
                    ext = base.split(".", 1)[1].lower() if "." in base else ""
                    if image is None and ext in IMAGE_EXTS:
                        image = (f"{s}:{m.name}", io.BytesIO(data))
                if image is not None:
                    n += 1
                    yield image
        if n == 0:
            sys.exit(f"no {'/'.join(IMAGE_EXTS)} samples in {' '.join(shards)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", help="folders of images, or WebDataset .tar shards (a {A..B} pattern is expanded)")
    ap.add_argument("--size", type=int, default=224, help="crop size in px (default 224)")
    ap.add_argument("--images", type=int, default=256, help="images timed (default 256)")
    ap.add_argument("--warmup", type=int, default=32, help="images loaded before the clock starts (default 32)")
    ap.add_argument("--batch-size", type=int, default=32, help="images collated per micro-batch, as torch's default collate (default 32; 1 = none)")
    ap.add_argument("--cpu", type=int, default=0, help="the core to pin this process to (default 0; -1 = leave the affinity alone)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reimplementation", action="store_true", help="the reimplemented transforms even when torchvision imports")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()

    pinned = None
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {args.cpu})
            pinned = args.cpu
        except OSError as e:
            print(f"loader_pil: could not pin to core {args.cpu}: {e}", file=sys.stderr)

    inputs = [p for a in args.inputs for p in expand_braces(a)]
    tars = [p for p in inputs if p.endswith(".tar")]
    if tars and len(tars) != len(inputs):
        sys.exit("give either folders or .tar shards, not both")
    source = "shards" if tars else "folder"
    samples = tar_samples(tars) if tars else folder_samples(inputs, args.seed)
    transform = make_transform(args.size, args.seed, args.reimplementation)
    stack = transform.torch.stack if isinstance(transform, Torchvision) else np.stack

    def load(n):
        """n images through the whole path, collated per --batch-size as a DataLoader would."""
        batch = []
        for _ in range(n):
            _, f = next(samples)
            img = Image.open(f).convert("RGB")
            batch.append(transform(img))
            if len(batch) == args.batch_size:
                stack(batch)
                batch = []
        if batch:
            stack(batch)

    load(args.warmup)
    t0 = time.perf_counter()
    load(args.images)
    secs = time.perf_counter() - t0
    rate = args.images / secs
    result = {
        "images_per_sec": rate,
        "images": args.images,
        "warmup": args.warmup,
        "seconds": secs,
        "size": args.size,
        "batch_size": args.batch_size,
        "source": source,
        "inputs": inputs,
        "transforms": transform.name,
        "pillow": Image.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "pinned_core": pinned,
    }
    if args.json:
        print(json.dumps(result))
    else:
        core = f"core {pinned}" if pinned is not None else "unpinned"
        print(
            f"loader_pil: {rate:.1f} images/s on one process ({core}); {args.images} images at {args.size} px "
            f"from {source} ({len(inputs)} input(s)) in {secs:.2f} s; {transform.name}, Pillow {Image.__version__}"
        )


if __name__ == "__main__":
    main()
