// Front-to-back blending of binned Gaussians on the CPU, forward and backward: the compiled
// twin of fieldkit/render/splat.py's ``composite`` (the same pairs, thresholds and stop).
//
// Work is per tile, the tiles dealt out to ATen's threads in a fixed interleave. Within a
// tile the Gaussians are walked in list order (front to back; back to front in the
// backward), each over the chords of its ellipse (``row_span``) in its pixel box cut to the
// tile, with the tile's per-pixel state (transmittance, sums) in local arrays: the pairs
// visited are the torch path's, and a pixel stops at 3DGS's transmittance floor.
//
// per_gaussian [N, 7 + D] float32: mean x, mean y, conic a, b, c, opacity, depth, colour.
// gaussian [M] int64: the tile lists (sorted by tile, then front to back); offsets [T + 1].
// box [N, 4] int64: (x0, y0, x1, y1), end-exclusive pixel box of each Gaussian.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr float kAlphaMin = 1.0f / 255.0f;
constexpr float kAlphaMax = 0.999f;
constexpr double kTMin = 1e-4;

// alpha of Gaussian ``p`` at pixel centre (fx, fy), or -1 where it is not blended
inline float pair_alpha(const float* p, float fx, float fy, float& dx, float& dy) {
  dx = fx - p[0];
  dy = fy - p[1];
  const float sigma = 0.5f * (p[2] * dx * dx + p[4] * dy * dy) + p[3] * dx * dy;
  if (sigma < 0.0f) return -1.0f;
  const float alpha = std::min(p[5] * std::exp(-sigma), kAlphaMax);
  return alpha < kAlphaMin ? -1.0f : alpha;
}

// The pixels [xs, xe) of row ``y`` (within [gx0, gx1)) where Gaussian ``p`` can reach alpha
// 1/255: the chord of its ellipse sigma <= level = log(255 opacity), in closed form, widened
// by a hair (the alpha test drops the few outside), as ``splat.chord_pairs``. About half of a
// pixel box lies outside the ellipse (fox, lego: 2.0-2.1x), so this halves the pairs visited.
inline void row_span(const float* p, float level, int64_t y, int64_t gx0, int64_t gx1,
                     int64_t& xs, int64_t& xe) {
  const float dy = (float)y + 0.5f - p[1];
  const float a = p[2], b = p[3], c = p[4];
  const float disc = (b * b - a * c) * dy * dy + 2.0f * a * level;
  if (!(disc >= 0.0f)) {
    xs = xe = gx0;
    return;
  }
  const float root = std::sqrt(disc);
  const float lo_t = (-b * dy - root) / a, hi_t = (-b * dy + root) / a;
  xs = std::max((int64_t)std::ceil(p[0] + lo_t - 0.5f - 1e-3f), gx0);
  xe = std::min((int64_t)std::floor(p[0] + hi_t - 0.5f + 1e-3f) + 1, gx1);
}

inline float alpha_level(const float* p) { return std::max(std::log(p[5] * 255.0f), 0.0f); }

// Calls body(tile, task) for every tile: task k of n takes tiles k, k + n, k + 2n, ... (an
// interleave spreads the costly middle of a view over the tasks), so that what each task
// accumulates, and the backward's sum over tasks, is the same from run to run.
template <typename F>
void for_tiles(int64_t n_tiles, int64_t n_tasks, F body) {
  at::parallel_for(0, n_tasks, 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k)
      for (int64_t t = k; t < n_tiles; t += n_tasks) body(t, k);
  });
}

int64_t tasks_for(int64_t n_tiles) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n_tiles));
}

}  // namespace

