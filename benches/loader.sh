#!/usr/bin/env bash
# The data loader alone (decode, RandomResizedCrop, flip, normalise) against what a training
# step consumes, in one run: for each preset, one training step measured on the device
# (`sapling bench step` inside `sapling bench loader`), then the loader at 1, 2, 4 workers on the
# embedded photos and on a folder of full-size JPEGs (the embedded photos scaled up to
# 4000 × 3000, a camera's 12 megapixels, quality 92).
#
#   cargo build --release && benches/loader.sh
#
# Needs Pillow for the full-size folder (`apt-get install python3-pil`, or pip). Environment:
# SAPLING (binary), CASES ("tiny:32 vit-b:4" = preset:micro-batch), DEVICE (cpu), WORKERS
# (1,2,4), BATCHES (timed micro-batches per worker count: 16).
set -euo pipefail
cd "$(dirname "$0")/.."
SAPLING=${SAPLING:-${CARGO_TARGET_DIR:-target}/release/sapling}
CASES=${CASES:-"tiny:32 vit-b:4"}
DEVICE=${DEVICE:-cpu}
WORKERS=${WORKERS:-1,2,4}
BATCHES=${BATCHES:-16}
[[ -x $SAPLING ]] || { echo "no sapling binary at $SAPLING: cargo build --release, or set SAPLING" >&2; exit 1; }
PYTHON=python3
for p in python3 /usr/bin/python3; do
  if "$p" -c 'import PIL' 2>/dev/null; then PYTHON=$p; break; fi
done
"$PYTHON" -c 'import PIL' 2>/dev/null || { echo "Pillow is needed for the full-size folder: apt-get install python3-pil" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/full"
"$PYTHON" - "$work/full" assets/images/*.jpg <<'EOF'
import sys
from pathlib import Path
from PIL import Image
out = Path(sys.argv[1])
for f in sys.argv[2:]:
    Image.open(f).convert("RGB").resize((4000, 3000), Image.BICUBIC).save(out / Path(f).name, quality=92)
EOF
echo "machine: $(nproc) cores, $(date -u +%F); full-size folder: $(find "$work/full" -name "*.jpg" | wc -l) JPEGs, $(du -sh "$work/full" | cut -f1)"

cat > "$work/row.py" <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
rows = "  ".join(f"{x['workers']}w {x['images_per_sec']:.1f} ({x['times_demand']:.2f}x)" for x in r["rows"])
need = next((x["workers"] for x in r["rows"] if x["images_per_sec"] >= r["demand"]), "more than measured")
print(f"{r['preset']:>6} b{r['micro_batch']:<3} {sys.argv[2]:>8}: step {r['demand']:.2f} images/s; loader {rows}; needs {need}")
EOF

for case in $CASES; do
  preset=${case%%:*} batch=${case##*:}
  # The step's demand once per preset, then the loader on each source against it.
  demand=$("$SAPLING" bench loader --preset "$preset" --device "$DEVICE" --batch-size "$batch" \
    --effective-batch "$batch" --loader-workers "$WORKERS" --batches "$BATCHES" --json 2>/dev/null \
    | tee "$work/embedded.json" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["demand"])')
  for data in embedded full; do
    if [[ $data == embedded ]]; then
      report=$(cat "$work/embedded.json")
    else
      report=$("$SAPLING" bench loader --preset "$preset" --device "$DEVICE" --batch-size "$batch" \
        --effective-batch "$batch" --loader-workers "$WORKERS" --batches "$BATCHES" \
        --data "$work/full" --demand "$demand" --json 2>/dev/null)
    fi
    "$PYTHON" "$work/row.py" "$report" "$data"
  done
done
