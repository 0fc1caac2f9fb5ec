// The fused sparse conv's and point head's block-level interface, shared by the ctypes entry point
// (fused_conv.cpp's xk_sparse_conv, OpenMP over tiles) and the ONNX Runtime custom op
// (ort_ops.cpp, ONNX Runtime's own thread pool over tiles): one arithmetic, two callers.
#pragma once

#include <cstdint>

// One conv call: out (num_out, cout) = bias + [x @ w[centre_k]] + sum over pairs of
// x[in] @ w[k], then + residual and relu. See xk_sparse_conv for the layout contract.
struct XkConv {
  const float* x;
  int64_t cin;
  const float* w;
  int64_t cout;
  int64_t K;
  const int64_t* in_rows;
  const int64_t* out_rows;
  const int64_t* bounds;
  int64_t centre_k;  // -1: no centre tap (strided and inverse convs)
  const float* bias;  // null: none
  const float* residual;  // null: none
  int relu;
  float* out;
  int64_t num_out;
  int64_t tile_rows;  // >= 1
};

// Number of output tiles of ``a``, and the work of tile ``t`` (0 <= t < tiles): tiles
// write disjoint rows, so they may run in any order on any threads.
int64_t xk_conv_tiles(const XkConv* a);
void xk_conv_tile(const XkConv* a, int64_t t);

// The student's point branch (see fused_conv.cpp): weights (in, out) row-major, BN folded.
struct XkPointHead {
  int64_t n;
  const float* pts;  // (n, cin)
  int64_t cin;
  const float* mean;
  const float* stdev;
  const float* W1;
  const float* b1;
  int64_t h1;
  const float* W2;
  const float* b2;
  int64_t f;
  const float* vox;  // (voxels, f)
  const int64_t* p2v;  // (n,), each in [0, voxels)
  const float* W3;
  const float* b3;
  const float* W4;
  const float* b4;
  int64_t ncls;
  float* out;  // (n, ncls)
};

// Whether every width fits the kernel's stack buffers (256); blocks of 16 points, each
// writing its own output rows.
bool xk_point_head_fits(const XkPointHead* a);
int64_t xk_point_blocks(const XkPointHead* a);
void xk_point_block(const XkPointHead* a, int64_t blk);
