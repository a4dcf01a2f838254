// C++ tests of the GEMM kernel family (csrc/kernels/gemm): the microkernels through every ISA
// this CPU runs (select_isa), driven through the table's gemm_tiles (whole and partial row /
// panel ranges) and the public gemm(); the dense convolution conv2d_gemm (im2col + GEMM, any
// input strides); global_avg_pool (NCHW and NHWC). Every buffer handed to the kernels is a heap
// array of exactly the size the arguments describe (the last row of a strided matrix ends at its
// last element, not at the next row stride), so AddressSanitizer catches any access past its end;
// the gaps between strided rows hold NaN (a read of them shows in the result) and the output's
// gaps a sentinel that must survive. Results are compared with float64 references computed here,
// within a float32 error bound derived per element from the magnitudes summed.
// Prints `N passed, M failed` last and exits non-zero on any failure.
//
//   gemm_tests [--quick]      (--quick: fewer shapes, for slow emulators)
#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/dispatch.h"
#include "kernels/gemm/pointwise.h"

using namespace mnv3ext;

namespace {

int g_passed = 0, g_failed = 0;
constexpr int kMaxReportedFailures = 100000;
constexpr double kEps = 1.0 / (1 << 24);  // float32 unit roundoff
const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();
constexpr float kSentinel = -12345.5f;

void record(bool ok, const std::string& what) {
  if (ok) {
    ++g_passed;
    return;
  }
  if (++g_failed <= kMaxReportedFailures) std::printf("FAIL %s\n", what.c_str());
}

// Bit for bit equal, or both NaN: which NaN an operation on two NaNs returns follows its operand
// order, which the compiler may swap in a commutative add (IEEE 754 leaves the payload open).
bool same_values(const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (std::memcmp(a + i, b + i, sizeof(float)) != 0 && !(std::isnan(a[i]) && std::isnan(b[i]))) return false;
  return true;
}

// An exact-size heap buffer: no slack for an over-read to hide in.
struct Buffer {
  float* data = nullptr;
  int64_t size = 0;
  explicit Buffer(int64_t n) : data(new float[n > 0 ? n : 1]), size(n) {}
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { delete[] data; }
  float& operator[](int64_t i) { return data[i]; }
  float operator[](int64_t i) const { return data[i]; }
  void fill(float v) { std::fill(data, data + size, v); }
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
  int64_t below(int64_t n) { return int64_t(next() % uint32_t(n)); }
};

const Activation kActivations[] = {Activation::kNone, Activation::kRelu, Activation::kRelu6,
                                   Activation::kHardswish};

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::kNone: return "none";
    case Activation::kRelu: return "relu";
    case Activation::kRelu6: return "relu6";
    case Activation::kHardswish: return "hardswish";
    default: return "?";
  }
}

// float64 activations with PyTorch's definitions (NaN propagates, hardswish divides by 6).
double ref_activation(Activation a, double x) {
  switch (a) {
    case Activation::kNone: return x;
    case Activation::kRelu: return x < 0 ? 0 : x;
    case Activation::kRelu6: return x < 0 ? 0 : (x > 6 ? 6 : x);
    case Activation::kHardswish:
      return std::isnan(x) ? x : x * std::min(std::max(x + 3.0, 0.0), 6.0) / 6.0;
    default: return x;
  }
}

double lipschitz(Activation a) { return a == Activation::kHardswish ? 1.5 : 1.0; }

// got vs a float64 reference: NaN where the reference is NaN, the same infinity, else within
// 4 (terms + 2) eps |summed magnitudes| L + 4 eps |ref| (+ a denormal floor). The bound holds
// for float32 accumulation in any order, with or without FMA.
bool close(float got, double ref, double magnitude, int64_t terms, double lip) {
  if (std::isnan(ref)) return std::isnan(got);
  if (std::isinf(ref)) return double(got) == ref;
  if (!std::isfinite(got)) return false;
  const double tol = 4.0 * double(terms + 2) * kEps * magnitude * lip + 4.0 * kEps * std::fabs(ref) + 1e-37;
  return std::fabs(double(got) - ref) <= tol;
}

std::string fmt(const char* format, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* format, ...) {
  char text[512];
  va_list args;
  va_start(args, format);
  std::vsnprintf(text, sizeof text, format, args);
  va_end(args);
  return text;
}

// ------------------------------------------------------------------------------------------
// GEMM: C = act(A' W^T + b) (+ R), A' = A * scale (per scale_rows rows)

