// C++ tests of the inverted-residual block executor (csrc/kernels/block): [1x1 expand] ->
// depthwise -> [squeeze-excite] -> 1x1 project (+ input), NHWC, through every ISA this CPU runs
// (select_isa), with 1 and 2 threads (bit-identical), against a float64 reference computed here
// with plain loops from the raw weights. Input, packed weights and output are heap arrays of
// exactly their sizes, so AddressSanitizer catches any access past their ends. Configs cover
// several bands (planes whose band buffers exceed the executor's budget), no expand, SE,
// residual, dilation, stride 2, asymmetric padding, odd channel counts and batch 0; and
// check_block_config / make_block_shape must reject invalid configs.
// Prints `N passed, M failed` last and exits non-zero on any failure.
//
//   block_tests [--quick]      (--quick: skips the largest planes, for slow emulators)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/block/inverted_residual.h"
#include "kernels/dispatch.h"
#include "kernels/driver.h"
#include "kernels/gemm/pointwise.h"

using namespace mnv3ext;

namespace {

int g_passed = 0, g_failed = 0;
constexpr double kEps = 1.0 / (1 << 24);

void record(bool ok, const std::string& what) {
  if (ok) {
    ++g_passed;
    return;
  }
  if (++g_failed <= 40) std::printf("FAIL %s\n", what.c_str());
}

// An exact-size heap buffer: no slack for an over-read to hide in.
struct Buffer {
  float* data = nullptr;
  int64_t size = 0;
  explicit Buffer(int64_t n) : data(n > 0 ? new float[n] : nullptr), size(n) {}
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { delete[] data; }
  float& operator[](int64_t i) { return data[i]; }
};

struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint32_t next() {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return uint32_t(state >> 11);
  }
  float uniform(float lo, float hi) { return lo + (hi - lo) * float(next() % 1000003) / 1000003.0f; }
};

double act(Activation a, double x) {
  switch (a) {
    case Activation::kNone: return x;
    case Activation::kRelu: return x < 0 ? 0 : x;
    case Activation::kRelu6: return x < 0 ? 0 : (x > 6 ? 6 : x);
    case Activation::kHardswish: return x * std::min(std::max(x + 3.0, 0.0), 6.0) / 6.0;
    case Activation::kHardsigmoid: return std::min(std::max(x + 3.0, 0.0), 6.0) / 6.0;
    case Activation::kSigmoid: return 1.0 / (1.0 + std::exp(-x));
  }
  return x;
}

double lip(Activation a) {
  switch (a) {
    case Activation::kHardswish: return 1.5;
    case Activation::kHardsigmoid: return 1.0 / 6.0;
    case Activation::kSigmoid: return 0.25;
    default: return 1.0;
  }
}

struct Case {
  std::string name;
  BlockConfig c;
  int64_t n, h, w;
  bool big;
};

BlockConfig cfg(int64_t cin, int64_t e, int64_t cout, int k, int stride, int dil, std::vector<int> pads,
                bool expand, int64_t se, bool residual, Activation ea = Activation::kHardswish,
                Activation da = Activation::kRelu, Activation pa = Activation::kNone,
                Activation sa = Activation::kRelu, Activation gate = Activation::kHardsigmoid, int kw = 0) {
  BlockConfig c{};
  c.in_c = cin;
  c.exp_c = expand ? e : cin;
  c.out_c = cout;
  c.kernel_h = k;
  c.kernel_w = kw ? kw : k;
  c.stride = stride;
  c.dilation = dil;
  c.pad_top = pads[0];
  c.pad_left = pads[1];
  c.pad_bottom = pads[2];
  c.pad_right = pads[3];
  c.has_expand = expand;
  c.expand_act = ea;
  c.dw_act = da;
  c.se_squeeze = se;
  c.se_act = sa;
  c.se_gate = gate;
  c.has_residual = residual;
  c.project_act = pa;
  return c;
}

struct Weights {
  std::vector<float> ew, eb, dw, db, w1, b1, w2, b2, pw, pb;
};

