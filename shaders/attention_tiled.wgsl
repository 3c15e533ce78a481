{{ enable }}
// Softmax attention, forward, shaped for a GPU (attention.wgsl is the one-row-per-invocation
// form a software rasteriser prefers). A workgroup owns BR query rows and T = WG / BR
// invocations share each row: the query tile lives in workgroup memory instead of every
// invocation's registers; each tile of BC keys and values is loaded once for all BR rows; the
// BR × BC scores are computed T to a row; and each invocation accumulates only its own HD / T
// output columns, so registers per invocation stay small whatever the head dim. Online softmax
// as before (running maximum and sum per row, logsumexp written for the backward pass); the
// N × N scores never exist. q, k, v, out: [B·H, N, HD] as vec4 rows; lse: [B·H, N].
// Core WebGPU only: no subgroups, 16 KiB of workgroup memory at most.
@group(0) @binding(0) var<storage, read_write> q: array<vec4<{{ elem }}>>;
@group(0) @binding(1) var<storage, read_write> k: array<vec4<{{ elem }}>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<{{ elem }}>>;
@group(0) @binding(3) var<storage, read_write> out: array<vec4<{{ elem }}>>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;

const WG: u32 = {{ workgroup }}u;
const N: u32 = {{ tokens }}u;
const HD4: u32 = {{ head_dim }}u / 4u;
const SCALE: f32 = {{ scale }};
// Query rows per workgroup, invocations per row, and the vec4 output columns each one owns.
const BR: u32 = {{ rows }}u;
const T: u32 = WG / BR;
const DT: u32 = HD4 / T;
// Keys per tile: as many as fit beside the query tile and the scores in 16 KiB.
const BC: u32 = {{ tile }}u;
const TILES: u32 = (N + BC - 1u) / BC;
const LOWEST: f32 = -3.0e38;
const ZERO: vec4<f32> = vec4<f32>(0.0);

var<workgroup> q_tile: array<vec4<f32>, BR * HD4>;
var<workgroup> k_tile: array<vec4<f32>, BC * HD4>;
var<workgroup> v_tile: array<vec4<f32>, BC * HD4>;
var<workgroup> scores: array<f32, BR * BC>;

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bh = wid.y;
    let base = bh * N * HD4;
    let first = wid.x * BR;
    let r = lid / T;
    let c = lid % T;
    let row = first + r;
    // Rows past N compute on zeros (finite, never written) so every invocation reaches every
    // barrier.
    for (var e = lid; e < BR * HD4; e += WG) {
        let qr = first + e / HD4;
        var x = ZERO;
        if (qr < N) { x = vec4<f32>(q[base + qr * HD4 + e % HD4]) * SCALE; }
        q_tile[e] = x;
    }
    var acc: array<vec4<f32>, DT>;
    for (var d = 0u; d < DT; d++) { acc[d] = ZERO; }
    var m = LOWEST;
    var l = 0.0;
    for (var t = 0u; t < TILES; t++) {
        for (var e = lid; e < BC * HD4; e += WG) {
            let kr = t * BC + e / HD4;
            var a = ZERO;
            var b = ZERO;
            if (kr < N) {
                a = vec4<f32>(k[base + kr * HD4 + e % HD4]);
                b = vec4<f32>(v[base + kr * HD4 + e % HD4]);
            }
            k_tile[e] = a;
            v_tile[e] = b;
        }
        workgroupBarrier();
        // Invocation c of a row scores keys c, c + T, c + 2T, ... of the tile.
        for (var j = c; j < BC; j += T) {
            var s = LOWEST;
            if (t * BC + j < N) {
                s = 0.0;
                for (var d = 0u; d < HD4; d++) { s += dot(q_tile[r * HD4 + d], k_tile[j * HD4 + d]); }
            }
            scores[r * BC + j] = s;
        }
        workgroupBarrier();
        // Every invocation of a row reads the row's scores: the same maximum and weights, no
        // further barrier.
        var m_new = m;
        for (var j = 0u; j < BC; j++) { m_new = max(m_new, scores[r * BC + j]); }
        let correction = exp(m - m_new);
        l *= correction;
        for (var d = 0u; d < DT; d++) { acc[d] *= correction; }
        for (var j = 0u; j < BC; j++) {
            let p = select(0.0, exp(scores[r * BC + j] - m_new), t * BC + j < N);
            l += p;
            for (var d = 0u; d < DT; d++) { acc[d] += p * v_tile[j * HD4 + c * DT + d]; }
        }
        m = m_new;
        workgroupBarrier();
    }
    if (row < N) {
        for (var d = 0u; d < DT; d++) {
            out[base + row * HD4 + c * DT + d] = vec4<{{ elem }}>(acc[d] / l);
        }
        if (c == 0u) { lse[bh * N + row] = m + log(l); }
    }
}
