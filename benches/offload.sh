#!/usr/bin/env bash
# The optimizer offloaded against the memory model and against the device optimizer, in one
# run: whole training steps (`sapling bench step`) with the optimizer on the device, offloaded
# (moments on the host, gradients summed on the device and read back once a step) and offloaded
# with the gradients (read back stage by stage every micro-batch), each with one and two
# micro-batches a step, each in its own process so one peak cannot hide another's. Prints the
# measured peak (Flex: the process's peak resident memory, host side included; wgpu: burn's pool
# bytes reserved, device only), the model's prediction for the same, their ratio, and the step's
# time: the throughput cost of each form beside the device optimizer.
#
#   cargo build --release && benches/offload.sh
#
# Environment: SAPLING (binary), CASES ("cpu:tiny:32 cpu:vit-b:4 wgpu:tiny:8" =
# device:preset:micro-batch), STEPS (timed steps, 3), CHECKPOINT (off|blocks, off).
set -euo pipefail
cd "$(dirname "$0")/.."
SAPLING=${SAPLING:-${CARGO_TARGET_DIR:-target}/release/sapling}
CASES=${CASES:-"cpu:tiny:32 cpu:vit-b:4 wgpu:tiny:8"}
STEPS=${STEPS:-3}
CHECKPOINT=${CHECKPOINT:-off}
[[ -x $SAPLING ]] || { echo "no sapling binary at $SAPLING: cargo build --release, or set SAPLING" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "machine: $(nproc) cores, $(date -u +%F); medians of $STEPS timed steps after 2 warm-up steps; checkpointing $CHECKPOINT"
printf '%-5s %-7s %5s %5s %-10s %9s %9s %9s %11s %11s %11s %6s\n' device preset micro accum offload \
  images/s "fwd+bwd" "opt ms" "peak MiB" "model MiB" "host MiB" ratio
for case in $CASES; do
  IFS=: read -r device preset batch <<<"$case"
  for accum in 1 2; do
    for offload in off optimizer gradients; do
      j="$work/$device-$preset-$accum-$offload.json"
      "$SAPLING" bench step --preset "$preset" --device "$device" --batch-size "$batch" \
        --effective-batch $((batch * accum)) --accum "$accum" --offload "$offload" \
        --timed-steps "$STEPS" --activation-checkpointing "$CHECKPOINT" --json 2>/dev/null >"$j"
      python3 - "$j" "$device" "$preset" "$batch" "$accum" "$offload" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
device, preset, batch, accum, offload = sys.argv[2:]
peak, model = r["peak_memory"], r["predicted_peak"]
shown = "-" if peak is None else f"{peak / 2**20:.1f}"
ratio = "-" if peak is None else f"{model / peak:.2f}"
print(f"{device:<5} {preset:<7} {batch:>5} {accum:>5} {offload:<10} {r['images_per_sec']:9.2f} "
      f"{r['forward_ms'] + r['backward_ms']:9.1f} {r['optimizer_ms']:9.1f} {shown:>11} "
      f"{model / 2**20:11.1f} {r['predicted_host'] / 2**20:11.1f} {ratio:>6}")
EOF
    done
  done
done
