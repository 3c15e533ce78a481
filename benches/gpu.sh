#!/usr/bin/env bash
# The GPU table in one command, for the day a machine with a GPU is lent: sapling's training
# step on the machine's WebGPU adapter (Vulkan), on both kernel paths (burn's ops, `--kernels
# reference`, and sapling's WGSL kernels, `--kernels wgsl`), each at the micro-batch the batch
# planner picks for it, beside the PyTorch reference (benches/torch_mae.py) on the same GPU
# through CUDA. One row per preset and implementation: micro-batch, images/s, forward / backward /
# optimizer ms, achieved TFLOP/s, the device's own 1024² f32 matmul rate measured in the same run
# and the step's share of it, peak memory. Rows print as they finish; the table goes to OUT as
# markdown with the date, the adapter and every command (rewritten after each row, so a run cut
# short keeps what it measured), each command's log beside it. Nothing is built.
#
#   SAPLING=/path/to/sapling benches/gpu.sh                                  # the GPU machine
#   ALLOW_CPU_ADAPTER=1 PRESETS=tiny STEPS=1 PLAN_TRIALS=0 benches/gpu.sh    # a try on lavapipe
#
# It first checks the Vulkan driver: the loader (libvulkan.so.1), the ICD files (and the
# libraries they name) for the GPUs on the PCI bus, then the adapters `sapling info` lists. With
# no ICD file, or no adapter at all, it says what is missing and exits 1; when the only adapter
# is a software one (lavapipe, "llvmpipe") it exits 2, unless ALLOW_CPU_ADAPTER=1. After the
# table it exits 0, or 3 when a sapling row failed, timed out or was cut by DEADLINE (the table
# says which and why).
#
# Environment:
#   SAPLING        the binary [${CARGO_TARGET_DIR:-target}/release/sapling]
#   PRESETS        ["tiny vit-b sapiens-0.3b"]
#   KERNELS        kernel paths, each planned and timed on its own ["reference wgsl"]
#   STEPS          timed steps per row, after 2 warm-up steps (sapling and PyTorch) [3]
#   PLAN_TRIALS    micro-batch sizes the planner runs for real (`sapling probe --trial-sizes`;
#                  `train` runs 6) [3]; 0: the memory model alone (the largest that fits)
#   PLAN_STEPS     timed steps per trial size, after its warm-up step (`train`: 5) [1]
#   MEMORY_BUDGET  MiB to plan for (`--memory-budget`). WebGPU reports no device memory, and
#                  sapling then assumes 4 GiB, where sapiens-0.3b does not fit. Default on a
#                  hardware adapter: 70 % of the free memory nvidia-smi reports (sapling's share
#                  of memory it can read), at most 24576 (the README's planning budget; it keeps
#                  a sapiens-0.3b step to seconds), or 24576 without nvidia-smi; on a software
#                  adapter none (sapling budgets host memory). "none": never pass it
#   SAPLING_ARGS   more flags for every probe and bench step, e.g. "--precision f16" [none]
#   TORCH_DEVICE   where the PyTorch row runs: cuda, cpu (to try the row without a GPU) or
#                  none [cuda]; its micro-batch is the `reference` row's (both keep the
#                  attention scores), else the first planned one
#   TIMEOUT        seconds one command may take [180]; a timed-out case is a row saying so
#   DEADLINE       seconds for the whole run [450]: each command's timeout is cut to what is
#                  left, and commands are skipped (and said so) once less than 20 s is left
#   ALLOW_CPU_ADAPTER  1: go on when the only adapter is a software one [0]
#   ICD_DIRS       where to look for Vulkan ICD files ["/usr/share/vulkan/icd.d
#                  /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d"]; when VK_DRIVER_FILES (or
#                  the older VK_ICD_FILENAMES) is set the loader reads only those files, and they
#                  are checked instead. An empty folder here tries the no-driver path
#   OUT            the markdown report [benches/results/gpu-DATE.md]; the log is OUT with .log
set -euo pipefail
here=$PWD
cd "$(dirname "$0")/.."
repo=$PWD
absolute() { [[ $1 == /* ]] && echo "$1" || echo "$here/$1"; }
if [[ -n ${SAPLING:-} ]]; then SAPLING=$(absolute "$SAPLING"); else SAPLING=${CARGO_TARGET_DIR:-target}/release/sapling; fi
PRESETS=${PRESETS:-"tiny vit-b sapiens-0.3b"}
KERNELS=${KERNELS:-"reference wgsl"}
STEPS=${STEPS:-3}
PLAN_TRIALS=${PLAN_TRIALS:-3}
PLAN_STEPS=${PLAN_STEPS:-1}
MEMORY_BUDGET=${MEMORY_BUDGET:-}
SAPLING_ARGS=${SAPLING_ARGS:-}
TORCH_DEVICE=${TORCH_DEVICE:-cuda}
TIMEOUT=${TIMEOUT:-180}
DEADLINE=${DEADLINE:-450}
ALLOW_CPU_ADAPTER=${ALLOW_CPU_ADAPTER:-0}
ICD_DIRS=${ICD_DIRS:-"/usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d"}
date=$(date -u +%F)
if [[ -n ${OUT:-} ]]; then OUT=$(absolute "$OUT"); else OUT=benches/results/gpu-$date.md; fi
LOG=${OUT%.md}.log
MIN_LEFT=20

die() { # exit code, lines
  local rc=$1
  shift
  printf 'gpu.sh: %s\n' "$1" >&2
  shift
  (($# == 0)) || printf '  %s\n' "$@" >&2
  exit "$rc"
}
for knob in STEPS PLAN_TRIALS PLAN_STEPS TIMEOUT DEADLINE; do
  [[ ${!knob} =~ ^[0-9]+$ ]] || die 1 "$knob must be a whole number, not '${!knob}'"
done
[[ -z $MEMORY_BUDGET || $MEMORY_BUDGET == none || $MEMORY_BUDGET =~ ^[0-9]+$ ]] ||
  die 1 "MEMORY_BUDGET is MiB (a whole number) or 'none', not '$MEMORY_BUDGET'"
[[ -x $SAPLING ]] || die 1 "no sapling binary at $SAPLING" \
  "this script runs a prebuilt binary and builds nothing: build it (cargo build --release, here" \
  "or on a machine with the same OS) and point SAPLING at it: SAPLING=/path/to/sapling $0"
command -v python3 >/dev/null || die 1 "python3 is needed (it reads sapling's JSON and runs PyTorch)"
command -v timeout >/dev/null || die 1 "timeout (GNU coreutils) is needed to bound each command"
read -ra extra <<<"$SAPLING_ARGS"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---------------------------------------------------------------------------------------------
# The Vulkan driver.

# Whether a shared library is where the dynamic loader (or an ICD file's path) would find it.
have_lib() { # library (soname, or path relative to the ICD file), ICD file
  local lib=$1 base=${2:-/}
  if [[ $lib == */* ]]; then
    [[ $lib == /* ]] || lib="$(dirname "$base")/$lib"
    [[ -e $lib ]]
    return
  fi
  local ldconfig
  ldconfig=$(command -v ldconfig || echo /sbin/ldconfig)
  if [[ -x $ldconfig ]] && "$ldconfig" -p 2>/dev/null | awk -v l="$lib" '$1 == l { f = 1 } END { exit !f }'; then
    return 0
  fi
  local dir dirs
  IFS=: read -ra dirs <<<"${LD_LIBRARY_PATH:-}"
  for dir in "${dirs[@]}" /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib /lib64 /lib; do
    [[ -n $dir && -e $dir/$lib ]] && return 0
  done
  return 1
}

# Vendors of the display and 3D controllers on the PCI bus (nvidia, amd, intel), one a line.
pci_gpus() {
  local d
  for d in /sys/bus/pci/devices/*; do
    [[ -r $d/class && -r $d/vendor ]] || continue
    [[ $(<"$d/class") == 0x03* ]] || continue
    case $(<"$d/vendor") in
      0x10de) echo nvidia ;;
      0x1002) echo amd ;;
      0x8086) echo intel ;;
    esac
  done
  [[ -e /proc/driver/nvidia/version ]] && echo nvidia
  return 0
}
mapfile -t gpus < <(pci_gpus | sort -u)
nvidia_driver=""
if [[ -r /proc/driver/nvidia/version ]]; then
  nvidia_driver=$(head -n 1 /proc/driver/nvidia/version | grep -oE '\b[0-9]{3,}\.[0-9]+(\.[0-9]+)?\b' | head -n 1 || true)
fi
nvidia_smi=""
if command -v nvidia-smi >/dev/null; then
  nvidia_smi=$(nvidia-smi --query-gpu=name,driver_version,memory.total,memory.free --format=csv,noheader,nounits -i 0 2>/dev/null || true)
fi
if [[ -n $nvidia_smi ]]; then
  [[ -n $nvidia_driver ]] || nvidia_driver=$(cut -d, -f2 <<<"$nvidia_smi" | tr -d ' ')
  [[ " ${gpus[*]} " == *" nvidia "* ]] || gpus+=(nvidia)
fi

# The ICD files the Vulkan loader would read.
icd_files=()
if [[ -n ${VK_DRIVER_FILES:-${VK_ICD_FILENAMES:-}} ]]; then
  icd_where="VK_DRIVER_FILES/VK_ICD_FILENAMES (${VK_DRIVER_FILES:-$VK_ICD_FILENAMES})"
  IFS=: read -ra listed <<<"${VK_DRIVER_FILES:-$VK_ICD_FILENAMES}"
  for f in "${listed[@]}"; do
    if [[ -d $f ]]; then
      for g in "$f"/*.json; do [[ -f $g ]] && icd_files+=("$g"); done
    elif [[ -f $f ]]; then
      icd_files+=("$f")
    fi
  done
else
  icd_where=$ICD_DIRS
  for dir in $ICD_DIRS; do
    for f in "$dir"/*.json; do [[ -f $f ]] && icd_files+=("$f"); done
  done
fi
icd_vendor() {
  case $(basename "$1") in
    nvidia*) echo nvidia ;;
    radeon_icd* | amd_icd* | amd_pro_icd*) echo amd ;;
    intel_icd* | intel_hasvk_icd*) echo intel ;;
    lvp_icd*) echo lavapipe ;;
    *) echo other ;;
  esac
}
icd_library() {
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["ICD"]["library_path"])' "$1" 2>/dev/null || true
}
declare -A icd_ok=()  # vendor -> an ICD file of it whose library is there
broken=()             # ICD files naming a library that is not there
for f in "${icd_files[@]}"; do
  lib=$(icd_library "$f")
  if [[ -n $lib ]] && have_lib "$lib" "$f"; then
    icd_ok[$(icd_vendor "$f")]=$f
  else
    broken+=("$f names ${lib:-no library_path}, which is not installed")
  fi
done

# What is missing for each GPU found, as lines for people.
missing=()
for v in "${gpus[@]}"; do
  [[ -n ${icd_ok[$v]:-} ]] && continue
  case $v in
    nvidia)
      major=${nvidia_driver%%.*}
      missing+=("NVIDIA GPU${nvidia_smi:+ (${nvidia_smi%%,*})}, kernel driver ${nvidia_driver:-not loaded (no /proc/driver/nvidia/version)}:"
        "  the driver's Vulkan ICD is missing: no nvidia_icd.json whose library (libGLX_nvidia.so.0) is installed, in $icd_where."
        "  It ships with the driver's userspace graphics libraries, which must match the kernel driver's version:"
        "  Debian/Ubuntu: apt-get install libnvidia-gl-${major:-<driver major>} (libnvidia-gl-${major:-<major>}-server for the -server driver);"
        "  NVIDIA's .run installer: installed unless it was run with --no-opengl-files;"
        "  a container (NVIDIA Container Toolkit): add 'graphics' to NVIDIA_DRIVER_CAPABILITIES"
        "  (e.g. -e NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics, or all), which mounts nvidia_icd.json"
        "  and libGLX_nvidia.so.0 from the host; the default compute,utility gives CUDA but no Vulkan.")
      [[ -e /dev/nvidiactl ]] || missing+=("  (no /dev/nvidiactl either: this container does not see the GPU; start it with --gpus all)")
      ;;
    amd) missing+=("AMD GPU: no Vulkan ICD for it (radeon_icd.*.json, Mesa's RADV) in $icd_where: apt-get install mesa-vulkan-drivers") ;;
    intel) missing+=("Intel GPU: no Vulkan ICD for it (intel_icd.*.json, Mesa's ANV) in $icd_where: apt-get install mesa-vulkan-drivers") ;;
  esac
done
((${#gpus[@]} > 0)) || missing+=("no NVIDIA, AMD or Intel GPU on the PCI bus (/sys/bus/pci/devices) and no NVIDIA kernel driver (/proc/driver/nvidia/version):"
  "  is this the machine with the GPU, and is the GPU passed through to this container (docker run --gpus all)?")
for b in "${broken[@]}"; do missing+=("$b"); done

if ((${#icd_files[@]} == 0)); then
  die 1 "no Vulkan driver: no ICD file (*.json) in $icd_where, so no Vulkan device can be opened." "${missing[@]}" \
    "(sapling needs a Vulkan driver for its WebGPU path; without one it trains on the CPU, see README.md)"
fi
have_lib libvulkan.so.1 || die 1 "the Vulkan loader libvulkan.so.1 is not installed: apt-get install libvulkan1" \
  "(wgpu opens Vulkan through it; the ICD files found were: ${icd_files[*]})"

# The adapters sapling sees.
echo "== adapters (sapling info)"
"$SAPLING" info >"$work/info.txt" 2>"$work/info.err" || die 1 "\`$SAPLING info\` failed:" "$(tail -n 5 "$work/info.err")"
cat "$work/info.txt"
"$SAPLING" info --json >"$work/info.json" 2>>"$work/info.err" || die 1 "\`$SAPLING info --json\` failed:" "$(tail -n 5 "$work/info.err")"
python3 - "$work/info.json" >"$work/adapters.tsv" <<'PY'
import json, sys
for a in json.load(open(sys.argv[1])):
    kind = "software" if a.get("device_type") == "Cpu" else "hardware"
    print("\t".join([kind, a["name"], a["api"], a["device_type"], a.get("driver", "")]))
PY
hardware=$(awk -F'\t' '$1 == "hardware" { print $2 " (" $3 ", " $4 ", driver " $5 ")" }' "$work/adapters.tsv" | paste -sd'|' - | sed 's/|/; /g')
software=$(awk -F'\t' '$1 == "software" { print $2 " (" $3 ")" }' "$work/adapters.tsv" | paste -sd'|' - | sed 's/|/; /g')
if [[ -z $hardware && -z $software ]]; then
  die 1 "sapling sees no WebGPU adapter, although ICD files are there (${icd_files[*]})." "${missing[@]}" \
    "An ICD that fails to load (e.g. libnvidia-gl of another version than the kernel driver's) drops out silently:" \
    "vulkaninfo --summary (apt-get install vulkan-tools) and VK_LOADER_DEBUG=error,warn $SAPLING info say why."
fi
if [[ -z $hardware ]]; then
  if [[ $ALLOW_CPU_ADAPTER != 1 ]]; then
    die 2 "the only WebGPU adapter is a software one: $software (lavapipe: Vulkan on the CPU, not a GPU)." "${missing[@]}" \
      "Timing it says nothing about a GPU. ALLOW_CPU_ADAPTER=1 runs the table on it anyway (to try this script)."
  fi
  echo "ALLOW_CPU_ADAPTER=1: timing the software adapter $software; these figures say nothing about a GPU" >&2
  adapter="$software (software)"
else
  adapter=$hardware
  ((${#missing[@]} == 0)) || printf 'note: %s\n' "${missing[@]}" >&2
fi

# ---------------------------------------------------------------------------------------------
# The memory budget, the PyTorch side, the report's header.

budget_note=""
if [[ -z $MEMORY_BUDGET ]]; then
  if [[ -z $hardware ]]; then
    MEMORY_BUDGET=none
    budget_note="none given: a software adapter's budget is 70 % of the host's available memory"
  elif [[ -n $nvidia_smi ]]; then
    free=$(cut -d, -f4 <<<"$nvidia_smi" | tr -d ' ')
    if [[ $free =~ ^[0-9]+$ ]]; then
      MEMORY_BUDGET=$((free * 7 / 10 < 24576 ? free * 7 / 10 : 24576))
      budget_note="$MEMORY_BUDGET MiB: 70 % of the $free MiB nvidia-smi reports free, at most 24576 (set MEMORY_BUDGET for more)"
    else
      MEMORY_BUDGET=24576
      budget_note="24576 MiB assumed (nvidia-smi reports free memory as '$free'; set MEMORY_BUDGET to the GPU's memory in MiB × 0.7)"
    fi
  else
    MEMORY_BUDGET=24576
    budget_note="24576 MiB assumed (no nvidia-smi; set MEMORY_BUDGET to the GPU's memory in MiB × 0.7)"
  fi
else
  budget_note="MEMORY_BUDGET=$MEMORY_BUDGET"
fi
budget_args=()
[[ $MEMORY_BUDGET == none ]] || budget_args=(--memory-budget "$MEMORY_BUDGET")

torch_why=""
torch_info=""
if [[ $TORCH_DEVICE == none ]]; then
  torch_why="TORCH_DEVICE=none"
elif ! torch_info=$(python3 -c 'import torch, safetensors; c = torch.cuda.is_available(); print(torch.__version__, c, torch.backends.cuda.matmul.allow_tf32, torch.cuda.get_device_name(0) if c else "", sep="|")' 2>&1); then
  torch_why="PyTorch is not usable here ($(tail -n 1 <<<"$torch_info")): pip install torch safetensors"
fi
IFS='|' read -r torch_version torch_cuda torch_tf32 torch_gpu <<<"$torch_info"
if [[ -z $torch_why && $TORCH_DEVICE == cuda* && $torch_cuda != True ]]; then
  torch_why="torch.cuda.is_available() is False (torch $torch_version: a CPU-only build, or no CUDA driver visible; nvidia-smi: ${nvidia_smi:-not found})"
fi

sapling_version=$("$SAPLING" --version 2>/dev/null || echo "sapling (version unknown)")
binary_date=$(date -u -r "$SAPLING" '+%F %H:%M UTC' 2>/dev/null || echo "?")
checkout=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo "?")
mkdir -p "$(dirname "$OUT")"
: >"$LOG"
: >"$work/rows.jsonl"
: >"$work/raw.jsonl"
: >"$work/commands.txt"
{
  echo "date:     $(date -u '+%F %H:%M UTC'), ${HOSTNAME:-$(uname -n)}, $(nproc) CPU cores"
  echo "adapter:  $adapter"
  [[ -z $nvidia_smi ]] || echo "GPU:      $nvidia_smi (nvidia-smi: name, driver, MiB total, MiB free)"
  echo "binary:   $sapling_version, $SAPLING (built $binary_date); checkout $checkout"
  if [[ -n $torch_why ]]; then
    echo "PyTorch:  skipped: $torch_why"
  else
    echo "PyTorch:  torch $torch_version on $TORCH_DEVICE${torch_gpu:+ ($torch_gpu)}, f32 (TF32 matmuls allowed: $torch_tf32)"
  fi
  echo "budget:   $budget_note"
  echo "log:      $LOG"
  echo "settings: PRESETS=\"$PRESETS\" KERNELS=\"$KERNELS\" STEPS=$STEPS PLAN_TRIALS=$PLAN_TRIALS PLAN_STEPS=$PLAN_STEPS SAPLING_ARGS=\"$SAPLING_ARGS\" TIMEOUT=$TIMEOUT DEADLINE=$DEADLINE"
} >"$work/header.txt"
echo
cat "$work/header.txt"
echo

# ---------------------------------------------------------------------------------------------
# Rows: kept as JSON lines, printed as they come, rendered as markdown after each.

cat >"$work/rows.py" <<'PY'
import json, os, sys

rows_path, what = os.environ["ROWS"], sys.argv[1]

def num(v):
    if v is None:
        return "–"
    a = abs(v)
    return f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 1 else f"{v:.3g}"

def mem(b):
    if b is None:
        return "–"
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"

def first_json(path):
    text = open(path).read()
    return json.JSONDecoder().raw_decode(text, text.index("{"))[0]

def rows():
    return [json.loads(l) for l in open(rows_path) if l.strip()]

def cells(r):
    if r["status"] != "ok":
        return [r["preset"], r["micro"], r["impl"], r["status"]] + ["–"] * 8 + [r.get("note", "")]
    tf = lambda v: num(v / 1e12) if v is not None else "–"
    frac = f"{100 * r['frac']:.0f} %" if r.get("frac") is not None else "–"
    return [r["preset"], str(r["micro"]), r["impl"], num(r["ips"]), num(r["fwd"]), num(r["bwd"]),
            num(r["opt"]), tf(r.get("achieved")), tf(r.get("matmul")), frac, mem(r.get("peak")),
            str(r["dispatches"]) if r.get("dispatches") is not None else "–", r.get("note", "")]

HEAD = ["preset", "micro-batch", "implementation", "images/s", "forward ms", "backward ms",
        "optimizer ms", "achieved TFLOP/s", "device matmul TFLOP/s", "of matmul", "peak memory",
        "dispatches per step", "note"]
WIDTH = [12, 5, 26, 10, 9, 9, 9, 9, 9, 6, 11, 6, 0]

def text_line(c):
    out = []
    for v, w, i in zip(c, WIDTH, range(len(c))):
        out.append(f"{v:<{w}}" if i in (0, 2) else f"{v:>{w}}" if w else v)
    return "  ".join(out).rstrip()

if what == "add":  # preset micro impl status note [result.json kind]
    preset, micro, impl, status, note = sys.argv[2:7]
    r = {"preset": preset, "micro": micro, "impl": impl, "status": status, "note": note}
    if status == "ok":
        j = first_json(sys.argv[7])
        if sys.argv[8] == "sapling":
            r.update(micro=j["micro_batch"], ips=j["images_per_sec"], fwd=j["forward_ms"],
                     bwd=j["backward_ms"], opt=j["optimizer_ms"], achieved=j["achieved_flops_per_sec"],
                     matmul=j["matmul_flops_per_sec"], frac=j["fraction_of_matmul_peak"],
                     peak=j.get("peak_memory"), flops=j["flops"]["train_step"],
                     dispatches=(j.get("counts") or {}).get("per_step", {}).get("dispatches"))
        else:  # pytorch: FLOPs per image from a sapling row of the preset, matmul rate given
            flops = next((x["flops"] for x in rows() if x["preset"] == preset and x.get("flops")), None)
            matmul = float(sys.argv[9]) if len(sys.argv) > 9 and sys.argv[9] else None
            achieved = flops * j["images_per_sec"] if flops else None
            r.update(micro=j["micro_batch"], ips=j["images_per_sec"], fwd=j["forward_ms"],
                     bwd=j["backward_ms"], opt=j["optimizer_ms"], achieved=achieved, matmul=matmul,
                     frac=achieved / matmul if achieved and matmul else None, peak=j.get("peak_memory"))
    with open(rows_path, "a") as f:
        f.write(json.dumps(r) + "\n")
    print(text_line(cells(r)))
elif what == "head":
    print(text_line(["preset", "micro", "implementation", "images/s", "fwd ms", "bwd ms", "opt ms",
                     "TFLOP/s", "matmul", "of mm", "peak mem", "disp", "note"]))
elif what == "plan":  # probe JSON -> micro|checkpointing|precision|note|adapter
    j = first_json(sys.argv[2])
    lv = j.get("levers") or {}
    tried = [f"{t['micro_batch']}{' failed' if t.get('error') else ''}" for t in j.get("trials", [])]
    how = f"trials {', '.join(tried)}" if j["source"] == "measured" else "memory model alone"
    note = f"plan ({how}): {j['micro_batch']} × {j['accum']} accumulation"
    note += ", activation checkpointing" if lv.get("checkpointing") else ""
    note += f", {lv['precision']}" if lv.get("precision", "f32") != "f32" else ""
    print(j["micro_batch"], "blocks" if lv.get("checkpointing") else "off", lv.get("precision", "f32"),
          note, j["limits"]["adapter"], sep="|")
elif what == "failures":
    print(sum(1 for r in rows() if r["impl"].startswith("sapling") and r["status"] != "ok"))
elif what == "markdown":  # header commands info raw
    header, commands, info, raw = (open(p).read() for p in sys.argv[2:6])
    out = ["# The GPU table (`benches/gpu.sh`)", "", "```", header.rstrip(), "```", ""]
    out += ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    out += ["| " + " | ".join(str(c) for c in cells(r)) + " |" for r in rows()]
    out += ["", "Each sapling row is `sapling bench step` at the micro-batch `sapling probe` planned for "
            "that kernel path (one micro-batch per step, no accumulation; median of the timed steps "
            "after 2 warm-up steps, the device drained between forward, backward and optimizer). "
            "Achieved TFLOP/s is the model's FLOPs of a training step (2 per multiply-add, backward = "
            "2 × forward; sapling's count, also for the PyTorch row) × images/s; the device matmul "
            "rate is a 1024² f32 matmul timed in the same process (PyTorch's row: the same matmul in "
            "torch on its device); peak memory is burn's wgpu pool (bytes reserved) and torch's "
            "caching allocator (bytes reserved).", "",
            "## Commands", "", "```sh", commands.rstrip(), "```", "",
            "## Adapters (`sapling info`)", "", "```", info.rstrip(), "```", "",
            "<details><summary>Raw results (JSON)</summary>", "", "```", raw.rstrip(), "```", "",
            "</details>", ""]
    print("\n".join(out))
PY
export ROWS=$work/rows.jsonl
rows() { python3 "$work/rows.py" "$@"; }
render() {
  rows markdown "$work/header.txt" "$work/commands.txt" "$work/info.txt" "$work/raw.jsonl" >"$OUT"
}

# Runs one command under the run's time limits, its stdout to a file; on failure `state` says
# what happened ("timed out", "failed", "skipped") and `why` says it for people.
state="" why=""
run() { # output file, command...
  local out=$1
  shift
  local shown=$* left=$((DEADLINE - SECONDS)) limit=$TIMEOUT rc=0 msg clean
  shown=${shown//"$work"/\$WORK}
  echo "$shown" >>"$work/commands.txt"
  if ((left < MIN_LEFT)); then
    state=skipped why="skipped: the run's DEADLINE of $DEADLINE s was spent"
    echo "   (skipped, DEADLINE spent: $shown)" >&2
    return 1
  fi
  ((left < limit)) && limit=$left
  printf '   [%3d s] %s\n' "$SECONDS" "$shown" >&2
  echo "### [$(date -u +%T)] $shown (timeout $limit s)" >>"$LOG"
  timeout --kill-after=10 "$limit" "$@" >"$out" 2>"$out.err" || rc=$?
  sed 's/\x1b\[[0-9;]*m//g' "$out.err" >>"$LOG"
  ((rc == 0)) && return 0
  if ((rc == 124 || rc == 137)); then
    state="timed out" why="timed out after $limit s (TIMEOUT=$TIMEOUT, DEADLINE=$DEADLINE)"
  else
    clean=$(sed 's/\x1b\[[0-9;]*m//g' "$out.err" | grep -v -e '^[[:space:]]*$' -e XDG_RUNTIME_DIR || true)
    msg=$(grep -m1 -A1 -E '^Error:|panicked at' <<<"$clean" | tr '\n' ' ' || true)
    [[ -n $msg ]] || msg=$(grep -m1 '^error' <<<"$clean" || true)
    [[ -n $msg ]] || msg=$(tail -n 1 <<<"$clean")
    state=failed why="failed (exit $rc): ${msg:0:300}"
  fi
  echo "   $why" >&2
  return 1
}

# torch's 1024² f32 matmul rate on TORCH_DEVICE, timed as sapling times its own (one product,
# then a synchronisation; median of 7 after a warm-up).
cat >"$work/matmul.py" <<'PY'
import sys, time, torch
d, n = torch.device(sys.argv[1]), 1024
a, b = torch.randn(n, n, device=d), torch.randn(n, n, device=d)
sync = torch.cuda.synchronize if d.type == "cuda" else (lambda: None)
ts = []
for i in range(8):
    sync()
    t = time.perf_counter()
    c = a @ b
    sync()
    ts.append(time.perf_counter() - t)
ts = sorted(ts[1:])
print(2 * n**3 / ts[len(ts) // 2])
PY
torch_matmul=""
first_json() { python3 -c 'import json, sys; t = sys.stdin.read(); print(json.dumps(json.JSONDecoder().raw_decode(t, t.index("{"))[0]))' <"$1"; }

rows head
for preset in $PRESETS; do
  torch_micro=""
  for k in $KERNELS; do
    impl="sapling, wgpu, $k"
    plan=$work/plan-$preset-$k.json
    if ! run "$plan" "$SAPLING" probe --preset "$preset" --device wgpu --kernels "$k" "${budget_args[@]}" \
      --trial-sizes "$PLAN_TRIALS" --trial-steps "$PLAN_STEPS" "${extra[@]}" --json; then
      rows add "$preset" – "$impl" "$state (plan)" "sapling probe $why"
      render
      continue
    fi
    if ! IFS='|' read -r micro ckpt _ notes timed_on < <(rows plan "$plan"); then
      rows add "$preset" – "$impl" failed "could not read the plan of sapling probe (see $LOG)"
      render
      continue
    fi
    grep -q '^timed on:' "$work/header.txt" || echo "timed on: $timed_on (sapling probe's adapter)" >>"$work/header.txt"
    if [[ $timed_on == *"Cpu)" && -n $hardware ]]; then
      die 2 "sapling's --device wgpu opened the software adapter ($timed_on) although a hardware adapter is listed ($hardware):" \
        "the table would time the CPU. See \`$SAPLING info\`; VK_DRIVER_FILES=/path/to/nvidia_icd.json (or the GPU's ICD) hides lavapipe from the loader"
    fi
    [[ -n $torch_micro && $k != reference ]] || torch_micro=$micro
    step=$work/step-$preset-$k.json
    if run "$step" "$SAPLING" bench step --preset "$preset" --device wgpu --kernels "$k" "${budget_args[@]}" \
      --batch-size "$micro" --activation-checkpointing "$ckpt" --timed-steps "$STEPS" "${extra[@]}" --json; then
      first_json "$step" >>"$work/raw.jsonl"
      rows add "$preset" "$micro" "$impl" ok "$notes" "$step" sapling
    else
      rows add "$preset" "$micro" "$impl" "$state" "$notes; bench step $why"
    fi
    render
  done

  impl="PyTorch, $TORCH_DEVICE"
  case=$work/case-$preset
  if [[ -n $torch_why ]]; then
    rows add "$preset" "${torch_micro:-–}" "PyTorch" skipped "$torch_why"
  elif [[ -z $torch_micro ]]; then
    rows add "$preset" – "$impl" skipped "no sapling plan to take the micro-batch from"
  elif ! run "$case.txt" "$SAPLING" bench reference-case --preset "$preset" --device cpu \
    --case-dir "$case" --micro-batch 1 --record-steps 0; then
    rows add "$preset" "$torch_micro" "$impl" "$state" "writing the model for PyTorch (sapling bench reference-case) $why"
  elif ! run "$work/torch-$preset.json" python3 benches/torch_mae.py bench "$case" \
    --batch "$torch_micro" --steps "$STEPS" --device "$TORCH_DEVICE"; then
    rows add "$preset" "$torch_micro" "$impl" "$state" "torch_mae.py bench $why"
  else
    left=$((DEADLINE - SECONDS))
    if [[ -z $torch_matmul ]] && ((left > 5)); then
      echo "python3 matmul.py $TORCH_DEVICE  # torch's 1024² f32 matmul rate (the script's own snippet)" >>"$work/commands.txt"
      torch_matmul=$(timeout "$((left < 60 ? left : 60))" python3 "$work/matmul.py" "$TORCH_DEVICE" 2>>"$LOG" || true)
    fi
    first_json "$work/torch-$preset.json" >>"$work/raw.jsonl"
    rows add "$preset" "$torch_micro" "$impl" ok "the micro-batch of sapling's reference plan" \
      "$work/torch-$preset.json" pytorch "$torch_matmul"
  fi
  rm -rf "$case"
  render
done

echo
echo "wrote $OUT (log: $LOG) in $SECONDS s"
failed=$(rows failures)
((failed == 0)) || die 3 "$failed sapling row(s) failed, timed out or were skipped: see the notes in $OUT and $LOG"
