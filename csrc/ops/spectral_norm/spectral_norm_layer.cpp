// spectral_norm_layer: a spectrally normalised Linear or convolution, bias included, with
// its backward in C++ (medgan_fast.nn.spectral_norm's layers call it once per forward).
//
//   weight scaled: out = layer(x, kept) + b,          kept = W / sigma
//   output scaled: out = kept / sigma + b,            kept = layer(x, W)
// sigma = u^T W v with u, v held constant (the forward's power iteration; copies are saved
// for the backward). The backward is the layer's own backward plus sigma's rank-1 share of
// the weight gradient, added in place by spectral_norm_weight_grad_ (one pass over the
// gradient the layer returns, instead of a weight-sized rank-1 tensor and an add).
// Why C++: the same backward as a Python autograd.Function cost more per layer
// (interpreter, saved-tensor unpacking, the GIL in the engine) than the rank-1 term saves
// at the small batches GANs train with; between convolutions, with cold caches, each
// Python call costs 10-20x what it does in a hot loop.
//
// Device-agnostic (aten ops and the kernels' op through the dispatcher): registered for
// Autograd and CompositeExplicitAutograd, so fake tensors (torch.compile) trace through it.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <vector>

namespace medgan_fast::spectral_norm {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// aten.convolution's arguments after input, weight and bias; no stride = a Linear layer.
struct LayerArguments {
  std::vector<int64_t> stride, padding, dilation, output_padding;
  bool transposed = false;
  int64_t groups = 1;

  bool linear() const { return stride.empty(); }

  // All of it and the layer's other integers as one list, for the autograd context (one
  // saved_data entry instead of eight: each costs a hash-map insert and allocations):
  // [dim, scale_weight, transposed, groups, four lengths, the four lists].
  std::vector<int64_t> pack(int64_t dim, bool scale_weight) const {
    std::vector<int64_t> packed{dim, scale_weight, transposed, groups};
    for (const auto* list : {&stride, &padding, &dilation, &output_padding})
      packed.push_back(static_cast<int64_t>(list->size()));
    for (const auto* list : {&stride, &padding, &dilation, &output_padding})
      packed.insert(packed.end(), list->begin(), list->end());
    return packed;
  }

  static LayerArguments unpack(const std::vector<int64_t>& packed) {
    LayerArguments a;
    a.transposed = packed[2] != 0;
    a.groups = packed[3];
    auto next = packed.begin() + 8;
    int k = 4;
    for (auto* list : {&a.stride, &a.padding, &a.dilation, &a.output_padding}) {
      list->assign(next, next + packed[k]);
      next += packed[k++];
    }
    return a;
  }
};

at::Tensor layer(const LayerArguments& a, const at::Tensor& input, const at::Tensor& weight,
                 const std::optional<at::Tensor>& bias) {
  if (a.linear()) return at::linear(input, weight, bias);
  return at::convolution(input, weight, bias, a.stride, a.padding, a.dilation, a.transposed, a.output_padding,
                         a.groups);
}

// The gradient of layer()'s bias: grad summed over all but the channels.
at::Tensor bias_gradient(const LayerArguments& a, const at::Tensor& grad) {
  if (a.linear()) return grad.reshape({-1, grad.size(-1)}).sum(0);
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < grad.dim(); ++d)
    if (d != 1) dims.push_back(d);
  return grad.sum(dims);
}

