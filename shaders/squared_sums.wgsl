// Sums of squares of up to seven tensors in one dispatch, for the global gradient norm: a step
// needs one norm over every gradient, and a tensor at a time that is three launches per
// parameter (square, sum, accumulate). Workgroup (x, t) sums a strided share of tensor t and
// writes one partial, partials[t · G + x]; the caller sums the partials. Seven inputs and the
// output are the eight storage buffers core WebGPU allows a shader stage.
@group(0) @binding(0) var<storage, read_write> t0: array<f32>;
@group(0) @binding(1) var<storage, read_write> t1: array<f32>;
@group(0) @binding(2) var<storage, read_write> t2: array<f32>;
@group(0) @binding(3) var<storage, read_write> t3: array<f32>;
@group(0) @binding(4) var<storage, read_write> t4: array<f32>;
@group(0) @binding(5) var<storage, read_write> t5: array<f32>;
@group(0) @binding(6) var<storage, read_write> t6: array<f32>;
@group(0) @binding(7) var<storage, read_write> partials: array<f32>; // [tensors, G]

const WG: u32 = {{ workgroup }}u;
// Workgroups per tensor.
const G: u32 = {{ groups }}u;
// Elements of each input; slots past the real inputs are 0 and never dispatched.
var<private> LENS: array<u32, 7> = array<u32, 7>({{ lens }});

var<workgroup> part: array<f32, WG>;

fn load(t: u32, i: u32) -> f32 {
    switch t {
        case 0u: { return t0[i]; }
        case 1u: { return t1[i]; }
        case 2u: { return t2[i]; }
        case 3u: { return t3[i]; }
        case 4u: { return t4[i]; }
        case 5u: { return t5[i]; }
        default: { return t6[i]; }
    }
}

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wid.y;
    let n = LENS[t];
    var s = 0.0;
    for (var i = wid.x * WG + lid; i < n; i += G * WG) {
        let x = load(t, i);
        s += x * x;
    }
    part[lid] = s;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (lid < k) { part[lid] += part[lid + k]; }
        workgroupBarrier();
    }
    if (lid == 0u) { partials[t * G + wid.x] = part[0]; }
}
