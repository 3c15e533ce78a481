#!/usr/bin/env bash
# Builds the browser demo into web/pkg/: the sapling library and its wasm-bindgen glue
# (web/src) for wasm32, then wasm-bindgen's JS loader. Installs what it needs on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sapling/target}"
tools="${SAPLING_TOOLS:-$HOME/.cache/sapling/tools}"

rustup target list --installed | grep -qx wasm32-unknown-unknown ||
    rustup target add wasm32-unknown-unknown

# The CLI must be the exact version of the wasm-bindgen crate in Cargo.lock.
version=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
if ! "$tools/bin/wasm-bindgen" --version 2>/dev/null | grep -qx "wasm-bindgen $version"; then
    echo "web: installing wasm-bindgen-cli $version into $tools"
    # --debug: an unoptimised CLI builds in half the time and still processes the module in seconds.
    CARGO_TARGET_DIR="$tools/target" cargo install --quiet --debug wasm-bindgen-cli --version "$version" --root "$tools"
fi

cargo build -p sapling-web --target wasm32-unknown-unknown --profile web
# The name section (12 MB) only names frames in stack traces; panics keep their messages.
"$tools/bin/wasm-bindgen" --target web --no-typescript --remove-name-section --out-dir web/pkg \
    "$CARGO_TARGET_DIR/wasm32-unknown-unknown/web/sapling_web.wasm"
echo "web: built web/pkg ($(du -h web/pkg/sapling_web_bg.wasm | cut -f1) of wasm)"