Weights make_weights(const BlockConfig& c, Rng& rng) {
  Weights w;
  const int64_t E = c.exp_c, S = c.se_squeeze, K = int64_t(c.kernel_h) * c.kernel_w;
  auto fill = [&](std::vector<float>& v, int64_t n, double fan) {
    v.resize(n);
    const float s = float(1.7 / std::sqrt(fan));
    for (auto& x : v) x = rng.uniform(-s, s);
  };
  if (c.has_expand) {
    fill(w.ew, E * c.in_c, double(c.in_c));
    fill(w.eb, E, 4);
  }
  fill(w.dw, E * K, double(K));
  fill(w.db, E, 4);
  if (S) {
    fill(w.w1, S * E, double(E));
    fill(w.b1, S, 4);
    fill(w.w2, E * S, double(S));
    fill(w.b2, E, 1);
  }
  fill(w.pw, c.out_c * E, double(E));
  fill(w.pb, c.out_c, 4);
  return w;
}

// The packed tensor, in a buffer of exactly block_layout(c).total floats.
void pack(const BlockConfig& c, const Weights& w, Buffer& packed) {
  const BlockLayout l = block_layout(c);
  std::fill(packed.data, packed.data + packed.size, 0.0f);
  if (c.has_expand) {
    std::vector<float> tmp(packed_gemm_floats(c.in_c, c.exp_c));
    pack_gemm_weights(w.ew.data(), w.eb.data(), c.in_c, c.exp_c, tmp.data());
    std::copy(tmp.begin(), tmp.end(), packed.data + l.expand);
  }
  std::vector<float> dtmp(packed_dwconv_floats(c.exp_c, c.kernel_h, c.kernel_w));
  pack_dwconv_weights(w.dw.data(), w.db.data(), c.exp_c, c.kernel_h, c.kernel_w, dtmp.data());
  std::copy(dtmp.begin(), dtmp.end(), packed.data + l.dw);
  if (c.se_squeeze) {
    std::copy(w.w1.begin(), w.w1.end(), packed.data + l.se_fc1);
    std::copy(w.b1.begin(), w.b1.end(), packed.data + l.se_b1);
    std::copy(w.w2.begin(), w.w2.end(), packed.data + l.se_fc2);
    std::copy(w.b2.begin(), w.b2.end(), packed.data + l.se_b2);
  }
  std::vector<float> ptmp(packed_gemm_floats(c.exp_c, c.out_c));
  pack_gemm_weights(w.pw.data(), w.pb.data(), c.exp_c, c.out_c, ptmp.data());
  std::copy(ptmp.begin(), ptmp.end(), packed.data + l.project);
}