struct GemmCase {
  int64_t m, k, n;
  int64_t lda, ldc, ldr;  // >= k, n, n
  bool residual, scale, bias;
  int64_t scale_rows;
  Activation act;
  int special;  // 0 random; 1 NaN / +-Inf in A; 2 activation edges (pre-activations around -3..6)
  bool offsets = false;  // A[i, kk] = a[i * lda + a_offsets[kk]] (taps read in place; no scale)
  bool scale_weights = false;  // the scale applied to a copy of the weights instead of A's rows
};

std::string describe(const GemmCase& g) {
  return fmt("gemm m=%lld k=%lld n=%lld lda=%lld ldc=%lld ldr=%lld residual=%d scale=%d(rows %lld) "
             "bias=%d act=%s special=%d offsets=%d scale_weights=%d",
             (long long)g.m, (long long)g.k, (long long)g.n, (long long)g.lda, (long long)g.ldc,
             (long long)g.ldr, g.residual, g.scale, (long long)g.scale_rows, g.bias,
             activation_name(g.act), g.special, g.offsets, g.scale_weights);
}

// The offsets of the a_offsets variant: k values scattered (reversed, every third float) over a
// row span of 3k - 2 floats; lda is then at least that span.
int64_t a_offset(const GemmCase& g, int64_t kk) { return g.offsets ? 3 * (g.k - 1 - kk) : kk; }
int64_t row_span(const GemmCase& g) { return g.offsets ? 3 * (g.k - 1) + 1 : g.k; }

// Exact extent of a (rows x cols) matrix with row stride ld: the last row ends at its last column.
int64_t extent(int64_t rows, int64_t cols, int64_t ld) { return rows == 0 ? 0 : (rows - 1) * ld + cols; }

struct GemmData {
  Buffer a, weight, bias, packed, residual, scale;
  std::vector<int64_t> offsets;
  std::vector<double> ref, magnitude;
  explicit GemmData(const GemmCase& g)
      : a(extent(g.m, row_span(g), g.lda)), weight(g.n * g.k), bias(g.bias ? g.n : 0),
        packed(packed_gemm_floats(g.k, g.n)), residual(g.residual ? extent(g.m, g.n, g.ldr) : 0),
        scale(g.scale ? ((g.m - 1) / g.scale_rows + 1) * g.k : 0) {}
};

void fill_gemm(const GemmCase& g, GemmData& d, uint64_t seed) {
  Rng rng(seed);
  d.a.fill(kNaN);  // row gaps (lda > k): a read of one poisons the result
  const float range = g.special == 2 ? 9.0f / std::sqrt(float(g.k)) : 1.0f;
  for (int64_t kk = 0; kk < g.k; ++kk) d.offsets.push_back(a_offset(g, kk));
  for (int64_t i = 0; i < g.m; ++i)
    for (int64_t kk = 0; kk < g.k; ++kk) d.a[i * g.lda + a_offset(g, kk)] = rng.uniform(-range, range);
  if (g.special == 1 && g.m > 0) {  // a NaN, a +Inf and a -Inf at random positions
    d.a[rng.below(g.m) * g.lda + a_offset(g, rng.below(g.k))] = kNaN;
    d.a[rng.below(g.m) * g.lda + a_offset(g, rng.below(g.k))] = kInf;
    d.a[rng.below(g.m) * g.lda + a_offset(g, rng.below(g.k))] = -kInf;
  }
  for (int64_t i = 0; i < d.weight.size; ++i) d.weight[i] = rng.uniform(-1.0f, 1.0f);
  for (int64_t i = 0; i < d.bias.size; ++i) d.bias[i] = rng.uniform(-2.0f, 2.0f);
  d.residual.fill(kNaN);
  for (int64_t i = 0; i < g.m && g.residual; ++i)
    for (int64_t j = 0; j < g.n; ++j) d.residual[i * g.ldr + j] = rng.uniform(-3.0f, 3.0f);
  for (int64_t i = 0; i < d.scale.size; ++i) d.scale[i] = rng.uniform(0.0f, 2.0f);
  pack_gemm_weights(d.weight.data, g.bias ? d.bias.data : nullptr, g.k, g.n, d.packed.data);

  d.ref.assign(g.m * g.n, 0.0);
  d.magnitude.assign(g.m * g.n, 0.0);
  for (int64_t i = 0; i < g.m; ++i)
    for (int64_t j = 0; j < g.n; ++j) {
      double acc = g.bias ? d.bias[j] : 0.0, mag = std::fabs(acc);
      for (int64_t kk = 0; kk < g.k; ++kk) {
        double x = d.a[i * g.lda + a_offset(g, kk)];
        if (g.scale) x *= double(d.scale[(i / g.scale_rows) * g.k + kk]);
        const double term = x * double(d.weight[j * g.k + kk]);
        acc += term;
        if (std::isfinite(term)) mag += std::fabs(term);
      }
      double y = ref_activation(g.act, acc);
      if (g.residual) y += double(d.residual[i * g.ldr + j]);
      d.ref[i * g.n + j] = y;
      d.magnitude[i * g.n + j] = mag;
    }
}

