#!/usr/bin/env python3
"""`sapling export --format hf --with-decoder` in Hugging Face transformers: the file must load
into `ViTMAEForPreTraining` with strict key and shape checking, and give the loss sapling
computed on the same images and masks.

    sapling export --checkpoint C --format hf --with-decoder --out mae_hf.safetensors
    sapling bench reference-case --init-from mae_hf.safetensors --case-dir CASE --record-steps 1 ...
    python3 benches/hf_vitmae.py CASE mae_hf.safetensors

The case's masks become ViTMAE's `noise` (its masking argsorts the noise, so noise = each patch's
rank in sapling's shuffle gives the same kept patches). Needs torch, safetensors, transformers.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import torch
from safetensors.torch import load_file
from transformers import ViTMAEConfig, ViTMAEForPreTraining


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("case")
    ap.add_argument("weights")
    ap.add_argument("--tol", type=float, default=1e-5, help="relative")
    args = ap.parse_args()
    with open(os.path.join(args.case, "case.json")) as f:
        case = json.load(f)
    m = case["config"]["model"]
    config = ViTMAEConfig(
        image_size=m["img_size"], patch_size=m["patch_size"], num_channels=m["in_chans"],
        hidden_size=m["dim"], num_hidden_layers=m["depth"], num_attention_heads=m["heads"],
        intermediate_size=m["dim"] * m["mlp_ratio"], decoder_hidden_size=m["decoder_dim"],
        decoder_num_hidden_layers=m["decoder_depth"],
        decoder_num_attention_heads=m["decoder_heads"],
        decoder_intermediate_size=m["decoder_dim"] * m["mlp_ratio"],
        mask_ratio=m["mask_ratio"], norm_pix_loss=m["norm_pix"],
        layer_norm_eps=m["layer_norm_eps"], hidden_act="gelu", qkv_bias=True,
    )
    # As a model folder on the Hub holds it: config.json beside model.safetensors, read by
    # from_pretrained (which maps the Hub's names to the module's in transformers 5).
    with tempfile.TemporaryDirectory() as folder:
        config.save_pretrained(folder)
        shutil.copy(args.weights, os.path.join(folder, "model.safetensors"))
        model, info = ViTMAEForPreTraining.from_pretrained(folder, output_loading_info=True)
    model.eval()
    missing, unexpected = info["missing_keys"], info["unexpected_keys"]
    print(f"transformers {__import__('transformers').__version__}: "
          f"missing {sorted(missing) or 'none'}, unexpected {sorted(unexpected) or 'none'}, "
          f"mismatched {info['mismatched_keys'] or 'none'}")
    tensors = load_file(os.path.join(args.case, "case.safetensors"))
    images, ids = tensors["images"][0], tensors["ids_shuffle"][0]
    noise = torch.empty(ids.shape, dtype=torch.float32)
    noise.scatter_(1, ids, torch.arange(ids.shape[1], dtype=torch.float32).expand_as(ids).clone())
    with torch.no_grad():
        loss = model(pixel_values=images, noise=noise).loss.item()
    ours = case["losses"][0]
    rel = abs(loss - ours) / abs(ours)
    print(f"step-0 loss: transformers {loss:.7f}, sapling {ours:.7f}, relative difference {rel:.2e}")
    clean = not missing and not unexpected and not info["mismatched_keys"]
    return 0 if rel <= args.tol and clean else 1


if __name__ == "__main__":
    sys.exit(main())
