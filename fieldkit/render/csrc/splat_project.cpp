// EWA projection of 3D Gaussians through one pinhole camera on the CPU, forward and backward:
// the compiled twin of fieldkit/render/splat.py's ``project`` (the same clamps, low-pass,
// antialiasing compensation, culling and bounding boxes), one Gaussian at a time, the
// Gaussians dealt out to ATen's threads. The backward is autograd's of the torch code, written
// out: gradients where torch's ``where`` and ``clamp`` pass them, none through the boxes.
//
// means [N, 3], quats [N, 4] (w, x, y, z, any norm), scales [N, 3] (standard deviations),
// opacities [N]; viewmat [4, 4] world-to-camera (OpenCV axes); K [3, 3].
// Forward -> out [N, 7] float32 (mean x, mean y, conic a, b, c, opacity, depth) and radii
// [N, 2] int64 (0: culled). Computed in float64 inside, stored as float32.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr double kAlphaMinProj = 1.0 / 255.0;
constexpr int64_t kGrain = 1024;

struct Camera {
  double R[3][3], t[3], fx, fy, cx, cy;
  double lo_x, hi_x, lo_y, hi_y;   // the clamp of x / z and y / z for the Jacobian
  int64_t width, height;
  double near_plane, far_plane, eps2d;
  bool antialiased;
};

Camera make_camera(const torch::Tensor& viewmat, const torch::Tensor& K, int64_t width,
                   int64_t height, double near_plane, double far_plane, double eps2d,
                   bool antialiased) {
  auto v = viewmat.to(torch::kFloat64).contiguous();
  auto k = K.to(torch::kFloat64).contiguous();
  const double* pv = v.data_ptr<double>();
  const double* pk = k.data_ptr<double>();
  Camera c;
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) c.R[i][j] = pv[4 * i + j];
    c.t[i] = pv[4 * i + 3];
  }
  c.fx = pk[0];
  c.fy = pk[4];
  c.cx = pk[2];
  c.cy = pk[5];
  const double tan_x = 0.5 * width / c.fx, tan_y = 0.5 * height / c.fy;
  c.lo_x = -(c.cx / c.fx + 0.3 * tan_x);
  c.hi_x = (width - c.cx) / c.fx + 0.3 * tan_x;
  c.lo_y = -(c.cy / c.fy + 0.3 * tan_y);
  c.hi_y = (height - c.cy) / c.fy + 0.3 * tan_y;
  c.width = width;
  c.height = height;
  c.near_plane = near_plane;
  c.far_plane = far_plane;
  c.eps2d = eps2d;
  c.antialiased = antialiased;
  return c;
}

// Rotation of the normalised quaternion q (w, x, y, z) into R, and q's norm.
double quat_rotation(const float* q, double R[3][3], double qn[4]) {
  const double n = std::sqrt((double)q[0] * q[0] + (double)q[1] * q[1] + (double)q[2] * q[2] +
                             (double)q[3] * q[3]);
  for (int i = 0; i < 4; ++i) qn[i] = q[i] / n;
  const double w = qn[0], x = qn[1], y = qn[2], z = qn[3];
  R[0][0] = 1 - 2 * (y * y + z * z); R[0][1] = 2 * (x * y - w * z); R[0][2] = 2 * (x * z + w * y);
  R[1][0] = 2 * (x * y + w * z); R[1][1] = 1 - 2 * (x * x + z * z); R[1][2] = 2 * (y * z - w * x);
  R[2][0] = 2 * (x * z - w * y); R[2][1] = 2 * (y * z + w * x); R[2][2] = 1 - 2 * (x * x + y * y);
  return n;
}

// Everything one Gaussian's forward makes that its backward needs again.
struct Projected {
  double p[3], zs, u[2], tclamp[2], J[2][3], JW[2][3], Rq[3][3], qn[4], qnorm, M[3][3],
      sigma[3][3], a0, b, c0, det, det_safe, ratio, comp;
  bool z_ok, in_x, in_y, det_ok;
};

