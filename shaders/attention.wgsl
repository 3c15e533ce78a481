// Softmax attention, forward, flash style: each invocation owns one query row and streams the
// keys and values through workgroup memory a tile at a time, keeping a running maximum and sum
// (online softmax), so the N × N scores never exist. Also writes logsumexp per row for the
// backward pass. q, k, v, out: [B·H, N, HD]; lse: [B·H, N].
@group(0) @binding(0) var<storage, read_write> q: array<vec4<{{ elem }}>>;
@group(0) @binding(1) var<storage, read_write> k: array<vec4<{{ elem }}>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<{{ elem }}>>;
@group(0) @binding(3) var<storage, read_write> out: array<vec4<{{ elem }}>>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;

// Constants and load_tile come from attention_common.wgsl, prepended.

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bh = wid.y;
    let row = wid.x * WG + lid;
    let valid = row < N;
    let base = bh * N * HD4;
    var qr: array<vec4<f32>, HD4>;
    var acc: array<vec4<f32>, HD4>;
    for (var d = 0u; d < HD4; d++) {
        qr[d] = select(ZERO, vec4<f32>(q[base + row * HD4 + d]) * SCALE, valid);
        acc[d] = ZERO;
    }
    var m = LOWEST;
    var l = 0.0;
    for (var t = 0u; t < TILES; t++) {
        load_tile(t, lid, base);
        workgroupBarrier();
        if (valid) {
            var s: array<f32, BC>;
            var m_new = m;
            for (var j = 0u; j < BC; j++) {
                var score = LOWEST;
                if (t * BC + j < N) {
                    score = 0.0;
                    for (var d = 0u; d < HD4; d++) { score += dot(qr[d], tile_a[j * HD4 + d]); }
                }
                s[j] = score;
                m_new = max(m_new, score);
            }
            let correction = exp(m - m_new);
            l *= correction;
            for (var d = 0u; d < HD4; d++) { acc[d] *= correction; }
            for (var j = 0u; j < BC; j++) {
                let p = select(0.0, exp(s[j] - m_new), t * BC + j < N);
                l += p;
                for (var d = 0u; d < HD4; d++) { acc[d] += p * tile_b[j * HD4 + d]; }
            }
            m = m_new;
        }
        workgroupBarrier();
    }
    if (valid) {
        for (var d = 0u; d < HD4; d++) { out[base + row * HD4 + d] = vec4<{{ elem }}>(acc[d] / l); }
        lse[bh * N + row] = m + log(l);
    }
}