// float64 reference with a per-element float32 error bound propagated layer by layer (see
// tests/test_block_op.py block_tolerance: 4 (k + 2) eps M L per k-term sum of magnitude M).
void reference(const BlockShape& b, const float* x, const Weights& w, std::vector<double>& out,
               std::vector<double>& tol) {
  const BlockConfig& c = b.config;
  const int64_t H = b.in_h, W = b.in_w, OH = b.out_h, OW = b.out_w, E = c.exp_c, S = c.se_squeeze;
  const int64_t Cin = c.in_c, Cout = c.out_c, K = int64_t(c.kernel_h) * c.kernel_w;
  out.assign(b.batch * OH * OW * Cout, 0.0);
  tol.assign(out.size(), 0.0);
  std::vector<double> v1(H * W * E), e1(H * W * E), v2(OH * OW * E), e2(OH * OW * E);
  for (int64_t n = 0; n < b.batch; ++n) {
    const float* xi = x + n * H * W * Cin;
    for (int64_t p = 0; p < H * W; ++p)
      for (int64_t j = 0; j < E; ++j) {
        if (!c.has_expand) {
          v1[p * E + j] = xi[p * Cin + j];
          e1[p * E + j] = 0;
          continue;
        }
        double s = w.eb[j], m = std::fabs(w.eb[j]);
        for (int64_t i = 0; i < Cin; ++i) {
          s += double(xi[p * Cin + i]) * w.ew[j * Cin + i];
          m += std::fabs(double(xi[p * Cin + i]) * w.ew[j * Cin + i]);
        }
        v1[p * E + j] = act(c.expand_act, s);
        e1[p * E + j] = lip(c.expand_act) * 4 * (Cin + 2) * kEps * m + kEps * std::fabs(v1[p * E + j]);
      }
    for (int64_t oy = 0; oy < OH; ++oy)
      for (int64_t ox = 0; ox < OW; ++ox)
        for (int64_t j = 0; j < E; ++j) {
          double s = w.db[j], m = std::fabs(w.db[j]), pe = 0;
          for (int ky = 0; ky < c.kernel_h; ++ky)
            for (int kx = 0; kx < c.kernel_w; ++kx) {
              const int64_t iy = oy * c.stride - c.pad_top + int64_t(ky) * c.dilation;
              const int64_t ix = ox * c.stride - c.pad_left + int64_t(kx) * c.dilation;
              if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
              const double wt = w.dw[(j * c.kernel_h + ky) * c.kernel_w + kx];
              const int64_t q = (iy * W + ix) * E + j;
              s += v1[q] * wt;
              m += (std::fabs(v1[q]) + e1[q]) * std::fabs(wt);
              pe += e1[q] * std::fabs(wt);
            }
          const int64_t q = (oy * OW + ox) * E + j;
          v2[q] = act(c.dw_act, s);
          e2[q] = lip(c.dw_act) * (4 * (K + 2) * kEps * m + pe) + kEps * std::fabs(v2[q]);
        }
    std::vector<double> gate(E, 1.0), eg(E, 0.0);
    if (S) {
      const int64_t hw = OH * OW;
      std::vector<double> pooled(E, 0), pa(E, 0), pe(E, 0), e0(E);
      for (int64_t p = 0; p < hw; ++p)
        for (int64_t j = 0; j < E; ++j) {
          pooled[j] += v2[p * E + j] / hw;
          pa[j] += std::fabs(v2[p * E + j]) / hw;
          pe[j] += e2[p * E + j] / hw;
        }
      for (int64_t j = 0; j < E; ++j) e0[j] = 4 * (hw + 2) * kEps * (pa[j] + pe[j]) + pe[j];
      std::vector<double> hid(S), a1(S), er1(S);
      for (int64_t s = 0; s < S; ++s) {
        double z = w.b1[s], a = std::fabs(w.b1[s]), pr = 0;
        for (int64_t j = 0; j < E; ++j) {
          z += pooled[j] * w.w1[s * E + j];
          a += (pa[j] + e0[j]) * std::fabs(w.w1[s * E + j]);
          pr += e0[j] * std::fabs(w.w1[s * E + j]);
        }
        hid[s] = act(c.se_act, z);
        a1[s] = a;
        er1[s] = lip(c.se_act) * (4 * (E + 2) * kEps * a + pr);
      }
      for (int64_t j = 0; j < E; ++j) {
        double z = w.b2[j], a = std::fabs(w.b2[j]), pr = 0;
        for (int64_t s = 0; s < S; ++s) {
          z += hid[s] * w.w2[j * S + s];
          a += (a1[s] + er1[s]) * std::fabs(w.w2[j * S + s]);
          pr += er1[s] * std::fabs(w.w2[j * S + s]);
        }
        gate[j] = act(c.se_gate, z);
        eg[j] = lip(c.se_gate) * (4 * (S + 2) * kEps * a + pr) + 8 * kEps;
      }
    }
    for (int64_t p = 0; p < OH * OW; ++p)
      for (int64_t o = 0; o < Cout; ++o) {
        double s = w.pb[o], m = std::fabs(w.pb[o]), pr = 0;
        for (int64_t j = 0; j < E; ++j) {
          const double y = v2[p * E + j] * gate[j];
          const double ey = (std::fabs(v2[p * E + j]) + e2[p * E + j]) * eg[j] + e2[p * E + j] * std::fabs(gate[j]) +
                            2 * kEps * std::fabs(y);
          const double wt = w.pw[o * E + j];
          s += y * wt;
          m += (std::fabs(y) + ey) * std::fabs(wt);
          pr += ey * std::fabs(wt);
        }
        double r = act(c.project_act, s);
        double t = lip(c.project_act) * (4 * (E + 2) * kEps * m + pr);
        if (c.has_residual) {
          const double xv = xi[p * Cin + o];
          r += xv;
          t += 4 * kEps * (std::fabs(r) + std::fabs(xv));
        }
        const int64_t q = (n * OH * OW + p) * Cout + o;
        out[q] = r;
        tol[q] = t + 4 * kEps * std::fabs(r) + 1e-30;
      }
  }
}