// -> sums [H * W, D + 2] (weighted colour, weight, weighted depth), last [H * W] int32 (its
// tile list's position after the last pair that contributed), t_final [H * W] float64.
std::vector<torch::Tensor> blend_forward(torch::Tensor per_gaussian, torch::Tensor gaussian,
                                         torch::Tensor offsets, torch::Tensor box,
                                         int64_t tiles_x, int64_t ts, int64_t width,
                                         int64_t height) {
  const int64_t C = per_gaussian.size(1), D = C - 7, S = D + 2, n_tiles = offsets.size(0) - 1;
  auto sums = torch::zeros({height * width, S}, per_gaussian.options());
  auto last = torch::zeros({height * width}, per_gaussian.options().dtype(torch::kInt32));
  auto t_final = torch::ones({height * width}, per_gaussian.options().dtype(torch::kFloat64));
  const float* pg = per_gaussian.data_ptr<float>();
  const int64_t* ids = gaussian.data_ptr<int64_t>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int64_t* bx = box.data_ptr<int64_t>();
  float* out = sums.data_ptr<float>();
  int32_t* lst = last.data_ptr<int32_t>();
  double* tf = t_final.data_ptr<double>();
  for_tiles(n_tiles, tasks_for(n_tiles), [&](int64_t t, int64_t) {
    const int64_t lo = off[t], hi = off[t + 1];
    if (hi <= lo) return;
    const int64_t x0 = (t % tiles_x) * ts, y0 = (t / tiles_x) * ts;
    const int64_t x1 = std::min(x0 + ts, width), y1 = std::min(y0 + ts, height);
    const int64_t tw = x1 - x0;
    std::vector<double> T((y1 - y0) * tw, 1.0), acc((y1 - y0) * tw * S, 0.0);
    std::vector<int32_t> end((y1 - y0) * tw, 0);
    std::vector<char> done((y1 - y0) * tw, 0);
    int64_t alive = (y1 - y0) * tw;
    for (int64_t j = lo; j < hi && alive > 0; ++j) {
      const int64_t g = ids[j];
      const int64_t* b = bx + 4 * g;
      const float* p = pg + C * g;
      const int64_t gx0 = std::max(b[0], x0), gx1 = std::min(b[2], x1);
      const int64_t gy0 = std::max(b[1], y0), gy1 = std::min(b[3], y1);
      const float level = alpha_level(p);
      for (int64_t y = gy0; y < gy1; ++y) {
        int64_t xs, xe;
        row_span(p, level, y, gx0, gx1, xs, xe);
        for (int64_t x = xs; x < xe; ++x) {
          const int64_t l = (y - y0) * tw + (x - x0);
          if (done[l]) continue;
          float dx, dy;
          const float alpha = pair_alpha(p, x + 0.5f, y + 0.5f, dx, dy);
          if (alpha < 0.0f) continue;
          const double t_next = T[l] * (1.0 - (double)alpha);
          if (t_next <= kTMin) {   // 3DGS's stop: this pair and the rest add nothing
            done[l] = 1;
            --alive;
            continue;
          }
          const float w = alpha * (float)T[l];
          double* a = acc.data() + l * S;
          for (int64_t k = 0; k < D; ++k) a[k] += w * p[7 + k];
          a[D] += w;
          a[D + 1] += w * p[6];
          T[l] = t_next;
          end[l] = (int32_t)(j + 1 - lo);
        }
      }
    }
    for (int64_t y = y0; y < y1; ++y) {
      for (int64_t x = x0; x < x1; ++x) {
        const int64_t l = (y - y0) * tw + (x - x0), pix = y * width + x;
        for (int64_t k = 0; k < S; ++k) out[pix * S + k] = (float)acc[l * S + k];
        lst[pix] = end[l];
        tf[pix] = T[l];
      }
    }
  });
  return {sums, last, t_final};
}

