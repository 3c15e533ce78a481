#!/usr/bin/env bash
# sapling (Flex CPU, and wgpu on the local adapter) against the PyTorch reference on the same
# presets, in one run, as a table with the ratio sapling / PyTorch. PyTorch runs on the CPU.
#
#   cargo build --release && pip install torch safetensors && benches/compare_torch.sh
#
# Environment: SAPLING (binary), CASES ("tiny:32 vit-b:4" = preset:micro-batch), STEPS (5),
# ROUNDS (3): PyTorch and sapling on the CPU run alternately this many times and each row is
# the median round (by images/s), so a busy neighbour on a shared machine shows up as spread
# (printed as min–max) instead of as a ratio; WGPU_PRESETS ("tiny"; empty for none): presets
# also run on wgpu once (lavapipe needs minutes per vit-b step). sapling runs with its default
# kernels (`auto`, i.e. its CPU kernels on Flex); KERNELS="reference" adds a row with burn's
# ops alone; BASELINE (another sapling binary, e.g. a build of the previous commit) adds its row, run in
# the same rounds, so a change is judged against its own before in one run. "GEMM" is the step's
# FLOP/s as a share of a 1024² matmul timed in the same process (and that rate in GFLOP/s).
set -euo pipefail
cd "$(dirname "$0")/.."
SAPLING=${SAPLING:-${CARGO_TARGET_DIR:-target}/release/sapling}
CASES=${CASES:-"tiny:32 vit-b:4"}
STEPS=${STEPS:-5}
ROUNDS=${ROUNDS:-3}
WGPU_PRESETS=${WGPU_PRESETS-tiny}
KERNELS=${KERNELS:-}
BASELINE=${BASELINE:-}
[[ -x $SAPLING ]] || { echo "no sapling binary at $SAPLING: cargo build --release, or set SAPLING" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The median round of a list of JSON results (by images/s), with min–max of images/s.
summary() {
  python3 - "$@" <<'PY'
import json, sys
rs = sorted((json.load(open(f)) for f in sys.argv[1:]), key=lambda r: r["images_per_sec"])
m = rs[len(rs) // 2]
ips = [r["images_per_sec"] for r in rs]
frac = m.get("fraction_of_matmul_peak")
gemm = "-" if frac is None else "%.0f%%/%.0f" % (100 * frac, m["matmul_flops_per_sec"] / 1e9)
print(m["images_per_sec"], m["forward_ms"], m["backward_ms"], m["optimizer_ms"], min(ips), max(ips), gemm)
PY
}
row() { # name, images/s, fwd, bwd, opt, min, max, of GEMM, torch images/s
  printf '%-7s %5s %-28s %9.2f %11s %9.1f %9.1f %9.1f %12s %8.2f\n' "$preset" "$batch" "$1" "$2" \
    "$(printf '%.1f-%.1f' "$6" "$7")" "$3" "$4" "$5" "$8" "$(awk -v a="$2" -v b="$9" 'BEGIN { print a / b }')"
}
sapling_step() { # device, kernels, output[, binary]
  "${4:-$SAPLING}" bench step --preset "$preset" --device "$1" --batch-size "$batch" \
    --effective-batch "$batch" --timed-steps "$STEPS" --kernels "$2" --json 2>/dev/null >"$3"
}

echo "machine: $(nproc) cores, $(date -u +%F); $(python3 -c 'import torch; print("torch", torch.__version__, "threads", torch.get_num_threads())'); $ROUNDS rounds of $STEPS timed steps"
printf '%-7s %5s %-28s %9s %11s %9s %9s %9s %12s %8s\n' preset batch implementation images/s "(min-max)" "fwd ms" "bwd ms" "opt ms" "GEMM %/GF/s" "/torch"
for case in $CASES; do
  preset=${case%%:*} batch=${case##*:}
  "$SAPLING" bench reference-case --preset "$preset" --device cpu --case-dir "$work/$preset" \
    --micro-batch 1 --record-steps 1 >/dev/null 2>&1
  for r in $(seq "$ROUNDS"); do
    python3 benches/torch_mae.py bench "$work/$preset" --batch "$batch" --steps "$STEPS" >"$work/torch.$r.json"
    sapling_step cpu auto "$work/cpu.$r.json"
    [[ -n $KERNELS ]] && sapling_step cpu "$KERNELS" "$work/ref.$r.json"
    [[ -n $BASELINE ]] && sapling_step cpu auto "$work/base.$r.json" "$BASELINE"
  done
  read -r t_ips t_f t_b t_o t_lo t_hi t_g < <(summary "$work"/torch.*.json)
  row "pytorch (cpu)" "$t_ips" "$t_f" "$t_b" "$t_o" "$t_lo" "$t_hi" "$t_g" "$t_ips"
  read -r ips f b o lo hi g < <(summary "$work"/cpu.*.json)
  row "sapling (cpu, Flex)" "$ips" "$f" "$b" "$o" "$lo" "$hi" "$g" "$t_ips"
  if [[ -n $KERNELS ]]; then
    read -r ips f b o lo hi g < <(summary "$work"/ref.*.json)
    row "sapling (cpu, Flex, $KERNELS)" "$ips" "$f" "$b" "$o" "$lo" "$hi" "$g" "$t_ips"
  fi
  if [[ -n $BASELINE ]]; then
    read -r ips f b o lo hi g < <(summary "$work"/base.*.json)
    row "sapling (cpu, BASELINE)" "$ips" "$f" "$b" "$o" "$lo" "$hi" "$g" "$t_ips"
  fi
  if [[ " $WGPU_PRESETS " == *" $preset "* ]]; then
    sapling_step wgpu auto "$work/wgpu.json"
    read -r ips f b o lo hi g < <(summary "$work/wgpu.json")
    row "sapling (wgpu)" "$ips" "$f" "$b" "$o" "$lo" "$hi" "$g" "$t_ips"
  fi
  rm -f "$work"/*.json
done