// The executor's band budget, as csrc/kernels/block/inverted_residual.cpp sizes it (a copy, to
// print which cases run in several bands; the cases are chosen so that some do).
int64_t bands(const BlockShape& b) {
  const BlockConfig& c = b.config;
  auto bytes = [&](int64_t rows) {
    const int64_t in_rows = std::min<int64_t>(b.in_h, (rows - 1) * c.stride + int64_t(c.kernel_h - 1) * c.dilation + 1);
    return (c.has_expand ? in_rows * b.in_w * c.exp_c * 4 : 0) + (c.se_squeeze ? 0 : rows * b.out_w * c.exp_c * 4);
  };
  if (bytes(b.out_h) <= 768 * 1024) return 1;
  int64_t rows = 1;
  while (rows < b.out_h && bytes(rows + 1) <= 384 * 1024) ++rows;
  return (b.out_h + rows - 1) / rows;
}

void run_case(const Case& t, const std::vector<std::string>& isas, uint64_t seed) {
  Rng rng(seed);
  const BlockShape b = make_block_shape(t.c, t.n, t.h, t.w);
  const Weights w = make_weights(t.c, rng);
  Buffer packed(block_layout(t.c).total);
  pack(t.c, w, packed);
  Buffer x(t.n * t.h * t.w * t.c.in_c);
  for (int64_t i = 0; i < x.size; ++i) x[i] = rng.uniform(-2.0f, 2.0f);
  std::vector<float> x_copy(x.data, x.data + x.size), p_copy(packed.data, packed.data + packed.size);
  std::vector<double> ref, tol;
  reference(b, x.data, w, ref, tol);
  const int64_t out_size = t.n * b.out_h * b.out_w * t.c.out_c;
  for (const std::string& isa : isas) {
    select_isa(isa);
    Buffer out1(out_size), out2(out_size);
    inverted_residual(b, x.data, packed.data, out1.data, 1);
    inverted_residual(b, x.data, packed.data, out2.data, 2);
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < out_size; ++i) {
      const double d = std::fabs(double(out1[i]) - ref[i]);
      if (!(d <= tol[i])) {
        if (first < 0) first = i;
        ++bad;
      }
    }
    char msg[400];
    if (bad) {
      std::snprintf(msg, sizeof msg, "%s [%s]: %lld of %lld outside tolerance; first %lld: got %.9g ref %.9g tol %.3g",
                    t.name.c_str(), isa.c_str(), (long long)bad, (long long)out_size, (long long)first,
                    double(out1[first]), ref[first], tol[first]);
    } else {
      std::snprintf(msg, sizeof msg, "%s [%s]", t.name.c_str(), isa.c_str());
    }
    record(bad == 0, msg);
    record(out_size == 0 || std::memcmp(out1.data, out2.data, size_t(out_size) * sizeof(float)) == 0,
           t.name + " [" + isa + "]: 1 and 2 threads differ");
    record(std::equal(x_copy.begin(), x_copy.end(), x.data) && std::equal(p_copy.begin(), p_copy.end(), packed.data),
           t.name + " [" + isa + "]: an input was written");
  }
  std::printf("  %-28s N=%lld %lldx%lld -> %lldx%lld, %lld band(s)\n", t.name.c_str(), (long long)t.n,
              (long long)t.h, (long long)t.w, (long long)b.out_h, (long long)b.out_w, (long long)bands(b));
}

