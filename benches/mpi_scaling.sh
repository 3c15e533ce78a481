#!/usr/bin/env bash
# Data-parallel scaling on this machine: images/s of 1 and 2 MPI processes, the share of a step
# spent reading gradients back + all-reducing + uploading them, and the bytes each rank moves
# per step; with 2 processes both without and with overlapping readback and reduction.
#
#   cargo build --release --features mpi && benches/mpi_scaling.sh
#
# Environment: SAPLING (binary built with --features mpi), PRESET (tiny), STEPS (40),
# BATCH (16, micro-batch per rank), EFFECTIVE (32), BUCKET_MIB (1: several buckets even for
# tiny, so overlap has something to overlap), DEVICE (cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
SAPLING=${SAPLING:-${CARGO_TARGET_DIR:-target}/release/sapling}
PRESET=${PRESET:-tiny}
STEPS=${STEPS:-40}
BATCH=${BATCH:-16}
EFFECTIVE=${EFFECTIVE:-32}
BUCKET_MIB=${BUCKET_MIB:-1}
DEVICE=${DEVICE:-cpu}
[[ -x $SAPLING ]] || { echo "no sapling binary at $SAPLING: cargo build --release --features mpi, or set SAPLING" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run() { # procs overlap
  local procs=$1 overlap=$2 cfg="$work/run-$1-$2.toml" out="$work/out-$1-$2"
  printf '[train]\nallreduce_overlap = %s\nallreduce_bucket_mib = %s\nrecon_every = 0\ncheckpoint_every = 100000\n' \
    "$overlap" "$BUCKET_MIB" >"$cfg"
  local args=(train --preset "$PRESET" --config "$cfg" --out "$out" --device "$DEVICE" --steps "$STEPS"
    --batch-size "$BATCH" --effective-batch "$EFFECTIVE")
  local log="$work/log-$1-$2"
  mpirun --allow-run-as-root --oversubscribe -n "$procs" "$SAPLING" "${args[@]}" >"$log" 2>/dev/null
  local ips reduce_ms bytes
  ips=$(grep -o '[0-9.]* images/s' "$log" | tail -1 | cut -d' ' -f1)
  # A world of one prints no rank line: nothing is exchanged.
  reduce_ms=$(grep '^rank 0 ' "$log" | sed -n 's/.*all-reduce \([0-9.]*\) ms.*/\1/p' || true)
  bytes=$(grep '^rank 0 ' "$log" | sed -n 's/.*ms and \(.*\) per step/\1/p' || true)
  local step_ms share
  step_ms=$(awk -v e="$EFFECTIVE" -v i="$ips" 'BEGIN { printf "%.1f", 1000 * e / i }')
  share=$(awk -v r="${reduce_ms:-0}" -v s="$step_ms" 'BEGIN { printf "%.1f", 100 * r / s }')
  printf '%-10s %-8s %10s %10s %12s %10s %12s\n' "$procs" "$overlap" "$ips" "$step_ms" "${reduce_ms:-0}" "$share%" "${bytes:--}"
}

echo "preset $PRESET, micro-batch $BATCH per rank, effective batch $EFFECTIVE, $STEPS steps, buckets of $BUCKET_MIB MiB, device $DEVICE"
echo "machine: $(nproc) cores, $(date -u +%F)"
printf '%-10s %-8s %10s %10s %12s %10s %12s\n' processes overlap images/s "step ms" "reduce ms" share "bytes/step"
run 1 false
run 2 false
run 2 true
