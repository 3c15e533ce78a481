// Attention backward, gradient w.r.t. q (FlashAttention-2's split): one invocation per query
// row re-computes its probabilities p = exp(s - lse) tile by tile from q, k and the stored
// logsumexp, and accumulates dq = scale · Σ_j p_j (dO·v_j - delta) k_j. Nothing N × N is stored.
@group(0) @binding(0) var<storage, read_write> q: array<vec4<{{ elem }}>>;      // [B·H, N, HD]
@group(0) @binding(1) var<storage, read_write> k: array<vec4<{{ elem }}>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<{{ elem }}>>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;          // [B·H, N]
@group(0) @binding(4) var<storage, read_write> delta: array<f32>;        // rowsum(dO ∘ O)
@group(0) @binding(5) var<storage, read_write> grad: array<vec4<{{ elem }}>>;   // dO
@group(0) @binding(6) var<storage, read_write> dq: array<vec4<{{ elem }}>>;

// Constants and load_tile come from attention_common.wgsl, prepended.

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bh = wid.y;
    let row = wid.x * WG + lid;
    let valid = row < N;
    let base = bh * N * HD4;
    var qr: array<vec4<f32>, HD4>;
    var dor: array<vec4<f32>, HD4>;
    var acc: array<vec4<f32>, HD4>;
    for (var d = 0u; d < HD4; d++) {
        qr[d] = select(ZERO, vec4<f32>(q[base + row * HD4 + d]) * SCALE, valid);
        dor[d] = select(ZERO, vec4<f32>(grad[base + row * HD4 + d]), valid);
        acc[d] = ZERO;
    }
    let stat = select(0u, bh * N + row, valid);
    let lse_row = lse[stat];
    let delta_row = delta[stat];
    for (var t = 0u; t < TILES; t++) {
        load_tile(t, lid, base);
        workgroupBarrier();
        if (valid) {
            for (var j = 0u; j < BC; j++) {
                if (t * BC + j < N) {
                    var s = 0.0;
                    var dp = 0.0;
                    for (var d = 0u; d < HD4; d++) {
                        s += dot(qr[d], tile_a[j * HD4 + d]);
                        dp += dot(dor[d], tile_b[j * HD4 + d]);
                    }
                    let ds = exp(s - lse_row) * (dp - delta_row);
                    for (var d = 0u; d < HD4; d++) { acc[d] += ds * tile_a[j * HD4 + d]; }
                }
            }
        }
        workgroupBarrier();
    }
    if (valid) {
        for (var d = 0u; d < HD4; d++) { dq[base + row * HD4 + d] = vec4<{{ elem }}>(acc[d] * SCALE); }
    }
}
