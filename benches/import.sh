#!/usr/bin/env bash
# Released weights in (`--init-from`), measured against PyTorch: a `vit-b` MAE whose weights
# PyTorch drew and saved in facebookresearch/mae's layout (`{'model': state_dict}`, the patch
# embedding a convolution) is loaded by sapling, which computes its first training step's
# loss on the embedded photos; PyTorch computes the loss of the same `.pth` on the same images
# and masks (`benches/torch_mae.py first-loss`). Then the time and peak memory of importing
# a `sapiens-0.3b`-sized file (random weights, same layout) on the CPU. And the other way: a
# `tiny` checkpoint exported with `--format hf --with-decoder` loads into transformers'
# `ViTMAEForPreTraining` (no missing or unexpected key) and gives sapling's loss
# (`benches/hf_vitmae.py`, where transformers is installed).
#
#   cargo build --release && pip install torch safetensors transformers && benches/import.sh
#
# Environment: SAPLING (binary), PARTS (which of "loss load hf" to run; all by default),
# BATCH (images of the first step, 4), KEEP (a folder to keep the generated files in).
set -euo pipefail
cd "$(dirname "$0")/.."
SAPLING=${SAPLING:-${CARGO_TARGET_DIR:-target}/release/sapling}
PARTS=${PARTS:-"loss load hf"}
BATCH=${BATCH:-4}
[[ -x $SAPLING ]] || { echo "no sapling binary at $SAPLING: cargo build --release, or set SAPLING" >&2; exit 1; }
python3 -c 'import torch, safetensors' 2>/dev/null || { echo "needs PyTorch: pip install torch safetensors" >&2; exit 1; }
part() { [[ " $PARTS " == *" $1 "* ]]; }
work=${KEEP:-$(mktemp -d)}
[[ -n ${KEEP:-} ]] || trap 'rm -rf "$work"' EXIT
mkdir -p "$work"
gen=tests/fixtures/import/make_fixtures.py

if part loss; then
  [[ -f $work/vit-b_mae.pth ]] || python3 "$gen" "$work" --preset vit-b
  "$SAPLING" bench reference-case --preset vit-b --device cpu --kernels reference \
    --init-from "$work/vit-b_mae.pth" --case-dir "$work/case" --micro-batch "$BATCH" \
    --record-steps 1 2>"$work/case.err" >/dev/null || { cat "$work/case.err" >&2; exit 1; }
  grep -o 'weights from .*' "$work/case.err" | sed 's/\x1b\[[0-9;]*m//g' || true
  echo "== vit-b, MAE layout, batch $BATCH of the embedded photos, the same masks:"
  python3 benches/torch_mae.py first-loss "$work/case" --weights "$work/vit-b_mae.pth"
fi

if part load; then
  [[ -f $work/sapiens-0.3b_mae.pth ]] || python3 "$gen" "$work" --preset sapiens-0.3b
  echo "== import of a sapiens-0.3b-sized file onto the CPU (peak resident memory by /usr/bin/time):"
  /usr/bin/time -f "peak resident memory %M KiB, wall %e s" \
    "$SAPLING" bench import --weights "$work/sapiens-0.3b_mae.pth" 2>&1 | sed 's/\x1b\[[0-9;]*m//g'
fi

if part hf; then
  python3 -c 'import transformers' 2>/dev/null || { echo "hf: needs pip install transformers" >&2; exit 1; }
  "$SAPLING" train --preset tiny --device cpu --steps 20 --out "$work/tiny" --overwrite \
    >/dev/null 2>"$work/tiny.err" || { cat "$work/tiny.err" >&2; exit 1; }
  "$SAPLING" export --checkpoint "$work/tiny/checkpoints/step-00000020" --format hf \
    --with-decoder --out "$work/tiny_hf.safetensors"
  "$SAPLING" bench reference-case --preset tiny --device cpu --kernels reference \
    --init-from "$work/tiny_hf.safetensors" --case-dir "$work/hfcase" --micro-batch "$BATCH" \
    --record-steps 1 >/dev/null 2>&1
  echo "== tiny exported as Hugging Face ViTMAEForPreTraining, loaded by transformers:"
  python3 benches/hf_vitmae.py "$work/hfcase" "$work/tiny_hf.safetensors" 2>&1 | grep -v "Loading weights"
fi

