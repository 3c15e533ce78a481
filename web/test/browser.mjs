// Drives Debian's headless Chromium (WebGPU through SwiftShader) through the demo page: waits
// for the batch planner and `stop` training steps, then checks that the loss fell and that a
// reconstruction was drawn, and saves a screenshot. Usage: node browser.mjs URL OUT_DIR
import { chromium } from 'playwright-core';
import { mkdirSync, writeFileSync } from 'node:fs';

const [url, outDir = 'out'] = process.argv.slice(2);
// Adapter features the page must not see, e.g. SAPLING_WEB_HIDE=subgroups.
const hidden = (process.env.SAPLING_WEB_HIDE || '').split(',').filter(Boolean);
const timeoutMs = Number(process.env.SAPLING_WEB_TIMEOUT_S || 1200) * 1000;
mkdirSync(outDir, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // --enable-unsafe-webgpu: WebGPU on Linux (SwiftShader here); the rest keeps Chromium off
  // the network, which this machine does not have.
  args: ['--headless', '--no-sandbox', '--enable-unsafe-webgpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-quic'],
});
// Drops a photo too large to keep as it is and a file that is not an image: the first is added
// at the trainer's keep size, the second refused by name, and the page goes on.
async function checkDrops(page, logs) {
  const drop = await page.evaluate(async () => {
    const canvas = document.createElement('canvas');
    [canvas.width, canvas.height] = [3000, 2000];
    canvas.getContext('2d').fillRect(0, 0, 3000, 2000);
    const big = await new Promise((done) => canvas.toBlob(done, 'image/png'));
    const files = new DataTransfer();
    files.items.add(new File([big], 'big.png', { type: 'image/png' }));
    files.items.add(new File([new Uint8Array([1, 2, 3])], 'broken.png', { type: 'image/png' }));
    const before = window.sapling.images;
    dispatchEvent(new DragEvent('drop', { dataTransfer: files, cancelable: true }));
    const status = () => document.getElementById('status').textContent;
    for (let i = 0; i < 300 && !status().startsWith('broken.png'); i += 1) {
      await new Promise((r) => setTimeout(r, 100));
    }
    return { before, after: window.sapling.images, status: status(), error: window.sapling.error };
  });
  console.log(`drops: ${JSON.stringify(drop)}`);
  if (drop.error) return `a drop stopped the page: ${drop.error}`;
  if (drop.after !== drop.before + 1) return `big.png was not added: ${drop.before} -> ${drop.after} images`;
  if (!drop.status.includes('cannot decode')) return `broken.png was not refused by name: ${drop.status}`;
  // The tiny preset keeps short sides at 256 px.
  if (!logs.some((l) => l.includes('big.png (3000×2000, kept at 384×256)'))) {
    return 'big.png was not shrunk to 384×256';
  }
  return null;
}

// The device panel is a table for people: the adapter and the budget, which names the page's
// own way to change it (`budget=MIB`) or shows the one given.
function checkDevicePanel(rows, budgetMib) {
  console.log(`device panel: ${JSON.stringify(rows)}`);
  const value = (name) => rows.find(([th]) => th === name)?.[1];
  if (rows.some(([, td]) => !td || td.trim().startsWith('{'))) return 'the device panel has empty or raw JSON cells';
  if (!value('Adapter')) return 'the device panel does not name the adapter';
  const budget = value('Memory budget per step') || '';
  if (budget.includes('--memory-budget')) return `the budget names a command-line flag: ${budget}`;
  if (budgetMib) {
    const gib = `${(Number(budgetMib) / 1024).toFixed(1)} GiB`;
    if (!budget.startsWith(gib) || !budget.includes('budget=')) return `budget=${budgetMib} is not shown: ${budget}`;
  } else if (!budget.includes('budget=MIB')) {
    return `the budget row does not say how to change it: ${budget}`;
  }
  return null;
}

// A bad `budget` is refused by name before any GPU work.
async function checkBadBudget(url) {
  const page = await browser.newPage();
  const bad = new URL(url);
  bad.searchParams.set('budget', 'lots');
  await page.goto(bad.href);
  await page.waitForFunction(() => window.sapling?.error, null, { timeout: 30000 });
  const text = await page.evaluate(() => document.getElementById('status').textContent);
  await page.close();
  console.log(`bad budget: ${text}`);
  return text.startsWith('budget=lots:') ? null : `budget=lots was not refused by name: ${text}`;
}

