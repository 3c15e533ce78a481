// Attention backward, gradients w.r.t. k and v: one invocation per key row streams the queries
// and output gradients through workgroup memory, re-computing p = exp(s - lse) for its column:
// dv = Σ_i p_i dO_i and dk = scale · Σ_i p_i (dO_i·v - delta_i) q_i. No atomics, no N × N.
@group(0) @binding(0) var<storage, read_write> q: array<vec4<{{ elem }}>>;      // [B·H, N, HD]
@group(0) @binding(1) var<storage, read_write> k: array<vec4<{{ elem }}>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<{{ elem }}>>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;          // [B·H, N]
@group(0) @binding(4) var<storage, read_write> delta: array<f32>;        // rowsum(dO ∘ O)
@group(0) @binding(5) var<storage, read_write> grad: array<vec4<{{ elem }}>>;   // dO
@group(0) @binding(6) var<storage, read_write> dk: array<vec4<{{ elem }}>>;
@group(0) @binding(7) var<storage, read_write> dv: array<vec4<{{ elem }}>>;

// Constants and load_tile come from attention_common.wgsl, prepended.

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bh = wid.y;
    let row = wid.x * WG + lid;
    let valid = row < N;
    let base = bh * N * HD4;
    var kr: array<vec4<f32>, HD4>;
    var vr: array<vec4<f32>, HD4>;
    var dk_acc: array<vec4<f32>, HD4>;
    var dv_acc: array<vec4<f32>, HD4>;
    for (var d = 0u; d < HD4; d++) {
        kr[d] = select(ZERO, vec4<f32>(k[base + row * HD4 + d]) * SCALE, valid);
        vr[d] = select(ZERO, vec4<f32>(v[base + row * HD4 + d]), valid);
        dk_acc[d] = ZERO;
        dv_acc[d] = ZERO;
    }
    for (var t = 0u; t < TILES; t++) {
        load_tile(t, lid, base);
        workgroupBarrier();
        if (valid) {
            for (var i = 0u; i < BC; i++) {
                let r = t * BC + i;
                if (r < N) {
                    var s = 0.0;
                    var dp = 0.0;
                    for (var d = 0u; d < HD4; d++) {
                        s += dot(tile_a[i * HD4 + d], kr[d]);
                        dp += dot(tile_b[i * HD4 + d], vr[d]);
                    }
                    let p = exp(s - lse[bh * N + r]);
                    let ds = p * (dp - delta[bh * N + r]);
                    for (var d = 0u; d < HD4; d++) {
                        dv_acc[d] += p * tile_b[i * HD4 + d];
                        dk_acc[d] += ds * tile_a[i * HD4 + d];
                    }
                }
            }
        }
        workgroupBarrier();
    }
    if (valid) {
        for (var d = 0u; d < HD4; d++) {
            dk[base + row * HD4 + d] = vec4<{{ elem }}>(dk_acc[d] * SCALE);
            dv[base + row * HD4 + d] = vec4<{{ elem }}>(dv_acc[d]);
        }
    }
}
