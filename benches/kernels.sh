#!/usr/bin/env bash
# sapling's WGSL kernels against the reference path on the local WebGPU adapter, in one run:
# each kernel at a preset's shapes (`sapling bench kernels`), then whole training steps both
# ways, each path in its own process so the peak memory of one does not hide the other's.
#
#   cargo build --release && benches/kernels.sh
#
# Environment: SAPLING (binary), CASES ("tiny:32 vit-b:1" = preset:micro-batch), STEPS (3),
# REPS (5).
set -euo pipefail
cd "$(dirname "$0")/.."
SAPLING=${SAPLING:-${CARGO_TARGET_DIR:-target}/release/sapling}
CASES=${CASES:-"tiny:32 vit-b:1"}
STEPS=${STEPS:-3}
REPS=${REPS:-5}
[[ -x $SAPLING ]] || { echo "no sapling binary at $SAPLING: cargo build --release, or set SAPLING" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

field() { python3 -c "import json,sys; v=json.load(open(sys.argv[1]))[sys.argv[2]]; print(round(v, 2) if isinstance(v, float) else v)" "$1" "$2"; }

echo "machine: $(nproc) cores, $(date -u +%F)"
for case in $CASES; do
  preset=${case%%:*} batch=${case##*:}
  "$SAPLING" bench kernels --preset "$preset" --device wgpu --batch-size "$batch" \
    --effective-batch "$batch" --reps "$REPS" 2>/dev/null
  echo
done
printf '%-7s %5s %-10s %9s %9s %9s %9s %12s %10s\n' preset batch kernels images/s "fwd ms" "bwd ms" "opt ms" "peak MiB" "/reference"
for case in $CASES; do
  preset=${case%%:*} batch=${case##*:}
  for kernels in reference wgsl; do
    "$SAPLING" bench step --preset "$preset" --device wgpu --batch-size "$batch" \
      --effective-batch "$batch" --timed-steps "$STEPS" --kernels "$kernels" --json \
      2>/dev/null >"$work/$kernels.json"
  done
  ref=$(field "$work/reference.json" images_per_sec)
  for kernels in reference wgsl; do
    j="$work/$kernels.json"
    ips=$(field "$j" images_per_sec)
    peak=$(python3 -c "import json,sys; p=json.load(open(sys.argv[1]))['peak_memory']; print('-' if p is None else round(p / 2**20, 1))" "$j")
    printf '%-7s %5s %-10s %9s %9s %9s %9s %12s %10s\n' "$preset" "$batch" "$kernels" "$ips" \
      "$(field "$j" forward_ms)" "$(field "$j" backward_ms)" "$(field "$j" optimizer_ms)" "$peak" \
      "$(awk -v a="$ips" -v b="$ref" 'BEGIN { printf "%.2f", a / b }')"
  done
done
