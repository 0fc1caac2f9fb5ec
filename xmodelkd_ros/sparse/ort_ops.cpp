// ONNX Runtime custom ops: the fused sparse conv and point branch as graph nodes.
//
// With standard ONNX ops a pair-list conv is 26 Gather + MatMul + ScatterND chains, and
// every ScatterND copies its whole (N, C) input before adding its few thousand pairs
// (bench/bench_ort_ops.py): ONNX Runtime ran the student at ~a third of the torch
// backend's speed. Here each conv of the exported graph is one node, ai.xmodelkd
// SparseConv, that runs the same tile kernel as the torch backend (fused_conv.cpp) on
// ONNX Runtime's intra-op thread pool (KernelContext_ParallelFor), so the session's
// thread setting holds and no second pool spins beside it.
//
//   SparseConv(x (N, Cin) f32, weight (K, Cin, Cout) f32, bias (Cout) f32,
//              in_rows (P) i64, out_rows (P) i64, bounds (K + 1) i64
//              [, residual (M, Cout) f32]) -> (M, Cout) f32
//   attributes: centre (int, -1: none; else the submanifold identity tap, M = N),
//               relu (int, 0 / 1)
//   M = N for a submanifold conv, else max(out_rows) + 1 (the pairs of a strided conv
//   reach every coarse voxel, those of an inverse conv every fine one).
//
//   PointHead(point_feats (N, Cin), point2voxel (N) i64, voxel_x (V, F), mean (Cin),
//             std (Cin), W1 (Cin, H), b1 (H), W2 (H, F), b2 (F), W3 (F, F), b3 (F),
//             W4 (F, C), b4 (C)) -> (N, C) f32: the student's point branch and classifier
//   (relu(relu((p - mean) / std @ W1 + b1) @ W2 + b2) + voxel_x[point2voxel], relu(. @ W3
//   + b3), . @ W4 + b4), BatchNorm folded; weights (in, out), widths <= 256.
//
// Inputs are checked (shapes, bounds, row ranges, each offset's rows ascending, which the
// tile search needs) in one pass over the pair list before any arithmetic: a bad feed is
// an error status from session.run, never a read outside a buffer.
//
// Built by xmodelkd_ros/sparse/ort_ops.py against ONNX Runtime's C/C++ API headers
// (not in the pip wheel; see that module), with fused_conv.cpp in the same library.

#include <algorithm>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT

#include "fused_conv.h"

namespace {

constexpr const char* kDomain = "ai.xmodelkd";
constexpr int64_t kTileRows = 256;  // as fused.py's TILE_ROWS: 256 x 64 floats stay in L2

const OrtApi* g_api = nullptr;

OrtStatus* error(const std::string& msg, const char* op = "SparseConv") {
  return g_api->CreateStatus(ORT_INVALID_ARGUMENT, (std::string(op) + ": " + msg).c_str());
}

template <typename Kernel>
OrtStatusPtr guarded(Kernel* kernel, OrtKernelContext* context) noexcept {
  try {
    return kernel->compute(Ort::KernelContext(context));
  } catch (const Ort::Exception& exc) {
    return g_api->CreateStatus(exc.GetOrtErrorCode(), exc.what());
  } catch (const std::exception& exc) {
    return g_api->CreateStatus(ORT_FAIL, exc.what());
  }
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + ")";
}

// Row ranges and order of one offset's pairs (reductions that vectorize).
struct PairStats {
  int64_t min_in = 0, max_in = -1, min_out = 0, max_out = -1, unsorted = 0;
  void merge(const PairStats& o) {
    min_in = std::min(min_in, o.min_in);
    max_in = std::max(max_in, o.max_in);
    min_out = std::min(min_out, o.min_out);
    max_out = std::max(max_out, o.max_out);
    unsorted |= o.unsorted;
  }
};

struct PairScan {
  const int64_t* in;
  const int64_t* out;
  const int64_t* bounds;
  std::vector<PairStats> stats;  // one per offset
  void run(size_t k) {
    PairStats st;
    const int64_t lo = bounds[k], hi = bounds[k + 1];
    for (int64_t p = lo; p < hi; ++p) {
      st.min_in = std::min(st.min_in, in[p]);
      st.max_in = std::max(st.max_in, in[p]);
      st.min_out = std::min(st.min_out, out[p]);
      st.max_out = std::max(st.max_out, out[p]);
    }
    for (int64_t p = lo + 1; p < hi; ++p) st.unsorted |= static_cast<int64_t>(out[p] <= out[p - 1]);
    stats[k] = st;
  }
};

struct SparseConvKernel {
  int64_t centre = -1;
  bool relu = false;

