// pybind11 module mnv3ext._C over the torch-free kernels.
// Two surfaces: plans run on raw addresses (what mnv3ext/ops.py calls after validating torch
// tensors) and numpy functions that validate and allocate themselves (for
// users and for emulated tests that have no torch). A plan holds a validated shape, so the
// per-call cost is one call with four arguments.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/dispatch.h"
#include "kernels/driver.h"
#include "kernels/block/inverted_residual.h"
#include "kernels/gemm/pointwise.h"
#include "kernels/sequence/sequence.h"

namespace py = pybind11;
using namespace mnv3ext;

namespace {

const std::map<std::string, Activation>& activation_names() {
  static const std::map<std::string, Activation> names{
      {"none", Activation::kNone},           {"relu", Activation::kRelu},
      {"relu6", Activation::kRelu6},         {"hardswish", Activation::kHardswish},
      {"hardsigmoid", Activation::kHardsigmoid}, {"sigmoid", Activation::kSigmoid}};
  return names;
}

Activation parse_activation(const std::string& name, const char* argument) {
  auto it = activation_names().find(name);
  if (it == activation_names().end())
    throw std::invalid_argument(std::string(argument) + ": unknown value '" + name + "'");
  return it->second;
}

template <typename T>
T* address(uintptr_t value) {
  return reinterpret_cast<T*>(value);
}

using FloatArray = py::array_t<float, py::array::c_style>;

// float32 only: silently casting float64 would hide a user's mistake.
FloatArray as_float32(const py::handle& object, const char* argument) {
  py::array array = py::array::ensure(object);
  if (!array) throw py::type_error(std::string(argument) + ": expected a numpy array");
  if (!array.dtype().is(py::dtype::of<float>()))
    throw py::type_error(std::string(argument) + ": expected dtype float32, got " +
                         std::string(py::str(array.dtype())));
  return FloatArray::ensure(array);
}

void require_ndim(const FloatArray& array, std::vector<int> allowed, const char* argument) {
  for (int n : allowed)
    if (array.ndim() == n) return;
  throw std::invalid_argument(std::string(argument) + ": wrong number of dimensions (" +
                              std::to_string(array.ndim()) + ")");
}

std::vector<int> padding4(const std::vector<int>& padding) {
  if (padding.size() == 2) return {padding[0], padding[1], padding[0], padding[1]};
  if (padding.size() == 4) return padding;
  throw std::invalid_argument("padding: expected 2 (symmetric) or 4 (top, left, bottom, right) values");
}

std::vector<int> pair(const std::vector<int>& values, const char* argument) {
  if (values.size() != 2) throw std::invalid_argument(std::string(argument) + ": expected 2 values");
  return values;
}

FloatArray pack_dwconv_numpy(const py::handle& weight_obj, const py::handle& bias_obj) {
  FloatArray weight = as_float32(weight_obj, "weight");
  require_ndim(weight, {3, 4}, "weight");
  const int64_t channels = weight.shape(0);
  if (weight.ndim() == 4 && weight.shape(1) != 1)
    throw std::invalid_argument("weight: expected shape (C, 1, kh, kw)");
  const int64_t kh = weight.shape(weight.ndim() - 2), kw = weight.shape(weight.ndim() - 1);
  if (kh < 1 || kh > 7 || kw < 1 || kw > 7)
    throw std::invalid_argument("weight: kernel size must be between 1 and 7");
  const float* bias_data = nullptr;
  FloatArray bias;
  if (!bias_obj.is_none()) {
    bias = as_float32(bias_obj, "bias");
    if (bias.ndim() != 1 || bias.shape(0) != channels)
      throw std::invalid_argument("bias: expected shape (C,) matching weight");
    bias_data = bias.data();
  }
  FloatArray packed(packed_dwconv_floats(channels, int(kh), int(kw)));
  pack_dwconv_weights(weight.data(), bias_data, channels, int(kh), int(kw), packed.mutable_data());
  return packed;
}

FloatArray dwconv2d_numpy(const py::handle& input_obj, const py::handle& weight_obj,
                          const py::handle& bias_obj, std::vector<int> stride,
                          std::vector<int> padding, std::vector<int> dilation,
                          const std::string& activation, bool channels_last, int threads) {
  FloatArray input = as_float32(input_obj, "input");
  require_ndim(input, {4}, "input");
  FloatArray weight = as_float32(weight_obj, "weight");
  require_ndim(weight, {3, 4}, "weight");
  const int64_t n = input.shape(0);
  const int64_t c = channels_last ? input.shape(3) : input.shape(1);
  const int64_t h = channels_last ? input.shape(1) : input.shape(2);
  const int64_t w = channels_last ? input.shape(2) : input.shape(3);
  if (weight.shape(0) != c)
    throw std::invalid_argument("weight: first dimension must equal the input's channels");
  stride = pair(stride, "stride");
  dilation = pair(dilation, "dilation");
  const std::vector<int> pads = padding4(padding);
  const int kh = int(weight.shape(weight.ndim() - 2)), kw = int(weight.shape(weight.ndim() - 1));
  const DwConvShape shape =
      make_dwconv_shape(n, c, h, w, kh, kw, stride[0], stride[1], dilation[0], dilation[1],
                        pads[0], pads[1], pads[2], pads[3],
                        parse_activation(activation, "activation"));
  FloatArray packed = pack_dwconv_numpy(weight_obj, bias_obj);
  std::vector<py::ssize_t> out_shape =
      channels_last ? std::vector<py::ssize_t>{n, shape.out_h, shape.out_w, c}
                    : std::vector<py::ssize_t>{n, c, shape.out_h, shape.out_w};
  FloatArray output(out_shape);
  {
    py::gil_scoped_release release;
    dwconv2d(shape, input.data(), packed.data(), output.mutable_data(), channels_last, threads);
  }
  return output;
}

FloatArray squeeze_excite_numpy(const py::handle& input_obj, const py::handle& fc1_weight_obj,
                                const py::handle& fc1_bias_obj, const py::handle& fc2_weight_obj,
                                const py::handle& fc2_bias_obj, const std::string& activation,
                                const std::string& gate, bool channels_last, int threads) {
  FloatArray input = as_float32(input_obj, "input");
  require_ndim(input, {4}, "input");
  FloatArray fc1 = as_float32(fc1_weight_obj, "fc1_weight");
  FloatArray fc2 = as_float32(fc2_weight_obj, "fc2_weight");
  require_ndim(fc1, {2, 4}, "fc1_weight");
  require_ndim(fc2, {2, 4}, "fc2_weight");
  const int64_t n = input.shape(0);
  const int64_t c = channels_last ? input.shape(3) : input.shape(1);
  const int64_t hw = channels_last ? input.shape(1) * input.shape(2)
                                   : input.shape(2) * input.shape(3);
  const int64_t s = fc1.shape(0);
  if (fc1.shape(1) != c || (fc1.ndim() == 4 && (fc1.shape(2) != 1 || fc1.shape(3) != 1)))
    throw std::invalid_argument("fc1_weight: expected shape (S, C) or (S, C, 1, 1)");
  if (fc2.shape(0) != c || fc2.shape(1) != s ||
      (fc2.ndim() == 4 && (fc2.shape(2) != 1 || fc2.shape(3) != 1)))
    throw std::invalid_argument("fc2_weight: expected shape (C, S) or (C, S, 1, 1)");
  auto optional_bias = [](const py::handle& obj, int64_t size, const char* argument,
                          FloatArray& keep) -> const float* {
    if (obj.is_none()) return nullptr;
    keep = as_float32(obj, argument);
    if (keep.ndim() != 1 || keep.shape(0) != size)
      throw std::invalid_argument(std::string(argument) + ": wrong shape");
    return keep.data();
  };
  FloatArray b1_keep, b2_keep;
  const float* b1 = optional_bias(fc1_bias_obj, s, "fc1_bias", b1_keep);
  const float* b2 = optional_bias(fc2_bias_obj, c, "fc2_bias", b2_keep);
  const SeShape shape = make_se_shape(n, c, hw, s, parse_activation(activation, "activation"),
                                      parse_activation(gate, "gate"));
  FloatArray output(std::vector<py::ssize_t>(input.shape(), input.shape() + 4));
  {
    py::gil_scoped_release release;
    squeeze_excite(shape, input.data(), fc1.data(), b1, fc2.data(), b2, output.mutable_data(),
                   channels_last, threads);
  }
  return output;
}

// C[m, n] = act(A W^T + b) (+ residual) on (m, k) rows, for the numpy surface (no torch).
FloatArray gemm_numpy(const py::handle& a_obj, const py::handle& weight_obj,
                      const py::handle& bias_obj, const std::string& activation,
                      const py::handle& residual_obj, const py::handle& scale_obj,
                      int64_t scale_rows, int threads) {
  FloatArray a = as_float32(a_obj, "input");
  require_ndim(a, {2}, "input");
  FloatArray weight = as_float32(weight_obj, "weight");
  require_ndim(weight, {2}, "weight");
  const int64_t m = a.shape(0), k = a.shape(1), n = weight.shape(0);
  if (weight.shape(1) != k)
    throw std::invalid_argument("weight: expected shape (n, k) with k = input.shape[1]");
  FloatArray bias;
  const float* bias_data = nullptr;
  if (!bias_obj.is_none()) {
    bias = as_float32(bias_obj, "bias");
    if (bias.ndim() != 1 || bias.shape(0) != n) throw std::invalid_argument("bias: expected shape (n,)");
    bias_data = bias.data();
  }
  FloatArray residual, scale;
  if (!residual_obj.is_none()) {
    residual = as_float32(residual_obj, "residual");
    if (residual.ndim() != 2 || residual.shape(0) != m || residual.shape(1) != n)
      throw std::invalid_argument("residual: expected shape (m, n)");
  }
  if (!scale_obj.is_none()) {
    scale = as_float32(scale_obj, "input_scale");
    if (scale_rows < 1) throw std::invalid_argument("scale_rows: must be >= 1");
    if (scale.ndim() != 2 || scale.shape(1) != k || scale.shape(0) != (m + scale_rows - 1) / scale_rows)
      throw std::invalid_argument("input_scale: expected shape (ceil(m / scale_rows), k)");
  }
  FloatArray packed(packed_gemm_floats(k, n));
  pack_gemm_weights(weight.data(), bias_data, k, n, packed.mutable_data());
  FloatArray output(std::vector<py::ssize_t>{m, n});
  const GemmArgs g{m, k, n, a.data(), k, packed.data(), output.mutable_data(), n,
                   residual_obj.is_none() ? nullptr : residual.data(), n,
                   scale_obj.is_none() ? nullptr : scale.data(), std::max<int64_t>(scale_rows, 1),
                   parse_activation(activation, "activation")};
  check_gemm_args(g);
  {
    py::gil_scoped_release release;
    mnv3ext::gemm(g, threads);
  }
  return output;
}

// Validated once per call signature by mnv3ext.ops, then run on raw addresses.
struct DwConvPlan {
  DwConvShape shape;
  bool channels_last;
};
struct SePlan {
  SeShape shape;
  bool channels_last;
};
struct GemmPlan {
  GemmArgs args;  // pointers filled per call
  bool residual, scale;
};
struct ConvPlan {
  ConvShape shape;
  int64_t strides[4];
};
BlockConfig block_config(const std::vector<int64_t>& v) {
  if (v.size() != 19)
    throw std::invalid_argument("config: expected 19 values (see mnv3ext.ops.block_config), got " +
                                std::to_string(v.size()));
  for (int64_t x : v)
    if (x < -1 || x > (int64_t(1) << 40)) throw std::invalid_argument("config: value out of range");
  auto i32 = [](int64_t x) { return int(std::min<int64_t>(x, 1 << 30)); };
  BlockConfig c{v[0], v[1], v[2], i32(v[3]), i32(v[4]), i32(v[5]), i32(v[6]), i32(v[7]), i32(v[8]),
                i32(v[9]), i32(v[10]), v[11] != 0, Activation(i32(v[12])), Activation(i32(v[13])), v[14],
                Activation(i32(v[15])), Activation(i32(v[16])), v[17] != 0, Activation(i32(v[18]))};
  if (v[11] != 0 && v[11] != 1) throw std::invalid_argument("config: has_expand must be 0 or 1");
  if (v[17] != 0 && v[17] != 1) throw std::invalid_argument("config: has_residual must be 0 or 1");
  check_block_config(c);
  return c;
}

struct PoolPlan {
  int64_t batch, channels, hw;
  bool channels_last;
};
struct SequencePlan {
  std::vector<SequenceStep> steps;
  size_t weights;
};

// A SequencePlan from single-op plans: each step runs what its plan would run alone, reading
// the step before's output (NHWC) instead of its own input.
SequencePlan make_sequence_plan(const py::list& plans) {
  SequencePlan p{{}, 0};
  for (size_t i = 0; i < plans.size(); ++i) {
    const py::handle h = plans[i];
    const std::string where = "plans[" + std::to_string(i) + "]: ";
    if (py::isinstance<ConvPlan>(h)) {
      const ConvPlan& c = h.cast<const ConvPlan&>();
      p.steps.push_back(conv_step(c.shape, c.strides));
    } else if (py::isinstance<BlockShape>(h)) {
      p.steps.push_back(block_step(h.cast<const BlockShape&>()));
    } else if (py::isinstance<GemmPlan>(h)) {
      const GemmPlan& g = h.cast<const GemmPlan&>();
      if (g.residual || g.scale || g.args.lda != g.args.k || g.args.ldc != g.args.n)
        throw std::invalid_argument(where + "a GEMM in a sequence takes no residual or scale, dense rows");
      p.steps.push_back(gemm_step(g.args.m, g.args.k, g.args.n, g.args.activation));
    } else if (py::isinstance<PoolPlan>(h)) {
      const PoolPlan& q = h.cast<const PoolPlan&>();
      p.steps.push_back(pool_step(q.batch, q.channels, q.hw, q.channels_last));
    } else {
      throw py::type_error(where + "expected a ConvPlan, BlockPlan, GemmPlan or PoolPlan, got " +
                           std::string(py::str(py::type::of(h).attr("__name__"))));
    }
    p.weights += p.steps.back().has_weight;
  }
  check_sequence(p.steps);
  return p;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "mnv3ext kernels: fused depthwise conv + activation and fused squeeze-excite";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  py::dict codes;
  for (const auto& [name, value] : activation_names()) codes[py::str(name)] = int(value);
  m.attr("ACTIVATION_CODES") = codes;
  m.attr("CHANNEL_ALIGN") = kChannelAlign;

  m.def("available_isas", &available_isas, "ISAs compiled in and supported by this CPU");
  m.def("best_isa", &best_isa, "The fastest available ISA");
  m.def("isa", [] { return std::string(active_kernels().name); }, "The ISA in use");
  m.def("set_isa", &select_isa, py::arg("name"), "Switch the ISA in use (tests, benchmarks)");
  m.def("packed_dwconv_floats", &packed_dwconv_floats, py::arg("channels"), py::arg("kernel_h"),
        py::arg("kernel_w"));
  m.def("conv_out_size", &conv_out_size);

  // Raw-address surface for mnv3ext.ops: arguments are validated by the caller and again here.
  m.def(
      "pack_dwconv_ptr",
      [](uintptr_t weight, uintptr_t bias, int64_t channels, int kh, int kw, uintptr_t packed) {
        pack_dwconv_weights(address<const float>(weight), address<const float>(bias), channels,
                            kh, kw, address<float>(packed));
      },
      py::call_guard<py::gil_scoped_release>());
  py::class_<DwConvPlan>(m, "DwConvPlan", "A validated depthwise conv shape, run on raw addresses")
      .def(py::init([](int64_t n, int64_t c, int64_t h, int64_t w, int kh, int kw, int sh, int sw,
                       int dh, int dw, int pt, int pl, int pb, int pr, int activation,
                       bool channels_last) {
        return DwConvPlan{make_dwconv_shape(n, c, h, w, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr,
                                            Activation(activation)),
                          channels_last};
      }))
      .def_property_readonly("out_h", [](const DwConvPlan& p) { return p.shape.out_h; })
      .def_property_readonly("out_w", [](const DwConvPlan& p) { return p.shape.out_w; })
      .def(
          "run",
          [](const DwConvPlan& p, uintptr_t input, uintptr_t packed, uintptr_t output,
             int threads) {
            dwconv2d(p.shape, address<const float>(input), address<const float>(packed),
                     address<float>(output), p.channels_last, threads);
          },
          py::call_guard<py::gil_scoped_release>());
  py::class_<SePlan>(m, "SePlan", "A validated squeeze-excite shape, run on raw addresses")
      .def(py::init([](int64_t n, int64_t c, int64_t hw, int64_t s, int activation, int gate,
                       bool channels_last) {
        return SePlan{make_se_shape(n, c, hw, s, Activation(activation), Activation(gate)),
                      channels_last};
      }))
      .def(
          "run",
          [](const SePlan& p, uintptr_t input, uintptr_t fc1_weight, uintptr_t fc1_bias,
             uintptr_t fc2_weight, uintptr_t fc2_bias, uintptr_t output, int threads) {
            squeeze_excite(p.shape, address<const float>(input), address<const float>(fc1_weight),
                           address<const float>(fc1_bias), address<const float>(fc2_weight),
                           address<const float>(fc2_bias), address<float>(output),
                           p.channels_last, threads);
          },
          py::call_guard<py::gil_scoped_release>())
      .def(
          "run_gates",
          [](const SePlan& p, uintptr_t input, uintptr_t fc1_weight, uintptr_t fc1_bias,
             uintptr_t fc2_weight, uintptr_t fc2_bias, uintptr_t gates, int threads) {
            se_gates(p.shape, address<const float>(input), address<const float>(fc1_weight),
                     address<const float>(fc1_bias), address<const float>(fc2_weight),
                     address<const float>(fc2_bias), address<float>(gates), p.channels_last,
                     threads);
          },
          py::call_guard<py::gil_scoped_release>());

  m.attr("GEMM_PANEL") = kGemmPanel;
  m.def("packed_gemm_floats", &packed_gemm_floats, py::arg("k"), py::arg("n"));
  m.def("gemm_tile_name", [] { return std::string(active_kernels().gemm_tile_name); },
        "The main GEMM microkernel of the ISA in use (rows x columns)");
  m.def(
      "pack_gemm_ptr",
      [](uintptr_t weight, uintptr_t bias, int64_t k, int64_t n, uintptr_t packed) {
        if (k < 1 || n < 1) throw std::invalid_argument("weight: sizes must be >= 1");
        pack_gemm_weights(address<const float>(weight), address<const float>(bias), k, n,
                          address<float>(packed));
      },
      py::call_guard<py::gil_scoped_release>());
  py::class_<GemmPlan>(m, "GemmPlan", "A validated GEMM (1x1 conv / linear), run on raw addresses")
      .def(py::init([](int64_t rows, int64_t k, int64_t n, int64_t lda, int64_t ldc, bool residual,
                       int64_t ldr, bool scale, int64_t scale_rows, int activation) {
        GemmPlan p{GemmArgs{rows, k, n, nullptr, lda, nullptr, nullptr, ldc, nullptr, ldr,
                            nullptr, scale_rows, Activation(activation)},
                   residual, scale};
        check_gemm_args(p.args);
        return p;
      }))
      .def(
          "run",
          [](const GemmPlan& p, uintptr_t a, uintptr_t packed, uintptr_t c, uintptr_t residual,
             uintptr_t scale, int threads) {
            GemmArgs g = p.args;
            g.a = address<const float>(a);
            g.packed = address<const float>(packed);
            g.c = address<float>(c);
            g.residual = p.residual ? address<const float>(residual) : nullptr;
            g.scale = p.scale ? address<const float>(scale) : nullptr;
            mnv3ext::gemm(g, threads);
          },
          py::call_guard<py::gil_scoped_release>());
  py::class_<ConvPlan>(m, "ConvPlan", "A validated dense conv (im2col + GEMM), run on raw addresses")
      .def(py::init([](int64_t n, int64_t c, int64_t h, int64_t w, int64_t out_c, int kh, int kw,
                       int sh, int sw, int dh, int dw, int pt, int pl, int pb, int pr,
                       int activation, std::vector<int64_t> strides) {
        if (strides.size() != 4) throw std::invalid_argument("input: expected 4 strides");
        ConvPlan p{make_conv_shape(n, c, h, w, out_c, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr,
                                   Activation(activation)),
                   {strides[0], strides[1], strides[2], strides[3]}};
        return p;
      }))
      .def_property_readonly("out_h", [](const ConvPlan& p) { return p.shape.out_h; })
      .def_property_readonly("out_w", [](const ConvPlan& p) { return p.shape.out_w; })
      .def(
          "run",
          [](const ConvPlan& p, uintptr_t input, uintptr_t packed, uintptr_t output, int threads) {
            conv2d_gemm(p.shape, address<const float>(input), p.strides,
                        address<const float>(packed), address<float>(output), threads);
          },
          py::call_guard<py::gil_scoped_release>());
  py::class_<PoolPlan>(m, "PoolPlan", "A validated global average pool, run on raw addresses")
      .def(py::init([](int64_t n, int64_t c, int64_t hw, bool channels_last) {
        if (n < 0 || c < 1 || hw < 1) throw std::invalid_argument("input: sizes must be N >= 0 and C, H, W >= 1");
        return PoolPlan{n, c, hw, channels_last};
      }))
      .def(
          "run",
          [](const PoolPlan& p, uintptr_t input, uintptr_t output, int threads) {
            global_avg_pool(p.batch, p.channels, p.hw, address<const float>(input),
                            p.channels_last, address<float>(output), threads);
          },
          py::call_guard<py::gil_scoped_release>());

  m.def(
      "block_layout",
      [](const std::vector<int64_t>& config) {
        const BlockLayout l = block_layout(block_config(config));
        py::dict d;
        d["expand"] = l.expand; d["dw"] = l.dw; d["se_fc1"] = l.se_fc1; d["se_b1"] = l.se_b1;
        d["se_fc2"] = l.se_fc2; d["se_b2"] = l.se_b2; d["project"] = l.project; d["total"] = l.total;
        return d;
      },
      py::arg("config"), "Float offsets of an inverted-residual block's packed sections");
  py::class_<BlockShape>(m, "BlockPlan", "A validated inverted-residual block, run on raw addresses")
      .def(py::init([](const std::vector<int64_t>& config, int64_t n, int64_t h, int64_t w) {
        return make_block_shape(block_config(config), n, h, w);
      }))
      .def_property_readonly("out_h", [](const BlockShape& b) { return b.out_h; })
      .def_property_readonly("out_w", [](const BlockShape& b) { return b.out_w; })
      .def(
          "run",
          [](const BlockShape& b, uintptr_t input, uintptr_t packed, uintptr_t output, int threads) {
            inverted_residual(b, address<const float>(input), address<const float>(packed),
                              address<float>(output), threads);
          },
          py::call_guard<py::gil_scoped_release>());

  py::class_<SequencePlan>(m, "SequencePlan",
                           "Single-op plans chained into one call, run on raw addresses")
      .def(py::init(&make_sequence_plan), py::arg("plans"))
      .def_property_readonly("weights", [](const SequencePlan& p) { return p.weights; })
      .def_property_readonly("steps", [](const SequencePlan& p) { return p.steps.size(); })
      .def_property_readonly("out_floats",
                             [](const SequencePlan& p) { return p.steps.back().out_floats; })
      .def(
          "run",
          [](const SequencePlan& p, uintptr_t input, const std::vector<uintptr_t>& weights,
             uintptr_t output, int threads, uintptr_t step_ns) {
            if (weights.size() != p.weights)
              throw std::invalid_argument("weights: expected " + std::to_string(p.weights) +
                                          " addresses, got " + std::to_string(weights.size()));
            std::vector<const float*> w(weights.size());
            for (size_t i = 0; i < w.size(); ++i) w[i] = address<const float>(weights[i]);
            run_sequence(p.steps, address<const float>(input), w.data(), address<float>(output),
                         threads, address<int64_t>(step_ns));
          },
          py::arg("input"), py::arg("weights"), py::arg("output"), py::arg("threads"),
          py::arg("step_ns") = 0, py::call_guard<py::gil_scoped_release>());

  // numpy surface.
  m.def("gemm", &gemm_numpy, py::arg("input"), py::arg("weight"), py::arg("bias") = py::none(),
        py::arg("activation") = "none", py::arg("residual") = py::none(),
        py::arg("input_scale") = py::none(), py::arg("scale_rows") = 1, py::arg("threads") = 1,
        "act(input @ weight.T + bias) (+ residual) on float32 (m, k) rows; input_scale "
        "(ceil(m / scale_rows), k) multiplies input rows [i * scale_rows, (i + 1) * scale_rows) "
        "before the product (the 1x1 convolution's GEMM on NHWC pixels).");
  m.def("pack_dwconv", &pack_dwconv_numpy, py::arg("weight"), py::arg("bias") = py::none(),
        "Pack (C, 1, kh, kw) weights and (C,) bias into the kernels' [bias | taps] layout.");
  m.def("dwconv2d", &dwconv2d_numpy, py::arg("input"), py::arg("weight"),
        py::arg("bias") = py::none(), py::arg("stride") = std::vector<int>{1, 1},
        py::arg("padding") = std::vector<int>{0, 0}, py::arg("dilation") = std::vector<int>{1, 1},
        py::arg("activation") = "none", py::arg("channels_last") = false, py::arg("threads") = 1,
        "Fused depthwise conv + bias + activation on float32 arrays: input (N, C, H, W), or "
        "(N, H, W, C) with channels_last=True; padding 2 or 4 (top, left, bottom, right) values.");
  m.def("squeeze_excite", &squeeze_excite_numpy, py::arg("input"), py::arg("fc1_weight"),
        py::arg("fc1_bias"), py::arg("fc2_weight"), py::arg("fc2_bias"),
        py::arg("activation") = "relu", py::arg("gate") = "hardsigmoid",
        py::arg("channels_last") = false, py::arg("threads") = 1,
        "Fused squeeze-excite on float32 arrays: input (N, C, H, W), or (N, H, W, C) with "
        "channels_last=True.");
}
