{{ enable }}
// Shared by the attention kernels (prepended to each): sizes, and the cooperative load of one
// tile of BC rows of two [B·H, N, HD] tensors into workgroup memory (zeros past row N).
// Tensors are stored as ELEM (f32, or f16 in mixed precision, `enable f16;` above); everything
// is computed in f32 and the tiles hold f32.
// Rows are read as vec4 (HD is a multiple of 4), the width both GPUs and software rasterisers
// move and multiply at.
const WG: u32 = {{ workgroup }}u;
const N: u32 = {{ tokens }}u;
const HD4: u32 = {{ head_dim }}u / 4u;
const SCALE: f32 = {{ scale }};
// Rows per tile: as many as two tiles fit in WebGPU's 16 KiB of workgroup memory (≤ 64),
// since each tile costs two workgroup barriers.
const BC: u32 = {{ tile }}u;
const TILES: u32 = (N + BC - 1u) / BC;
const LOAD_ITERS: u32 = (BC * HD4 + WG - 1u) / WG;
const LOWEST: f32 = -3.0e38;
const ZERO: vec4<f32> = vec4<f32>(0.0);

var<workgroup> tile_a: array<vec4<f32>, BC * HD4>;
var<workgroup> tile_b: array<vec4<f32>, BC * HD4>;

fn load_tile(t: u32, lid: u32, base: u32) {
    for (var it = 0u; it < LOAD_ITERS; it++) {
        let e = it * WG + lid;
        if (e < BC * HD4) {
            let r = t * BC + e / HD4;
            var a = ZERO;
            var b = ZERO;
            if (r < N) {
                a = vec4<f32>({{ tile_a }}[base + r * HD4 + e % HD4]);
                b = vec4<f32>({{ tile_b }}[base + r * HD4 + e % HD4]);
            }
            tile_a[e] = a;
            tile_b[e] = b;
        }
    }
}
