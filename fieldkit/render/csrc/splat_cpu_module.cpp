// The Python module of the CPU splat extension: projection (splat_project.cpp) and blending
// (splat_blend.cpp), each the compiled twin of a stage of fieldkit/render/splat.py.
#include <torch/extension.h>
#include <vector>

std::vector<torch::Tensor> blend_forward(torch::Tensor per_gaussian, torch::Tensor gaussian,
                                         torch::Tensor offsets, torch::Tensor box,
                                         int64_t tiles_x, int64_t ts, int64_t width,
                                         int64_t height);
torch::Tensor blend_backward(torch::Tensor grad_sums, torch::Tensor per_gaussian,
                             torch::Tensor gaussian, torch::Tensor offsets, torch::Tensor box,
                             torch::Tensor last, torch::Tensor t_final, int64_t tiles_x,
                             int64_t ts, int64_t width, int64_t height);
int64_t threads_used();
std::vector<torch::Tensor> project_forward(torch::Tensor means, torch::Tensor quats,
                                           torch::Tensor scales, torch::Tensor opacities,
                                           torch::Tensor viewmat, torch::Tensor K, int64_t width,
                                           int64_t height, double near_plane, double far_plane,
                                           double eps2d, double extent_max, bool antialiased);
std::vector<torch::Tensor> project_backward(torch::Tensor grad_out, torch::Tensor means,
                                            torch::Tensor quats, torch::Tensor scales,
                                            torch::Tensor opacities, torch::Tensor viewmat,
                                            torch::Tensor K, int64_t width, int64_t height,
                                            double near_plane, double far_plane, double eps2d,
                                            bool antialiased);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &blend_forward, "splat blending forward (CPU)");
  m.def("backward", &blend_backward, "splat blending backward (CPU)");
  m.def("threads_used", &threads_used, "threads the tile loops run on");
  m.def("project_forward", &project_forward, "EWA projection forward (CPU)");
  m.def("project_backward", &project_backward, "EWA projection backward (CPU)");
}
