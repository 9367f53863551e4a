// Every schema of the medgan_fast op library, in one place. Each op family registers
// its CPU and CUDA kernels in csrc/ops/<family>/<family>.cpp; the Python faces, fake
// (meta) implementations and references live in medgan_fast/ops/.
#include <torch/library.h>

TORCH_LIBRARY(medgan_fast, m) {
  // morphology: footprint is a bool (kh, kw) or (kd, kh, kw) tensor.
  m.def("dilate(Tensor input, Tensor footprint) -> Tensor");
  m.def("erode(Tensor input, Tensor footprint) -> Tensor");

  // components: labels int32 in scikit-image's raster order; counts int64.
  m.def("label(Tensor mask, int connectivity) -> (Tensor labels, Tensor count)");
  m.def("label_batch(Tensor masks, int connectivity) -> (Tensor labels, Tensor counts)");
  m.def("component_stats(Tensor labels, int count) -> (Tensor area, Tensor bbox, Tensor centroid)");
  m.def("crop_windows(Tensor source, Tensor corners, int size) -> Tensor");
  m.def("component_masks(Tensor labels, Tensor corners, Tensor ids, int size) -> Tensor");

  // spectral_norm: power iteration of many weights at once; updates us and vs in place,
  // returns sigma per weight (no iterations: sigma = u^T W v).
  m.def("spectral_norm_power_iteration_(Tensor[] weights, Tensor(a!)[] us, Tensor(b!)[] vs, int[] dims, "
        "int n_power_iterations, float eps) -> Tensor");
  // The weight gradient of a spectrally normalised layer completed in place (sigma's
  // rank-1 share): scaled_grad None if the layer scaled its weight (kept = W / sigma),
  // else the output gradient / sigma (the layer scaled its output, kept = layer(x, W)).
  m.def("spectral_norm_weight_grad_(Tensor(a!) grad_weight, Tensor sigma, Tensor u, Tensor v, int dim, "
        "Tensor kept, Tensor? scaled_grad) -> ()");
  // A spectrally normalised Linear (stride empty) or convolution (aten.convolution's
  // arguments), bias included: layer(x, W / sigma) + b, or layer(x, W) / sigma + b if not
  // scale_weight; its backward adds sigma's share of the weight gradient (u, v constant).
  m.def("spectral_norm_layer(Tensor input, Tensor weight, Tensor? bias, Tensor sigma, Tensor u, Tensor v, int dim, "
        "bool scale_weight, int[] stride, int[] padding, int[] dilation, bool transposed, int[] output_padding, "
        "int groups) -> Tensor");

  // modconv: StyleGAN2's modulated convolution (modconv_layer.cpp) and its fused epilogue.
  // modconv_epilogue: out = clamp(act(y * dcoefs + noise + bias) * gain), activation 0 linear,
  // 1 lrelu (slope alpha); clamp <= 0 for none. Its backward returns grad_y, the per-plane
  // sums (2, N, C) of g and g * y (g = d out / d pre * grad) and the noise gradient
  // (noise_batch, 1, H, W) (noise_batch 0: no noise).
  m.def("modconv_epilogue(Tensor y, Tensor? dcoefs, Tensor? noise, Tensor? bias, int activation, float alpha, "
        "float gain, float clamp) -> Tensor");
  m.def("modconv_epilogue_backward(Tensor grad, Tensor out, Tensor y, Tensor? dcoefs, int noise_batch, "
        "int activation, float alpha, float gain, float clamp) -> (Tensor grad_y, Tensor sums, Tensor grad_noise)");
  m.def("modulated_conv2d(Tensor x, Tensor weight, Tensor styles, Tensor? noise, Tensor? bias, "
        "Tensor? resample_filter, bool demodulate, int up, int down, int padding, int activation, float alpha, "
        "float gain, float clamp) -> Tensor");

  // metrics: x, y (N, C, H, W) float32/float64; per-image statistics of the image-quality
  // metrics (medgan_fast/ops/metrics.py says what each returns).
  m.def("metric_squared_error(Tensor x, Tensor y, float scale, bool greyscale) -> Tensor");
  m.def("metric_ssim(Tensor x, Tensor y, Tensor window, float scale, int pool, float c1, float c2) "
        "-> (Tensor ssim, Tensor cs)");
  m.def("metric_gmsd(Tensor x, Tensor y, float scale, bool pool_first, int num_scales, float t, float alpha) "
        "-> Tensor");
  m.def("metric_mdsi(Tensor x, Tensor y, float scale, int pool, float c1, float c2, float c3, float alpha, "
        "float beta, float gamma, float q, float rho, bool mult) -> Tensor");
  m.def("metric_haarpsi(Tensor x, Tensor y, float scale, int scales, bool subsample, float c, float alpha) "
        "-> Tensor");
}
