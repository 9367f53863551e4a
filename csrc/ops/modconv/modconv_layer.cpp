// modulated_conv2d: StyleGAN2's modulated convolution with its backward in C++.
//
// Why this design (measured in benches/bench_modconv.py): NVIDIA trains with the
// "non-fused" form, because a grouped convolution with one weight per sample trains slowly
// (cuDNN and oneDNN are tuned for shared weights): scale the activations by the styles, one
// convolution with the shared weight, scale the output by the demodulation coefficients.
// We keep that form for the convolution (ATen: cuDNN / oneDNN pick the algorithm) and fuse
// what surrounds it:
//   forward   x_mod = x * s;  y = resampled conv(x_mod, w);  out = epilogue(y, d, noise, bias)
//             (one pass of ours for demodulation, noise, bias, activation, gain, clamp;
//              plain torch ops make four to five passes over the output)
//   backward  one pass of ours over the output gradient (grad_y, the bias and d sums, the
//             noise sum), ATen's convolution backward, and one pass of ours for x_mod = x * s
//             (grad_x and the styles' sum) where autograd of torch ops makes about eight.
// d = rsqrt(s^2 . sum_k w^2 + 1e-8) and its gradient are (N, O) matrix products.
//
// Resampling through the [1,3,3,1] FIR filter (stylegan2-ada's conv2d_resample, same
// padding arithmetic; the filter comes in as a 4x4 tensor with sum 1):
//   up = 2:   transposed convolution with stride 2 (the weight not flipped, as NVIDIA's
//             up-sampling layers run it), then the filter with gain 4;
//   down = 2: the filter, then the convolution with stride 2.
//
// With create_graph (path-length regularisation differentiates through the synthesis
// network twice) the backward rebuilds the forward from differentiable torch ops and
// differentiates that, so second derivatives are exact.
//
// Device-agnostic (ATen ops and our epilogue ops through the dispatcher): registered for
// Autograd and CompositeExplicitAutograd, so fake tensors (torch.compile) trace through it.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "ops/modconv/modconv.h"

namespace medgan_fast::modconv {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr double kDemodulationEps = 1e-8;

struct Arguments {
  bool demodulate = true;
  int64_t up = 1, down = 1, padding = 0, activation = kLrelu;
  double alpha = 0.2, gain = 1.0, clamp = 0.0;

  std::vector<int64_t> integers() const { return {demodulate, up, down, padding, activation}; }
  std::vector<double> reals() const { return {alpha, gain, clamp}; }
  static Arguments unpack(const std::vector<int64_t>& i, const std::vector<double>& r) {
    return {i[0] != 0, i[1], i[2], i[3], i[4], r[0], r[1], r[2]};
  }
};

// One convolution of the chain: the layer's own weight, or the depthwise FIR filter.
struct Stage {
  bool fir;
  bool transposed;
  int64_t stride, padding, groups;
  double fir_gain;
};

std::vector<Stage> stages_of(const Arguments& a, int64_t kernel, int64_t in_channels, int64_t out_channels) {
  if (a.up == 2) {
    const int64_t fir_padding = a.padding + 3 - kernel;  // conv2d_resample's px0 - (kw - 1)
    return {{false, true, 2, std::max<int64_t>(-fir_padding, 0), 1, 1.0},
            {true, false, 1, std::max<int64_t>(fir_padding, 0), out_channels, 4.0}};
  }
  if (a.down == 2) return {{true, false, 1, a.padding + 1, in_channels, 1.0}, {false, false, 2, 0, 1, 1.0}};
  return {{false, false, 1, a.padding, 1, 1.0}};
}

// [O, I, k, k] for a convolution, [I, O, k, k] for the transposed one, (C, 1, 4, 4) filters.
at::Tensor stage_weight(const Stage& s, const at::Tensor& weight, const at::Tensor& fir) {
  if (s.fir) return (fir * s.fir_gain).view({1, 1, fir.size(0), fir.size(1)}).expand({s.groups, 1, -1, -1}).contiguous();
  return s.transposed ? weight.transpose(0, 1) : weight;
}

at::Tensor run_stage(const Stage& s, const at::Tensor& input, const at::Tensor& weight) {
  return at::convolution(input, weight, std::nullopt, {s.stride, s.stride}, {s.padding, s.padding}, {1, 1},
                         s.transposed, {0, 0}, s.groups);
}

at::Tensor squared_weight_norms(const at::Tensor& weight) { return weight.square().sum({2, 3}); }  // [O, I]

at::Tensor demodulation(const at::Tensor& norms, const at::Tensor& styles) {  // [N, O]
  return at::rsqrt(at::mm(styles.square(), norms.t()) + kDemodulationEps);
}

at::Tensor epilogue_op(const at::Tensor& y, const std::optional<at::Tensor>& dcoefs,
                       const std::optional<at::Tensor>& noise, const std::optional<at::Tensor>& bias,
                       int64_t activation, double alpha, double gain, double clamp) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("medgan_fast::modconv_epilogue", "")
                             .typed<at::Tensor(const at::Tensor&, const std::optional<at::Tensor>&,
                                               const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                                               int64_t, double, double, double)>();
  return op.call(y, dcoefs, noise, bias, activation, alpha, gain, clamp);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> epilogue_backward_op(const at::Tensor& grad, const at::Tensor& out,
                                                                    const at::Tensor& y,
                                                                    const std::optional<at::Tensor>& dcoefs,
                                                                    int64_t noise_batch, int64_t activation,
                                                                    double alpha, double gain, double clamp) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("medgan_fast::modconv_epilogue_backward", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                const at::Tensor&, const std::optional<at::Tensor>&,
                                                                int64_t, int64_t, double, double, double)>();
  return op.call(grad, out, y, dcoefs, noise_batch, activation, alpha, gain, clamp);
}