std::vector<Case> cases(bool quick) {
  using A = Activation;
  std::vector<Case> v;
  const std::vector<int> same3{1, 1, 1, 1}, same5{2, 2, 2, 2};
  v.push_back({"basic", cfg(16, 64, 24, 3, 1, 1, same3, true, 0, false), 2, 9, 11, false});
  v.push_back({"edges-9-33-17", cfg(9, 33, 17, 3, 1, 1, same3, true, 0, false), 1, 7, 7, false});
  v.push_back({"edges-1-6-1", cfg(1, 6, 1, 3, 1, 1, same3, true, 0, false, A::kRelu6), 2, 5, 4, false});
  v.push_back({"noexpand", cfg(17, 17, 8, 3, 1, 1, same3, false, 0, false), 2, 8, 9, false});
  v.push_back({"se", cfg(15, 45, 15, 5, 1, 1, same5, true, 11, true, A::kRelu, A::kHardswish, A::kNone, A::kRelu,
                         A::kHardsigmoid), 2, 13, 17, false});
  v.push_back({"se-sigmoid-s2", cfg(8, 48, 16, 5, 2, 1, {1, 2, 2, 1}, true, 12, false, A::kHardswish, A::kRelu6,
                                    A::kRelu, A::kHardswish, A::kSigmoid), 3, 13, 12, false});
  v.push_back({"residual", cfg(24, 72, 24, 3, 1, 1, same3, true, 0, true), 2, 10, 10, false});
  v.push_back({"dilation2", cfg(16, 48, 16, 3, 1, 2, {2, 2, 2, 2}, true, 0, true), 1, 11, 9, false});
  v.push_back({"dilation3-k5-asym", cfg(7, 21, 9, 5, 1, 3, {5, 7, 7, 5}, true, 0, false), 1, 12, 13, false});
  v.push_back({"stride2-k7", cfg(16, 32, 33, 7, 2, 1, {3, 2, 3, 4}, true, 8, false), 2, 15, 14, false});
  v.push_back({"k3x5", cfg(8, 16, 8, 3, 1, 1, {1, 2, 1, 2}, true, 0, true, A::kHardswish, A::kRelu, A::kNone,
                           A::kRelu, A::kHardsigmoid, 5), 1, 6, 7, false});
  // SE blocks of MobileNetV3-Large's 14x14 and 7x7 stages: one band, enough work for 2 threads.
  // With 30 channel tiles the expanded image is computed first (pixels split) and the depthwise
  // rows read it; with 32 or more (the next three) each thread runs its channel tiles through
  // expand, depthwise and the SE sums (520: a partial last tile).
  v.push_back({"se-whole-image-14", cfg(80, 480, 112, 3, 1, 1, same3, true, 120, false), 1, 14, 14, false});
  v.push_back({"se-whole-image-520", cfg(40, 520, 48, 3, 1, 1, same3, true, 32, false), 2, 7, 7, false});
  v.push_back({"se-whole-image-s2", cfg(112, 672, 160, 5, 2, 1, same5, true, 168, false), 1, 14, 14, false});
  v.push_back({"se-whole-image-7-res", cfg(160, 960, 160, 5, 1, 1, same5, true, 240, true), 2, 7, 7, false});
  v.push_back({"plane1x1", cfg(16, 48, 16, 3, 1, 1, same3, true, 12, true), 2, 1, 1, false});
  v.push_back({"plane2x3-s2", cfg(9, 18, 9, 5, 2, 1, same5, false, 4, false), 1, 2, 3, false});
  v.push_back({"pad-only-rows", cfg(8, 16, 8, 1, 1, 1, {3, 0, 2, 1}, true, 0, false), 1, 2, 3, false});
  v.push_back({"batch0", cfg(8, 16, 8, 3, 1, 1, same3, true, 4, true), 0, 5, 5, false});
  // Several bands.
  v.push_back({"bands-noSE", cfg(16, 96, 24, 3, 1, 1, same3, true, 0, false), 1, 64, 64, true});
  v.push_back({"bands-residual-s1", cfg(24, 72, 24, 3, 1, 1, same3, true, 0, true), 1, 56, 56, true});
  v.push_back({"bands-s2-k5", cfg(24, 72, 40, 5, 2, 1, same5, true, 0, false), 1, 64, 60, true});
  v.push_back({"bands-SE", cfg(24, 72, 24, 5, 1, 1, same5, true, 24, true), 1, 56, 56, true});
  v.push_back({"bands-dil2", cfg(16, 80, 16, 3, 1, 2, {2, 2, 2, 2}, true, 0, true), 1, 50, 50, true});
  v.push_back({"bands-noexpand", cfg(64, 64, 16, 3, 1, 1, same3, false, 0, false), 1, 80, 80, true});
  v.push_back({"bands-noexpand-s2", cfg(64, 64, 16, 3, 2, 1, {0, 0, 1, 1}, false, 0, false), 1, 150, 140, true});
  if (quick) v.erase(std::remove_if(v.begin(), v.end(), [](const Case& c) { return c.big && c.name != "bands-SE"; }), v.end());
  return v;
}