GemmArgs make_args(const GemmCase& g, const GemmData& d, float* c) {
  return GemmArgs{g.m, g.k, g.n, d.a.data, g.lda, d.packed.data, c, g.ldc,
                  g.residual ? d.residual.data : nullptr, g.ldr, g.scale ? d.scale.data : nullptr,
                  g.scale_rows, g.act, g.offsets ? d.offsets.data() : nullptr, g.scale && g.scale_weights};
}

// Checks rows [r0, r1) x columns [c0, c1) of c against the reference, and that every other
// element of c (row gaps, rows and columns outside the range) still holds the sentinel.
void check_gemm_output(const GemmCase& g, const GemmData& d, const Buffer& c, int64_t r0, int64_t r1,
                       int64_t c0, int64_t c1, const std::string& what) {
  int bad = 0, clobbered = 0;
  std::string first;
  for (int64_t i = 0; i < g.m; ++i)
    for (int64_t j = 0; j < g.ldc && i * g.ldc + j < c.size; ++j) {
      const float got = c[i * g.ldc + j];
      const bool inside = i >= r0 && i < r1 && j >= c0 && j < c1;
      if (!inside) {
        if (std::memcmp(&got, &kSentinel, sizeof got) != 0 && ++clobbered == 1)
          first = fmt(" wrote outside its range at row %lld col %lld", (long long)i, (long long)j);
        continue;
      }
      if (!close(got, d.ref[i * g.n + j], d.magnitude[i * g.n + j], g.k + 1, lipschitz(g.act)) &&
          ++bad == 1)
        first = fmt(" row %lld col %lld: got %.9g want %.9g", (long long)i, (long long)j, double(got),
                    d.ref[i * g.n + j]);
    }
  record(bad == 0 && clobbered == 0,
         what + fmt(" (%d wrong, %d clobbered)", bad, clobbered) + first);
}

void run_gemm_case(const GemmCase& g, const std::vector<std::string>& isas, uint64_t seed) {
  GemmData d(g);
  fill_gemm(g, d, seed);
  const int64_t c_size = extent(g.m, g.n, g.ldc), panels = gemm_panels(g.n);
  for (const std::string& isa : isas) {
    select_isa(isa);
    const std::string what = isa + " " + describe(g);
    Buffer c(c_size);
    c.fill(kSentinel);
    check_gemm_args(make_args(g, d, c.data));
    active_kernels().gemm_tiles(make_args(g, d, c.data), 0, g.m, 0, panels);
    check_gemm_output(g, d, c, 0, g.m, 0, g.n, what + " gemm_tiles(all)");
    std::vector<float> whole(c.data, c.data + c.size);

    // A sub-range of rows and panels (what a thread of the row or panel split runs): the same
    // values bit for bit, nothing written outside it.
    if (g.m > 1 || panels > 1) {
      const int64_t r0 = g.m / 3, r1 = g.m - g.m / 4, p0 = panels / 2, p1 = panels;
      Buffer part(c_size);
      part.fill(kSentinel);
      active_kernels().gemm_tiles(make_args(g, d, part.data), r0, r1, p0, p1);
      check_gemm_output(g, d, part, r0, r1, p0 * kGemmPanel, std::min(g.n, p1 * kGemmPanel),
                        what + fmt(" gemm_tiles(rows %lld..%lld, panels %lld..%lld)", (long long)r0,
                                   (long long)r1, (long long)p0, (long long)p1));
      bool same = true;
      for (int64_t i = r0; i < r1; ++i)
        for (int64_t j = p0 * kGemmPanel; j < std::min(g.n, p1 * kGemmPanel); ++j)
          same &= same_values(&part[i * g.ldc + j], &whole[i * g.ldc + j], 1);
      record(same, what + " partial range differs from the whole call bit for bit");
    }

    // The public entry point, on 1 and 3 threads: bit-identical to the tiles.
    for (int threads : {1, 3}) {
      Buffer out(c_size);
      out.fill(kSentinel);
      gemm(make_args(g, d, out.data), threads);
      record(same_values(out.data, whole.data(), c_size),
             what + fmt(" gemm(threads=%d) differs from gemm_tiles", threads));
    }
  }
}

