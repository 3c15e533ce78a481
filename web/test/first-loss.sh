#!/usr/bin/env bash
# The browser's first loss against native sapling's: trains one step natively, on the CPU, from
# the weights the page started from (saved by browser.mjs with `initial-weights=1`; native
# WebGPU and the CPU draw other weights from the same seed), with the page's seed (the
# default), images (the embedded photos), effective batch, micro-batch, levers and kernels as
# result.json records them, and compares the two first losses: same weights, batches and
# masks, so they differ only by float rounding. Usage: first-loss.sh OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
result=$1/result.json weights=$1/initial.safetensors
[[ -f $weights ]] || { echo "first-loss: no $weights (the page ran without initial-weights=1)" >&2; exit 1; }
# float32 rounding of SwiftShader's and the CPU's exp, log and summation orders.
tolerance=${SAPLING_FIRST_LOSS_TOLERANCE:-1e-4}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sapling/target}"
sapling="$CARGO_TARGET_DIR/release/sapling"
[[ -x $sapling ]] || cargo build --release --bin sapling

read -r effective micro checkpointing kernels browser_loss < <(python3 - "$result" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
plan = r["plan"]
levers = plan["levers"]
# The kernels the page's plan ran: the CPU's counterpart of its WGSL kernels is the CPU's own
# (`auto` there).
kernels = {"wgsl": "auto"}.get(levers["kernels"], levers["kernels"])
print(plan["effective_batch"], plan["micro_batch"],
      "blocks" if levers["checkpointing"] else "off", kernels, repr(r["losses"][0]))
PY
)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "first-loss: native sapling on the CPU from the page's initial weights, effective batch $effective, micro-batch $micro, checkpointing $checkpointing, kernels $kernels"
"$sapling" train --device cpu --init-from "$weights" --steps 1 --effective-batch "$effective" --batch-size "$micro" \
    --activation-checkpointing "$checkpointing" --kernels "$kernels" --precision f32 \
    --out "$out/run" > "$out/train.log" 2>&1 || { cat "$out/train.log"; exit 1; }
python3 - "$out/run/metrics.jsonl" "$browser_loss" "$tolerance" <<'PY'
import json, sys
native = json.loads(open(sys.argv[1]).readline())["loss"]
browser, tolerance = float(sys.argv[2]), float(sys.argv[3])
rel = abs(browser - native) / abs(native)
print(f"first-loss: browser {browser:.8f}, native {native:.8f}, relative difference {rel:.2e} (tolerance {tolerance:g})")
sys.exit(0 if rel <= tolerance else f"first-loss FAILED: the browser's first loss is {rel:.2e} from native's")
PY
