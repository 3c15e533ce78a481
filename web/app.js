// The page: starts a sapling trainer on WebGPU, plans the batch, and trains while drawing.
// Every call into the trainer goes through `serial`, so drops, the slider and downloads wait
// for the step in flight instead of racing it; nothing here blocks on the GPU.
import init, { create } from './pkg/sapling_web.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const num = (name, fallback) => (params.has(name) ? Number(params.get(name)) : fallback);

// Page options (URL parameters), e.g. `?effective=8&sizes=2&stop=20&autostart=1`.
const options = {
  effective: num('effective', 0), // 0: the tiny preset's 32 images per step
  sizes: num('sizes', 3), // micro-batch sizes the planner tries for real
  trialSteps: num('trial-steps', 2), // timed steps per size
  every: num('every', 10), // steps between reconstruction refreshes
  stop: num('stop', 0), // pause after this many steps (0: never)
  kernels: params.get('kernels') || 'auto', // auto (= wgsl) or reference (burn's ops alone)
  checkpointing: params.get('checkpointing') || 'auto', // off, blocks or auto
  autostart: params.get('autostart') === '1',
  budget: num('budget', 0), // MiB of GPU memory a step may use (0: the planner assumes one)
  precision: params.get('precision') || 'auto', // auto (f16 where the adapter has shader-f16), f16, f32
  // A safetensors file to start from (timm, Hugging Face, mmpretrain, `sapling export`), by URL.
  weights: params.get('weights'),
  // Keep the whole MAE's weights as they are before the first step, for the browser test's
  // comparison with native sapling (`window.sapling.initialWeights`, safetensors bytes).
  initialWeights: params.get('initial-weights') === '1',
};

// Two shims between cubecl's WGSL and Chrome (burn's matmul kernels use subgroups):
// - Chrome compiles `enable subgroups;` only on a device created with the `subgroups` feature,
//   and wgpu's browser backend has no name for that feature, so it never asks: ask for it
//   whenever the adapter has it.
// - Chrome's compiler runs WGSL's subgroup-uniformity analysis, which naga (native wgpu) does
//   not, and rejects those kernels' `subgroupAdd`; turn the diagnostic off, as native runs them.
if (navigator.gpu) {
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = function (descriptor = {}) {
    const features = new Set(descriptor.requiredFeatures || []);
    if (this.features.has('subgroups')) features.add('subgroups');
    return requestDevice.call(this, { ...descriptor, requiredFeatures: [...features] });
  };
  const createShaderModule = GPUDevice.prototype.createShaderModule;
  GPUDevice.prototype.createShaderModule = function (descriptor) {
    const code = descriptor.code.replace(
      'enable subgroups;', 'enable subgroups;\ndiagnostic(off, subgroup_uniformity);');
    return createShaderModule.call(this, { ...descriptor, code });
  };
}

// What the browser test reads.
const state = (window.sapling = { ready: false, steps: [], reconstructions: 0, images: 0, done: false, error: null });

let trainer = null;
let running = false;
let chain = Promise.resolve();

function serial(work) {
  const result = chain.then(work);
  chain = result.catch(() => {});
  return result;
}

function status(text, isError = false) {
  console.log(`sapling: ${text}`);
  $('status').textContent = text;
  $('status').classList.toggle('error', isError);
}

function fail(error) {
  const message = error instanceof Error ? error.message : String(error);
  state.error = message;
  running = false;
  $('toggle').textContent = 'Start';
  status(message, true);
  console.error(error);
}

function drawLine(canvas, values, format) {
  const ctx = canvas.getContext('2d');
  const { width: w, height: h } = canvas;
  ctx.clearRect(0, 0, w, h);
  if (values.length < 2) return;
  const left = 56, pad = 10;
  const lo = Math.min(...values), hi = Math.max(...values);
  const span = hi - lo || 1;
  const x = (i) => left + (i / (values.length - 1)) * (w - left - pad);
  const y = (v) => pad + (1 - (v - lo) / span) * (h - 2 * pad);
  ctx.fillStyle = '#777';
  ctx.font = '11px ui-monospace, monospace';
  ctx.fillText(format(hi), 2, pad + 8);
  ctx.fillText(format(lo), 2, h - pad);
  ctx.strokeStyle = '#2b6cb0';
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  values.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
  ctx.stroke();
}

function showStep(report) {
  state.steps.push(report);
  $('step').textContent = report.step;
  $('loss').textContent = report.loss.toFixed(4);
  $('lr').textContent = report.lr.toExponential(2);
  // Images/s over the last few steps: one step's figure jumps with the page's own work.
  const recent = state.steps.slice(-5);
  const seconds = recent.reduce((s, r) => s + r.seconds, 0);
  const images = recent.reduce((s, r) => s + r.images_per_sec * r.seconds, 0);
  $('ips').textContent = (images / seconds).toFixed(2);
  drawLine($('loss-chart'), state.steps.map((r) => r.loss), (v) => v.toFixed(3));
  drawLine($('lr-chart'), state.steps.map((r) => r.lr), (v) => v.toExponential(1));
}