std::vector<GemmCase> gemm_cases(bool quick) {
  std::vector<int64_t> ms, ks, ns = {1, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 39, 40, 41, 48, 72, 80};  // <= 24, 33-40: narrow tiles; 80: pairs + the odd group
  for (int64_t m = 1; m <= 25; ++m) ms.push_back(m);
  for (int64_t m : {35, 36, 37, 47, 48, 49}) ms.push_back(m);
  for (int64_t k = 1; k <= 20; ++k) ks.push_back(k);
  ks.push_back(37);
  if (quick) {
    ms = {1, 4, 5, 6, 7, 11, 12, 13, 23, 24, 25, 49};
    ks = {1, 2, 7, 8, 16, 17, 37};
  }
  std::vector<GemmCase> cases;
  uint64_t h = 0;
  for (int64_t m : ms)
    for (int64_t n : ns)
      for (int64_t k : ks) {
        h = h * 6364136223846793005ull + 1442695040888963407ull;
        const uint32_t bits = uint32_t(h >> 33);
        GemmCase g{};
        g.m = m, g.k = k, g.n = n;
        g.lda = k + ((bits & 7) == 0 ? 3 : 0);
        g.ldc = n + ((bits >> 3 & 7) == 0 ? 5 : 0);
        g.ldr = n + ((bits >> 6 & 3) == 0 ? 2 : 0);
        g.residual = bits >> 8 & 1;
        g.scale = bits >> 9 & 1;
        g.bias = (bits >> 10 & 3) != 0;
        const int64_t row_choices[] = {1, 2, 3, 5, 7, m};
        g.scale_rows = row_choices[(bits >> 12) % 6];
        g.act = kActivations[(bits >> 15) & 3];
        g.special = (bits >> 17) % 8 == 0 ? 1 : ((bits >> 17) % 8 == 1 ? 2 : 0);
        g.offsets = !g.scale && (bits >> 20) % 4 == 0;
        g.scale_weights = g.scale && (bits >> 22) % 2 == 0;
        if (g.offsets) g.lda = std::max(g.lda, row_span(g));
        cases.push_back(g);
      }
  // Every activation with and without residual and scale on a few shapes across tile edges.
  for (int64_t m : {5, 12, 13, 25})
    for (int64_t n : {17, 33})
      for (Activation act : kActivations)
        for (int flags = 0; flags < 4; ++flags)
          cases.push_back(GemmCase{m, 9, n, 9, n, n, bool(flags & 1), bool(flags & 2), true,
                                   m > 4 ? 4 : 1, act, 2});
  // Narrow outputs at the largest k of the k-pair tiles and just past it (the main tiles).
  for (int64_t n : {8, 16, 24, 40})
    for (int64_t k : {255, 256, 257})
      cases.push_back(GemmCase{13, k, n, k, n, n, true, k % 2 == 1, true, 5, Activation::kHardswish, n == 16 ? 1 : 0});
  // Large enough for gemm() to split rows (many rows) and panels (few rows, many columns).
  if (!quick) {
    cases.push_back(GemmCase{1000, 40, 72, 40, 72, 72, true, true, true, 49, Activation::kHardswish, 0});
    cases.push_back(GemmCase{7, 300, 1000, 300, 1000, 1000, false, false, true, 1, Activation::kRelu, 0});
  }
  return cases;
}

// ------------------------------------------------------------------------------------------
// Dense convolution (im2col + GEMM), any input strides

struct ConvCase {
  int64_t n, c, h, w, oc;
  int kh, kw, sh, sw, dh, dw, pt, pl, pb, pr;
  Activation act;
  int layout;  // 0 NCHW, 1 NHWC, 2 NCHW with padded rows and planes, 3 CHWN-like permutation
  bool special = false;  // NaN and +-Inf at a few input elements
};

std::string describe(const ConvCase& k) {
  return fmt("conv N=%lld C=%lld H=%lld W=%lld OC=%lld k=%dx%d s=%d,%d d=%d,%d pad=%d,%d,%d,%d act=%s layout=%d%s",
             (long long)k.n, (long long)k.c, (long long)k.h, (long long)k.w, (long long)k.oc, k.kh,
             k.kw, k.sh, k.sw, k.dh, k.dw, k.pt, k.pl, k.pb, k.pr, activation_name(k.act), k.layout, k.special ? " NaN/Inf" : "");
}

