// Patchify and gather in one pass: output row r is the patch at flat index rows[r] = b·L + l,
// read straight from the image in MAE's (p, q, c) order. The patches that are not kept are
// never touched, and no [B, L, P] tensor exists.
@group(0) @binding(0) var<storage, read_write> imgs: array<f32>;      // [B, C, H, W]
@group(0) @binding(1) var<storage, read_write> rows: array<{{ int }}>; // [R]
@group(0) @binding(2) var<storage, read_write> out: array<f32>;       // [R, P]
// Invocations with work (R · P), baked in rather than uploaded with each launch.
const COUNT: u32 = {{ count }}u;

// Constants and pixel come from patch_common.wgsl, prepended.

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * groups.x + wid.x) * WG + lid;
    if (i >= COUNT) { return; }
    let row = u32(rows[i / P]);
    // wgpu's bounds checks are off for these kernels: an index past the batch reads zero here
    // instead of another tensor's memory.
    let at = pixel(row / L, row % L, i % P);
    out[i] = select(0.0, imgs[min(at, arrayLength(&imgs) - 1u)], at < arrayLength(&imgs));
}