void forward_one(const Camera& cam, const float* m, const float* q, const float* s,
                 Projected& g) {
  for (int i = 0; i < 3; ++i)
    g.p[i] = cam.R[i][0] * m[0] + cam.R[i][1] * m[1] + cam.R[i][2] * m[2] + cam.t[i];
  const double x = g.p[0], y = g.p[1], z = g.p[2];
  g.z_ok = z > cam.near_plane;
  g.zs = g.z_ok ? z : 1.0;
  g.u[0] = x / g.zs;
  g.u[1] = y / g.zs;
  g.in_x = g.u[0] >= cam.lo_x && g.u[0] <= cam.hi_x;
  g.in_y = g.u[1] >= cam.lo_y && g.u[1] <= cam.hi_y;
  g.tclamp[0] = std::min(std::max(g.u[0], cam.lo_x), cam.hi_x);
  g.tclamp[1] = std::min(std::max(g.u[1], cam.lo_y), cam.hi_y);
  const double tx = g.zs * g.tclamp[0], ty = g.zs * g.tclamp[1], zs2 = g.zs * g.zs;
  g.J[0][0] = cam.fx / g.zs; g.J[0][1] = 0.0; g.J[0][2] = -cam.fx * tx / zs2;
  g.J[1][0] = 0.0; g.J[1][1] = cam.fy / g.zs; g.J[1][2] = -cam.fy * ty / zs2;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      g.JW[i][j] = g.J[i][0] * cam.R[0][j] + g.J[i][1] * cam.R[1][j] + g.J[i][2] * cam.R[2][j];
  g.qnorm = quat_rotation(q, g.Rq, g.qn);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) g.M[i][j] = g.Rq[i][j] * s[j];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      g.sigma[i][j] = g.M[i][0] * g.M[j][0] + g.M[i][1] * g.M[j][1] + g.M[i][2] * g.M[j][2];
  double A[2][3];   // JW sigma
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      A[i][j] = g.JW[i][0] * g.sigma[0][j] + g.JW[i][1] * g.sigma[1][j] +
                g.JW[i][2] * g.sigma[2][j];
  g.a0 = A[0][0] * g.JW[0][0] + A[0][1] * g.JW[0][1] + A[0][2] * g.JW[0][2];
  g.b = A[0][0] * g.JW[1][0] + A[0][1] * g.JW[1][1] + A[0][2] * g.JW[1][2];
  g.c0 = A[1][0] * g.JW[1][0] + A[1][1] * g.JW[1][1] + A[1][2] * g.JW[1][2];
  const double a = g.a0 + cam.eps2d, c = g.c0 + cam.eps2d;
  g.det = a * c - g.b * g.b;
  g.det_ok = g.det > 0;
  g.det_safe = g.det_ok ? g.det : 1.0;
  g.ratio = (g.a0 * g.c0 - g.b * g.b) / g.det_safe;
  g.comp = std::sqrt(std::max(g.ratio, 0.0));
}

}  // namespace

std::vector<torch::Tensor> project_forward(torch::Tensor means, torch::Tensor quats,
                                           torch::Tensor scales, torch::Tensor opacities,
                                           torch::Tensor viewmat, torch::Tensor K, int64_t width,
                                           int64_t height, double near_plane, double far_plane,
                                           double eps2d, double extent_max, bool antialiased) {
  const Camera cam = make_camera(viewmat, K, width, height, near_plane, far_plane, eps2d,
                                 antialiased);
  const int64_t N = means.size(0);
  auto out = torch::empty({N, 7}, means.options());
  auto radii = torch::empty({N, 2}, means.options().dtype(torch::kInt64));
  const float* pm = means.data_ptr<float>();
  const float* pq = quats.data_ptr<float>();
  const float* ps = scales.data_ptr<float>();
  const float* po = opacities.data_ptr<float>();
  float* o = out.data_ptr<float>();
  int64_t* r = radii.data_ptr<int64_t>();
  at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
    Projected g;
    for (int64_t n = begin; n < end; ++n) {
      forward_one(cam, pm + 3 * n, pq + 4 * n, ps + 3 * n, g);
      const double a = g.a0 + cam.eps2d, c = g.c0 + cam.eps2d;
      const double op = cam.antialiased ? po[n] * g.comp : po[n];
      const double mx = cam.fx * g.p[0] / g.zs + cam.cx, my = cam.fy * g.p[1] / g.zs + cam.cy;
      float* on = o + 7 * n;
      on[0] = (float)mx;
      on[1] = (float)my;
      on[2] = (float)(c / g.det_safe);
      on[3] = (float)(-g.b / g.det_safe);
      on[4] = (float)(a / g.det_safe);
      on[5] = (float)op;
      on[6] = (float)g.p[2];
      // the box outside which alpha = opacity * exp(-k^2 / 2) < 1/255 (from the stored
      // float32 opacity, as the torch path)
      const double k = std::min(std::sqrt(2.0 * std::log(std::max((double)on[5] * 255.0, 1.0))),
                                extent_max);
      const double rx = std::ceil(k * std::sqrt(std::max(a, 0.0)));
      const double ry = std::ceil(k * std::sqrt(std::max(c, 0.0)));
      const bool ok = g.p[2] > cam.near_plane && g.p[2] < cam.far_plane && g.det_ok &&
                      (double)on[5] >= kAlphaMinProj && rx > 0 && ry > 0 && mx + rx > 0 &&
                      mx - rx < width && my + ry > 0 && my - ry < height &&
                      std::isfinite(mx) && std::isfinite(my);
      r[2 * n] = ok ? (int64_t)rx : 0;
      r[2 * n + 1] = ok ? (int64_t)ry : 0;
    }
  });
  return {out, radii};
}