std::optional<at::Tensor> optional(const at::Tensor& t) { return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt; }

struct Forward {
  at::Tensor out, y, norms, dcoefs;  // norms: squared_weight_norms, kept for the backward
  std::vector<at::Tensor> stage_inputs;  // stage_inputs[0] = x_mod
};

Forward forward_pass(const Arguments& a, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& styles,
                     const std::optional<at::Tensor>& noise, const std::optional<at::Tensor>& bias,
                     const at::Tensor& fir) {
  Forward f;
  at::Tensor h = x * styles.view({x.size(0), x.size(1), 1, 1});
  for (const Stage& s : stages_of(a, weight.size(2), weight.size(1), weight.size(0))) {
    f.stage_inputs.push_back(h);
    h = run_stage(s, h, stage_weight(s, weight, fir));
  }
  f.y = h;
  if (a.demodulate) {
    f.norms = squared_weight_norms(weight);
    f.dcoefs = demodulation(f.norms, styles);
  }
  f.out = epilogue_op(f.y, optional(f.dcoefs), noise, bias, a.activation, a.alpha, a.gain, a.clamp);
  return f;
}

// The same function from differentiable torch ops (the create_graph backward).
at::Tensor differentiable_forward(const Arguments& a, const at::Tensor& x, const at::Tensor& weight,
                                  const at::Tensor& styles, const at::Tensor& noise, const at::Tensor& bias,
                                  const at::Tensor& fir) {
  at::Tensor h = x * styles.view({x.size(0), x.size(1), 1, 1});
  for (const Stage& s : stages_of(a, weight.size(2), weight.size(1), weight.size(0)))
    h = run_stage(s, h, stage_weight(s, weight, fir));
  if (a.demodulate) h = h * demodulation(squared_weight_norms(weight), styles).view({h.size(0), h.size(1), 1, 1});
  if (noise.defined()) h = h + noise;
  if (bias.defined()) h = h + bias.view({1, -1, 1, 1});
  if (a.activation == kLrelu) h = at::leaky_relu(h, a.alpha);
  h = h * a.gain;
  return a.clamp > 0 ? at::clamp(h, -a.clamp, a.clamp) : h;
}

// Forward arguments after ctx: x, weight, styles, noise, bias, fir, arguments.
constexpr int kInputs = 7;
// Saved: x, weight, styles, noise, bias, fir, out, y, dcoefs, norms, then each stage's input.
constexpr int kFirstStageInput = 10;

