#!/usr/bin/env bash
# sapling (Flex CPU, and wgpu on the local adapter) against the PyTorch reference on the same
# presets, in one run, as a table with the ratio sapling / PyTorch. PyTorch runs on the CPU.
#
#   cargo build --release && pip install torch safetensors && benches/compare_torch.sh
#
# Environment: SAPLING (binary), CASES ("tiny:32 vit-b:4" = preset:micro-batch), STEPS (5),
# WGPU_PRESETS ("tiny": presets also run on wgpu; lavapipe needs minutes per vit-b step).
set -euo pipefail
cd "$(dirname "$0")/.."
SAPLING=${SAPLING:-${CARGO_TARGET_DIR:-target}/release/sapling}
CASES=${CASES:-"tiny:32 vit-b:4"}
STEPS=${STEPS:-5}
WGPU_PRESETS=${WGPU_PRESETS:-tiny}
[[ -x $SAPLING ]] || { echo "no sapling binary at $SAPLING: cargo build --release, or set SAPLING" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

field() { python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))[sys.argv[2]], 2))" "$1" "$2"; }

echo "machine: $(nproc) cores, $(date -u +%F); $(python3 -c 'import torch; print("torch", torch.__version__, "threads", torch.get_num_threads())')"
printf '%-7s %5s %-22s %9s %9s %9s %9s %8s\n' preset batch implementation images/s "fwd ms" "bwd ms" "opt ms" "/torch"
for case in $CASES; do
  preset=${case%%:*} batch=${case##*:}
  "$SAPLING" bench reference-case --preset "$preset" --device cpu --case-dir "$work/$preset" \
    --micro-batch 1 --record-steps 1 >/dev/null 2>&1
  python3 benches/torch_mae.py bench "$work/$preset" --batch "$batch" --steps "$STEPS" >"$work/torch.json"
  torch_ips=$(field "$work/torch.json" images_per_sec)
  printf '%-7s %5s %-22s %9s %9s %9s %9s %8s\n' "$preset" "$batch" "pytorch (cpu)" "$torch_ips" \
    "$(field "$work/torch.json" forward_ms)" "$(field "$work/torch.json" backward_ms)" \
    "$(field "$work/torch.json" optimizer_ms)" "1.00"
  devices=cpu
  [[ " $WGPU_PRESETS " == *" $preset "* ]] && devices="cpu wgpu"
  for device in $devices; do
    "$SAPLING" bench step --preset "$preset" --device "$device" --batch-size "$batch" \
      --effective-batch "$batch" --timed-steps "$STEPS" --json 2>/dev/null >"$work/sapling.json"
    ips=$(field "$work/sapling.json" images_per_sec)
    ratio=$(awk -v a="$ips" -v b="$torch_ips" 'BEGIN { printf "%.2f", a / b }')
    name="sapling ($device)"
    [[ $device == cpu ]] && name="sapling (cpu, Flex)"
    printf '%-7s %5s %-22s %9s %9s %9s %9s %8s\n' "$preset" "$batch" "$name" "$ips" \
      "$(field "$work/sapling.json" forward_ms)" "$(field "$work/sapling.json" backward_ms)" \
      "$(field "$work/sapling.json" optimizer_ms)" "$ratio"
  done
done
