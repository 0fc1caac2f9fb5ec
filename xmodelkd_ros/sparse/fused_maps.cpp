// Kernel maps for the sparse convs on CPU: submanifold tables, the 2x downsampling with its
// down / inverse tables, and the offset-grouped pair lists of any table (maps.py, pairs.py).
//
// The torch builder answers every neighbour query with vectorised gathers over (M, 27)
// index tensors: a dozen full passes over tens of MB per level, plus sorts and nonzero,
// so a scan's maps cost as much as the network. Voxels in (b, x, y, z) order make it a
// merge instead: a scan is a list of x rows, each a list of (x, y) pillars, each a short
// run of z. The neighbours of a pillar's voxels lie in the pillars y-1..y+1 of the rows
// x-1..x+1, which one forward walk per row pair finds in order, and within a pillar pair
// another walk along z. No hash table, no dense grid: memory is O(M) whatever the grid.
// Every row's voxels are written by one thread (OpenMP over rows), so no atomics.
//
// Unsorted input is sorted first (a permutation: tables keep referring to the caller's
// rows). Duplicate voxels and voxels outside the grid are refused with kBadCoords; the
// caller then runs the torch builder, which defines the results. Tests compare the two
// element for element (sparse/maps.py is the oracle).

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace {

constexpr int kBadCoords = -2;

struct Pillar {
  int64_t y, begin, end;  // voxels [begin, end) in sorted order, z ascending
};
struct Row {
  int64_t b, x, pbegin, pend;  // pillars [pbegin, pend), y ascending
};

// The sorted view of a voxel set: orig[s] is the caller's row of sorted voxel s.
struct Layout {
  std::vector<int64_t> orig, z;
  std::vector<Pillar> pillars;
  std::vector<Row> rows;

  // Row with (b, x + da) if it exists, else -1: rows are sorted and unique, so it lies
  // within |da| steps of r.
  int64_t find_row(int64_t r, int64_t da) const {
    const int64_t b = rows[r].b, tx = rows[r].x + da, n = static_cast<int64_t>(rows.size());
    const int64_t step = da > 0 ? 1 : -1;
    for (int64_t q = r, i = 0; i <= (da > 0 ? da : -da); ++i, q += step) {
      if (q < 0 || q >= n || rows[q].b != b) return -1;
      if (rows[q].x == tx) return q;
      if ((da > 0 && rows[q].x > tx) || (da < 0 && rows[q].x < tx)) return -1;
    }
    return -1;
  }
};

inline bool less_row(const int64_t* a, const int64_t* b) {
  for (int j = 0; j < 4; ++j)
    if (a[j] != b[j]) return a[j] < b[j];
  return false;
}

int build_layout(const int64_t* c, int64_t m, int64_t X, int64_t Y, int64_t Z, Layout& L) {
  for (int64_t i = 0; i < m; ++i) {
    const int64_t* r = c + 4 * i;
    if (r[0] < 0 || r[1] < 0 || r[1] >= X || r[2] < 0 || r[2] >= Y || r[3] < 0 || r[3] >= Z)
      return kBadCoords;
  }
  L.orig.resize(m);
  std::iota(L.orig.begin(), L.orig.end(), int64_t{0});
  bool sorted = true;
  for (int64_t i = 1; i < m && sorted; ++i) sorted = less_row(c + 4 * (i - 1), c + 4 * i);
  if (!sorted) {
    std::sort(L.orig.begin(), L.orig.end(),
              [c](int64_t a, int64_t b) { return less_row(c + 4 * a, c + 4 * b); });
    for (int64_t s = 1; s < m; ++s)
      if (!less_row(c + 4 * L.orig[s - 1], c + 4 * L.orig[s])) return kBadCoords;  // duplicate
  }
  L.z.resize(m);
  L.pillars.clear();
  L.rows.clear();
  for (int64_t s = 0; s < m; ++s) {
    const int64_t* r = c + 4 * L.orig[s];
    L.z[s] = r[3];
    const bool new_row = s == 0 || r[0] != L.rows.back().b || r[1] != L.rows.back().x;
    if (new_row) {
      if (!L.rows.empty()) L.rows.back().pend = static_cast<int64_t>(L.pillars.size());
      L.rows.push_back({r[0], r[1], static_cast<int64_t>(L.pillars.size()), 0});
    }
    if (new_row || r[2] != L.pillars.back().y) {
      if (!L.pillars.empty()) L.pillars.back().end = s;
      L.pillars.push_back({r[2], s, 0});
    }
  }
  if (m) {
    L.pillars.back().end = m;
    L.rows.back().pend = static_cast<int64_t>(L.pillars.size());
  }
  return 0;
}

}  // namespace

