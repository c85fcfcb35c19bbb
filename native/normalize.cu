// Row L2 normalisation (the projection heads' last step before a cosine similarity), forward and backward.
// One warp per row up to 1024 columns, one block per row beyond (CudaBackend.RowLaunch decides).
#include "common.cuh"
#include "rows.cuh"

// y[i, :] = x[i, :] / max(|x[i, :]|, eps) and norms[i] = |x[i, :]| for x, y [rows, cols]; y may alias x.
extern "C" __global__ void nc_normalize_l2_rows(const float* x, float* y, float* norms, int64_t rows, int64_t cols, float eps, int group_size) {
    __shared__ float scratch[NC_WARP];
    const nc_rows::Group g = nc_rows::locate(group_size);
    if (g.row >= rows) return;  // a whole warp or a whole block
    const float* in = x + g.row * cols;
    float* out = y + g.row * cols;
    const bool vec = nc_rows::vectorizable(x, cols) && nc::aligned16(y);
    float squares = 0.f;
    nc_rows::read(in, cols, vec, g, [&](float v) { squares = fmaf(v, v, squares); });
    // The group reduction also orders every read of the row before any write, which makes y == x safe.
    const float norm = sqrtf(nc_rows::group_sum(squares, g, scratch));
    const float inverse = 1.f / fmaxf(norm, eps);
    nc_rows::map(in, out, cols, vec, g, [inverse](float v) { return v * inverse; });
    if (g.lane == 0) norms[g.row] = norm;
}

// dx = (dy - y <y, dy>) / max(norm, eps) per row, the gradient of y = x / |x| given y and the forward's norms.
// dx may alias dy.
extern "C" __global__ void nc_normalize_l2_rows_backward(const float* y, const float* norms, const float* dy, float* dx,
                                                         int64_t rows, int64_t cols, float eps, int group_size) {
    __shared__ float scratch[NC_WARP];
    const nc_rows::Group g = nc_rows::locate(group_size);
    if (g.row >= rows) return;
    const int64_t base = g.row * cols;
    const bool vec = nc_rows::vectorizable(y, cols) && nc::aligned16(dy) && nc::aligned16(dx);
    float partial = 0.f;
    nc_rows::read2(y + base, dy + base, cols, vec, g, [&](float yv, float gv) { partial = fmaf(yv, gv, partial); });
    const float projection = nc_rows::group_sum(partial, g, scratch);
    const float inverse = 1.f / fmaxf(norms[g.row], eps);
    nc_rows::map2(y + base, dy + base, dx + base, cols, vec, g,
                  [projection, inverse](float yv, float gv) { return (gv - yv * projection) * inverse; });
}
