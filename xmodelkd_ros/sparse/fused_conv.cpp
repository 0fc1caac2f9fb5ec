// Fused gather-GEMM-scatter for the pair-list sparse conv (CPU inference).
//
// The eager form (pairs.py) makes three passes over memory per conv: it gathers every
// pair's input row into a (P, Cin) buffer, multiplies it into a (P, Cout) buffer, then
// sums that buffer into the output. At 35k points those buffers are tens of MB, far
// beyond the caches, so the conv runs at a fraction of the machine's GEMM rate. Here
// the three steps happen on a few rows at a time, in registers:
//
//   for every tile of output rows (one thread each, no two threads share a row):
//     for every kernel offset k:
//       pairs of offset k whose output row lies in the tile (a binary search: within an
//       offset, pairs are sorted by output row and every output row occurs at most once)
//       for R pairs at a time:  acc[R][Cout] = x[in rows] @ W_k ;  out[out rows] += acc
//
// A tile's output rows stay in L1/L2 across all 27 offsets, W_k is read once per R
// rows, and there are no atomics and no barriers. The tile starts as bias + the centre
// tap of a submanifold conv (every row to itself, left out of the pair list), computed
// the same way, so ``out`` is written once and needs no initialisation.
//
// Built on first use by fused.py with the system compiler (-O3 -march=native -fopenmp),
// linked against the OpenMP runtime torch already loaded, so the two share one pool.

#include <algorithm>
#include <cstdint>

#include "fused_conv.h"

namespace {

// 16 floats: one AVX-512 register (two AVX2 or four NEON registers elsewhere; GCC splits).
typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4), may_alias));

// R rows at once: acc = x[in_rows] @ wk with Cout = 16 V a compile-time constant, so acc
// (R x V vectors) and one weight row (V vectors) stay in registers and every weight load
// feeds R fused multiply-adds. STORE: out[out_rows] = bias + acc (the tile's first pass);
// otherwise out[out_rows] += acc.
template <int V, int R, bool STORE>
inline void rows_block(const float* __restrict x, int64_t cin, const float* __restrict wk,
                       const float* bias, const int64_t* in_rows, const int64_t* out_rows,
                       float* __restrict out) {
  constexpr int COUT = 16 * V;
  v16 acc[R][V];
  const float* xr[R];
  for (int r = 0; r < R; ++r) {
    xr[r] = x + in_rows[r] * cin;
    for (int v = 0; v < V; ++v)
      acc[r][v] = (STORE && bias) ? *reinterpret_cast<const v16u*>(bias + 16 * v) : v16{};
  }
  for (int64_t c = 0; c < cin; ++c) {
    v16 wv[V];
    for (int v = 0; v < V; ++v) wv[v] = *reinterpret_cast<const v16u*>(wk + c * COUT + 16 * v);
    for (int r = 0; r < R; ++r) {
      const float xv = xr[r][c];
      for (int v = 0; v < V; ++v) acc[r][v] += xv * wv[v];
    }
  }
  for (int r = 0; r < R; ++r) {
    v16u* orow = reinterpret_cast<v16u*>(out + out_rows[r] * COUT);
    for (int v = 0; v < V; ++v) {
      if (STORE)
        orow[v] = acc[r][v];
      else
        orow[v] += acc[r][v];
    }
  }
}

template <int V, int R, bool STORE>
void rows_range(const float* x, int64_t cin, const float* wk, int64_t /*cout*/,
                const float* bias, const int64_t* in_rows, const int64_t* out_rows, int64_t n,
                float* out) {
  int64_t p = 0;
  for (; p + R <= n; p += R)
    rows_block<V, R, STORE>(x, cin, wk, bias, in_rows + p, out_rows + p, out);
  for (; p < n; ++p) rows_block<V, 1, STORE>(x, cin, wk, bias, in_rows + p, out_rows + p, out);
}

// Any other width: the same arithmetic with a runtime Cout (vectorised less well).
template <bool STORE>
void rows_range_any(const float* x, int64_t cin, const float* wk, int64_t cout,
                    const float* bias, const int64_t* in_rows, const int64_t* out_rows,
                    int64_t n, float* out) {
  for (int64_t p = 0; p < n; ++p) {
    const float* xr = x + in_rows[p] * cin;
    float* orow = out + out_rows[p] * cout;
    if (STORE)
      for (int64_t o = 0; o < cout; ++o) orow[o] = bias ? bias[o] : 0.f;
    for (int64_t c = 0; c < cin; ++c) {
      const float xv = xr[c];
      const float* wr = wk + c * cout;
      for (int64_t o = 0; o < cout; ++o) orow[o] += xv * wr[o];
    }
  }
}

