#!/usr/bin/env bash
# Sapling's data loader against the baseline a researcher would use (benches/loader_pil.py: PIL
# decode, torchvision's RandomResizedCrop(224, scale=(0.2, 1), BICUBIC), flip, ToTensor,
# Normalize, in one Python process), both on ONE core (taskset), side by side in one run, on two
# sets made here from the embedded photos (assets/images/*.jpg, scaled up with Pillow, varied
# crops and flips so no two files are alike):
#   imagenet: 256 JPEGs of about 500 x 375 (some portrait, some 500 x 333), quality 90;
#   12mp:     32 JPEGs of 4000 x 3000, a camera's 12 megapixels, quality 92;
#   12mp-packed: those 32 as `sapling data pack --max-side 1024` writes them (shards only);
# each read as a folder and as 4 WebDataset tar shards (plain `tar`, members 000000.jpg,
# 000001.jpg, ..., one sample each). Sapling runs `bench loader --preset vit-b --device cpu
# --batch-size 32 --loader-workers 1 --demand 1` (the loader alone, no training step); shards go
# in as --data 'DIR/shards/set-{0..3}.tar', and a binary that refuses them is reported as such.
# Each measurement is repeated ROUNDS times, interleaved, and the median is reported, with the
# cores each loader would need to feed TARGET images/s (2,000: the published MAE ViT-B rate on
# one A100), assuming the loader scales linearly with cores.
#
#   cargo build --release && benches/loader_vs_pil.sh
#
# Needs Pillow and numpy (`pip install pillow numpy`, or apt-get install python3-pil
# python3-numpy); torchvision is used when it imports, else loader_pil.py's reimplementation of
# its PIL path. Environment: SAPLING (binary), ROUNDS (3), CPU (the core both run on: 0),
# SMALL_BATCHES (timed micro-batches of 32 on the 500 x 375 set: 8), BIG_BATCHES (on the 12 MP
# set: 2), TARGET (2000), GRAIN (Gaussian grain, sigma in levels, added before saving so files
# are as large as real photos' rather than smooth upscales': 0, none).
set -euo pipefail
cd "$(dirname "$0")/.."
SAPLING=${SAPLING:-${CARGO_TARGET_DIR:-target}/release/sapling}
ROUNDS=${ROUNDS:-3}
CPU=${CPU:-0}
SMALL_BATCHES=${SMALL_BATCHES:-8}
BIG_BATCHES=${BIG_BATCHES:-2}
TARGET=${TARGET:-2000}
GRAIN=${GRAIN:-0}
BATCH=32
[[ -x $SAPLING ]] || { echo "no sapling binary at $SAPLING: cargo build --release, or set SAPLING" >&2; exit 1; }
PYTHON=
for p in python3 /usr/bin/python3; do
  if "$p" -c 'import PIL, numpy' 2>/dev/null; then PYTHON=$p; break; fi
done
[[ -n $PYTHON ]] || { echo "Pillow and numpy are needed: pip install pillow numpy (or apt-get install python3-pil python3-numpy)" >&2; exit 1; }
PIN=()
if command -v taskset >/dev/null; then
  PIN=(taskset -c "$CPU")
else
  echo "no taskset: sapling runs unpinned (loader_pil.py pins itself)" >&2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The two sets, each as a folder (SET/images) and as 4 shards (SET/shards/set-{0..3}.tar).