void conv_strides(const ConvCase& k, int64_t s[4]) {
  const int64_t n = k.n, c = k.c, h = k.h, w = k.w;
  switch (k.layout) {
    case 0: s[3] = 1, s[2] = w, s[1] = h * w, s[0] = c * h * w; break;
    case 1: s[1] = 1, s[3] = c, s[2] = w * c, s[0] = h * w * c; break;
    case 2: s[3] = 2, s[2] = 2 * w + 3, s[1] = (2 * w + 3) * h + 5, s[0] = s[1] * c + 7; break;
    default: s[0] = 1, s[3] = n, s[2] = w * n, s[1] = h * w * n; break;
  }
}

void run_conv_case(const ConvCase& k, const std::vector<std::string>& isas, uint64_t seed) {
  const ConvShape s = make_conv_shape(k.n, k.c, k.h, k.w, k.oc, k.kh, k.kw, k.sh, k.sw, k.dh, k.dw,
                                      k.pt, k.pl, k.pb, k.pr, k.act);
  int64_t st[4];
  conv_strides(k, st);
  const int64_t sizes[4] = {k.n, k.c, k.h, k.w};
  int64_t in_size = 1;  // the largest offset + 1: exact
  for (int d = 0; d < 4; ++d) in_size += (sizes[d] - 1) * st[d];
  if (k.n == 0) in_size = 0;
  const int64_t K = k.c * k.kh * k.kw, out_size = k.n * s.out_h * s.out_w * k.oc;
  Rng rng(seed);
  Buffer input(in_size), weight(k.oc * K), bias(k.oc), packed(packed_gemm_floats(K, k.oc));
  input.fill(kNaN);  // elements outside the tensor (stride gaps) poison any result reading them
  auto at = [&](int64_t n, int64_t c, int64_t y, int64_t x) {
    return n * st[0] + c * st[1] + y * st[2] + x * st[3];
  };
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t c = 0; c < k.c; ++c)
      for (int64_t y = 0; y < k.h; ++y)
        for (int64_t x = 0; x < k.w; ++x) input[at(n, c, y, x)] = rng.uniform(-2.0f, 2.0f);
  if (k.special && k.n > 0) {
    const float values[] = {kNaN, kInf, -kInf};
    for (float v : values) input[at(rng.below(k.n), rng.below(k.c), rng.below(k.h), rng.below(k.w))] = v;
  }
  for (int64_t i = 0; i < weight.size; ++i) weight[i] = rng.uniform(-1.0f, 1.0f) / std::sqrt(float(K));
  for (int64_t i = 0; i < bias.size; ++i) bias[i] = rng.uniform(-1.0f, 1.0f);
  {  // packed in (out_c, kh, kw, in_c) order: NHWC taps, k = (ky * kw + kx) * in_c + c
    Buffer taps(k.oc * K);
    for (int64_t o = 0; o < k.oc; ++o)
      for (int64_t c = 0; c < k.c; ++c)
        for (int ky = 0; ky < k.kh; ++ky)
          for (int kx = 0; kx < k.kw; ++kx)
            taps[o * K + (int64_t(ky) * k.kw + kx) * k.c + c] = weight[((o * k.c + c) * k.kh + ky) * k.kw + kx];
    pack_gemm_weights(taps.data, bias.data, K, k.oc, packed.data);
  }

  std::vector<double> ref(out_size), mag(out_size);
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t oy = 0; oy < s.out_h; ++oy)
      for (int64_t ox = 0; ox < s.out_w; ++ox)
        for (int64_t o = 0; o < k.oc; ++o) {
          double acc = bias[o], m = std::fabs(acc);
          for (int64_t c = 0; c < k.c; ++c)
            for (int ky = 0; ky < k.kh; ++ky)
              for (int kx = 0; kx < k.kw; ++kx) {
                const int64_t iy = oy * k.sh - k.pt + int64_t(ky) * k.dh;
                const int64_t ix = ox * k.sw - k.pl + int64_t(kx) * k.dw;
                if (iy < 0 || iy >= k.h || ix < 0 || ix >= k.w) continue;
                const double t = double(input[at(n, c, iy, ix)]) *
                                 double(weight[((o * k.c + c) * k.kh + ky) * k.kw + kx]);
                acc += t;
                m += std::fabs(t);
              }
          const int64_t i = ((n * s.out_h + oy) * s.out_w + ox) * k.oc + o;
          ref[i] = ref_activation(k.act, acc);
          mag[i] = m;
        }

  for (const std::string& isa : isas) {
    select_isa(isa);
    std::vector<float> first;
    for (int threads : {1, 2}) {
      Buffer out(out_size);
      out.fill(kSentinel);
      conv2d_gemm(s, input.data, st, packed.data, out.data, threads);
      int bad = 0;
      std::string where;
      for (int64_t i = 0; i < out_size; ++i)
        if (!close(out[i], ref[i], mag[i], K + 1, lipschitz(k.act)) && ++bad == 1)
          where = fmt(" first at %lld: got %.9g want %.9g", (long long)i, double(out[i]), ref[i]);
      record(bad == 0, isa + " " + describe(k) + fmt(" threads=%d: %d wrong", threads, bad) + where);
      if (threads == 1) first.assign(out.data, out.data + out_size);
      else
        record(out_size == 0 || std::memcmp(first.data(), out.data, sizeof(float) * out_size) == 0,
               isa + " " + describe(k) + " 1 and 2 threads differ");
    }
  }
}

