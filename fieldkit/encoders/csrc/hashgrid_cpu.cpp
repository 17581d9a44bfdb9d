// Multiresolution hash encoding on the CPU, forward and backward: the compiled twin of
// fieldkit/encoders/hashgrid.py's ``_encode_torch`` / ``_HashGridFunction`` (the same lattice,
// clamps, dense levels with tcnn's wrap, and hashed levels).
//
// x [N, 3] float32 (clamped to [0, 1]); table [M, F] float32; scales, cell_max [L] float32;
// mult [3, L] int64 (dense strides or hash primes); offsets [L] int64 (level starts); wrap [L]
// int64 (dense indices modulo it) or empty; levels below ``num_dense`` are dense, the others
// hashed with ``mask``. Forward -> [N, L, F]. Backward: the table's gradient, the levels dealt
// out to ATen's threads (their rows are disjoint: no races, and each level's sum runs in point
// order, so the gradient is the same from run to run).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <vector>

namespace {

struct Lattice {
  const float* scales;
  const float* cell_max;
  const int64_t* mult;   // [3, L]
  const int64_t* offsets;
  const int64_t* wrap;   // nullptr: none
  int64_t L, num_dense, mask;
  float shift;
};

Lattice make_lattice(const torch::Tensor& scales, const torch::Tensor& cell_max,
                     const torch::Tensor& mult, const torch::Tensor& offsets,
                     const torch::Tensor& wrap, int64_t num_dense, int64_t mask, double shift) {
  Lattice lat;
  lat.scales = scales.data_ptr<float>();
  lat.cell_max = cell_max.data_ptr<float>();
  lat.mult = mult.data_ptr<int64_t>();
  lat.offsets = offsets.data_ptr<int64_t>();
  lat.wrap = wrap.numel() ? wrap.data_ptr<int64_t>() : nullptr;
  lat.L = scales.size(0);
  lat.num_dense = num_dense;
  lat.mask = mask;
  lat.shift = (float)shift;
  return lat;
}

// The 8 corners of point ``p``'s cell on level ``l``: table rows idx[8] and weights w[8]
// (corner c takes the upper vertex along axis d when bit d of c is set), in float32 as the
// torch code: pos = x * scale + shift, cell = min(floor(pos), cell_max), w_hi = pos - cell.
inline void corners(const Lattice& lat, int64_t l, const float* p, int64_t idx[8], float w[8]) {
  int64_t h_lo[3], h_hi[3];
  float w_hi[3], w_lo[3];
  for (int d = 0; d < 3; ++d) {
    // clamped to [0, 1]; NaN to 0 (a NaN cast to an index would read outside the table)
    const float v = p[d] >= 0.0f ? std::min(p[d], 1.0f) : 0.0f;
    float pos = v * lat.scales[l];
    if (lat.shift != 0.0f) pos = pos + lat.shift;
    const float cell = std::min(std::floor(pos), lat.cell_max[l]);
    w_hi[d] = pos - cell;
    w_lo[d] = 1.0f - w_hi[d];
    const int64_t m = lat.mult[d * lat.L + l];
    h_lo[d] = (int64_t)cell * m;
    h_hi[d] = h_lo[d] + m;
  }
  const bool dense = l < lat.num_dense;
  const int64_t off = lat.offsets[l];
  for (int c = 0; c < 8; ++c) {
    const int64_t a = (c & 1) ? h_hi[0] : h_lo[0];
    const int64_t b = (c & 2) ? h_hi[1] : h_lo[1];
    const int64_t e = (c & 4) ? h_hi[2] : h_lo[2];
    int64_t flat;
    if (dense) {
      flat = a + b + e;
      if (lat.wrap) flat = flat % lat.wrap[l];
    } else {
      flat = (a ^ b ^ e) & lat.mask;
    }
    idx[c] = flat + off;
    w[c] = ((c & 1) ? w_hi[0] : w_lo[0]) * ((c & 2) ? w_hi[1] : w_lo[1]) *
           ((c & 4) ? w_hi[2] : w_lo[2]);
  }
}

constexpr int64_t kGrain = 2048;

}  // namespace

