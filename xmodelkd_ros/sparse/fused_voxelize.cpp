// The two per-scan ends of the CPU pipeline: points -> voxels (voxelize.py) and per-point
// logits -> labels and confidence (runtime/segmenter.py).
//
// voxelize: the torch code computes float64 keys in a dozen full-size passes, then
// torch.unique (a sort plus an inverse) and two index_add_. Here one pass computes each
// valid point's packed key (same float64 arithmetic, same drop rules) into a uint64 with
// the point index in the low bits; an LSD radix sort on the key bits only (stable, so the
// index bits stay ascending within a key) orders points by voxel, then by point index.
// Summing each voxel's points in that order from 0.0f, and counting in float32, is exactly
// what a serial index_add_ does (torch's CPU index_add_ is serial in index order; the tests
// check it), so the result is bit-identical to the torch path, which stays the oracle.
//
// labels: argmax (first maximum, NaN counts as maximum like torch.max) and the softmax
// maximum 1 / sum(exp(l - max)) per row, written straight into the caller's per-point
// arrays at the valid rows. The exp is a vectorisable polynomial (libm's expf does not
// vectorise without -ffast-math): relative error < 1e-7, far below the 1e-6 the runtime
// promises against torch. Rows with a non-finite maximum take libm's exp (torch semantics).
//
// Both are single-threaded: a scan is ~1 ms of work here, less than one OpenMP fork/join
// costs on a loaded machine (see fused_maps.GRAIN).

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int kMaxDigitBits = 12;  // 4096 counters: 32 KB, stays in L1

// Stable LSD radix sort of v[0, n) on bits [lo, hi) (bits below lo keep their order), in
// as few passes of equal digits as kMaxDigitBits allows; digits on which all values agree
// are skipped. Returns the buffer holding the result (v or tmp).
uint64_t* radix_sort(uint64_t* v, uint64_t* tmp, int64_t n, int lo, int hi) {
  const int passes = (hi - lo + kMaxDigitBits - 1) / kMaxDigitBits;
  if (passes == 0 || n == 0) return v;
  const int digit = (hi - lo + passes - 1) / passes;
  const int64_t buckets = int64_t{1} << digit;
  const uint64_t mask = static_cast<uint64_t>(buckets - 1);
  std::vector<int64_t> hist(static_cast<size_t>(passes * buckets), 0);
  for (int64_t i = 0; i < n; ++i)
    for (int p = 0; p < passes; ++p) ++hist[p * buckets + ((v[i] >> (lo + p * digit)) & mask)];
  for (int p = 0; p < passes; ++p) {
    int64_t* h = hist.data() + p * buckets;
    const int shift = lo + p * digit;
    if (h[(v[0] >> shift) & mask] == n) continue;  // all in one bucket: order unchanged
    int64_t sum = 0;
    for (int64_t b = 0; b < buckets; ++b) {
      const int64_t c = h[b];
      h[b] = sum;
      sum += c;
    }
    for (int64_t i = 0; i < n; ++i) tmp[h[(v[i] >> shift) & mask]++] = v[i];
    std::swap(v, tmp);
  }
  return v;
}

// e^x for x <= 0 (x = l - max), relative error ~1e-7: x = n ln2 + r, |r| <= ln2 / 2,
// e^r by its degree-7 Taylor polynomial (truncation < 6e-9), 2^n through the exponent.
inline float exp_nonpositive(float x) {
  if (x < -87.0f) return 0.0f;  // below float's normal range; also -inf
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;  // ln2 hi + lo
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

}  // namespace