  SparseConvKernel(const OrtKernelInfo* info) {
    Ort::ConstKernelInfo ki(info);
    centre = ki.GetAttribute<int64_t>("centre");
    relu = ki.GetAttribute<int64_t>("relu") != 0;
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept { return guarded(this, context); }

  OrtStatusPtr compute(Ort::KernelContext ctx) {
    auto x = ctx.GetInput(0), w = ctx.GetInput(1), b = ctx.GetInput(2);
    auto in_rows = ctx.GetInput(3), out_rows = ctx.GetInput(4), bounds = ctx.GetInput(5);
    Ort::ConstValue res{nullptr};
    if (ctx.GetInputCount() > 6) res = ctx.GetInput(6);
    const auto xs = x.GetTensorTypeAndShapeInfo().GetShape();
    const auto ws = w.GetTensorTypeAndShapeInfo().GetShape();
    const auto bs = b.GetTensorTypeAndShapeInfo().GetShape();
    const auto ps = in_rows.GetTensorTypeAndShapeInfo().GetShape();
    const auto qs = out_rows.GetTensorTypeAndShapeInfo().GetShape();
    const auto ks = bounds.GetTensorTypeAndShapeInfo().GetShape();
    if (xs.size() != 2 || ws.size() != 3 || ws[1] != xs[1] || bs.size() != 1 ||
        bs[0] != ws[2] || ps.size() != 1 || qs != ps || ks.size() != 1 || ks[0] != ws[0] + 1)
      return error("shapes do not match: x " + shape_str(xs) + ", weight " + shape_str(ws) +
                   ", bias " + shape_str(bs) + ", in_rows " + shape_str(ps) + ", out_rows " +
                   shape_str(qs) + ", bounds " + shape_str(ks));
    const int64_t n = xs[0], cin = xs[1], K = ws[0], cout = ws[2], P = ps[0];
    if (centre >= K) return error("centre tap " + std::to_string(centre) + " of " +
                                  std::to_string(K) + " offsets");
    const int64_t* in = in_rows.GetTensorData<int64_t>();
    const int64_t* outr = out_rows.GetTensorData<int64_t>();
    const int64_t* bnd = bounds.GetTensorData<int64_t>();

    // one pass over the lists, offsets spread over the session's threads: bounds, row
    // ranges, ascending output rows per offset, and M. Branch-free min/max/or reductions;
    // still memory-bound (16 bytes a pair, re-read by every conv sharing the list), which
    // an early-exit single-threaded loop made 6-9 % of the whole network.
    if (bnd[0] != 0 || bnd[K] != P) return error("bounds must run from 0 to the pair count");
    for (int64_t k = 0; k < K; ++k)
      if (bnd[k + 1] < bnd[k]) return error("bounds must not decrease");
    PairScan scan{in, outr, bnd, std::vector<PairStats>(static_cast<size_t>(K))};
    ctx.ParallelFor([](void* arg, size_t k) { static_cast<PairScan*>(arg)->run(k); },
                    static_cast<size_t>(K), 0, &scan);
    PairStats all;
    for (const PairStats& st : scan.stats) all.merge(st);
    const int64_t max_out = all.max_out;
    if (all.min_in < 0 || all.max_in >= n) return error("an input row is out of range");
    if (all.min_out < 0 || all.unsorted)
      return error("output rows must be >= 0 and ascending within each offset");
    const int64_t m = centre >= 0 ? n : max_out + 1;
    if (centre >= 0 && max_out >= n) return error("an output row is out of range");
    const float* residual = nullptr;
    if (res) {
      const auto rs = res.GetTensorTypeAndShapeInfo().GetShape();
      if (rs.size() != 2 || rs[0] != m || rs[1] != cout)
        return error("residual " + shape_str(rs) + " is not " + shape_str({m, cout}));
      residual = res.GetTensorData<float>();
    }
    auto out = ctx.GetOutput(0, {m, cout});
    const XkConv a{x.GetTensorData<float>(), cin, w.GetTensorData<float>(), cout, K, in, outr,
                   bnd, centre, b.GetTensorData<float>(), residual, relu ? 1 : 0,
                   out.GetTensorMutableData<float>(), m, kTileRows};
    const int64_t tiles = xk_conv_tiles(&a);
    if (tiles > 0)
      ctx.ParallelFor([](void* arg, size_t t) { xk_conv_tile(static_cast<const XkConv*>(arg),
                                                            static_cast<int64_t>(t)); },
                      static_cast<size_t>(tiles), 0, const_cast<XkConv*>(&a));
    return nullptr;
  }
};

struct SparseConvOp : Ort::CustomOpBase<SparseConvOp, SparseConvKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    try {
      *kernel = new SparseConvKernel(info);
      return nullptr;
    } catch (const Ort::Exception& exc) {
      return g_api->CreateStatus(exc.GetOrtErrorCode(),
                                 (std::string("SparseConv attributes: ") + exc.what()).c_str());
    }
  }
  const char* GetName() const { return "SparseConv"; }
  size_t GetInputTypeCount() const { return 7; }
  ONNXTensorElementDataType GetInputType(size_t i) const {
    return (i >= 3 && i <= 5) ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64
                              : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i == 6 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
};

struct PointHeadKernel {
  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept { return guarded(this, context); }