std::vector<ConvCase> conv_cases(bool quick) {
  std::vector<ConvCase> cases;
  Rng rng(77);
  const int64_t out_channels[] = {1, 8, 16, 17, 33};
  const int count = quick ? 60 : 400;
  for (int i = 0; i < count; ++i) {
    ConvCase k{};
    k.n = i % 7 == 0 ? 0 : 1 + i % 3;
    k.c = 1 + i % 8;
    k.oc = out_channels[i % 5];
    k.kh = 1 + int(rng.below(7)), k.kw = i % 4 == 0 ? k.kh : 1 + int(rng.below(7));
    k.sh = 1 + int(rng.below(3)), k.sw = i % 3 == 0 ? k.sh : 1 + int(rng.below(3));
    k.dh = 1 + int(rng.below(2)), k.dw = 1 + int(rng.below(2));
    k.h = 1 + rng.below(17), k.w = 1 + rng.below(17);
    if (i % 2) {
      k.pt = k.pb = (k.kh - 1) / 2 * k.dh, k.pl = k.pr = (k.kw - 1) / 2 * k.dw;
    } else {
      k.pt = int(rng.below(4)), k.pl = int(rng.below(4)), k.pb = int(rng.below(4)), k.pr = int(rng.below(4));
    }
    while (k.h + k.pt + k.pb < int64_t(k.dh) * (k.kh - 1) + 1) ++k.pb;
    while (k.w + k.pl + k.pr < int64_t(k.dw) * (k.kw - 1) + 1) ++k.pr;
    k.act = kActivations[i % 4];
    k.layout = i % 4;
    cases.push_back(k);
  }
  // Stem-shaped convolutions (3x3, stride 2, NCHW rows: the direct stem kernel where the ISA
  // has one, up to 4 input and 16 output channels; 5 and 17 go the GEMM path): rows across the
  // kernel's 32- and 16-pixel steps, "same" and asymmetric padding, padded rows and planes.
  const int64_t widths[] = {1, 2, 3, 5, 30, 31, 32, 33, 34, 63, 64, 65, 66, 97};
  const int pads[][4] = {{1, 1, 1, 1}, {0, 0, 1, 1}, {2, 2, 0, 0}, {1, 0, 0, 2}};
  int j = 0;
  for (int64_t w : widths)
    for (int64_t c : {1, 3, 4, 5})
      for (int64_t oc : {1, 8, 16, 17}) {
        const int* p = pads[j % 4];
        ConvCase k{1 + j % 2, c, 1 + j % 5, w, oc, 3, 3, 2, 2, 1, 1, p[0], p[1], p[2], p[3], kActivations[j % 4],
                   (j / 4) % 2 == 0 ? 0 : 2, j % 3 == 0};
        while (k.h + k.pt + k.pb < 3) ++k.pb;
        while (k.w + k.pl + k.pr < 3) ++k.pr;
        if (!quick || j % 4 == 0) cases.push_back(k);
        ++j;
      }
  // The MobileNetV3 stem: 3 -> 16, 3x3 stride 2, pad 1, hardswish, NCHW and NHWC.
  cases.push_back(ConvCase{2, 3, 57, 57, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, Activation::kHardswish, 0});
  cases.push_back(ConvCase{1, 3, 56, 56, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, Activation::kHardswish, 1});
  return cases;
}

