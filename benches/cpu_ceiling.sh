#!/usr/bin/env bash
# How fast a CPU training step can go on this machine, against what sapling and PyTorch reach:
#
#   SAPLING=target/release/sapling benches/cpu_ceiling.sh [PRESET] [BATCH] [ROUNDS]
#                                                          (default vit-b 4 3)
#
# Each round measures, one after the other:
# 1. the f32 FMA peak: one busy loop per core at once, each twelve independent 8-wide FMA
#    chains (enough to fill two FMA pipes of latency 4 to 5 on AVX2 CPUs). Needs `cc`;
# 2. the sgemm rate of PyTorch (MKL) and numpy (OpenBLAS) on the step's own products: every
#    linear layer's forward, input-gradient and weight-gradient GEMM, weighted by its FLOPs
#    (the patch embedding's input gradient, which no step computes, is counted; attention's
#    two products per head, about 3 % of vit-b's FLOPs, are not timed);
# 3. sapling's `bench step` (the step's FLOP rate, that of its forward + backward alone, the
#    1024² GEMM rate in the same process, the optimizer's time) and PyTorch's step on the same
#    model (`benches/torch_mae.py`).
# The summary takes each rate's best round (what the machine can do when the host is quiet)
# and the steps' median rounds, and prints what 1.3x PyTorch would need of the machine, and the
# ceiling: the step's images/s if every FLOP ran at the best GEMM rate and nothing else cost
# time but sapling's optimizer phase (the clip and AdamW). On a shared host the rounds'
# spread is large: judge a ceiling against a PyTorch median from the same hour.
set -euo pipefail
[[ -n ${SAPLING:-} ]] && SAPLING=$(realpath -m "$SAPLING") # before the cd below
cd "$(dirname "$0")/.."
PRESET=${1:-vit-b} BATCH=${2:-4} ROUNDS=${3:-3}
SAPLING=${SAPLING:-target/release/sapling}
[[ -x $SAPLING ]] || { echo "not an executable: $SAPLING (build with cargo build --release)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cores=$(nproc)
echo "machine: $cores cores, $(date -u +%F); $PRESET at batch $BATCH, $ROUNDS rounds"

cat >"$work/fma.c" <<'C'
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
int main(void) {
  __m256 a[12], b = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(0.001f);
  for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i);
  struct timespec t0, t1;
  const long n = 200000000L;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long k = 0; k < n; k++)
    for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], b, c);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  float keep = 0;
  for (int i = 0; i < 12; i++) keep += _mm256_cvtss_f32(a[i]);
  double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
  printf("%.2f %g\n", n * 12 * 16 / s / 1e9, keep);
  return 0;
}
C
cc -O2 -mavx2 -mfma -funroll-loops "$work/fma.c" -o "$work/fma"
"$SAPLING" bench reference-case --preset "$PRESET" --device cpu --case-dir "$work/case" >/dev/null

