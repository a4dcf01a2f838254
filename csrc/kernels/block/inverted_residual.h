// One MobileNetV3 inverted-residual block per call, NHWC: 1x1 expand (+ bias + activation) ->
// depthwise k x k (+ bias + activation) -> optional squeeze-excite -> 1x1 project (+ bias)
// (+ the block's input). The expanded tensor never exists in full:
// - without SE, each thread walks its output rows in bands sized to stay in L2: the band's
//   expanded input rows (rows shared with the previous band are moved, not recomputed), its
//   depthwise rows, then at once their projection;
// - with SE, per image: pass 1 runs expand + depthwise band by band into one image's depthwise
//   output (a per-thread buffer, L2-sized for MobileNetV3), then the gate, then pass 2 the
//   projection with the gate folded in as the GEMM's input scale.
// Every element is computed by the same arithmetic whatever the bands and threads: results are
// bit-identical for any thread count.
#pragma once

#include <cstdint>

#include "kernels/driver.h"
#include "kernels/kernels.h"

namespace mnv3ext {

struct BlockConfig {
  int64_t in_c, exp_c, out_c;
  int kernel_h, kernel_w, stride, dilation;
  int pad_top, pad_left, pad_bottom, pad_right;
  bool has_expand;
  Activation expand_act, dw_act;
  int64_t se_squeeze;  // 0: no squeeze-excite
  Activation se_act, se_gate;
  bool has_residual;
  Activation project_act;
};

// Float offsets of the packed sections (each starts on a 16-float boundary); absent sections
// have length 0.
struct BlockLayout {
  int64_t expand, dw, se_fc1, se_b1, se_fc2, se_b2, project, total;
};

// Checks every field; throws std::invalid_argument naming what is wrong.
void check_block_config(const BlockConfig& config);
BlockLayout block_layout(const BlockConfig& config);

struct BlockShape {
  BlockConfig config;
  int64_t batch, in_h, in_w, out_h, out_w;
};

BlockShape make_block_shape(const BlockConfig& config, int64_t batch, int64_t in_h, int64_t in_w);

// input (N, in_h, in_w, in_c) and output (N, out_h, out_w, out_c) contiguous NHWC; packed as
// block_layout says (expand: pack_gemm_weights; dw: pack_dwconv_weights; SE: fc1 (S, E), b1,
// fc2 (E, S), b2 row-major; project: pack_gemm_weights).
void inverted_residual(const BlockShape& shape, const float* input, const float* packed,
                       float* output, int threads);

}  // namespace mnv3ext
