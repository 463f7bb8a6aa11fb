// Quantized and float rows <-> 16-row panels (layout in quant.h). A permutation of the stored bytes, except
// the K-quants' 6- and 4-bit scales and mins, which are unpacked to one byte each (re-packed exactly by
// unpack_panels).
#include <cstring>

#include "edgeformer/errors.h"
#include "edgeformer/iquant.h"
#include "edgeformer/quant.h"
#include "edgeformer/tensor.h"
#include "edgeformer/threadpool.h"

namespace ef {

namespace {
constexpr int64_t kQ4kPanelBlock = 16 * 2 * 2 + 8 * 16 * 2 + 32 * 64;  // 2368
constexpr int64_t kQ6kPanelBlock = 16 * 210;                            // 3360: same bytes, rearranged

// q6_k element f of a stored block: its low 4 bits' byte and shift, its high 2 bits' byte and shift
inline void q6_at(int f, int& lo_byte, int& lo_shift, int& hi_byte, int& hi_shift) {
  const int a = f / 128, r = f % 128;
  lo_byte = a * 64 + r % 64;
  lo_shift = 4 * (r / 64);
  hi_byte = 128 + a * 32 + r % 32;
  hi_shift = 2 * (r / 32);
}
// panel position of element f (unit u = f / 16: 16 elements, one scale): the nibble vector (A or B) byte
// offset and shift, and the 2-bit vector byte offset and shift, for row r
inline void q6_panel_at(int f, int r, int& lo_off, int& lo_shift, int& hi_off, int& hi_shift) {
  const int u = f / 16, e = f % 16, g = e / 4, j = e % 4;  // k-group g of the unit, element j of it
  lo_off = 288 + 192 * u + 64 * (g / 2) + 4 * r + j;
  lo_shift = 4 * (g % 2);
  hi_off = 288 + 192 * u + 128 + 4 * r + j;
  hi_shift = 2 * g;
}

// The blocks laid out by bit fields (q4_1, q5_0, q5_1, q5_k, q3_k, q2_k): element f's value is at most two
// fields (low bits, high bit), each at a byte and shift of the stored block and of row r's panel block.
struct Field {
  int byte, shift, bits;
};
constexpr int64_t kQ5kPanelBlock = kQ4kPanelBlock + 8 * 64;  // 2880: q4_k's layout, then 8 vectors of fifth bits
constexpr int64_t kQ3kPanelBlock = 32 + 256 + 16 * 64 + 8 * 64;  // 1824
constexpr int64_t kQ2kPanelBlock = 32 + 32 + 256 + 256 + 16 * 64;  // 1600

bool by_fields(DType t) {
  return t == DType::Q4_1 || t == DType::Q5_0 || t == DType::Q5_1 || t == DType::Q5_K || t == DType::Q3_K ||
         t == DType::Q2_K || t == DType::IQ4_XS;
}

// Fills stored[] and panel[] for element f of row r; returns the number of fields.
int fields(DType t, int f, int r, Field* stored, Field* panel) {
  switch (t) {
    case DType::Q4_1: case DType::Q5_0: case DType::Q5_1: {  // panel: (d, m,) 4 nibble chunks as q4_0, fifth bits
      const int qs = (int)dtype_block_bytes(t) - 16, base = t == DType::Q5_0 ? 32 : 64, c = f % 16 / 4;
      stored[0] = {qs + f % 16, 4 * (f / 16), 4};
      panel[0] = {base + 64 * c + 4 * r + f % 4, 4 * (f / 16), 4};
      if (t == DType::Q4_1) return 1;
      stored[1] = {qs - 4 + f / 8, f % 8, 1};
      panel[1] = {base + 256 + 4 * r + f % 4, 4 * (f / 16) + c, 1};  // bit c: k 4c + i, bit 4 + c: k 16 + 4c + i
      return 2;
    }
    case DType::IQ4_XS: {  // sub-block ib: 4 chunks as q4_0's
      const int ib = f / 32, e = f % 32;
      stored[0] = {8 + 16 * ib + e % 16, 4 * (e / 16), 4};
      panel[0] = {160 + 256 * ib + 64 * (e % 16 / 4) + 4 * r + e % 4, 4 * (e / 16), 4};
      return 1;
    }
    case DType::Q5_K: {  // sub-block j, element i: q4_k's chunks; fifth-bit vector g = i / 4, bit j
      const int j = f / 32, i = f % 32;
      stored[0] = {48 + 32 * (j / 2) + i, 4 * (j % 2), 4};
      panel[0] = {(int)(320 + 64 * (8 * (j / 2) + i / 4) + 4 * r + i % 4), 4 * (j % 2), 4};
      stored[1] = {16 + i, j, 1};
      panel[1] = {(int)(kQ4kPanelBlock + 64 * (i / 4) + 4 * r + i % 4), j, 1};
      return 2;
    }
    default: {  // q3_k, q2_k: unit u of 16 elements, k-group g; 2-bit vector per unit (bits 2g), q3_k's high bits
      const int u = f / 16, g = f % 16 / 4, i = f % 4, q3 = t == DType::Q3_K;
      stored[0] = {(q3 ? 32 : 16) + 32 * (f / 128) + f % 32, 2 * (f % 128 / 32), 2};
      panel[0] = {(q3 ? 288 : 576) + 64 * u + 4 * r + i, 2 * g, 2};
      if (!q3) return 1;
      stored[1] = {f % 32, f / 32, 1};
      panel[1] = {288 + 1024 + 64 * (f / 32) + 4 * r + i, 4 * (u % 2) + g, 1};  // one vector per 32: bit 4h + g
      return 2;
    }
  }
}

// q4_k / q5_k scales and mins: 12 bytes of 6-bit values <-> one byte each in the panel (rows r of 8 x 16)
void pack_q4k_scales(const uint8_t* s12, uint8_t* dst, int r) {
  for (int j = 0; j < 8; j++) {
    int sc, m;
    q4k_scale_min(j, s12, sc, m);
    dst[64 + 16 * j + r] = (uint8_t)sc;
    dst[192 + 16 * j + r] = (uint8_t)m;
  }
}
void unpack_q4k_scales(const uint8_t* src, uint8_t* s12, int r) {  // the inverse of q4k_scale_min
  std::memset(s12, 0, 12);
  for (int j = 0; j < 8; j++) {
    const int sc = src[64 + 16 * j + r], m = src[192 + 16 * j + r];
    if (j < 4) {
      s12[j] |= (uint8_t)(sc & 63);
      s12[j + 4] |= (uint8_t)(m & 63);
    } else {
      s12[j + 4] |= (uint8_t)((sc & 0x0F) | ((m & 0x0F) << 4));
      s12[j - 4] |= (uint8_t)((sc >> 4) << 6);
      s12[j] |= (uint8_t)((m >> 4) << 6);
    }
  }
}

// One row's block <-> its place in the panel block, for the field-laid types: scales, then every element.
void pack_fields(DType t, const uint8_t* s, uint8_t* dst, int r) {
  const int n = (int)dtype_block(t);
  switch (t) {
    case DType::Q4_1: case DType::Q5_0: case DType::Q5_1:
      std::memcpy(dst + 2 * r, s, 2);
      if (t != DType::Q5_0) std::memcpy(dst + 32 + 2 * r, s + 2, 2);
      break;
    case DType::Q5_K:
      std::memcpy(dst + 2 * r, s, 2);
      std::memcpy(dst + 32 + 2 * r, s + 2, 2);
      pack_q4k_scales(s + 4, dst, r);
      break;
    case DType::IQ4_XS:
      std::memcpy(dst + 2 * r, s, 2);
      for (int ib = 0; ib < 8; ib++) dst[32 + 16 * ib + r] = (uint8_t)(int8_t)iq4xs_scale(ib, s);
      break;
    case DType::Q3_K:
      std::memcpy(dst + 2 * r, s + 108, 2);
      for (int g = 0; g < 16; g++) dst[32 + 16 * g + r] = (uint8_t)(int8_t)q3k_scale(g, s);
      break;
    default:  // q2_k
      std::memcpy(dst + 2 * r, s + 80, 2);
      std::memcpy(dst + 32 + 2 * r, s + 82, 2);
      for (int g = 0; g < 16; g++) {
        dst[64 + 16 * g + r] = s[g] & 0x0F;
        dst[320 + 16 * g + r] = s[g] >> 4;
      }
  }
  Field sf[2], pf[2];
  for (int f = 0; f < n; f++)
    for (int i = 0, k = fields(t, f, r, sf, pf); i < k; i++)
      dst[pf[i].byte] |= (uint8_t)(((s[sf[i].byte] >> sf[i].shift) & ((1 << sf[i].bits) - 1)) << pf[i].shift);
}

void unpack_fields(DType t, const uint8_t* src, uint8_t* d, int r) {
  const int n = (int)dtype_block(t);
  std::memset(d, 0, dtype_block_bytes(t));
  switch (t) {
    case DType::Q4_1: case DType::Q5_0: case DType::Q5_1:
      std::memcpy(d, src + 2 * r, 2);
      if (t != DType::Q5_0) std::memcpy(d + 2, src + 32 + 2 * r, 2);
      break;
    case DType::Q5_K:
      std::memcpy(d, src + 2 * r, 2);
      std::memcpy(d + 2, src + 32 + 2 * r, 2);
      unpack_q4k_scales(src, d + 4, r);
      break;
    case DType::IQ4_XS:
      std::memcpy(d, src + 2 * r, 2);
      for (int ib = 0; ib < 8; ib++) iq4xs_put_scale(ib, (int8_t)src[32 + 16 * ib + r], d);
      break;
    case DType::Q3_K:
      std::memcpy(d + 108, src + 2 * r, 2);
      for (int g = 0; g < 16; g++) q3k_put_scale(g, (int8_t)src[32 + 16 * g + r], d);
      break;
    default:
      std::memcpy(d + 80, src + 2 * r, 2);
      std::memcpy(d + 82, src + 32 + 2 * r, 2);
      for (int g = 0; g < 16; g++) d[g] = (uint8_t)(src[64 + 16 * g + r] | src[320 + 16 * g + r] << 4);
  }
  Field sf[2], pf[2];
  for (int f = 0; f < n; f++)
    for (int i = 0, k = fields(t, f, r, sf, pf); i < k; i++)
      d[sf[i].byte] |= (uint8_t)(((src[pf[i].byte] >> pf[i].shift) & ((1 << pf[i].bits) - 1)) << sf[i].shift);
}

// The i-quants: row r's block <-> its place in the panel block (iquant.h: GridPanel)
void pack_grid(DType t, const uint8_t* s, uint8_t* dst, int r) {
  const GridTraits tr = grid_traits(t);
  const GridPanel P = grid_panel(t);
  GridBlock g;
  parse_grid_block(t, s, g);
  std::memcpy(dst + 2 * r, &g.d, 2);
  for (int u = 0; u < P.nu; u++) dst[P.sc + 16 * u + r] = g.sc[u];
  for (int j = 0; j < P.ng; j++) dst[P.lo + 16 * j + r] = (uint8_t)g.idx[j];
  const int gps = 32 / tr.gw;  // groups per sub-block of 32
  if (tr.hi_bits)
    for (int sb = 0; sb < 8; sb++) {
      uint32_t w = 0;
      for (int l = 0; l < gps; l++) w |= (uint32_t)(g.idx[gps * sb + l] >> 8) << (tr.hi_bits * l);
      for (int i = 0; i < P.hb; i++) dst[P.hi + 16 * P.hb * sb + P.hb * r + i] = (uint8_t)(w >> (8 * i));
    }
  if (tr.signs)
    for (int j = 0; j < 32; j++)
      for (int e = 0; e < 8; e++)  // element 4 c + i of the 8: bit 4 r + i of mask c
        if ((g.sign[j] >> e) & 1) dst[P.sg + 16 * j + 8 * (e / 4) + (4 * r + e % 4) / 8] |= (uint8_t)(1 << ((4 * r + e % 4) % 8));
}

void unpack_grid(DType t, const uint8_t* src, uint8_t* d, int r) {
  const GridTraits tr = grid_traits(t);
  const GridPanel P = grid_panel(t);
  GridBlock g = {};
  std::memcpy(&g.d, src + 2 * r, 2);
  for (int u = 0; u < P.nu; u++) g.sc[u] = src[P.sc + 16 * u + r];
  for (int j = 0; j < P.ng; j++) g.idx[j] = src[P.lo + 16 * j + r];
  const int gps = 32 / tr.gw;
  if (tr.hi_bits)
    for (int sb = 0; sb < 8; sb++) {
      uint32_t w = 0;
      for (int i = 0; i < P.hb; i++) w |= (uint32_t)src[P.hi + 16 * P.hb * sb + P.hb * r + i] << (8 * i);
      for (int l = 0; l < gps; l++) g.idx[gps * sb + l] |= (uint16_t)(((w >> (tr.hi_bits * l)) & ((1u << tr.hi_bits) - 1)) << 8);
    }
  if (tr.signs)
    for (int j = 0; j < 32; j++)
      for (int e = 0; e < 8; e++)
        if ((src[P.sg + 16 * j + 8 * (e / 4) + (4 * r + e % 4) / 8] >> ((4 * r + e % 4) % 8)) & 1) g.sign[j] |= (uint8_t)(1 << e);
  emit_grid_block(t, g, d);
}

int64_t panel_block_bytes(DType t) {
  if (is_grid(t)) return grid_panel(t).bytes;
  switch (t) {
    case DType::IQ4_NL: return 16 * 18;
    case DType::IQ4_XS: return 32 + 128 + 8 * 256;  // 2208
    case DType::Q4_1: return 16 * 20;
    case DType::Q5_0: return 16 * 22;
    case DType::Q5_1: return 16 * 24;
    case DType::Q5_K: return kQ5kPanelBlock;
    case DType::Q3_K: return kQ3kPanelBlock;
    case DType::Q2_K: return kQ2kPanelBlock;
    case DType::Q8_0: return 16 * 34;
    case DType::Q4_0: return 16 * 18;
    case DType::Q4_K: return kQ4kPanelBlock;
    case DType::Q6_K: return kQ6kPanelBlock;
    case DType::BF16: return 16 * 64;
    case DType::F32: return 16 * 64;
    case DType::F16: return 16 * 32;
    default: return 0;
  }
}

// One block of 16 rows (src[r] = row r's block, null past the end) -> its panel block.
void pack_block(DType t, const uint8_t* const* src, uint8_t* dst) {
  std::memset(dst, 0, (size_t)panel_block_bytes(t));
  for (int r = 0; r < 16; r++) {
    const uint8_t* s = src[r];
    if (!s) continue;
    if (is_grid(t)) {
      pack_grid(t, s, dst, r);
    } else if (by_fields(t)) {
      pack_fields(t, s, dst, r);
    } else if (t == DType::Q6_K) {
      std::memcpy(dst + 2 * r, s + 208, 2);                                           // f16 d
      for (int u = 0; u < 16; u++) dst[32 + 16 * u + r] = s[192 + u];                 // int8 scale per 16
      for (int f = 0; f < 256; f++) {
        int lb, ls, hb, hs, lo, lsh, ho, hsh;
        q6_at(f, lb, ls, hb, hs);
        q6_panel_at(f, r, lo, lsh, ho, hsh);
        dst[lo] |= (uint8_t)(((s[lb] >> ls) & 0x0F) << lsh);
        dst[ho] |= (uint8_t)(((s[hb] >> hs) & 0x03) << hsh);
      }
    } else if (!is_quantized(t)) {  // float: 16 chunks of a lane (one element, a bf16 pair) per row
      const int lane = t == DType::F16 ? 2 : 4;
      for (int j = 0; j < 16; j++) std::memcpy(dst + 16 * lane * j + lane * r, s + lane * j, lane);
    } else if (t == DType::Q8_0 || t == DType::Q4_0 || t == DType::IQ4_NL) {  // iq4_nl: q4_0's layout
      std::memcpy(dst + 2 * r, s, 2);  // f16 scale
      const int chunks = t == DType::Q8_0 ? 8 : 4;
      for (int c = 0; c < chunks; c++) std::memcpy(dst + 32 + 64 * c + 4 * r, s + 2 + 4 * c, 4);
    } else {  // q4_k
      std::memcpy(dst + 2 * r, s, 2);
      std::memcpy(dst + 32 + 2 * r, s + 2, 2);
      pack_q4k_scales(s + 4, dst, r);
      for (int j = 0; j < 4; j++)
        for (int g = 0; g < 8; g++) std::memcpy(dst + 320 + 64 * (8 * j + g) + 4 * r, s + 16 + 32 * j + 4 * g, 4);
    }
  }
}

void unpack_block(DType t, const uint8_t* src, uint8_t* const* dst) {
  for (int r = 0; r < 16; r++) {
    uint8_t* d = dst[r];
    if (!d) continue;
    if (is_grid(t)) {
      unpack_grid(t, src, d, r);
    } else if (by_fields(t)) {
      unpack_fields(t, src, d, r);
    } else if (t == DType::Q6_K) {
      std::memset(d, 0, 192);
      std::memcpy(d + 208, src + 2 * r, 2);
      for (int u = 0; u < 16; u++) d[192 + u] = src[32 + 16 * u + r];
      for (int f = 0; f < 256; f++) {
        int lb, ls, hb, hs, lo, lsh, ho, hsh;
        q6_at(f, lb, ls, hb, hs);
        q6_panel_at(f, r, lo, lsh, ho, hsh);
        d[lb] |= (uint8_t)(((src[lo] >> lsh) & 0x0F) << ls);
        d[hb] |= (uint8_t)(((src[ho] >> hsh) & 0x03) << hs);
      }
    } else if (!is_quantized(t)) {
      const int lane = t == DType::F16 ? 2 : 4;
      for (int j = 0; j < 16; j++) std::memcpy(d + lane * j, src + 16 * lane * j + lane * r, lane);
    } else if (t == DType::Q8_0 || t == DType::Q4_0 || t == DType::IQ4_NL) {
      std::memcpy(d, src + 2 * r, 2);
      const int chunks = t == DType::Q8_0 ? 8 : 4;
      for (int c = 0; c < chunks; c++) std::memcpy(d + 2 + 4 * c, src + 32 + 64 * c + 4 * r, 4);
    } else {
      std::memcpy(d, src + 2 * r, 2);
      std::memcpy(d + 2, src + 32 + 2 * r, 2);
      unpack_q4k_scales(src, d + 4, r);
      for (int j = 0; j < 4; j++)
        for (int g = 0; g < 8; g++) std::memcpy(d + 16 + 32 * j + 4 * g, src + 320 + 64 * (8 * j + g) + 4 * r, 4);
    }
  }
}
// The row-scaled q8_0 layout (quant.h) of 16 rows, or its ternary form: src[r] is row r's K / 32 q8_0 blocks (null
// past the end).
void pack_rows(const uint8_t* const* src, int64_t K, bool ternary, uint8_t* dst) {
  std::memset(dst, 0, (size_t)(ternary ? ternary_panel_bytes(K) : row_panel_bytes(K)));
  for (int r = 0; r < 16; r++) {
    const uint8_t* s = src[r];
    if (!s) continue;
    std::memcpy(dst + 2 * r, s, 2);  // the scale every block of the row shares
    for (int64_t k = 0; k < K; k++) {
      const uint8_t q = s[34 * (k / 32) + 2 + k % 32];
      if (ternary)  // (-1, 0, 1 + 1 at bits 2j of vector k / 16's byte 4r + k % 4, j = k % 16 / 4)
        dst[64 + 64 * (k / 16) + 4 * r + k % 4] |= (uint8_t)(((int8_t)q + 1) << (2 * (k % 16 / 4)));
      else
        dst[64 + 64 * (k / 4) + 4 * r + k % 4] = q ^ 0x80;  // + 128
    }
  }
}

void unpack_rows(const uint8_t* src, int64_t K, bool ternary, uint8_t* const* dst) {
  for (int r = 0; r < 16; r++) {
    uint8_t* d = dst[r];
    if (!d) continue;
    for (int64_t b = 0; b < K / 32; b++) std::memcpy(d + 34 * b, src + 2 * r, 2);
    for (int64_t k = 0; k < K; k++) {
      uint8_t& q = d[34 * (k / 32) + 2 + k % 32];
      if (ternary)
        q = (uint8_t)(int8_t)(((src[64 + 64 * (k / 16) + 4 * r + k % 4] >> (2 * (k % 16 / 4))) & 3) - 1);
      else
        q = src[64 + 64 * (k / 4) + 4 * r + k % 4] ^ 0x80;
    }
  }
}

// Whether a q8_0 matrix takes the row-scaled layout: every row's blocks share one scale; and the ternary one: its
// values are all -1, 0 or 1 too.
bool rows_share_scales(const Tensor& t) {
  const int64_t O = t.shape[0], K = t.shape[1];
  if (t.dtype != DType::Q8_0 || K > kRowScaledMaxK) return false;
  for (int64_t o = 0; o < O; o++)
    if (!q8_0_row_shares_scale((const uint8_t*)t.data + o * t.row_bytes(), K)) return false;
  return true;
}
bool ternary_rows(const Tensor& t) {
  const int64_t O = t.shape[0], K = t.shape[1];
  for (int64_t o = 0; o < O; o++) {
    const uint8_t* row = (const uint8_t*)t.data + o * t.row_bytes();
    for (int64_t b = 0; b < K / 32; b++)
      for (int i = 0; i < 32; i++) {
        const int8_t q = (int8_t)row[34 * b + 2 + i];
        if (q < -1 || q > 1) return false;
      }
  }
  return true;
}
}  // namespace

static int64_t panel_stride(const Tensor& t) {  // (bytes from one panel to the next)
  const int64_t K = t.shape[1];
  return t.ternary ? ternary_panel_bytes(K) : t.row_scaled ? row_panel_bytes(K) : panel_bytes(t.dtype, K);
}

int64_t panel_bytes(DType t, int64_t K) {
  const int64_t bb = panel_block_bytes(t);
  return bb ? K / panel_block(t) * bb : 0;
}

size_t Tensor::storage_bytes() const {
  if (!packed) return nbytes();
  return (size_t)((shape[0] + kPanel - 1) / kPanel * panel_stride(*this));
}

Tensor pack_panels(const Tensor& t, ThreadPool* pool) {
  EF_CHECK(t.dim() == 2 && !t.packed && t.rows_contiguous() && packable(t.dtype, t.shape[1]),
           t.describe() + ": cannot repack a " + dtype_name(t.dtype) + " tensor of shape " + t.shape_str());
  const int64_t O = t.shape[0], K = t.shape[1], nb = K / panel_block(t.dtype), P = (O + kPanel - 1) / kPanel;
  Tensor out = t;
  out.row_scaled = rows_share_scales(t);
  out.ternary = out.row_scaled && ternary_rows(t);
  out.packed = true;
  const bool row_scaled = out.row_scaled;
  const int64_t pb = panel_stride(out), bb = panel_block_bytes(t.dtype);
  const int64_t blk = (int64_t)dtype_bytes(t.dtype, panel_block(t.dtype));
  auto buf = std::make_shared<Buffer>((size_t)(P * pb));
  const uint8_t* src = (const uint8_t*)t.data;
  const int64_t rb = t.row_bytes();
  auto pack = [&](int, int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; p++) {
      if (row_scaled) {
        const uint8_t* rows[16];
        for (int r = 0; r < 16; r++) rows[r] = p * 16 + r < O ? src + (p * 16 + r) * rb : nullptr;
        pack_rows(rows, K, out.ternary, (uint8_t*)buf->data + p * pb);
        continue;
      }
      for (int64_t b = 0; b < nb; b++) {
        const uint8_t* rows[16];
        for (int r = 0; r < 16; r++) rows[r] = p * 16 + r < O ? src + (p * 16 + r) * rb + b * blk : nullptr;
        pack_block(t.dtype, rows, (uint8_t*)buf->data + p * pb + b * bb);
      }
    }
  };
  if (pool && P > 1) pool->parallel_for(P, 1, pack);
  else pack(0, 0, P);
  out.mapped = nullptr;
  out.owner = std::shared_ptr<const void>(buf, buf->data);
  out.data = buf->data;
  out.strides = contiguous_strides(t.dtype, t.shape);
  return out;
}