torch::Tensor hashgrid_forward(torch::Tensor x, torch::Tensor table, torch::Tensor scales,
                               torch::Tensor cell_max, torch::Tensor mult, torch::Tensor offsets,
                               torch::Tensor wrap, int64_t num_dense, int64_t mask,
                               double shift) {
  const Lattice lat = make_lattice(scales, cell_max, mult, offsets, wrap, num_dense, mask, shift);
  const int64_t N = x.size(0), F = table.size(1), L = lat.L;
  auto out = torch::empty({N, L, F}, table.options());
  const float* px = x.data_ptr<float>();
  const float* pt = table.data_ptr<float>();
  float* po = out.data_ptr<float>();
  // blocks of points, level by level within a block: one level's table at a time in cache
  // (16 levels' tables by turns for each point ran 2-3x slower)
  at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
    int64_t idx[8];
    float w[8];
    for (int64_t l = 0; l < L; ++l) {
      for (int64_t n = begin; n < end; ++n) {
        corners(lat, l, px + 3 * n, idx, w);
        float* o = po + (n * L + l) * F;
        for (int64_t f = 0; f < F; ++f) o[f] = 0.0f;
        for (int c = 0; c < 8; ++c) {
          const float* row = pt + idx[c] * F;
          for (int64_t f = 0; f < F; ++f) o[f] += w[c] * row[f];
        }
      }
    }
  });
  return out;
}

// grad_out [N, L, F] -> the gradient of the table [M, F].
torch::Tensor hashgrid_backward(torch::Tensor grad_out, torch::Tensor x, int64_t rows,
                                torch::Tensor scales, torch::Tensor cell_max,
                                torch::Tensor mult, torch::Tensor offsets, torch::Tensor wrap,
                                int64_t num_dense, int64_t mask, double shift) {
  const Lattice lat = make_lattice(scales, cell_max, mult, offsets, wrap, num_dense, mask, shift);
  const int64_t N = x.size(0), L = lat.L, F = grad_out.size(2);
  auto grad = torch::zeros({rows, F}, grad_out.options());
  const float* px = x.data_ptr<float>();
  const float* pg = grad_out.data_ptr<float>();
  float* pt = grad.data_ptr<float>();
  // levels in an interleave (0, k, 2k, ... to task 0): the costly hashed levels spread evenly
  const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), L));
  at::parallel_for(0, tasks, 1, [&](int64_t tb, int64_t te) {
    int64_t idx[8];
    float w[8];
    for (int64_t task = tb; task < te; ++task) {
      for (int64_t l = task; l < L; l += tasks) {
        for (int64_t n = 0; n < N; ++n) {
          const float* g = pg + (n * L + l) * F;
          corners(lat, l, px + 3 * n, idx, w);
          for (int c = 0; c < 8; ++c) {
            float* row = pt + idx[c] * F;
            for (int64_t f = 0; f < F; ++f) row[f] += w[c] * g[f];
          }
        }
      }
    }
  });
  return grad;
}

int64_t hashgrid_threads_used() {
  const int64_t n = at::get_num_threads();
  std::vector<char> seen(n, 0);
  at::parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
    const int64_t k = at::get_thread_num();
    if (k >= 0 && k < n) seen[k] = 1;
    volatile double spin = 0.0;
    for (int i = 0; i < 200000; ++i) spin = spin + 1.0;
  });
  int64_t used = 0;
  for (char c : seen) used += c;
  return used;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &hashgrid_forward, "hash encoding forward (CPU)");
  m.def("backward", &hashgrid_backward, "hash encoding backward, table gradient (CPU)");
  m.def("threads_used", &hashgrid_threads_used, "threads the loops run on");
}
