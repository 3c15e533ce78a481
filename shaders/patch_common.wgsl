// Shared by the patch kernels (prepended to each): the image geometry, the patch element lookup
// in MAE's (p, q, c) order, and per-patch norm-pix statistics.
const WG: u32 = {{ workgroup }}u;
const C: u32 = {{ channels }}u;
const PATCH: u32 = {{ patch }}u;
const H: u32 = {{ height }}u;
const W: u32 = {{ width }}u;
const GW: u32 = W / PATCH;
const L: u32 = (H / PATCH) * GW;
const P: u32 = PATCH * PATCH * C;
const NORM_PIX: bool = {{ norm_pix }};
const EPS: f32 = 1e-6;

// Index in the image of element j of patch l of sample b.
fn pixel(b: u32, l: u32, j: u32) -> u32 {
    let c = j % C;
    let q = (j / C) % PATCH;
    let p = j / (C * PATCH);
    let y = (l / GW) * PATCH + p;
    let x = (l % GW) * PATCH + q;
    return ((b * C + c) * H + y) * W + x;
}

// (mean, 1/std) of patch l of sample b for norm-pix (unbiased variance, as torch's `var`),
// (0, 1) without it. One invocation reads the whole patch: no workgroup barrier, which costs
// more than the arithmetic on software rasterisers and small patches.
fn patch_stats(b: u32, l: u32) -> vec2<f32> {
    if (!NORM_PIX) { return vec2<f32>(0.0, 1.0); }
    var s = 0.0;
    for (var j = 0u; j < P; j++) { s += imgs[pixel(b, l, j)]; }
    let mean = s / f32(P);
    var s2 = 0.0;
    for (var j = 0u; j < P; j++) { let d = imgs[pixel(b, l, j)] - mean; s2 += d * d; }
    return vec2<f32>(mean, 1.0 / sqrt(s2 / f32(P - 1u) + EPS));
}