using RangeFn = void (*)(const float*, int64_t, const float*, int64_t, const float*,
                         const int64_t*, const int64_t*, int64_t, float*);

template <bool STORE>
RangeFn range_for(int64_t cout) {
  switch (cout) {
    // R: as many rows as leave the accumulators + one weight row in 32 registers
    case 16: return rows_range<1, 12, STORE>;
    case 32: return rows_range<2, 8, STORE>;
    case 48: return rows_range<3, 6, STORE>;
    case 64: return rows_range<4, 6, STORE>;
    case 96: return rows_range<6, 4, STORE>;
    case 128: return rows_range<8, 3, STORE>;
    default: return rows_range_any<STORE>;
  }
}

constexpr int64_t kIotaBlock = 64;  // rows per centre-tap call (row ids on the stack)

}  // namespace

// One output tile of the conv described by ``a``: its rows' first pass (bias + centre
// tap), every other offset's pairs into it, then the epilogue. Tiles own disjoint rows,
// so any number of threads may run different tiles at once (OpenMP in xk_sparse_conv,
// ONNX Runtime's pool in ort_ops.cpp).
void xk_conv_tile(const XkConv* a, int64_t t) {
  const int64_t cin = a->cin, cout = a->cout;
  const RangeFn store = range_for<true>(cout), add = range_for<false>(cout);
  const float zero_w = 0.f;
  const int64_t r0 = t * a->tile_rows;
  const int64_t r1 = std::min(r0 + a->tile_rows, a->num_out);
  int64_t rows[kIotaBlock];
  for (int64_t b = r0; b < r1; b += kIotaBlock) {  // first pass: bias (+ centre tap)
    const int64_t n = std::min(kIotaBlock, r1 - b);
    for (int64_t i = 0; i < n; ++i) rows[i] = b + i;
    if (a->centre_k >= 0)
      store(a->x, cin, a->w + a->centre_k * cin * cout, cout, a->bias, rows, rows, n, a->out);
    else  // a zero-width product: only the bias is written
      store(&zero_w, 0, &zero_w, cout, a->bias, rows, rows, n, a->out);
  }
  for (int64_t k = 0; k < a->K; ++k) {
    const int64_t* bounds = a->bounds;
    if (k == a->centre_k || bounds[k + 1] == bounds[k]) continue;
    const int64_t* first = a->out_rows + bounds[k];
    const int64_t* last = a->out_rows + bounds[k + 1];
    const int64_t lo = std::lower_bound(first, last, r0) - a->out_rows;
    const int64_t hi = std::lower_bound(first, last, r1) - a->out_rows;
    if (hi > lo)
      add(a->x, cin, a->w + k * cin * cout, cout, nullptr, a->in_rows + lo, a->out_rows + lo,
          hi - lo, a->out);
  }
  if (a->residual || a->relu) {  // epilogue on the tile while it is in cache
    float* out = a->out;
    for (int64_t i = r0 * cout; i < r1 * cout; ++i) {
      const float v = a->residual ? out[i] + a->residual[i] : out[i];
      out[i] = (a->relu && !(v > 0.f)) ? (v != v ? v : 0.f) : v;
    }
  }
}

int64_t xk_conv_tiles(const XkConv* a) {
  const int64_t tile = a->tile_rows < 1 ? 1 : a->tile_rows;
  return (a->num_out + tile - 1) / tile;
}

extern "C" {

// Version of the calling convention below; fused.py refuses a library that differs.
int xk_abi_version() { return 6; }

// out (num_out, cout) = bias + [x @ w[centre_k] if centre_k >= 0]
//                       + sum over pairs (j -> i, offset k) of x[j] @ w[k].
// x (num_in, cin), w (K, cin, cout), bias (cout,) or null, out: float32, row-major,
// contiguous; in_rows / out_rows (P,) int64 grouped by offset with bounds (K + 1,), each
// offset's pairs sorted by output row (the caller checks that once per pair list: tiles
// find their pairs by binary search). centre_k >= 0 needs num_in == num_out (a
// submanifold conv; its identity pairs are not in the list). Then, per tile, the block's
// epilogue: + residual (num_out, cout) when not null, and relu when ``relu`` (NaN kept, as
// torch.relu does). Returns 0.
int xk_sparse_conv(const float* x, int64_t cin, const float* w, int64_t cout, int64_t K,
                   const int64_t* in_rows, const int64_t* out_rows, const int64_t* bounds,
                   int64_t centre_k, const float* bias, const float* residual, int relu,
                   float* out, int64_t num_out, int64_t tile_rows, int num_threads) {
  const XkConv a{x, cin, w, cout, K, in_rows, out_rows, bounds, centre_k, bias, residual,
                 relu, out, num_out, tile_rows < 1 ? 1 : tile_rows};
  const int64_t ntiles = xk_conv_tiles(&a);
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
  for (int64_t t = 0; t < ntiles; ++t) xk_conv_tile(&a, t);
  return 0;
}

}  // extern "C"

