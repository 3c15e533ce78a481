#!/usr/bin/env bash
# Mixed precision against f32, side by side in one run on the WebGPU adapter: `tiny` trained for
# STEPS steps in f32 and in f16 from the same seed (same weights, images and masks), the loss
# curves compared and drawn in one PNG; the peak device memory of one step in each (`sapling
# bench step`); and the batch planner's micro-batch in each under a memory budget that binds,
# with the other levers held (burn's kernels, no checkpointing) so precision is what differs:
# the memory model's largest fitting micro-batch (`sapling plan`) and the probe's choice after
# real trial steps (`sapling probe`). On lavapipe (software Vulkan) the f16 timings say nothing
# about a GPU's: it emulates f16 arithmetic on the CPU.
#
#   cargo build --release && benches/precision.sh
#
# Environment: SAPLING (binary), STEPS (300), BATCH (micro-batch = effective batch, 8),
# BUDGET (MiB for the planner, 160), PLAN_BATCH (effective batch the planner splits, 64),
# PARTS (which of "train step plan" to run; all by default).
set -euo pipefail
cd "$(dirname "$0")/.."
SAPLING=${SAPLING:-${CARGO_TARGET_DIR:-target}/release/sapling}
STEPS=${STEPS:-300}
BATCH=${BATCH:-8}
BUDGET=${BUDGET:-160}
PLAN_BATCH=${PLAN_BATCH:-64}
PARTS=${PARTS:-"train step plan"}
[[ -x $SAPLING ]] || { echo "no sapling binary at $SAPLING: cargo build --release, or set SAPLING" >&2; exit 1; }
part() { [[ " $PARTS " == *" $1 "* ]]; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
day=$(date +%F)
"$SAPLING" info 2>/dev/null | head -20

if part train; then
  for p in f32 f16; do
    start=$(date +%s)
    "$SAPLING" train --device wgpu --precision "$p" --steps "$STEPS" --batch-size "$BATCH" \
      --effective-batch "$BATCH" --seed 0 --out "$work/$p" --checkpoint-every "$STEPS" \
      >/dev/null 2>"$work/$p.err" || { cat "$work/$p.err" >&2; exit 1; }
    echo "== train $p: $STEPS steps of tiny at batch $BATCH in $(( $(date +%s) - start )) s"
    cp "$work/$p/metrics.jsonl" "benches/results/precision-$p.jsonl"
  done
  "$SAPLING" plot "$work/f32" "$work/f16" --out "benches/results/precision-tiny-$day.png"
  python3 - "$work/f32/metrics.jsonl" "$work/f16/metrics.jsonl" <<'EOF'
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
rel = [abs(x["loss"] - y["loss"]) / x["loss"] for x, y in zip(a, b)]
tail = len(rel) // 3
print(f"loss f32 {a[0]['loss']:.4f} -> {a[-1]['loss']:.4f}, f16 {b[0]['loss']:.4f} -> {b[-1]['loss']:.4f}")
print(f"|loss f16 - f32| / loss: max {max(rel):.3%}, mean {sum(rel) / len(rel):.3%}, "
      f"mean of the last third {sum(rel[-tail:]) / tail:.3%} over {len(rel)} logged steps")
print(f"f16 loss scale at the end {b[-1].get('loss_scale')}, skipped steps {b[-1].get('skipped_steps')}")
EOF
fi

if part step; then
  for p in f32 f16; do
    "$SAPLING" bench step --device wgpu --precision "$p" --batch-size "$BATCH" \
      --effective-batch "$BATCH" --json 2>/dev/null >"$work/step-$p.json"
  done
  python3 - "$work" <<'EOF'
import json, sys
print(f"bench step      {'images/s':>9} {'peak MiB':>9} {'model MiB':>9}")
for p in ["f32", "f16"]:
    s = json.load(open(f"{sys.argv[1]}/step-{p}.json"))
    peak = s.get("peak_memory") or 0
    print(f"bench step {p:4} {s['images_per_sec']:9.1f} {peak / 2**20:9.1f} {s['predicted_peak'] / 2**20:9.1f}")
EOF
fi

if part plan; then
  held=(--device wgpu --kernels reference --activation-checkpointing off
        --effective-batch "$PLAN_BATCH" --memory-budget "$BUDGET")
  for p in f32 f16; do
    echo "== plan $p ($BUDGET MiB budget, effective batch $PLAN_BATCH, burn's kernels, no checkpointing)"
    "$SAPLING" plan "${held[@]}" --precision "$p" 2>/dev/null | grep -E "^reference"
    "$SAPLING" probe "${held[@]}" --precision "$p" --trial-sizes 3 --trial-steps 2 --json \
      2>/dev/null >"$work/plan-$p.json"
    python3 - "$work/plan-$p.json" "$p" <<'EOF'
import json, sys
plan = json.load(open(sys.argv[1]))
for t in plan["trials"]:
    print(f"probe {sys.argv[2]} trial micro-batch {t['micro_batch']:>3}: {t['images_per_sec']:6.1f} images/s, "
          f"measured {(t.get('measured_peak') or 0) / 2**20:6.1f} MiB, predicted {t['predicted_peak'] / 2**20:6.1f} MiB")
print(f"probe {sys.argv[2]} chose micro-batch {plan['micro_batch']}")
EOF
  done
fi
