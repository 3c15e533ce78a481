#!/usr/bin/env bash
# The memory levers against the memory model, in one run: whole training steps
# (`sapling bench step`) with activation checkpointing off and on (and on wgpu with burn's ops
# and the WGSL kernels), each in its own process so one peak cannot hide another's, printing the
# measured peak (Flex: the process's peak resident memory; wgpu: burn's pool bytes reserved),
# the memory model's prediction, their ratio, and the time a step took.
#
#   cargo build --release && benches/levers.sh
#
# Environment: SAPLING (binary), CASES ("cpu:tiny:32 cpu:vit-b:16 wgpu:tiny:32" =
# device:preset:micro-batch), STEPS (timed steps, 3).
set -euo pipefail
cd "$(dirname "$0")/.."
SAPLING=${SAPLING:-${CARGO_TARGET_DIR:-target}/release/sapling}
CASES=${CASES:-"cpu:tiny:32 cpu:vit-b:16 wgpu:tiny:32"}
STEPS=${STEPS:-3}
[[ -x $SAPLING ]] || { echo "no sapling binary at $SAPLING: cargo build --release, or set SAPLING" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "machine: $(nproc) cores, $(date -u +%F); medians of $STEPS timed steps after 2 warm-up steps"
printf '%-5s %-7s %5s %-10s %-10s %9s %9s %9s %9s %11s %11s %6s\n' device preset batch kernels checkpoint \
  images/s "fwd ms" "bwd ms" "opt ms" "peak MiB" "model MiB" ratio
for case in $CASES; do
  IFS=: read -r device preset batch <<<"$case"
  kernels=auto
  [[ $device == wgpu ]] && kernels="reference wgsl"
  for k in $kernels; do
    for ckpt in off blocks; do
      j="$work/$device-$preset-$k-$ckpt.json"
      "$SAPLING" bench step --preset "$preset" --device "$device" --batch-size "$batch" \
        --effective-batch "$batch" --timed-steps "$STEPS" --kernels "$k" \
        --activation-checkpointing "$ckpt" --json 2>/dev/null >"$j"
      python3 - "$j" "$device" "$preset" "$batch" "$ckpt" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
device, preset, batch, ckpt = sys.argv[2:]
peak, model = r["peak_memory"], r["predicted_peak"]
shown = "-" if peak is None else f"{peak / 2**20:.1f}"
ratio = "-" if peak is None else f"{model / peak:.2f}"
print(f"{device:<5} {preset:<7} {batch:>5} {r['levers']['kernels']:<10} {ckpt:<10} "
      f"{r['images_per_sec']:9.2f} {r['forward_ms']:9.1f} {r['backward_ms']:9.1f} "
      f"{r['optimizer_ms']:9.1f} {shown:>11} {model / 2**20:11.1f} {ratio:>6}")
EOF
    done
  done
done