void check_rejections() {
  using A = Activation;
  const std::vector<int> same3{1, 1, 1, 1};
  struct Bad {
    const char* what;
    BlockConfig c;
  };
  BlockConfig k8 = cfg(8, 16, 8, 3, 1, 1, same3, true, 0, false);
  k8.kernel_h = 8;
  BlockConfig neg = cfg(8, 16, 8, 3, 1, 1, same3, true, 0, false);
  neg.pad_left = -1;
  BlockConfig noexp = cfg(8, 16, 8, 3, 1, 1, same3, true, 0, false);
  noexp.has_expand = false;
  BlockConfig dwsig = cfg(8, 16, 8, 3, 1, 1, same3, true, 0, false, A::kRelu, A::kSigmoid);
  BlockConfig gate = cfg(8, 16, 8, 3, 1, 1, same3, true, 4, false, A::kRelu, A::kRelu, A::kNone, A::kRelu, A::kRelu);
  const Bad bad[] = {
      {"kernel 8", k8},
      {"negative padding", neg},
      {"no expand with exp != in", noexp},
      {"residual stride 2", cfg(8, 16, 8, 3, 2, 1, same3, true, 0, true)},
      {"residual in != out", cfg(8, 16, 9, 3, 1, 1, same3, true, 0, true)},
      {"zero channels", cfg(0, 16, 8, 3, 1, 1, same3, true, 0, false)},
      {"dw sigmoid", dwsig},
      {"gate relu", gate},
  };
  for (const Bad& b : bad) {
    bool threw = false;
    try {
      check_block_config(b.c);
    } catch (const std::invalid_argument& e) {
      threw = std::string(e.what()).rfind("config", 0) == 0;
    }
    record(threw, std::string("check_block_config accepts ") + b.what);
  }
  bool threw = false;
  try {  // a residual whose output size differs (padding 0)
    make_block_shape(cfg(8, 16, 8, 3, 1, 1, {0, 0, 0, 0}, true, 0, true), 1, 5, 5);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  record(threw, "make_block_shape accepts a residual that changes the size");
  threw = false;
  try {
    make_block_shape(cfg(8, 16, 8, 7, 1, 1, {0, 0, 0, 0}, true, 0, false), 1, 5, 5);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  record(threw, "make_block_shape accepts a kernel larger than the padded input");
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  const std::vector<std::string> isas = available_isas();
  std::printf("ISAs:");
  for (const auto& isa : isas) std::printf(" %s", isa.c_str());
  std::printf("%s\n", quick ? " (quick)" : "");
  uint64_t seed = 1;
  try {
    check_rejections();
    const std::vector<Case> cs = cases(quick);
    int multi = 0;
    for (const Case& c : cs) {
      run_case(c, isas, seed++);
      multi += bands(make_block_shape(c.c, c.n, c.h, c.w)) > 1;
    }
    record(multi >= (quick ? 1 : 5), "too few cases run in several bands");
    std::printf("inverted_residual: %zu cases, %d in several bands\n", cs.size(), multi);
  } catch (const std::exception& e) {
    record(false, std::string("exception: ") + e.what());
  }
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