struct ModulatedConv2d : torch::autograd::Function<ModulatedConv2d> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& styles, const std::optional<at::Tensor>& noise,
                            const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& fir,
                            const Arguments& a) {
    Forward f = forward_pass(a, x, weight, styles, noise, bias, fir.value_or(at::Tensor()));
    variable_list saved{x, weight, styles, noise.value_or(at::Tensor()), bias.value_or(at::Tensor()),
                        fir.value_or(at::Tensor()), f.out, f.y, f.dcoefs, f.norms};
    saved.insert(saved.end(), f.stage_inputs.begin(), f.stage_inputs.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["integers"] = a.integers();
    ctx->saved_data["reals"] = a.reals();
    return f.out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Arguments a =
        Arguments::unpack(ctx->saved_data["integers"].toIntVector(), ctx->saved_data["reals"].toDoubleVector());
    // Autograd's edges skip absent optional tensors: bias is edge 3 when there is no noise.
    const bool has_noise = saved[3].defined(), has_bias = saved[4].defined();
    const std::array<bool, 5> needs{ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2),
                                    has_noise && ctx->needs_input_grad(3),
                                    has_bias && ctx->needs_input_grad(has_noise ? 4 : 3)};
    variable_list result = at::GradMode::is_enabled() ? plain_backward(a, grads[0], saved, needs)
                                                      : fused_backward(a, grads[0], saved, needs);
    result.resize(kInputs);
    return result;
  }

  static variable_list fused_backward(const Arguments& a, const at::Tensor& grad, const variable_list& saved,
                                      const std::array<bool, 5>& needs) {
    const at::Tensor &x = saved[0], &weight = saved[1], &styles = saved[2], &noise = saved[3], &fir = saved[5],
                     &out = saved[6], &y = saved[7], &dcoefs = saved[8], &norms = saved[9];
    variable_list result(5);
    auto [grad_y, sums, grad_noise] = epilogue_backward_op(grad, out, y, optional(dcoefs),
                                                           noise.defined() ? noise.size(0) : 0, a.activation,
                                                           a.alpha, a.gain, a.clamp);
    if (needs[4]) result[4] = sums[0].sum(0);
    if (needs[3]) result[3] = grad_noise;

    // Back through the convolution chain, last stage first.
    const std::vector<Stage> stages = stages_of(a, weight.size(2), weight.size(1), weight.size(0));
    const bool needs_x_mod = needs[0] || needs[2];
    at::Tensor g = grad_y, grad_weight;
    for (int k = static_cast<int>(stages.size()) - 1; k >= 0; --k) {
      const Stage& s = stages[k];
      const bool input = k > 0 || needs_x_mod, weight_grad = !s.fir && needs[1];
      if (!input && !weight_grad) break;
      auto [gi, gw, gb] = at::convolution_backward(g, saved[kFirstStageInput + k], stage_weight(s, weight, fir), std::nullopt,
                                                   {s.stride, s.stride}, {s.padding, s.padding}, {1, 1},
                                                   s.transposed, {0, 0}, s.groups, {input, weight_grad, false});
      if (weight_grad) grad_weight = s.transposed ? gw.transpose(0, 1) : gw;
      g = gi;
    }
    at::Tensor grad_styles;
    if (needs_x_mod) {
      // x_mod = x * s: the same pass with s as the coefficients, no activation.
      auto [grad_x, scale_sums, unused] = epilogue_backward_op(g, g, x, styles, 0, kLinear, 0.0, 1.0, 0.0);
      if (needs[0]) result[0] = grad_x;
      grad_styles = scale_sums[1];
    }
    if (a.demodulate && (needs[1] || needs[2])) {
      // d = rsqrt(z), z = s^2 . wsq^T + eps:  dL/dz = dL/dd * (-d^3 / 2).
      const at::Tensor grad_z = sums[1] * dcoefs.pow(3) * -0.5;  // [N, O]
      if (needs[2]) grad_styles.addcmul_(styles, at::mm(grad_z, norms), 2);
      if (needs[1]) {
        // One pass over the weight gradient (ours, from convolution_backward), in place.
        const at::Tensor grad_norms = at::mm(grad_z.t(), styles.square()).mul_(2);  // [O, I]
        grad_weight = grad_weight.contiguous();
        grad_weight.addcmul_(weight, grad_norms.view({weight.size(0), weight.size(1), 1, 1}));
      }
    }
    if (needs[1]) result[1] = grad_weight;
    if (needs[2]) result[2] = grad_styles;
    return result;
  }

  static variable_list plain_backward(const Arguments& a, const at::Tensor& grad, const variable_list& saved,
                                      const std::array<bool, 5>& needs) {
    const at::Tensor out = differentiable_forward(a, saved[0], saved[1], saved[2], saved[3], saved[4], saved[5]);
    variable_list inputs;
    for (int k = 0; k < 5; ++k)
      if (needs[k]) inputs.push_back(saved[k]);
    const variable_list computed = torch::autograd::grad({out}, inputs, {grad}, /*retain_graph=*/true,
                                                         /*create_graph=*/true);
    variable_list result(5);
    for (int k = 0, next = 0; k < 5; ++k)
      if (needs[k]) result[k] = computed[next++];
    return result;
  }
};