// grad_out [N, 7] (of project_forward's out) -> gradients of means [N, 3], quats [N, 4],
// scales [N, 3] and opacities [N].
std::vector<torch::Tensor> project_backward(torch::Tensor grad_out, torch::Tensor means,
                                            torch::Tensor quats, torch::Tensor scales,
                                            torch::Tensor opacities, torch::Tensor viewmat,
                                            torch::Tensor K, int64_t width, int64_t height,
                                            double near_plane, double far_plane, double eps2d,
                                            bool antialiased) {
  const Camera cam = make_camera(viewmat, K, width, height, near_plane, far_plane, eps2d,
                                 antialiased);
  const int64_t N = means.size(0);
  auto g_means = torch::empty({N, 3}, means.options());
  auto g_quats = torch::empty({N, 4}, means.options());
  auto g_scales = torch::empty({N, 3}, means.options());
  auto g_opac = torch::empty({N}, means.options());
  const float* go = grad_out.data_ptr<float>();
  const float* pm = means.data_ptr<float>();
  const float* pq = quats.data_ptr<float>();
  const float* ps = scales.data_ptr<float>();
  const float* po = opacities.data_ptr<float>();
  float *gm = g_means.data_ptr<float>(), *gq = g_quats.data_ptr<float>();
  float *gs = g_scales.data_ptr<float>(), *gop = g_opac.data_ptr<float>();
  at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
    Projected g;
    for (int64_t n = begin; n < end; ++n) {
      forward_one(cam, pm + 3 * n, pq + 4 * n, ps + 3 * n, g);
      const float* up = go + 7 * n;
      const double a = g.a0 + cam.eps2d, c = g.c0 + cam.eps2d, d = g.det_safe;
      double dx = 0, dy = 0, dz = 0, dzs = 0;   // into the camera-space point
      // means2d = (fx x / zs + cx, fy y / zs + cy)
      dx += up[0] * cam.fx / g.zs;
      dy += up[1] * cam.fy / g.zs;
      dzs -= (up[0] * cam.fx * g.p[0] + up[1] * cam.fy * g.p[1]) / (g.zs * g.zs);
      dz += up[6];   // depth
      // opacity (antialiased: times comp = sqrt(max(ratio, 0)))
      double da = 0, db = 0, dc = 0;   // into a0 (= a - eps), b, c0 (= c - eps)
      double dd = 0;                    // into det_safe
      if (cam.antialiased) {
        gop[n] = (float)(up[5] * g.comp);
        if (g.ratio > 0) {
          const double dratio = up[5] * po[n] * 0.5 / g.comp;
          const double ddet_raw = dratio / d;   // det_raw = a0 c0 - b^2
          da += ddet_raw * g.c0;
          dc += ddet_raw * g.a0;
          db -= ddet_raw * 2 * g.b;
          dd -= dratio * g.ratio / d;
        }
      } else {
        gop[n] = up[5];
      }
      // conic = (c / d, -b / d, a / d)
      da += up[4] / d;
      dc += up[2] / d;
      db -= up[3] / d;
      dd -= (up[2] * c - up[3] * g.b + up[4] * a) / (d * d);
      if (g.det_ok) {   // det = a c - b^2 (det_safe is a constant where det <= 0)
        da += dd * c;
        dc += dd * a;
        db -= dd * 2 * g.b;
      }
      // cov2d = JW sigma JW^T, whose (0, 0), (0, 1), (1, 1) entries the torch code reads:
      // with Gs = G + G^T, d JW = Gs JW sigma and d sigma-side: d M = JW^T Gs JW M.
      const double Gs[2][2] = {{2 * da, db}, {db, 2 * dc}};
      double GsJW[2][3], dJW[2][3], T3[3][3], dM[3][3];
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j) GsJW[i][j] = Gs[i][0] * g.JW[0][j] + Gs[i][1] * g.JW[1][j];
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j)
          dJW[i][j] = GsJW[i][0] * g.sigma[0][j] + GsJW[i][1] * g.sigma[1][j] +
                      GsJW[i][2] * g.sigma[2][j];
      for (int i = 0; i < 3; ++i)   // JW^T Gs JW
        for (int j = 0; j < 3; ++j) T3[i][j] = g.JW[0][i] * GsJW[0][j] + g.JW[1][i] * GsJW[1][j];
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
          dM[i][j] = T3[i][0] * g.M[0][j] + T3[i][1] * g.M[1][j] + T3[i][2] * g.M[2][j];
      // JW = J R: dJ = dJW R^T
      double dJ[2][3];
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j)
          dJ[i][j] = dJW[i][0] * cam.R[j][0] + dJW[i][1] * cam.R[j][1] + dJW[i][2] * cam.R[j][2];
      const double zs2 = g.zs * g.zs, zs3 = zs2 * g.zs;
      const double tx = g.zs * g.tclamp[0], ty = g.zs * g.tclamp[1];
      dzs += -dJ[0][0] * cam.fx / zs2 + dJ[0][2] * 2 * cam.fx * tx / zs3 -
             dJ[1][1] * cam.fy / zs2 + dJ[1][2] * 2 * cam.fy * ty / zs3;
      const double dtx = -dJ[0][2] * cam.fx / zs2, dty = -dJ[1][2] * cam.fy / zs2;
      // t = zs clamp(x / zs): inside the clamp d/dx = 1 and d/dzs = 0, outside d/dzs = clamp
      if (g.in_x) dx += dtx; else dzs += dtx * g.tclamp[0];
      if (g.in_y) dy += dty; else dzs += dty * g.tclamp[1];
      if (g.z_ok) dz += dzs;
      // p = R m + t
      for (int j = 0; j < 3; ++j)
        gm[3 * n + j] = (float)(cam.R[0][j] * dx + cam.R[1][j] * dy + cam.R[2][j] * dz);
      // M = Rq diag(s)
      double dR[3][3];
      for (int j = 0; j < 3; ++j) {
        const float sj = ps[3 * n + j];
        gs[3 * n + j] = (float)(dM[0][j] * g.Rq[0][j] + dM[1][j] * g.Rq[1][j] +
                                dM[2][j] * g.Rq[2][j]);
        for (int i = 0; i < 3; ++i) dR[i][j] = dM[i][j] * sj;
      }
      const double w = g.qn[0], x = g.qn[1], y = g.qn[2], z = g.qn[3];
      double dq[4];
      dq[0] = 2 * (-z * dR[0][1] + y * dR[0][2] + z * dR[1][0] - x * dR[1][2] - y * dR[2][0] +
                   x * dR[2][1]);
      dq[1] = 2 * (y * dR[0][1] + z * dR[0][2] + y * dR[1][0] - 2 * x * dR[1][1] -
                   w * dR[1][2] + z * dR[2][0] + w * dR[2][1] - 2 * x * dR[2][2]);
      dq[2] = 2 * (-2 * y * dR[0][0] + x * dR[0][1] + w * dR[0][2] + x * dR[1][0] +
                   z * dR[1][2] - w * dR[2][0] + z * dR[2][1] - 2 * y * dR[2][2]);
      dq[3] = 2 * (-2 * z * dR[0][0] - w * dR[0][1] + x * dR[0][2] + w * dR[1][0] -
                   2 * z * dR[1][1] + y * dR[1][2] + x * dR[2][0] + y * dR[2][1]);
      // qn = q / |q|
      const double dot = dq[0] * w + dq[1] * x + dq[2] * y + dq[3] * z;
      for (int i = 0; i < 4; ++i) gq[4 * n + i] = (float)((dq[i] - g.qn[i] * dot) / g.qnorm);
    }
  });
  return {g_means, g_quats, g_scales, g_opac};
}