// ---------------------------------------------------------------------------------------
// The student's point branch in one pass per point (logits only, inference):
//
//   h  = relu(relu(((p - mean) / std) @ W1 + b1) @ W2 + b2)     point MLP (BN folded)
//   f  = relu((vox[p2v] + h) @ W3 + b3)                          point fuse
//   out = f @ W4 + b4                                             classifier
//
// In eager torch these are ~12 passes over (N, 32) activations at 35k-120k points, which
// cost more than their arithmetic (~2 k multiply-adds per point); here each point's
// activations stay in a small stack buffer. Weights are (in, out) row-major.

namespace {

constexpr int64_t kMaxWidth = 256;  // widest layer the stack buffers hold
constexpr int64_t kPointBlock = 16;

// dst[p][:] = (relu)(bias + src[p][:] @ W) for n points; widths at most kMaxWidth.
inline void dense_block(const float* src, int64_t sstride, int64_t n, int64_t cin,
                        const float* __restrict W, const float* __restrict b, int64_t cout,
                        bool relu, float* __restrict dst, int64_t dstride) {
  for (int64_t p = 0; p < n; ++p) {
    float* d = dst + p * dstride;
    const float* s = src + p * sstride;
    for (int64_t o = 0; o < cout; ++o) d[o] = b[o];
    for (int64_t c = 0; c < cin; ++c) {
      const float v = s[c];
      const float* w = W + c * cout;
#pragma omp simd
      for (int64_t o = 0; o < cout; ++o) d[o] += v * w[o];
    }
    if (relu)
      for (int64_t o = 0; o < cout; ++o) d[o] = d[o] > 0.f ? d[o] : 0.f;
  }
}

}  // namespace

int64_t xk_point_blocks(const XkPointHead* a) { return (a->n + kPointBlock - 1) / kPointBlock; }

bool xk_point_head_fits(const XkPointHead* a) {
  return a->cin <= kMaxWidth && a->h1 <= kMaxWidth && a->f <= kMaxWidth && a->ncls <= kMaxWidth;
}

// Points [16 blk, 16 blk + 16): disjoint output rows, any order, any thread.
void xk_point_block(const XkPointHead* a, int64_t blk) {
  float buf_a[kPointBlock * kMaxWidth], buf_h[kPointBlock * kMaxWidth];
  const int64_t cin = a->cin, f = a->f;
  const int64_t p0 = blk * kPointBlock;
  const int64_t m = std::min(kPointBlock, a->n - p0);
  for (int64_t p = 0; p < m; ++p)
    for (int64_t c = 0; c < cin; ++c)
      buf_a[p * kMaxWidth + c] = (a->pts[(p0 + p) * cin + c] - a->mean[c]) / a->stdev[c];
  dense_block(buf_a, kMaxWidth, m, cin, a->W1, a->b1, a->h1, true, buf_h, kMaxWidth);
  dense_block(buf_h, kMaxWidth, m, a->h1, a->W2, a->b2, f, true, buf_a, kMaxWidth);
  for (int64_t p = 0; p < m; ++p) {
    const float* v = a->vox + a->p2v[p0 + p] * f;
    float* d = buf_a + p * kMaxWidth;
    for (int64_t c = 0; c < f; ++c) d[c] += v[c];
  }
  dense_block(buf_a, kMaxWidth, m, f, a->W3, a->b3, f, true, buf_h, kMaxWidth);
  dense_block(buf_h, kMaxWidth, m, f, a->W4, a->b4, a->ncls, false, a->out + p0 * a->ncls,
              a->ncls);
}

extern "C" {

// Returns 0, or -1 when a width exceeds kMaxWidth (nothing written).
int xk_point_head(int64_t n, const float* pts, int64_t cin, const float* mean,
                  const float* stdev, const float* W1, const float* b1, int64_t h1,
                  const float* W2, const float* b2, int64_t f, const float* vox,
                  const int64_t* p2v, const float* W3, const float* b3, const float* W4,
                  const float* b4, int64_t ncls, float* out, int num_threads) {
  const XkPointHead a{n, pts, cin, mean, stdev, W1, b1, h1, W2, b2, f, vox, p2v, W3, b3,
                      W4, b4, ncls, out};
  if (!xk_point_head_fits(&a)) return -1;
  const int64_t nblocks = xk_point_blocks(&a);
#pragma omp parallel for schedule(static) num_threads(num_threads)
  for (int64_t blk = 0; blk < nblocks; ++blk) xk_point_block(&a, blk);
  return 0;
}

}  // extern "C"