  OrtStatusPtr compute(Ort::KernelContext ctx) {
    std::vector<Ort::ConstValue> in;
    std::vector<std::vector<int64_t>> sh;
    for (size_t i = 0; i < 13; ++i) {
      in.push_back(ctx.GetInput(i));
      sh.push_back(in.back().GetTensorTypeAndShapeInfo().GetShape());
    }
    const bool ranks = sh[0].size() == 2 && sh[1].size() == 1 && sh[2].size() == 2 &&
                       sh[5].size() == 2 && sh[7].size() == 2 && sh[9].size() == 2 &&
                       sh[11].size() == 2;
    if (!ranks) return error("inputs of the wrong rank", "PointHead");
    const int64_t n = sh[0][0], cin = sh[0][1], v = sh[2][0], f = sh[2][1];
    const int64_t h = sh[5][1], ncls = sh[11][1];
    const std::vector<std::vector<int64_t>> want = {
        {n, cin}, {n}, {v, f}, {cin}, {cin}, {cin, h}, {h}, {h, f}, {f}, {f, f}, {f},
        {f, ncls}, {ncls}};
    for (size_t i = 0; i < 13; ++i)
      if (sh[i] != want[i])
        return error("input " + std::to_string(i) + " is " + shape_str(sh[i]) + ", expected " +
                     shape_str(want[i]), "PointHead");
    const int64_t* p2v = in[1].GetTensorData<int64_t>();
    for (int64_t p = 0; p < n; ++p)
      if (p2v[p] < 0 || p2v[p] >= v) return error("a point2voxel index is out of range",
                                                  "PointHead");
    auto out = ctx.GetOutput(0, {n, ncls});
    auto f32 = [&](size_t i) { return in[i].GetTensorData<float>(); };
    const XkPointHead a{n, f32(0), cin, f32(3), f32(4), f32(5), f32(6), h, f32(7), f32(8), f,
                        f32(2), p2v, f32(9), f32(10), f32(11), f32(12), ncls,
                        out.GetTensorMutableData<float>()};
    if (!xk_point_head_fits(&a)) return error("a layer is wider than 256", "PointHead");
    const int64_t blocks = xk_point_blocks(&a);
    if (blocks > 0)
      ctx.ParallelFor([](void* arg, size_t b) { xk_point_block(static_cast<const XkPointHead*>(arg),
                                                              static_cast<int64_t>(b)); },
                      static_cast<size_t>(blocks), 0, const_cast<XkPointHead*>(&a));
    return nullptr;
  }
};

struct PointHeadOp : Ort::CustomOpBase<PointHeadOp, PointHeadKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo*, void** kernel) const {
    *kernel = new PointHeadKernel();
    return nullptr;
  }
  const char* GetName() const { return "PointHead"; }
  size_t GetInputTypeCount() const { return 13; }
  ONNXTensorElementDataType GetInputType(size_t i) const {
    return i == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
};

// Registered domains must outlive every session that uses them: kept until unload.
std::mutex g_mutex;
std::vector<std::unique_ptr<Ort::CustomOpDomain>> g_domains;
SparseConvOp g_sparse_conv;
PointHeadOp g_point_head;

}  // namespace

extern "C" {

// Version of this library's ops; ort_ops.py refuses a library that differs.
int xk_ort_ops_version() { return 1; }

// ONNX Runtime's entry point for a custom-op library (SessionOptions.
// register_custom_ops_library). Needs ONNX Runtime's C API of the headers' version or newer.
OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* base) {
  const OrtApi* api = base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {  // an older runtime: answer through the oldest API every runtime has
    const std::string msg = "xmodelkd_ros ort ops need ONNX Runtime C API " +
                            std::to_string(ORT_API_VERSION) + " or newer, this runtime is " +
                            base->GetVersionString();
    return base->GetApi(1)->CreateStatus(ORT_FAIL, msg.c_str());
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  g_api = api;
  Ort::InitApi(api);
  try {
    auto domain = std::make_unique<Ort::CustomOpDomain>(kDomain);
    domain->Add(&g_sparse_conv);
    domain->Add(&g_point_head);
    Ort::UnownedSessionOptions(options).Add(*domain);
    g_domains.push_back(std::move(domain));
  } catch (const Ort::Exception& exc) {
    return api->CreateStatus(exc.GetOrtErrorCode(), exc.what());
  }
  return nullptr;
}

}  // extern "C"
