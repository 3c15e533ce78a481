#!/usr/bin/env bash
# Checks that sapling compiles for the platforms its "any GPU" promise names, from this Linux
# machine: `cargo check` of the library and the `sapling` binary for Windows (DX12,
# x86_64-pc-windows-msvc) and macOS on Apple silicon (Metal, aarch64-apple-darwin), and of the
# library under the browser demo's crate for wasm32-unknown-unknown. Installs the targets' standard
# libraries with rustup on first use (the only download; crates come from Cargo's cache).
#
#   scripts/check-targets.sh                      # all three
#   TARGETS=aarch64-apple-darwin scripts/check-targets.sh
#
# Its own target dir ($HOME/.cache/sapling/target-cross unless CARGO_TARGET_DIR is set): a
# check is metadata only and shares nothing with the release build. Cold, it takes about as
# long as a release build; warm, seconds (timings in README).
#
# A cross check cannot compile C for Windows or macOS without their SDK headers, and sapling's
# one C dependency is mimalloc (the binary's allocator), so the check leaves it out
# (`--no-default-features`); native builds on those platforms compile it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sapling/target-cross}"
TARGETS=${TARGETS:-"x86_64-pc-windows-msvc aarch64-apple-darwin wasm32-unknown-unknown"}

installed=$(rustup target list --installed)
failed=()
for target in $TARGETS; do
    grep -qx "$target" <<<"$installed" || rustup target add "$target"
    start=$(date +%s)
    case $target in
        # The browser demo's crate, which checks the library for wasm32 with it.
        wasm32-*) commands=("cargo check --target $target -p sapling-web") ;;
        *) commands=("cargo check --target $target --lib --bins --no-default-features") ;;
    esac
    ok=1
    for command in "${commands[@]}"; do
        echo "check-targets: $command"
        $command || { ok=0; break; }
    done
    seconds=$(($(date +%s) - start))
    if ((ok)); then
        echo "check-targets: $target compiles ($seconds s)"
    else
        echo "check-targets: $target FAILED ($seconds s)" >&2
        failed+=("$target")
    fi
done
if ((${#failed[@]})); then
    echo "check-targets: failed for ${failed[*]}" >&2
    exit 1
fi
echo "check-targets: all of $TARGETS compile"