"$PYTHON" - "$work" "$GRAIN" assets/images/*.jpg <<'EOF'
import random, sys
from pathlib import Path
from PIL import Image, ImageChops
work, grain, srcs = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
photos = [Image.open(f).convert("RGB") for f in srcs]
rng = random.Random(0)
def make(out, n, sizes, quality):
    out.mkdir(parents=True)
    for i in range(n):
        im = photos[i % len(photos)]
        W, H = sizes[i % len(sizes)]
        # A random crop of 60-100% of each side, at the target's aspect where it fits, then flipped
        # or not: no two files alike, and each one a smooth upscale of a real photo.
        w = int(im.width * rng.uniform(0.6, 1.0))
        h = min(im.height, int(w * H / W)) if rng.random() < 0.7 else int(im.height * rng.uniform(0.6, 1.0))
        x, y = rng.randint(0, im.width - w), rng.randint(0, im.height - h)
        img = im.crop((x, y, x + w, y + h)).resize((W, H), Image.BICUBIC)
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if grain > 0:
            img = ImageChops.add(img, Image.effect_noise((W, H), grain).convert("RGB"), 1, -128)
        img.save(out / f"{Path(srcs[i % len(srcs)]).stem}-{i:04d}.jpg", quality=quality)
make(work / "imagenet" / "images", 256, [(500, 375), (500, 375), (375, 500), (500, 333)], 90)
make(work / "12mp" / "images", 32, [(4000, 3000)], 92)
EOF
SETS="imagenet 12mp"
for set in $SETS; do
  stage=$work/$set/stage
  mkdir -p "$stage" "$work/$set/shards"
  mapfile -t files < <(cd "$work/$set/images" && ls | sort)
  names=()
  for i in "${!files[@]}"; do
    names+=("$(printf '%06d.jpg' "$i")")
    cp "$work/$set/images/${files[$i]}" "$stage/${names[$i]}"
  done
  per=$(( (${#names[@]} + 3) / 4 ))
  for k in 0 1 2 3; do
    tar -cf "$work/$set/shards/set-$k.tar" -C "$stage" "${names[@]:$((k * per)):$per}"
  done
  rm -rf "$stage"
done

# A third set: the 12 MP photos as `sapling data pack --max-side 1024` writes them (what the
# README advises for photos much larger than the training size), read as shards by both loaders.
"$SAPLING" data pack --data "$work/12mp/images" --out "$work/12mp-packed/shards" --max-side 1024 \
  --workers 1 >/dev/null 2>&1
SETS="$SETS 12mp-packed"

transforms=$("$PYTHON" -c 'import torchvision, torch; print(f"torchvision {torchvision.__version__}")' 2>/dev/null \
  || echo "reimplemented torchvision PIL path (no torchvision)")
echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(date -u +%F); both on core $CPU"
echo "baseline: $("$PYTHON" -c 'import sys, PIL, numpy; print(f"Python {sys.version.split()[0]}, Pillow {PIL.__version__}, numpy {numpy.__version__}")'), $transforms"
for set in $SETS; do
  if [[ -d $work/$set/images ]]; then
    echo "$set: $(ls "$work/$set/images" | wc -l) JPEGs, folder $(du -sh "$work/$set/images" | cut -f1), shards $(du -ch "$work/$set"/shards/*.tar | tail -1 | cut -f1) (grain $GRAIN)"
  else
    echo "$set: shards $(du -ch "$work/$set"/shards/*.tar | tail -1 | cut -f1), short side 1024 px (sapling data pack)"
  fi
done

rate() { "$PYTHON" -c 'import json, sys; r = json.load(sys.stdin); print(r["rows"][0]["images_per_sec"] if "rows" in r else r["images_per_sec"])'; }
shards_ok=1
for round in $(seq "$ROUNDS"); do
  for set in $SETS; do
    batches=$SMALL_BATCHES
    [[ $set == 12mp ]] && batches=$BIG_BATCHES
    for source in folder shards; do
      pil_data=()
      if [[ $source == folder ]]; then
        [[ -d $work/$set/images ]] || continue
        data=$work/$set/images
      elif [[ $set == 12mp-packed ]]; then
        data=$work/$set/shards
        pil_data=("$work/$set"/shards/*.tar)
      else
        data="$work/$set/shards/set-{0..3}.tar"
      fi
      ((${#pil_data[@]})) || pil_data=("$data")
      if [[ $source == folder || $shards_ok == 1 ]]; then
        if out=$("${PIN[@]}" "$SAPLING" bench loader --preset vit-b --device cpu --batch-size "$BATCH" \
            --effective-batch "$BATCH" --loader-workers 1 --batches "$batches" --demand 1 --json \
            --data "$data" 2>"$work/err"); then
          echo "$set $source sapling $(rate <<<"$out")" >>"$work/rates"
        elif [[ $source == shards ]]; then
          echo "shards: not supported by this binary ($(grep -m1 . "$work/err" | cut -c1-200))"
          shards_ok=0
        else
          cat "$work/err" >&2; exit 1
        fi
      fi
      out=$("${PIN[@]}" "$PYTHON" benches/loader_pil.py --cpu "$CPU" --size 224 --batch-size "$BATCH" \
        --warmup "$BATCH" --images $((batches * BATCH)) --json "${pil_data[@]}")
      echo "$set $source pil $(rate <<<"$out")" >>"$work/rates"
    done
  done
  echo "round $round of $ROUNDS done"
done

"$PYTHON" - "$work/rates" "$TARGET" "$ROUNDS" <<'EOF'
import math, statistics, sys
from collections import defaultdict
rates, target = defaultdict(list), float(sys.argv[2])
for line in open(sys.argv[1]):
    s, src, tool, r = line.split()
    rates[(s, src, tool)].append(float(r))
def cell(k):
    v = rates.get(k)
    if not v:
        return None, "-"
    m = statistics.median(v)
    return m, f"{m:.1f} ±{(max(v) - min(v)) / 2 / m * 100:.0f}%"
print(f"\nimages/s on one core, median of {sys.argv[3]} (± half the spread); cores = ceil({target:.0f} / rate)")
print(f"{'set':<11} {'source':<7} {'sapling':>14} {'PIL':>14} {'sapling/PIL':>12} {'cores sapling':>14} {'cores PIL':>10}")
for s in dict.fromkeys(k[0] for k in rates):
    for src in ("folder", "shards"):
        (a, at), (b, bt) = cell((s, src, "sapling")), cell((s, src, "pil"))
        if a is None and b is None:
            continue
        ratio = f"{a / b:.2f}" if a and b else "-"
        ca = str(math.ceil(target / a)) if a else "-"
        cb = str(math.ceil(target / b)) if b else "-"
        print(f"{s:<11} {src:<7} {at:>14} {bt:>14} {ratio:>12} {ca:>14} {cb:>10}")
EOF