// (grad_input, grad_weight, grad_bias) of layer(); undefined where `needs` says so.
std::vector<at::Tensor> layer_backward(const LayerArguments& a, const at::Tensor& grad, const at::Tensor& input,
                                       const at::Tensor& weight, std::array<bool, 3> needs) {
  if (!a.linear()) {
    const int64_t channels = grad.size(1);
    const at::OptionalIntArrayRef bias_sizes = needs[2] ? at::OptionalIntArrayRef(channels) : std::nullopt;
    auto [gi, gw, gb] = at::convolution_backward(grad, input, weight, bias_sizes, a.stride, a.padding, a.dilation,
                                                 a.transposed, a.output_padding, a.groups, needs);
    return {needs[0] ? gi : at::Tensor(), needs[1] ? gw : at::Tensor(), needs[2] ? gb : at::Tensor()};
  }
  const at::Tensor rows = grad.reshape({-1, grad.size(-1)});
  return {needs[0] ? grad.matmul(weight) : at::Tensor(),
          needs[1] ? rows.t().mm(input.reshape({-1, input.size(-1)})) : at::Tensor(),
          needs[2] ? bias_gradient(a, grad) : at::Tensor()};
}

struct Forward {
  at::Tensor out, kept;
};

Forward layer_forward(const LayerArguments& a, const at::Tensor& input, const at::Tensor& weight,
                      const std::optional<at::Tensor>& bias, const at::Tensor& sigma, bool scale_weight) {
  // Divisions, not products with 1 / sigma: one op fewer (each op costs tens of us of
  // dispatch with cold caches between convolutions), and W / sigma rounds as torch's.
  if (scale_weight) {
    at::Tensor kept = weight / sigma;
    return {layer(a, input, kept, bias), kept};
  }
  at::Tensor kept = layer(a, input, weight, std::nullopt);
  if (!bias.has_value() || !bias->defined()) return {kept / sigma, kept};
  std::vector<int64_t> channels(a.linear() ? 1 : kept.dim() - 1, 1);
  channels[0] = -1;
  return {at::addcdiv(bias->view(channels), kept, sigma), kept};
}

void complete_weight_grad(const at::Tensor& grad_weight, const at::Tensor& sigma, const at::Tensor& u,
                          const at::Tensor& v, int64_t dim, const at::Tensor& kept,
                          const std::optional<at::Tensor>& scaled_grad) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("medgan_fast::spectral_norm_weight_grad_", "")
          .typed<void(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                      const at::Tensor&, const std::optional<at::Tensor>&)>();
  op.call(grad_weight, sigma, u, v, dim, kept, scaled_grad);
}