Arguments arguments_of(bool demodulate, int64_t up, int64_t down, int64_t padding, int64_t activation, double alpha,
                       double gain, double clamp) {
  return {demodulate, up, down, padding, activation, alpha, gain, clamp};
}

void check(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& styles,
           const std::optional<at::Tensor>& fir, const Arguments& a) {
  TORCH_CHECK(x.dim() == 4, "x must be (N, I, H, W), got shape ", x.sizes());
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == x.size(1) && weight.size(2) == weight.size(3),
              "weight must be (O, I, k, k) with I = ", x.size(1), ", got shape ", weight.sizes());
  TORCH_CHECK(styles.dim() == 2 && styles.size(0) == x.size(0) && styles.size(1) == x.size(1),
              "styles must be (N, I) = (", x.size(0), ", ", x.size(1), "), got shape ", styles.sizes());
  TORCH_CHECK((a.up == 1 || a.up == 2) && (a.down == 1 || a.down == 2) && !(a.up == 2 && a.down == 2),
              "up and down must be 1 or 2, not both 2, got up = ", a.up, ", down = ", a.down);
  TORCH_CHECK(a.up == 1 && a.down == 1 || (fir.has_value() && fir->dim() == 2 && fir->size(0) == 4 && fir->size(1) == 4),
              "resample_filter must be a 4x4 tensor when up or down is 2");
}

at::Tensor modulated_conv2d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& styles,
                            const std::optional<at::Tensor>& noise, const std::optional<at::Tensor>& bias,
                            const std::optional<at::Tensor>& fir, bool demodulate, int64_t up, int64_t down,
                            int64_t padding, int64_t activation, double alpha, double gain, double clamp) {
  const Arguments a = arguments_of(demodulate, up, down, padding, activation, alpha, gain, clamp);
  check(x, weight, styles, fir, a);
  return forward_pass(a, x, weight, styles, noise, bias, fir.value_or(at::Tensor())).out;
}

at::Tensor modulated_conv2d_autograd(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& styles,
                                     const std::optional<at::Tensor>& noise, const std::optional<at::Tensor>& bias,
                                     const std::optional<at::Tensor>& fir, bool demodulate, int64_t up, int64_t down,
                                     int64_t padding, int64_t activation, double alpha, double gain, double clamp) {
  const auto needs_grad = [](const std::optional<at::Tensor>& t) { return t.has_value() && t->defined() && t->requires_grad(); };
  if (!at::GradMode::is_enabled() ||
      !(x.requires_grad() || weight.requires_grad() || styles.requires_grad() || needs_grad(noise) || needs_grad(bias))) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return modulated_conv2d(x, weight, styles, noise, bias, fir, demodulate, up, down, padding, activation, alpha,
                            gain, clamp);
  }
  const Arguments a = arguments_of(demodulate, up, down, padding, activation, alpha, gain, clamp);
  check(x, weight, styles, fir, a);
  return ModulatedConv2d::apply(x, weight, styles, noise, bias, fir, a);
}

}  // namespace

TORCH_LIBRARY_IMPL(medgan_fast, CompositeExplicitAutograd, m) { m.impl("modulated_conv2d", &modulated_conv2d); }
TORCH_LIBRARY_IMPL(medgan_fast, Autograd, m) { m.impl("modulated_conv2d", &modulated_conv2d_autograd); }

}  // namespace medgan_fast::modconv