for r in $(seq "$ROUNDS"); do
  mkdir "$work/cores.$r"
  pids=()
  for i in $(seq "$cores"); do "$work/fma" >"$work/cores.$r/$i" & pids+=($!); done
  for pid in "${pids[@]}"; do
    wait "$pid" || { echo "the FMA loop failed (does this CPU have AVX2 and FMA?)" >&2; exit 1; }
  done
  cat "$work/cores.$r"/* | awk '{s += $1} END {printf "%.2f\n", s}' >"$work/peak.$r"
  python3 - "$work/case" "$BATCH" >"$work/gemm.$r.json" <<'PY'
import json, math, sys, time
import numpy as np
import torch

case, batch = sys.argv[1], int(sys.argv[2])
m = json.load(open(f"{case}/case.json"))["config"]["model"]
# (rows, in, out, how many) of every linear layer in a step; rows = tokens x batch.
p = m["patch_size"] ** 2 * m["in_chans"]
tokens = (m["img_size"] // m["patch_size"]) ** 2
kept = tokens - math.floor(tokens * m["mask_ratio"])  # as ModelConfig::num_visible
d, dd, r = m["dim"], m["decoder_dim"], m["mlp_ratio"]
enc, dec = batch * (1 + kept), batch * (1 + tokens)
layers = [(batch * kept, p, d, 1), (enc, d, dd, 1), (dec, dd, p, 1)]
for rows, w, n in ((enc, d, m["depth"]), (dec, dd, m["decoder_depth"])):
    layers += [(rows, w, 3 * w, n), (rows, w, w, n), (rows, w, int(r * w), n), (rows, int(r * w), w, n)]

def best_time(mm, a, b, reps=5):
    mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        mm(a, b)
        best = min(best, time.perf_counter() - t)
    return best

out = {}
blas = "MKL" if torch.backends.mkl.is_available() else "its BLAS"
for name, mk, mm in ((f"PyTorch ({blas})", lambda s: torch.randn(*s), torch.matmul),
                     ("numpy (OpenBLAS)", lambda s: np.random.randn(*s).astype(np.float32), np.matmul)):
    flops = secs = 0.0
    for rows, k, n, count in layers:
        # forward x·W, input gradient dy·Wᵀ, weight gradient xᵀ·dy
        for a, b in (((rows, k), (k, n)), ((rows, n), (n, k)), ((k, rows), (rows, n))):
            flops += 2.0 * a[0] * a[1] * b[1] * count
            secs += best_time(mm, mk(a), mk(b)) * count
    out[name] = flops / secs / 1e9
print(json.dumps(out))
PY
  "$SAPLING" bench step --preset "$PRESET" --device cpu --batch-size "$BATCH" \
    --effective-batch "$BATCH" --timed-steps 5 --json 2>/dev/null >"$work/sapling.$r.json"
  python3 benches/torch_mae.py bench "$work/case" --batch "$BATCH" --steps 5 >"$work/torch.$r.json"
  python3 - "$work" "$r" "$BATCH" <<'PY'
import json, sys
w, r, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
peak = float(open(f"{w}/peak.{r}").read())
gemm = json.load(open(f"{w}/gemm.{r}.json"))
sap, tor = (json.load(open(f"{w}/{k}.{r}.json")) for k in ("sapling", "torch"))
print(f"round {r}: FMA peak {peak:.1f}; sgemm on the step's products "
      + ", ".join(f"{k} {v:.1f}" for k, v in gemm.items())
      + f"; sapling 1024² {sap['matmul_flops_per_sec'] / 1e9:.1f} GFLOP/s; "
      f"images/s sapling {sap['images_per_sec']:.3f}, PyTorch {tor['images_per_sec']:.3f}")
PY
done

python3 - "$work" "$ROUNDS" "$BATCH" <<'PY'
import json, statistics, sys
w, rounds, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rs = range(1, rounds + 1)
peak = max(float(open(f"{w}/peak.{r}").read()) for r in rs)
sap = [json.load(open(f"{w}/sapling.{r}.json")) for r in rs]
tor = [json.load(open(f"{w}/torch.{r}.json")) for r in rs]
gemm = {}
for r in rs:
    for k, v in json.load(open(f"{w}/gemm.{r}.json")).items():
        gemm[k] = max(gemm.get(k, 0.0), v)
gemm["sapling 1024² (gemm crate)"] = max(s["matmul_flops_per_sec"] / 1e9 for s in sap)
step = sap[0]["flops"]["train_step"]
pct = lambda f: f"{100 * f / peak:.0f}% of FMA peak"
print(f"\nsummary: FMA peak (best round) {peak:.1f} GFLOP/s; the step {step / 1e9:.1f} GFLOP per image")
for k, v in gemm.items():
    print(f"  best sgemm, {k}: {v:.1f} GFLOP/s ({pct(v)})")
fb = max(batch * step / ((s["forward_ms"] + s["backward_ms"]) / 1e3) / 1e9 for s in sap)
print(f"  sapling's forward + backward alone (best round): {fb:.1f} GFLOP/s ({pct(fb)})")
med = lambda xs: statistics.median(xs)
for name, runs in (("sapling", sap), ("PyTorch", tor)):
    ips = med([x["images_per_sec"] for x in runs])
    f = ips * step / 1e9
    opt = med([x["optimizer_ms"] for x in runs])
    print(f"  {name:8s} median {ips:.3f} images/s = {f:.1f} GFLOP/s ({pct(f)}), optimizer {opt:.1f} ms")
best = max(gemm.values())
torch_ips = med([x["images_per_sec"] for x in tor])
opt = min(s["optimizer_ms"] for s in sap)
ceiling = batch / (batch * step / (best * 1e9) + opt / 1e3)
need = 1.3 * torch_ips * step / 1e9
print(f"  1.3x PyTorch's median needs {need:.1f} GFLOP/s over the whole step: {pct(need)}, "
      f"{100 * need / best:.0f}% of the best sgemm rate")
print(f"  ceiling (every FLOP at {best:.1f} GFLOP/s, plus sapling's fastest optimizer, {opt:.1f} ms): "
      f"{ceiling:.3f} images/s = {ceiling / torch_ips:.2f}x PyTorch's median")
PY
