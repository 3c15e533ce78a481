// Gradient of norm_pix_loss.wgsl w.r.t. the prediction: d/dpred of mean_j (pred - t̂)² is
// 2 (pred - t̂) / P, scaled by the incoming gradient of the patch. The patch statistics are
// recomputed from the image rather than stored by the forward pass.
@group(0) @binding(0) var<storage, read_write> pred: array<f32>;   // [B, L, P]
@group(0) @binding(1) var<storage, read_write> imgs: array<f32>;   // [B, C, H, W]
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;   // [B, L]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;    // [B, L, P]
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
    let scale = 2.0 * grad[row] / f32(P);
    for (var j = 0u; j < P; j++) {
        let i = row * P + j;
        out[i] = scale * (pred[i] - (imgs[pixel(b, l, j)] - stats.x) * stats.y);
    }
}
