// Masked-autoencoder loss per patch, reading the target straight from the image: one invocation
// per patch computes the patch's mean and variance, normalises the target (norm-pix) and
// returns the mean squared error against the prediction. No patch tensor is materialised.
@group(0) @binding(0) var<storage, read_write> pred: array<f32>;   // [B, L, P], P = p·p·C
@group(0) @binding(1) var<storage, read_write> imgs: array<f32>;   // [B, C, H, W]
@group(0) @binding(2) var<storage, read_write> out: array<f32>;    // [B, L]
// Rows (B · L), baked in rather than uploaded with each launch.
const COUNT: u32 = {{ count }}u;

// Constants, pixel and patch_stats come from patch_common.wgsl, prepended.

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = (wid.y * groups.x + wid.x) * WG + lid;
    if (row >= COUNT) { return; }
    let b = row / L;
    let l = row % L;
    let stats = patch_stats(b, l);
    var e = 0.0;
    for (var j = 0u; j < P; j++) {
        let d = pred[row * P + j] - (imgs[pixel(b, l, j)] - stats.x) * stats.y;
        e += d * d;
    }
    out[row] = e / f32(P);
}