async function refreshReconstruction() {
  const png = await serial(() => trainer.reconstruction());
  const img = $('recon');
  const old = img.src;
  img.src = URL.createObjectURL(new Blob([png], { type: 'image/png' }));
  await img.decode();
  if (old) URL.revokeObjectURL(old);
  state.reconstructions += 1;
}

async function loop() {
  while (running) {
    const report = JSON.parse(await serial(() => trainer.step()));
    showStep(report);
    if (report.step % options.every === 0 || report.step === options.stop) {
      await refreshReconstruction();
    }
    if (options.stop && report.step >= options.stop) {
      running = false;
      state.done = true;
      $('toggle').textContent = 'Start';
      status(`Paused after ${report.step} steps.`);
    }
    // Let the page paint and take input between steps.
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

function toggle() {
  running = !running;
  $('toggle').textContent = running ? 'Pause' : 'Start';
  if (running) {
    status('Training…');
    loop().catch(fail);
  } else {
    serial(() => trainer.pause());
    status('Paused.');
  }
}

// Larger than any camera's photos, as sapling's own decoder limits (16384 px a side, 512 MiB):
// a header claiming more is refused before the browser decodes a pixel.
const MAX_SIDE = 16384;
const MAX_PIXELS = (512 * 2 ** 20) / 4;

// Decodes a dropped file with the browser's decoders and draws it at the short side the trainer
// keeps: only that small copy enters the wasm heap, which never shrinks back.
async function pixelsOf(file, keep) {
  const url = URL.createObjectURL(file);
  try {
    const img = new Image();
    // `load` fires once the header is read; the pixels are decoded when drawn.
    await new Promise((loaded, failed) => {
      img.onload = loaded;
      img.onerror = () => failed(new Error('cannot decode it; drop a PNG, JPEG or WebP image'));
      img.src = url;
    });
    const { naturalWidth: w, naturalHeight: h } = img;
    if (!w || !h || w > MAX_SIDE || h > MAX_SIDE || w * h > MAX_PIXELS) {
      throw new Error(`${w}×${h} pixels is more than this page decodes ` +
        `(${MAX_SIDE} a side, ${Math.round(MAX_PIXELS / 1e6)} megapixels)`);
    }
    const scale = Math.min(1, keep / Math.min(w, h));
    const width = Math.max(1, Math.round(w * scale));
    const height = Math.max(1, Math.round(h * scale));
    const canvas = document.createElement('canvas');
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext('2d');
    ctx.imageSmoothingQuality = 'high';
    ctx.drawImage(img, 0, 0, width, height);
    const rgba = ctx.getImageData(0, 0, width, height).data;
    return { width, height, rgba: new Uint8Array(rgba.buffer), original: [w, h] };
  } finally {
    URL.revokeObjectURL(url);
  }
}

// Each file is decoded, shrunk and handed over on its own: the images already added stay where
// they are.
async function addFiles(files) {
  for (const file of files) {
    if (file.name.endsWith('.safetensors')) {
      try {
        await startFrom(file.name, new Uint8Array(await file.arrayBuffer()));
      } catch (e) {
        status(`${file.name}: ${e.message}`, true);
      }
      continue;
    }
    if (!file.type.startsWith('image/')) continue;
    try {
      const keep = await serial(() => trainer.keepSide());
      const { width, height, rgba, original } = await pixelsOf(file, keep);
      const count = await serial(() => trainer.addPixels(file.name, width, height, rgba));
      state.images = count;
      $('images').textContent = `${count} training images`;
      status(`Added ${file.name} (${original.join('×')}, kept at ${width}×${height}).`);
    } catch (e) {
      status(`${file.name}: ${e.message}`, true);
    }
  }
}

// Starts over from the weights in safetensors `bytes`: MAE at work from the first step instead
// of noise (what `web/serve.sh` offers is `sapling export --with-decoder` of the README's first
// run; a dropped file may be any layout `--init-from` reads).
async function startFrom(name, bytes) {
  const report = await serial(() => trainer.loadWeights(name, bytes));
  state.weights = report;
  state.steps = [];
  status(`Started over from ${name}: ${report}`);
  await refreshReconstruction();
}

async function fetchWeights(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: ${response.status} ${response.statusText}`);
  return new Uint8Array(await response.arrayBuffer());
}

// The trained weights `web/serve.sh` exports beside the page, when there are some.
const OFFERED = 'weights/tiny-mae.safetensors';

async function offerWeights() {
  const head = await fetch(OFFERED, { method: 'HEAD' }).catch(() => null);
  if (!head || !head.ok) return;
  $('pretrained').hidden = false;
  $('pretrained').onclick = () =>
    fetchWeights(OFFERED).then((bytes) => startFrom('tiny-mae.safetensors', bytes)).catch(fail);
}

async function download() {
  const bytes = await serial(() => trainer.weights(false));
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
  a.download = `sapling-tiny-encoder-step${state.steps.length}.safetensors`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

function wireControls() {
  $('toggle').onclick = toggle;
  $('download').onclick = () => download().catch(fail);
  $('mask').oninput = () => ($('mask-value').textContent = Number($('mask').value).toFixed(2));
  $('mask').onchange = () =>
    serial(() => trainer.setMaskRatio(Number($('mask').value))).catch(fail);
  let depth = 0;
  addEventListener('dragenter', (e) => { e.preventDefault(); depth += 1; $('drop').hidden = false; });
  addEventListener('dragleave', () => { depth -= 1; if (depth <= 0) { depth = 0; $('drop').hidden = true; } });
  addEventListener('dragover', (e) => e.preventDefault());
  addEventListener('drop', (e) => {
    e.preventDefault();
    depth = 0;
    $('drop').hidden = true;
    addFiles(e.dataTransfer.files).catch(fail);
  });
  for (const id of ['toggle', 'mask', 'download']) $(id).disabled = false;
}

const bytes = (n) => {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  for (; n >= 1024 && i < units.length - 1; i += 1) n /= 1024;
  return i ? `${n.toFixed(1)} ${units[i]}` : `${n} B`;
};

// The device panel: what the browser says the GPU is, what wgpu sees, and the limits the
// batch planner works within.
function showDevice(info, { adapter, limits }) {
  const rows = [
    ['GPU (as the browser names it)', [info.vendor, info.architecture, info.description].filter(Boolean).join(' ') || 'not disclosed'],
  ];
  if (adapter) {
    rows.push(
      ['Adapter', `${adapter.name || 'unnamed'} (${adapter.api}, ${adapter.device_type})`],
      ['Largest buffer', bytes(adapter.limits.max_buffer_size)],
      ['Largest storage binding', bytes(adapter.limits.max_storage_buffer_binding_size)],
      ['Workgroup memory', bytes(adapter.limits.max_compute_workgroup_storage_size)],
      ['Storage buffers per shader stage', adapter.limits.max_storage_buffers_per_shader_stage],
      ['shader-f16', adapter.shader_f16 ? 'yes' : 'no'],
    );
  }
  rows.push(['Memory budget per step', `${bytes(limits.budget)} (${limits.budget_source})`]);
  const table = $('device');
  table.replaceChildren(...rows.map(([name, value]) => {
    const tr = document.createElement('tr');
    const th = document.createElement('th');
    const td = document.createElement('td');
    th.textContent = name;
    td.textContent = String(value);
    tr.append(th, td);
    return tr;
  }));
}

async function main() {
  if (params.has('budget') && !(Number.isInteger(options.budget) && options.budget > 0)) {
    state.error = 'bad-parameter';
    status(`budget=${params.get('budget')}: give the GPU memory a training step may use, as a ` +
      'whole number of MiB (e.g. budget=8192 for 8 GiB)', true);
    return;
  }
  if (!navigator.gpu) {
    state.error = 'no-webgpu';
    status('This browser does not offer WebGPU, which sapling trains on. Use a recent Chrome, ' +
      'Edge, Firefox or Safari (or enable WebGPU in its settings) and reload.', true);
    return;
  }
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) {
    state.error = 'no-adapter';
    status('WebGPU is there, but no GPU adapter was offered (blocklisted driver or ' +
      'disabled hardware acceleration?).', true);
    return;
  }
  status('Loading the trainer…');
  await init();
  const opts = {
    kernels: options.kernels,
    activation_checkpointing: options.checkpointing,
    precision: options.precision,
  };
  if (options.effective) opts.effective_batch = options.effective;
  if (options.budget) opts.memory_budget_mib = options.budget;
  trainer = await create(JSON.stringify(opts));
  // Browsers hide the adapter's name from wgpu; their own `adapter.info` says what it is.
  showDevice(adapter.info || {}, JSON.parse(trainer.device()));
  state.images = trainer.imageCount();
  $('images').textContent = `${state.images} training images`;
  status(`Planning the batch on the GPU (${options.sizes} sizes; the first steps compile shaders)…`);
  const plan = JSON.parse(await serial(() => trainer.planBatch(options.sizes, options.trialSteps)));
  state.plan = plan;
  $('plan').textContent =
    `micro-batch ${plan.micro_batch} × ${plan.accum} accumulation = ${plan.effective_batch} images/step, ` +
    `peak lr ${plan.lr.toExponential(2)}, ${plan.levers.precision}\n` +
    plan.trials.map((t) => `  tried ${t.micro_batch}: ` +
      (t.error ? `failed (${t.error})` : `${t.images_per_sec.toFixed(2)} images/s`)).join('\n');
  if (options.weights) {
    await startFrom(options.weights.split('/').pop(), await fetchWeights(options.weights));
  }
  if (options.initialWeights) state.initialWeights = await serial(() => trainer.weights(true));
  await refreshReconstruction();
  await offerWeights();
  wireControls();
  state.ready = true;
  status('Ready: press Start.');
  if (options.autostart) toggle();
}

// A panic in the trainer aborts its module: the call in flight never settles, but the trap
// surfaces here.
addEventListener('error', (e) => fail(e.error || e.message));
addEventListener('unhandledrejection', (e) => fail(e.reason));
main().catch(fail);