// ------------------------------------------------------------------------------------------
// Global average pool

void run_pool_case(int64_t batch, int64_t channels, int64_t hw, bool channels_last,
                   const std::vector<std::string>& isas, uint64_t seed) {
  Rng rng(seed);
  Buffer input(batch * channels * hw);
  for (int64_t i = 0; i < input.size; ++i) input[i] = rng.uniform(-4.0f, 4.0f);
  if (seed % 5 == 0 && input.size > 2) input[rng.below(input.size)] = kNaN, input[rng.below(input.size)] = kInf;
  std::vector<double> ref(batch * channels), mag(batch * channels);
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t c = 0; c < channels; ++c) {
      double sum = 0, m = 0;
      for (int64_t p = 0; p < hw; ++p) {
        const double v = channels_last ? input[(n * hw + p) * channels + c] : input[(n * channels + c) * hw + p];
        sum += v;
        if (std::isfinite(v)) m += std::fabs(v);
      }
      ref[n * channels + c] = sum / double(hw);
      mag[n * channels + c] = m / double(hw);
    }
  const std::string what = fmt("pool N=%lld C=%lld HW=%lld %s", (long long)batch, (long long)channels,
                               (long long)hw, channels_last ? "nhwc" : "nchw");
  for (const std::string& isa : isas) {
    select_isa(isa);
    std::vector<float> first;
    for (int threads : {1, 3}) {
      Buffer out(batch * channels);
      global_avg_pool(batch, channels, hw, input.data, channels_last, out.data, threads);
      int bad = 0;
      std::string where;
      for (int64_t i = 0; i < out.size; ++i)
        if (!close(out[i], ref[i], mag[i], hw + 1, 1.0) && ++bad == 1)
          where = fmt(" first at %lld: got %.9g want %.9g", (long long)i, double(out[i]), ref[i]);
      record(bad == 0, isa + " " + what + fmt(" threads=%d: %d wrong", threads, bad) + where);
      if (threads == 1) first.assign(out.data, out.data + out.size);
      else
        record(out.size == 0 || std::memcmp(first.data(), out.data, sizeof(float) * out.size) == 0,
               isa + " " + what + " 1 and 3 threads differ");
    }
  }
}

// Invalid sizes are refused with std::invalid_argument naming the argument.
void check_rejections() {
  auto expect_throw = [](const char* what, const char* needle, auto&& fn) {
    try {
      fn();
      record(false, std::string("no exception for ") + what);
    } catch (const std::invalid_argument& e) {
      record(std::strstr(e.what(), needle) != nullptr,
             std::string(what) + ": message '" + e.what() + "' lacks '" + needle + "'");
    }
  };
  float dummy = 0;
  auto args = [&](int64_t m, int64_t k, int64_t n, int64_t lda, int64_t ldc) {
    return GemmArgs{m, k, n, &dummy, lda, &dummy, &dummy, ldc, nullptr, 0, nullptr, 1, Activation::kNone};
  };
  expect_throw("gemm k=0", "weight", [&] { check_gemm_args(args(1, 0, 1, 1, 1)); });
  expect_throw("gemm n=0", "weight", [&] { check_gemm_args(args(1, 1, 0, 1, 1)); });
  expect_throw("gemm m<0", "input", [&] { check_gemm_args(args(-1, 1, 1, 1, 1)); });
  expect_throw("gemm lda<k", "input", [&] { check_gemm_args(args(2, 4, 1, 3, 1)); });
  expect_throw("gemm ldc<n", "output", [&] { check_gemm_args(args(2, 4, 8, 4, 7)); });
  expect_throw("gemm overflow", "overflows", [&] { check_gemm_args(args(int64_t(1) << 40, 1, 1, int64_t(1) << 40, 1)); });
  expect_throw("gemm residual ldr<n", "residual", [&] {
    GemmArgs g = args(2, 4, 8, 4, 8);
    g.residual = &dummy, g.ldr = 7;
    check_gemm_args(g);
  });
  expect_throw("gemm scale_rows=0", "input_scale", [&] {
    GemmArgs g = args(2, 4, 8, 4, 8);
    g.scale = &dummy, g.scale_rows = 0;
    check_gemm_args(g);
  });
  expect_throw("gemm sigmoid", "activation", [&] {
    GemmArgs g = args(2, 4, 8, 4, 8);
    g.activation = Activation::kSigmoid;
    check_gemm_args(g);
  });
  expect_throw("conv kernel 8", "kernel", [&] {
    make_conv_shape(1, 3, 9, 9, 4, 8, 3, 1, 1, 1, 1, 1, 1, 1, 1, Activation::kNone);
  });
  expect_throw("conv stride 0", "stride", [&] {
    make_conv_shape(1, 3, 9, 9, 4, 3, 3, 0, 1, 1, 1, 1, 1, 1, 1, Activation::kNone);
  });
  expect_throw("conv empty output", "padded input", [&] {
    make_conv_shape(1, 3, 2, 9, 4, 5, 3, 1, 1, 1, 1, 0, 0, 0, 0, Activation::kNone);
  });
  expect_throw("conv out_c 0", "weight", [&] {
    make_conv_shape(1, 3, 9, 9, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, Activation::kNone);
  });
  expect_throw("conv overflow", "overflows", [&] {
    make_conv_shape(int64_t(1) << 30, 1 << 20, 1 << 20, 1 << 20, 4, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0,
                    Activation::kNone);
  });
  expect_throw("pool channels 0", "input", [&] { global_avg_pool(1, 0, 4, &dummy, false, &dummy, 1); });
  expect_throw("pool overflow", "overflows", [&] {
    global_avg_pool(int64_t(1) << 40, int64_t(1) << 40, 4, &dummy, false, &dummy, 1);
  });
}