// Rows [r0, r1) of packed t into their stored layout (row stride rb bytes at dst): rows outside are skipped.
static void unpack_rows_of(const Tensor& t, int64_t r0, int64_t r1, uint8_t* dst, int64_t rb) {
  const int64_t K = t.shape[1], nb = K / panel_block(t.dtype);
  const int64_t pb = panel_stride(t), bb = panel_block_bytes(t.dtype);
  const int64_t blk = (int64_t)dtype_bytes(t.dtype, panel_block(t.dtype));
  for (int64_t p = r0 / kPanel; p * kPanel < r1; p++) {
    uint8_t* rows[16];
    for (int r = 0; r < 16; r++) {
      const int64_t o = p * kPanel + r;
      rows[r] = o >= r0 && o < r1 ? dst + (o - r0) * rb : nullptr;
    }
    if (t.row_scaled) {
      unpack_rows((const uint8_t*)t.data + p * pb, K, t.ternary, rows);
      continue;
    }
    for (int64_t b = 0; b < nb; b++) {
      uint8_t* at[16];
      for (int r = 0; r < 16; r++) at[r] = rows[r] ? rows[r] + b * blk : nullptr;
      unpack_block(t.dtype, (const uint8_t*)t.data + p * pb + b * bb, at);
    }
  }
}

Tensor unpack_panels(const Tensor& t) {
  if (!t.packed) return t;
  Tensor out = Tensor::empty(t.dtype, t.shape);
  out.name = t.name;
  out.source = t.source;
  out.scale = t.scale;
  unpack_rows_of(t, 0, t.shape[0], (uint8_t*)out.data, out.row_bytes());
  return out;
}

void panel_row(const Tensor& t, int64_t row, uint8_t* dst) {
  EF_CHECK(t.packed && t.dim() == 2 && row >= 0 && row < t.shape[0], t.describe() + ": no packed row " + std::to_string(row));
  unpack_rows_of(t, row, row + 1, dst, (int64_t)dtype_bytes(t.dtype, t.shape[1]));
}

}  // namespace ef
