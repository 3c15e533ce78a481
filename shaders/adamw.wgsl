// One AdamW update (decoupled weight decay, bias-corrected moments) in one pass, in place:
// reads param, grad and both moments once and writes param and moments back where they were. Each invocation updates one
// LINE: four elements (vec4) when the tensor's length allows, which is what lets a software
// rasteriser, and the memory system of a real GPU, move data at full width.
alias LINE = {{ line }};
@group(0) @binding(0) var<storage, read_write> param: array<LINE>;
@group(0) @binding(1) var<storage, read_write> grad: array<LINE>;
@group(0) @binding(2) var<storage, read_write> moment_1: array<LINE>;
@group(0) @binding(3) var<storage, read_write> moment_2: array<LINE>;
// lines, fresh, then f32 bits: lr, beta_1, beta_2, eps, weight decay, 1 - beta_1^t, 1 - beta_2^t.
@group(0) @binding(4) var<storage, read_write> hyper: array<u32>;

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * groups.x + wid.x) * {{ workgroup }}u + lid;
    if (i >= hyper[0]) { return; }
    let lr = bitcast<f32>(hyper[2]);
    let beta_1 = bitcast<f32>(hyper[3]);
    let beta_2 = bitcast<f32>(hyper[4]);
    let g = grad[i];
    var m = (1.0 - beta_1) * g;
    var v = (1.0 - beta_2) * g * g;
    if (hyper[1] == 0u) {
        m += beta_1 * moment_1[i];
        v += beta_2 * moment_2[i];
    }
    let eps = LINE(bitcast<f32>(hyper[5]));
    let step = (m / bitcast<f32>(hyper[7])) / (sqrt(v / bitcast<f32>(hyper[8])) + eps);
    param[i] = param[i] * (1.0 - lr * bitcast<f32>(hyper[6])) - lr * step;
    moment_1[i] = m;
    moment_2[i] = v;
}