let failed = null;
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 1400 } });
  const errors = [];
  const logs = [];
  // The page asks whether trained weights sit beside it (web/serve.sh puts them there) with a
  // HEAD request; its 404, when none do, is the page working as meant. Any other failed load is
  // an error.
  const missing = [];
  page.on('response', (r) => {
    if (r.status() >= 400) missing.push(`${r.request().method()} ${new URL(r.url()).pathname}`);
  });
  const offerProbe = (text) =>
    text.startsWith('Failed to load resource: the server responded with a status of 404') &&
    missing.length > 0 && missing.every((r) => r === 'HEAD /weights/tiny-mae.safetensors');
  page.on('console', (m) => {
    logs.push(m.text());
    if (m.type() === 'error') errors.push(m.text());
    console.log(`page ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => errors.push(e.message));
  if (hidden.length) {
    // A browser without these features (Firefox and Safari lack `subgroups` on many machines):
    // the adapter stops listing them and refuses a device that asks for them, before any page
    // script runs.
    await page.addInitScript((names) => {
      const hide = new Set(names);
      const features = Object.getOwnPropertyDescriptor(GPUAdapter.prototype, 'features').get;
      Object.defineProperty(GPUAdapter.prototype, 'features', {
        configurable: true,
        get() { return new Set([...features.call(this)].filter((f) => !hide.has(f))); },
      });
      const requestDevice = GPUAdapter.prototype.requestDevice;
      GPUAdapter.prototype.requestDevice = function (descriptor = {}) {
        const asked = (descriptor.requiredFeatures || []).filter((f) => hide.has(f));
        if (asked.length) return Promise.reject(new TypeError(`unsupported features: ${asked}`));
        return requestDevice.call(this, descriptor);
      };
      // Shaders that still enable a hidden feature, counted for the result.
      window.saplingHiddenEnables = 0;
      const createShaderModule = GPUDevice.prototype.createShaderModule;
      GPUDevice.prototype.createShaderModule = function (descriptor) {
        if ([...hide].some((f) => descriptor.code.includes(`enable ${f};`))) window.saplingHiddenEnables += 1;
        return createShaderModule.call(this, descriptor);
      };
    }, hidden);
  }
  if (process.env.SAPLING_WEB_DEBUG_SHADERS) {
    // Logs each shader module's compilation messages with the offending lines.
    await page.addInitScript(() => {
      const create = GPUDevice.prototype.createShaderModule;
      const t0 = performance.now();
      let count = 0;
      GPUDevice.prototype.createShaderModule = function (desc) {
        count += 1;
        if (count % 20 === 0) console.log(`shaders: ${count} modules after ${((performance.now() - t0) / 1000).toFixed(0)} s`);
        const module = create.call(this, desc);
        module.getCompilationInfo().then((info) => {
          for (const m of info.messages) {
            if (m.type !== 'error') continue;
            const lines = desc.code.split('\n');
            console.log(`shader ${desc.label}: ${m.message} at ${m.lineNum}:${m.linePos}\n` +
              lines.slice(Math.max(0, m.lineNum - 3), m.lineNum + 2).join('\n') +
              `\n--- enables: ${lines.filter((l) => l.startsWith('enable')).join(' ')}`);
          }
        });
        return module;
      };
    });
  }
  const started = Date.now();
  await page.goto(url);
  let last = -1;
  let state;
  for (;;) {
    state = await page.evaluate(() => window.sapling && {
      ready: window.sapling.ready, done: window.sapling.done, error: window.sapling.error,
      steps: window.sapling.steps, reconstructions: window.sapling.reconstructions,
      plan: window.sapling.plan, weights: window.sapling.weights,
    });
    if (state?.error || state?.done) break;
    if (Date.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs / 1000} s`);
    const n = state?.steps?.length ?? 0;
    if (n !== last) {
      const s = state?.steps?.at(-1);
      console.log(`${((Date.now() - started) / 1000).toFixed(0)} s: ${state?.ready ? `step ${n}` : 'starting'}` +
        (s ? `, loss ${s.loss.toFixed(4)}, ${s.seconds.toFixed(2)} s/step` : ''));
      last = n;
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
  await page.screenshot({ path: `${outDir}/screenshot.png`, fullPage: true });
  const recon = await page.evaluate(() => {
    const img = document.getElementById('recon');
    return { width: img.naturalWidth, height: img.naturalHeight };
  });
  const devicePanel = await page.evaluate(() => [...document.querySelectorAll('#device tr')]
    .map((tr) => [tr.querySelector('th')?.textContent, tr.querySelector('td')?.textContent]));
  const steps = state.steps || [];
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const k = Math.min(3, Math.floor(steps.length / 2));
  const first = k ? mean(steps.slice(0, k).map((s) => s.loss)) : NaN;
  const lastLoss = k ? mean(steps.slice(-k).map((s) => s.loss)) : NaN;
  // Steady-state speed: the first steps after the planner's trials still compile shaders.
  const steady = steps.slice(Math.floor(steps.length / 2));
  const secs = steady.reduce((a, s) => a + s.seconds, 0);
  const realErrors = errors.filter((e) => !offerProbe(e));
  const result = {
    url, hidden_features: hidden, wall_s: (Date.now() - started) / 1000, error: state.error,
    plan: state.plan,
    steps: steps.length, first_loss: first, last_loss: lastLoss,
    steps_per_s: steady.length / secs,
    images_per_s: steady.reduce((a, s) => a + s.images_per_sec * s.seconds, 0) / secs,
    reconstructions: state.reconstructions, recon_png: recon, console_errors: realErrors, offer_probe_404: errors.length - realErrors.length,
    device_panel: devicePanel, weights: state.weights ?? null,
    shaders_enabling_hidden: await page.evaluate(() => window.saplingHiddenEnables ?? null),
    losses: steps.map((s) => s.loss),
  };
  writeFileSync(`${outDir}/result.json`, JSON.stringify(result, null, 2));
  // The weights the first step started from (`initial-weights=1`), for test/first-loss.sh.
  const weights = await page.evaluate(() => {
    const bytes = window.sapling.initialWeights;
    if (!bytes) return null;
    let text = '';
    for (let i = 0; i < bytes.length; i += 0x8000) {
      text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    }
    return btoa(text);
  });
  if (weights) writeFileSync(`${outDir}/initial.safetensors`, Buffer.from(weights, 'base64'));
  console.log(JSON.stringify({ ...result, losses: undefined, plan: state.plan && {
    micro_batch: state.plan.micro_batch, accum: state.plan.accum, levers: state.plan.levers,
    trials: state.plan.trials.length } }, null, 2));
  // Started from trained weights (`weights=`): the first loss is already well below a fresh
  // model's (1.75 on this page), and the run need not fall further in a few steps.
  const startedFrom = new URL(url).searchParams.get('weights');
  if (state.error) failed = `the page reported an error: ${state.error}`;
  else if (startedFrom && !state.weights) failed = `weights=${startedFrom} but the page loaded none`;
  else if (startedFrom && !(steps[0]?.loss < 1.5)) failed = `from ${startedFrom} the first loss is ${steps[0]?.loss}`;
  else if (!startedFrom && !(lastLoss < first)) failed = `the loss did not fall: ${first} -> ${lastLoss}`;
  else if (state.reconstructions < 1 || recon.width === 0) failed = 'no reconstruction was drawn';
  else if (realErrors.length) failed = `console errors: ${realErrors.join(' | ')}`;
  else if (result.shaders_enabling_hidden) {
    failed = `${result.shaders_enabling_hidden} shaders enable a hidden feature (${hidden})`;
  }
  else if (url.includes('checkpointing=blocks') && !state.plan?.levers?.checkpointing) {
    failed = `checkpointing was asked for but the plan's levers are ${JSON.stringify(state.plan?.levers)}`;
  }
  if (!failed) failed = checkDevicePanel(devicePanel, new URL(url).searchParams.get('budget'));
  if (!failed) failed = await checkDrops(page, logs);
  if (!failed) failed = await checkBadBudget(url);
} catch (e) {
  failed = e.message;
} finally {
  await browser.close();
}
if (failed) {
  console.error(`web test FAILED: ${failed}`);
  process.exit(1);
}
console.log(`web test passed; screenshot in ${outDir}/screenshot.png`);