// -> the gradient [N, 7 + D] of per_gaussian, given grad_sums [H * W, D + 2].
torch::Tensor blend_backward(torch::Tensor grad_sums, torch::Tensor per_gaussian,
                             torch::Tensor gaussian, torch::Tensor offsets, torch::Tensor box,
                             torch::Tensor last, torch::Tensor t_final, int64_t tiles_x,
                             int64_t ts, int64_t width, int64_t height) {
  const int64_t N = per_gaussian.size(0), C = per_gaussian.size(1), D = C - 7, S = D + 2;
  const int64_t n_tiles = offsets.size(0) - 1;
  const int64_t n_tasks = tasks_for(n_tiles);
  auto grads = torch::zeros({n_tasks, N, C}, per_gaussian.options());
  const float* pg = per_gaussian.data_ptr<float>();
  const float* go = grad_sums.data_ptr<float>();
  const int64_t* ids = gaussian.data_ptr<int64_t>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int64_t* bx = box.data_ptr<int64_t>();
  const int32_t* lst = last.data_ptr<int32_t>();
  const double* tf = t_final.data_ptr<double>();
  float* gr = grads.data_ptr<float>();
  for_tiles(n_tiles, n_tasks, [&](int64_t t, int64_t task) {
    const int64_t lo = off[t], hi = off[t + 1];
    if (hi <= lo) return;
    float* mine = gr + task * N * C;
    const int64_t x0 = (t % tiles_x) * ts, y0 = (t / tiles_x) * ts;
    const int64_t x1 = std::min(x0 + ts, width), y1 = std::min(y0 + ts, height);
    const int64_t tw = x1 - x0;
    std::vector<double> T((y1 - y0) * tw), behind((y1 - y0) * tw, 0.0);
    std::vector<int32_t> end((y1 - y0) * tw);
    int32_t deepest = 0;
    for (int64_t y = y0; y < y1; ++y) {
      for (int64_t x = x0; x < x1; ++x) {
        const int64_t l = (y - y0) * tw + (x - x0);
        T[l] = tf[y * width + x];
        end[l] = lst[y * width + x];
        deepest = std::max(deepest, end[l]);
      }
    }
    for (int64_t j = lo + deepest - 1; j >= lo; --j) {
      const int64_t g = ids[j];
      const int64_t* b = bx + 4 * g;
      const float* p = pg + C * g;
      float* q = mine + C * g;
      const int64_t gx0 = std::max(b[0], x0), gx1 = std::min(b[2], x1);
      const int64_t gy0 = std::max(b[1], y0), gy1 = std::min(b[3], y1);
      const float level = alpha_level(p);
      for (int64_t y = gy0; y < gy1; ++y) {
        int64_t xs, xe;
        row_span(p, level, y, gx0, gx1, xs, xe);
        for (int64_t x = xs; x < xe; ++x) {
          const int64_t l = (y - y0) * tw + (x - x0);
          if (j - lo >= end[l]) continue;   // at or after the pixel's stop
          float dx, dy;
          const float alpha = pair_alpha(p, x + 0.5f, y + 0.5f, dx, dy);
          if (alpha < 0.0f) continue;
          const double t_before = T[l] / (1.0 - (double)alpha);
          T[l] = t_before;
          const float* g_out = go + (y * width + x) * S;
          const float w = alpha * (float)t_before;
          double v = g_out[D] + (double)g_out[D + 1] * p[6];
          for (int64_t k = 0; k < D; ++k) {
            v += (double)g_out[k] * p[7 + k];
            q[7 + k] += w * g_out[k];
          }
          q[6] += w * g_out[D + 1];
          const double d_alpha = t_before * v - behind[l] / (1.0 - (double)alpha);
          behind[l] += w * v;
          if (alpha >= kAlphaMax) continue;   // clamped: nothing flows to what made it
          const float da = (float)d_alpha;
          q[5] += da * (alpha / p[5]);        // d alpha / d opacity = exp(-sigma)
          const float ds = -da * alpha;       // dL / d sigma
          q[0] -= ds * (p[2] * dx + p[3] * dy);
          q[1] -= ds * (p[4] * dy + p[3] * dx);
          q[2] += ds * 0.5f * dx * dx;
          q[3] += ds * dx * dy;
          q[4] += ds * 0.5f * dy * dy;
        }
      }
    }
  });
  return grads.sum(0);
}

// How many of ATen's threads ``for_tiles`` runs on (tests: an extension built without OpenMP
// runs ATen's parallel_for on one thread).
int64_t threads_used() {
  const int64_t n = at::get_num_threads();
  std::vector<char> seen(n, 0);
  for_tiles(64 * n, n, [&](int64_t, int64_t) {
    const int64_t k = at::get_thread_num();
    if (k >= 0 && k < n) seen[k] = 1;
    volatile double spin = 0.0;   // long enough that one thread cannot take every task
    for (int i = 0; i < 20000; ++i) spin = spin + 1.0;
  });
  int64_t used = 0;
  for (char c : seen) used += c;
  return used;
}