// pack_gemm_weights' layout: panel p = [bias (16) | K rows of 16 weights], padding lanes zero.
void check_packing() {
  for (int64_t k : {1, 3, 17})
    for (int64_t n : {1, 15, 16, 17, 33}) {
      Buffer w(n * k), b(n), packed(packed_gemm_floats(k, n));
      for (int64_t i = 0; i < w.size; ++i) w[i] = float(i + 1);
      for (int64_t i = 0; i < n; ++i) b[i] = -float(i + 1);
      packed.fill(kNaN);
      pack_gemm_weights(w.data, b.data, k, n, packed.data);
      bool ok = packed.size == ((n + 15) / 16) * (1 + k) * 16;
      for (int64_t p = 0; p * 16 < n; ++p)
        for (int64_t row = 0; row <= k; ++row)
          for (int64_t lane = 0; lane < 16; ++lane) {
            const int64_t j = p * 16 + lane;
            const float want = j >= n ? 0.0f : (row == 0 ? b[j] : w[j * k + row - 1]);
            ok &= packed[(p * (1 + k) + row) * 16 + lane] == want;
          }
      Buffer unbiased(packed_gemm_floats(k, n));
      pack_gemm_weights(w.data, nullptr, k, n, unbiased.data);
      for (int64_t j = 0; j < n; ++j) ok &= unbiased[(j / 16) * (1 + k) * 16 + j % 16] == 0.0f;
      record(ok, fmt("pack_gemm_weights k=%lld n=%lld layout", (long long)k, (long long)n));
    }
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  const std::vector<std::string> isas = available_isas();
  std::printf("ISAs:");
  for (const auto& isa : isas) std::printf(" %s", isa.c_str());
  std::printf("%s\n", quick ? " (quick)" : "");
  if (isas.empty() || isas.front() != "scalar") {
    std::printf("FAIL the scalar path must be available first\n0 passed, 1 failed\n");
    return 1;
  }
  uint64_t seed = 1;
  try {
    check_packing();
    check_rejections();
    const std::vector<GemmCase> gcs = gemm_cases(quick);
    for (const GemmCase& g : gcs) run_gemm_case(g, isas, seed++);
    std::printf("gemm: %zu cases\n", gcs.size());
    const std::vector<ConvCase> ccs = conv_cases(quick);
    for (const ConvCase& c : ccs) run_conv_case(c, isas, seed++);
    std::printf("conv2d_gemm: %zu cases\n", ccs.size());
    int pools = 0;
    for (int64_t batch : {0, 1, 3})
      for (int64_t channels : {1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 70})
        for (int64_t hw : {1, 2, 7, 49, 50, 900})
          for (bool cl : {false, true}) {
            if (quick && (channels % 2 == 0 || hw == 900)) continue;
            run_pool_case(batch, channels, hw, cl, isas, seed++);
            ++pools;
          }
    // Large enough for the pool's batch split.
    run_pool_case(8, 960, 49, true, isas, seed++);
    run_pool_case(8, 960, 49, false, isas, seed++);
    std::printf("global_avg_pool: %d cases\n", pools + 2);
  } catch (const std::exception& e) {
    record(false, std::string("exception: ") + e.what());
  }
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