extern "C" {

// Stage 1 of voxelize. points (n, c) float32 row-major (xyz in the first three columns);
// batch (n) int64 or null (all scan 0); lo/hi/size: range_min, range_max, voxel_size;
// shape: voxels per axis. Points with non-finite xyz, outside [lo, hi) or with batch
// outside [0, batch_size) get point2voxel -1; the others point2voxel = their voxel's row,
// voxels in ascending packed-key (b, x, y, z) order. sorted (n) receives the valid points
// as key << index_bits | index, by key then index; *num_valid their count. index_bits must
// hold n - 1, key_bits batch_size * X * Y * Z - 1, their sum be <= 64 and index_bits < 64
// (the caller checks).
// Returns the number of voxels.
int64_t xk_voxelize_sort(const float* points, int64_t n, int64_t c, const int64_t* batch,
                         int64_t batch_size, const double* lo, const double* hi,
                         const double* size, const int64_t* shape, int index_bits, int key_bits,
                         uint64_t* sorted, uint64_t* scratch, int64_t* point2voxel,
                         int64_t* num_valid) {
  const int64_t X = shape[0], Y = shape[1], Z = shape[2];
  int64_t nv = 0;
  for (int64_t i = 0; i < n; ++i) {
    point2voxel[i] = -1;
    const float* p = points + i * c;
    const int64_t b = batch ? batch[i] : 0;
    if (b < 0 || b >= batch_size) continue;
    int64_t idx[3];
    bool ok = true;
    for (int a = 0; a < 3 && ok; ++a) {
      const double x = static_cast<double>(p[a]);
      // also false for NaN; +-inf fail one of the bounds
      ok = x >= lo[a] && x < hi[a];
      if (ok) {
        const int64_t k = static_cast<int64_t>(std::floor((x - lo[a]) / size[a]));
        // rounding can push a point just below hi to index == shape (torch clamps too)
        idx[a] = k < 0 ? 0 : (k > shape[a] - 1 ? shape[a] - 1 : k);
      }
    }
    if (!ok) continue;
    const uint64_t key = static_cast<uint64_t>(((b * X + idx[0]) * Y + idx[1]) * Z + idx[2]);
    sorted[nv++] = key << index_bits | static_cast<uint64_t>(i);
  }
  *num_valid = nv;
  const uint64_t* s = radix_sort(sorted, scratch, nv, index_bits, index_bits + key_bits);
  if (s != sorted) std::memcpy(sorted, s, static_cast<size_t>(nv) * sizeof(uint64_t));
  const uint64_t mask = (uint64_t{1} << index_bits) - 1;
  int64_t m = 0;
  for (int64_t j = 0; j < nv; ++j) {
    if (j > 0 && (sorted[j] >> index_bits) != (sorted[j - 1] >> index_bits)) ++m;
    point2voxel[sorted[j] & mask] = m;
  }
  return nv ? m + 1 : 0;
}

// Stage 2: coords (m, 4) int64 [b, x, y, z] and feats (m, c) float32 = per-voxel mean of
// all columns, summed in point order from 0.0f and divided by the float32 count.
void xk_voxelize_reduce(const float* points, int64_t c, const uint64_t* sorted,
                        int64_t num_valid, int index_bits, const int64_t* shape,
                        int64_t* coords, float* feats) {
  const int64_t X = shape[0], Y = shape[1], Z = shape[2];
  const uint64_t mask = (uint64_t{1} << index_bits) - 1;
  int64_t v = -1;
  float count = 0.0f;
  float* f = feats;
  for (int64_t j = 0; j <= num_valid; ++j) {
    const bool new_voxel = j == num_valid || j == 0 ||
                           (sorted[j] >> index_bits) != (sorted[j - 1] >> index_bits);
    if (new_voxel && v >= 0)
      for (int64_t a = 0; a < c; ++a) f[a] /= count;
    if (j == num_valid) break;
    if (new_voxel) {
      ++v;
      int64_t key = static_cast<int64_t>(sorted[j] >> index_bits);
      int64_t* r = coords + 4 * v;
      r[3] = key % Z;
      key /= Z;
      r[2] = key % Y;
      key /= Y;
      r[1] = key % X;
      r[0] = key / X;
      f = feats + v * c;
      for (int64_t a = 0; a < c; ++a) f[a] = 0.0f;
      count = 0.0f;
    }
    const float* p = points + static_cast<int64_t>(sorted[j] & mask) * c;
    for (int64_t a = 0; a < c; ++a) f[a] += p[a];
    count += 1.0f;
  }
}

// logits (rows, k) float32; valid (n) bytes, nonzero for the points that have a logits
// row (in order). Writes labels[i] = argmax + 1 and confidence[i] = 1 / sum(exp(l - max))
// at the valid i; other entries are left alone. Returns rows, or -1 if the number of valid
// entries is not rows (nothing past either end is read or written).
//
// Rows go kLanes at a time through a transposed block, so every loop runs across rows in
// full vectors; along a row (k ~ 20 classes) the vector remainders and horizontal
// reductions cost more than the arithmetic.
int64_t xk_point_labels(const float* logits, int64_t rows, int64_t k, const uint8_t* valid,
                        int64_t n, uint16_t* labels, float* confidence) {
  constexpr int64_t kLanes = 16;
  std::vector<float> block(static_cast<size_t>(k * kLanes));
  float* T = block.data();
  float best[kLanes], sum[kLanes];
  int32_t arg[kLanes];
  int64_t i = 0;  // next entry of valid to look at
  for (int64_t r0 = 0; r0 < rows; r0 += kLanes) {
    const int64_t nr = rows - r0 < kLanes ? rows - r0 : kLanes;
    for (int64_t j = 0; j < k; ++j)
      for (int64_t r = 0; r < kLanes; ++r)
        T[j * kLanes + r] = r < nr ? logits[(r0 + r) * k + j] : 0.0f;
#pragma omp simd
    for (int64_t r = 0; r < kLanes; ++r) {
      best[r] = T[r];
      sum[r] = 0.0f;
      arg[r] = 0;
    }
    for (int64_t j = 1; j < k; ++j)
#pragma omp simd
      for (int64_t r = 0; r < kLanes; ++r)
        best[r] = T[j * kLanes + r] > best[r] ? T[j * kLanes + r] : best[r];  // skips NaN
    for (int64_t j = 0; j < k; ++j)
#pragma omp simd
      for (int64_t r = 0; r < kLanes; ++r) sum[r] += exp_nonpositive(T[j * kLanes + r] - best[r]);
    for (int64_t j = k - 1; j >= 0; --j)  // descending: the first maximum wins
#pragma omp simd
      for (int64_t r = 0; r < kLanes; ++r)
        arg[r] = T[j * kLanes + r] == best[r] ? static_cast<int32_t>(j) : arg[r];
    for (int64_t r = 0; r < nr; ++r) {
      while (i < n && !valid[i]) ++i;
      if (i == n) return -1;
      float s = sum[r];
      int64_t a = arg[r];
      if (!std::isfinite(s) || !std::isfinite(best[r])) {
        // a NaN or an infinity in the row: torch.max / torch.exp semantics, scalar
        const float* l = logits + (r0 + r) * k;
        float m = l[0];
        a = 0;
        for (int64_t j = 1; j < k && !std::isnan(m); ++j)
          if (l[j] > m || std::isnan(l[j])) {
            m = l[j];
            a = j;
          }
        s = 0.0f;
        for (int64_t j = 0; j < k; ++j) s += std::exp(l[j] - m);
      }
      labels[i] = static_cast<uint16_t>(a + 1);
      confidence[i] = 1.0f / s;
      ++i;
    }
  }
  while (i < n && !valid[i]) ++i;
  return i == n ? rows : -1;
}

}  // extern "C"