struct SpectralNormLayer : torch::autograd::Function<SpectralNormLayer> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, const at::Tensor& sigma, const at::Tensor& u,
                            const at::Tensor& v, int64_t dim, bool scale_weight, const LayerArguments& arguments) {
    Forward f = layer_forward(arguments, input, weight, bias, sigma, scale_weight);
    // Copies of u and v: a later forward updates the buffers before this backward runs.
    ctx->save_for_backward({input, weight, bias.value_or(at::Tensor()), sigma, u.clone(), v.clone(), f.kept});
    ctx->saved_data["arguments"] = arguments.pack(dim, scale_weight);
    return f.out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &weight = saved[1], &bias = saved[2], &sigma = saved[3], &u = saved[4],
                     &v = saved[5], &kept = saved[6];
    const std::vector<int64_t> packed = ctx->saved_data["arguments"].toIntVector();
    const int64_t dim = packed[0];
    const bool scale_weight = packed[1] != 0;
    const LayerArguments a = LayerArguments::unpack(packed);
    const std::array<bool, 3> needs{ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                    bias.defined() && ctx->needs_input_grad(2)};
    const at::Tensor& grad = grads[0];
    std::vector<at::Tensor> result = at::GradMode::is_enabled()
                                         ? plain_backward(a, grad, input, weight, bias, sigma, u, v, dim, needs)
                                         : fused_backward(a, grad, input, weight, sigma, u, v, dim, kept,
                                                          scale_weight, needs);
    result.resize(9);  // one per forward argument; none for sigma, u, v and the integers
    return result;
  }

  static std::vector<at::Tensor> fused_backward(const LayerArguments& a, const at::Tensor& grad,
                                                const at::Tensor& input, const at::Tensor& weight,
                                                const at::Tensor& sigma, const at::Tensor& u, const at::Tensor& v,
                                                int64_t dim, const at::Tensor& kept, bool scale_weight,
                                                std::array<bool, 3> needs) {
    std::vector<at::Tensor> result;
    std::optional<at::Tensor> scaled;
    if (scale_weight) {
      result = layer_backward(a, grad, input, kept, needs);
    } else {
      scaled = (grad / sigma).contiguous();
      result = layer_backward(a, *scaled, input, weight, {needs[0], needs[1], false});
      if (needs[2]) result[2] = bias_gradient(a, grad);
    }
    if (result[1].defined()) {
      result[1] = result[1].contiguous();
      complete_weight_grad(result[1], sigma, u, v, dim, kept.contiguous(), scaled);
    }
    return result;
  }

  // create_graph (gradient penalties): differentiate the plain formula, sigma = u^T W v.
  static std::vector<at::Tensor> plain_backward(const LayerArguments& a, const at::Tensor& grad,
                                                const at::Tensor& input, const at::Tensor& weight,
                                                const at::Tensor& bias, const at::Tensor& sigma, const at::Tensor& u,
                                                const at::Tensor& v, int64_t dim, std::array<bool, 3> needs) {
    const at::Tensor product = at::dot(u, at::mv(weight.movedim(dim, 0).flatten(1), v));
    // The forward's value of sigma (no re-rounding), the gradient of u^T W v.
    const at::Tensor attached = sigma.reshape({}) + (product - product.detach());
    const at::Tensor out =
        layer(a, input, weight / attached, bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt);
    variable_list inputs;
    const at::Tensor* candidates[3] = {&input, &weight, &bias};
    for (int k = 0; k < 3; ++k)
      if (needs[k]) inputs.push_back(*candidates[k]);
    const variable_list computed = torch::autograd::grad({out}, inputs, {grad}, /*retain_graph=*/true,
                                                         /*create_graph=*/true);
    std::vector<at::Tensor> result(3);
    for (int k = 0, next = 0; k < 3; ++k)
      if (needs[k]) result[k] = computed[next++];
    return result;
  }
};

LayerArguments layer_arguments(at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               bool transposed, at::IntArrayRef output_padding, int64_t groups) {
  return {stride.vec(), padding.vec(), dilation.vec(), output_padding.vec(), transposed, groups};
}

at::Tensor spectral_norm_layer(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, const at::Tensor& sigma, const at::Tensor& u,
                               const at::Tensor& v, int64_t dim, bool scale_weight, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, bool transposed,
                               at::IntArrayRef output_padding, int64_t groups) {
  const LayerArguments a = layer_arguments(stride, padding, dilation, transposed, output_padding, groups);
  return layer_forward(a, input, weight, bias, sigma, scale_weight).out;
}

at::Tensor spectral_norm_layer_autograd(const at::Tensor& input, const at::Tensor& weight,
                                        const std::optional<at::Tensor>& bias, const at::Tensor& sigma,
                                        const at::Tensor& u, const at::Tensor& v, int64_t dim, bool scale_weight,
                                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                        bool transposed, at::IntArrayRef output_padding, int64_t groups) {
  const bool bias_needs_grad = bias.has_value() && bias->defined() && bias->requires_grad();
  if (!at::GradMode::is_enabled() || !(input.requires_grad() || weight.requires_grad() || bias_needs_grad)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return spectral_norm_layer(input, weight, bias, sigma, u, v, dim, scale_weight, stride, padding, dilation,
                               transposed, output_padding, groups);
  }
  return SpectralNormLayer::apply(input, weight, bias, sigma, u, v, dim, scale_weight,
                                  layer_arguments(stride, padding, dilation, transposed, output_padding, groups));
}

}  // namespace

TORCH_LIBRARY_IMPL(medgan_fast, CompositeExplicitAutograd, m) { m.impl("spectral_norm_layer", &spectral_norm_layer); }
TORCH_LIBRARY_IMPL(medgan_fast, Autograd, m) { m.impl("spectral_norm_layer", &spectral_norm_layer_autograd); }

}  // namespace medgan_fast::spectral_norm