extern "C" {

// table (m, ks^3), row-major: table[i, (a*ks + b)*ks + c] = row of coords[i] + (a, b, c) - ks/2,
// or m when absent. ks odd. Returns 0 or kBadCoords.
int xk_subm_table(const int64_t* coords, int64_t m, int64_t X, int64_t Y, int64_t Z, int64_t ks,
                  int64_t* table, int num_threads) {
  Layout L;
  if (const int rc = build_layout(coords, m, X, Y, Z, L)) return rc;
  const int64_t h = ks / 2, K = ks * ks * ks;
  const int64_t nrows = static_cast<int64_t>(L.rows.size());
  const Pillar* P = L.pillars.data();
  const int64_t* z = L.z.data();
  const int64_t* orig = L.orig.data();
#pragma omp parallel for schedule(dynamic, 4) num_threads(num_threads)
  for (int64_t r = 0; r < nrows; ++r) {
    const Row& R = L.rows[r];
    for (int64_t s = P[R.pbegin].begin; s < P[R.pend - 1].end; ++s)
      std::fill_n(table + orig[s] * K, K, m);
    for (int64_t da = -h; da <= h; ++da) {
      const int64_t q = L.find_row(r, da);
      if (q < 0) continue;
      const Row& Q = L.rows[q];
      int64_t t = Q.pbegin;  // first pillar of row q not below y - h
      for (int64_t p = R.pbegin; p < R.pend; ++p) {
        const int64_t y = P[p].y;
        while (t < Q.pend && P[t].y < y - h) ++t;
        for (int64_t u = t; u < Q.pend && P[u].y <= y + h; ++u) {
          const int64_t centre = ((da + h) * ks + (P[u].y - y + h)) * ks + h;
          int64_t w = P[u].begin;
          const int64_t we = P[u].end;
          for (int64_t s = P[p].begin; s < P[p].end; ++s) {
            const int64_t zs = z[s];
            while (w < we && z[w] < zs - h) ++w;
            int64_t* row = table + orig[s] * K + centre;
            for (int64_t v = w; v < we && z[v] <= zs + h; ++v) row[z[v] - zs] = orig[v];
          }
        }
      }
    }
  }
  return 0;
}

// Kernel 2, stride 2: coarse voxels (b, x/2, y/2, z/2) in sorted order into coarse (<= m
// rows x 4), the down table (m_coarse, 8) with sentinel m, offset k = (x%2*2 + y%2)*2 + z%2,
// and its transpose, the inverse table up (m, 8) with sentinel m_coarse. Returns m_coarse
// or kBadCoords.
int64_t xk_downsample2(const int64_t* coords, int64_t m, int64_t X, int64_t Y, int64_t Z,
                       int64_t* coarse, int64_t* down, int64_t* up, int num_threads) {
  Layout L;
  if (const int rc = build_layout(coords, m, X, Y, Z, L)) return rc;
  std::vector<int64_t> parent(m), offset(m);
  struct Item {
    int64_t zc, s, k;
  };
  std::vector<Item> buf;
  const Pillar* P = L.pillars.data();
  const int64_t nrows = static_cast<int64_t>(L.rows.size());
  int64_t mc = 0;
  for (int64_t r = 0; r < nrows;) {
    // the fine rows 2X and 2X + 1 of one coarse row: merge their pillars by y / 2
    const Row& A = L.rows[r];
    const int64_t xc = A.x >> 1;
    const bool pair = r + 1 < nrows && L.rows[r + 1].b == A.b && (L.rows[r + 1].x >> 1) == xc;
    int64_t cur[2] = {A.pbegin, pair ? L.rows[r + 1].pbegin : 0};
    const int64_t end[2] = {A.pend, pair ? L.rows[r + 1].pend : 0};
    const int64_t xbit[2] = {A.x & 1, pair ? L.rows[r + 1].x & 1 : 0};
    while (cur[0] < end[0] || cur[1] < end[1]) {
      int64_t yc = INT64_MAX;
      for (int j = 0; j < 2; ++j)
        if (cur[j] < end[j]) yc = std::min(yc, P[cur[j]].y >> 1);
      buf.clear();
      for (int j = 0; j < 2; ++j)
        for (; cur[j] < end[j] && (P[cur[j]].y >> 1) == yc; ++cur[j]) {
          const Pillar& pl = P[cur[j]];
          const int64_t kxy = (xbit[j] * 2 + (pl.y & 1)) * 2;
          for (int64_t s = pl.begin; s < pl.end; ++s)
            buf.push_back({L.z[s] >> 1, L.orig[s], kxy + (L.z[s] & 1)});
        }
      std::sort(buf.begin(), buf.end(), [](const Item& a, const Item& b) { return a.zc < b.zc; });
      for (size_t i = 0; i < buf.size(); ++mc) {
        int64_t* cc = coarse + 4 * mc;
        cc[0] = A.b, cc[1] = xc, cc[2] = yc, cc[3] = buf[i].zc;
        std::fill_n(down + 8 * mc, 8, m);
        for (const int64_t zc = buf[i].zc; i < buf.size() && buf[i].zc == zc; ++i) {
          down[8 * mc + buf[i].k] = buf[i].s;
          parent[buf[i].s] = mc;
          offset[buf[i].s] = buf[i].k;
        }
      }
    }
    r += pair ? 2 : 1;
  }
#pragma omp parallel for schedule(static) num_threads(num_threads)
  for (int64_t i = 0; i < m; ++i) {
    std::fill_n(up + 8 * i, 8, mc);
    up[8 * i + offset[i]] = parent[i];
  }
  return mc;
}

// Pair counts of a (m_out, K) table with sentinel num_in, per offset and per chunk of rows
// (counts: nchunks x K; chunk c holds rows [c*m_out/nchunks, (c+1)*m_out/nchunks)).
// The centre offset of a submanifold table (K odd, m_out == num_in, centre column == row)
// is the identity: it is not counted and the return value is 1 (else 0).
int xk_pair_counts(const int64_t* table, int64_t m_out, int64_t K, int64_t num_in,
                   int64_t nchunks, int64_t* counts, int num_threads) {
  int identity = K % 2 == 1 && m_out == num_in && m_out > 0;
  for (int64_t i = 0; i < m_out && identity; ++i) identity = table[i * K + K / 2] == i;
  const int64_t skip = identity ? K / 2 : -1;
#pragma omp parallel for schedule(static, 1) num_threads(num_threads)
  for (int64_t ch = 0; ch < nchunks; ++ch) {
    int64_t* cnt = counts + ch * K;
    std::fill_n(cnt, K, int64_t{0});
    for (int64_t i = ch * m_out / nchunks; i < (ch + 1) * m_out / nchunks; ++i)
      for (int64_t k = 0; k < K; ++k) cnt[k] += table[i * K + k] < num_in;
    if (skip >= 0) cnt[skip] = 0;
  }
  return identity;
}

// The pairs themselves, grouped by offset and by ascending output row within an offset
// (ConvPairs.from_table's order), with the counts of xk_pair_counts.
void xk_pair_fill(const int64_t* table, int64_t m_out, int64_t K, int64_t num_in, int64_t skip,
                  int64_t nchunks, const int64_t* counts, int64_t* in_rows, int64_t* out_rows,
                  int num_threads) {
#pragma omp parallel for schedule(static, 1) num_threads(num_threads)
  for (int64_t ch = 0; ch < nchunks; ++ch) {
    std::vector<int64_t> cur(K, 0);  // where this chunk's pairs of offset k start
    int64_t start = 0;
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t c = 0; c < nchunks; ++c) {
        if (c == ch) cur[k] = start;
        start += counts[c * K + k];
      }
    }
    for (int64_t i = ch * m_out / nchunks; i < (ch + 1) * m_out / nchunks; ++i) {
      const int64_t* row = table + i * K;
      for (int64_t k = 0; k < K; ++k) {
        if (row[k] < num_in && k != skip) {
          in_rows[cur[k]] = row[k];
          out_rows[cur[k]++] = i;
        }
      }
    }
  }
}

}  // extern "C"
