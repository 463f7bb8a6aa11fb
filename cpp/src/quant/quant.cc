#include "edgeformer/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "edgeformer/errors.h"
#include "edgeformer/iquant.h"

namespace ef {

namespace {

inline void store_f16(uint8_t* p, float f) {
  uint16_t h = f32_to_f16(f);
  std::memcpy(p, &h, 2);
}
// the element of largest magnitude, with its sign (the first of equals): gguf-py's argmax(abs)
inline float signed_extreme(const float* x, int n) {
  float amax = 0, mx = 0;
  for (int i = 0; i < n; i++)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      mx = x[i];
    }
  return mx;
}
inline float round_away(float x) {  // gguf-py's np_roundf: half away from zero
  const float a = std::fabs(x), fl = std::floor(a);
  const float b = fl + std::floor(2.f * (a - fl));
  return x < 0 ? -b : (x > 0 ? b : 0.f);
}

void quantize_q8_0(const float* x, uint8_t* out, int64_t nb) {
  for (int64_t b = 0; b < nb; b++, x += 32, out += 34) {
    float amax = 0;
    for (int i = 0; i < 32; i++) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127.f, id = d != 0 ? 1.f / d : 0.f;
    store_f16(out, d);
    for (int i = 0; i < 32; i++) out[2 + i] = (uint8_t)(int8_t)round_away(x[i] * id);
  }
}

void quantize_q4_0(const float* x, uint8_t* out, int64_t nb) {
  for (int64_t b = 0; b < nb; b++, x += 32, out += 18) {
    const float d = signed_extreme(x, 32) / -8.f, id = d != 0 ? 1.f / d : 0.f;
    store_f16(out, d);
    for (int i = 0; i < 16; i++) {
      int q0 = std::min(15, std::max(0, (int)(uint8_t)(int)std::trunc(x[i] * id + 8.5f)));
      int q1 = std::min(15, std::max(0, (int)(uint8_t)(int)std::trunc(x[i + 16] * id + 8.5f)));
      out[2 + i] = (uint8_t)(q0 | (q1 << 4));
    }
  }
}

// q4_k / q5_k: 8 sub-blocks of 32, value = d * sc[j] * q - dmin * m[j], q in 0..NMAX (15 / 31), sc and m
// in 0..63. q5_k stores q's fifth bit in 32 bytes (bit j of byte i: element i of sub-block j) before the nibbles.
template <int NMAX>
void quantize_qk_min(const float* x, uint8_t* out, int64_t nb) {
  constexpr int kBytes = NMAX == 15 ? 144 : 176, kQs = NMAX == 15 ? 16 : 48;
  for (int64_t b = 0; b < nb; b++, x += 256, out += kBytes) {
    float scale[8], minv[8];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
      float lo = 0, hi = 0;  // the minimum is clamped to <= 0, as llama.cpp does
      for (int i = 0; i < 32; i++) {
        lo = std::min(lo, x[32 * j + i]);
        hi = std::max(hi, x[32 * j + i]);
      }
      scale[j] = (hi - lo) / (float)NMAX;
      minv[j] = -lo;
      max_scale = std::max(max_scale, scale[j]);
      max_min = std::max(max_min, minv[j]);
    }
    const float d = max_scale / 63.f, dmin = max_min / 63.f;
    store_f16(out, d);
    // a scale that underflows f16 while the minimum does not would decode every value to -dmin * m, farther
    // from the weights than zeros: the block is zeros then
    store_f16(out + 2, f16_load(out) != 0 ? dmin : 0.f);
    const float dq = f16_load(out), dminq = f16_load(out + 2);  // use the rounded values from here on
    uint8_t sc[8], m[8];
    for (int j = 0; j < 8; j++) {
      sc[j] = (uint8_t)std::min(63.f, std::max(0.f, dq > 0 ? std::nearbyint(scale[j] / dq) : 0.f));
      m[j] = (uint8_t)std::min(63.f, std::max(0.f, dminq > 0 ? std::nearbyint(minv[j] / dminq) : 0.f));
    }
    uint8_t* s = out + 4;
    for (int j = 0; j < 4; j++) {
      s[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
      s[j + 4] = (uint8_t)(m[j] | ((m[j + 4] >> 4) << 6));
      s[j + 8] = (uint8_t)((sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4));
    }
    uint8_t* qs = out + kQs;
    std::memset(out + 16, 0, kBytes - 16);
    for (int j = 0; j < 8; j++) {
      const float ds = dq * sc[j], dm = dminq * m[j];
      for (int i = 0; i < 32; i++) {
        int q = ds > 0 ? (int)std::nearbyint((x[32 * j + i] + dm) / ds) : 0;
        q = std::min(NMAX, std::max(0, q));
        qs[32 * (j / 2) + i] |= (uint8_t)((q & 0x0F) << (4 * (j % 2)));
        if (NMAX == 31) out[16 + i] |= (uint8_t)((q >> 4) << j);
      }
    }
  }
}

// q4_1 / q5_0 / q5_1, as gguf-py's quantizers (bit for bit): the signed extreme over -16 (q5_0), or the range
// over 15 / 31 with the minimum as the offset (q4_1, q5_1). q5's fifth bits: a little-endian uint32 after d (m).
template <DType T>
void quantize_q32(const float* x, uint8_t* out, int64_t nb) {
  constexpr bool kMin = T != DType::Q5_0, k5 = T != DType::Q4_1;
  constexpr int kBytes = T == DType::Q4_1 ? 20 : T == DType::Q5_0 ? 22 : 24, kQs = kBytes - 16;
  for (int64_t b = 0; b < nb; b++, x += 32, out += kBytes) {
    float d, mn = 0, off;
    if (kMin) {
      float mx = x[0];
      mn = x[0];
      for (int i = 1; i < 32; i++) {
        mx = std::max(mx, x[i]);
        mn = std::min(mn, x[i]);
      }
      d = (mx - mn) / (k5 ? 31.f : 15.f);
      off = 0.5f;
    } else {
      d = signed_extreme(x, 32) / -16.f;
      off = 16.5f;
    }
    const float id = d != 0 ? 1.f / d : 0.f;
    store_f16(out, d);
    if (kMin) store_f16(out + 2, mn);
    std::memset(out + kQs - (k5 ? 4 : 0), 0, k5 ? 20 : 16);
    uint32_t qh = 0;
    for (int i = 0; i < 32; i++) {
      const float v = kMin ? (x[i] - mn) * id + off : x[i] * id + off;
      const int q = std::min(k5 ? 31 : 15, (int)(uint8_t)(int)std::trunc(v));
      out[kQs + i % 16] |= (uint8_t)((q & 0x0F) << (4 * (i / 16)));
      qh |= (uint32_t)(q >> 4) << i;
    }
    if (k5)
      for (int i = 0; i < 4; i++) out[kQs - 4 + i] = (uint8_t)(qh >> (8 * i));
  }
}

// q3_k: 16 groups of 16, value = d * sc[g] * q, q in -4..3 (2 bits and a high bit: 0 means -4), sc 6-bit signed.
// q2_k: 16 groups of 16, value = d * sc[g] * q - dmin * m[g], q in 0..3, sc and m 4-bit. The simple scale
// search of the other K-quants here (llama.cpp searches further, with importance weights).
void quantize_q3_k(const float* x, uint8_t* out, int64_t nb) {
  for (int64_t b = 0; b < nb; b++, x += 256, out += 110) {
    float scale[16];
    for (int g = 0; g < 16; g++) scale[g] = signed_extreme(x + 16 * g, 16) / -4.f;
    std::memset(out, 0, 110);
    store_f16(out + 108, signed_extreme(scale, 16) / -32.f);
    const float dq = f16_load(out + 108);
    for (int g = 0; g < 16; g++) {
      const int s = std::min(31, std::max(-32, dq != 0 ? (int)std::nearbyint(scale[g] / dq) : 0));
      q3k_put_scale(g, s, out);
      const float ds = dq * (float)s;
      for (int i = 0; i < 16; i++) {
        const int e = 16 * g + i;
        const int q = std::min(3, std::max(-4, ds != 0 ? (int)std::nearbyint(x[e] / ds) : 0)) + 4;
        out[32 + 32 * (e / 128) + e % 32] |= (uint8_t)((q & 3) << (2 * (e % 128 / 32)));
        out[e % 32] |= (uint8_t)((q >> 2) << (e / 32));
      }
    }
  }
}

// iq4_nl / iq4_xs: the signed extreme of each 32 maps to -127 (the first value), every element to the nearest
// value (llama.cpp also searches the scale, with importance weights). iq4_xs: the 32s' scales in 6 bits,
// signed, against one f16 d per 256.
inline int iq4_nearest(float v) {
  int best = 0;
  for (int k = 1; k < 16; k++)
    if (std::fabs(v - kIQ4Values[k]) < std::fabs(v - kIQ4Values[best])) best = k;
  return best;
}
inline void iq4_nibbles(const float* x, float d, uint8_t* qs) {  // 32 values -> 16 bytes
  const float id = d != 0 ? 1.f / d : 0.f;
  std::memset(qs, 0, 16);
  for (int i = 0; i < 32; i++) qs[i % 16] |= (uint8_t)(iq4_nearest(x[i] * id) << (4 * (i / 16)));
}

void quantize_iq4_nl(const float* x, uint8_t* out, int64_t nb) {
  for (int64_t b = 0; b < nb; b++, x += 32, out += 18) {
    store_f16(out, signed_extreme(x, 32) / -127.f);
    iq4_nibbles(x, f16_load(out), out + 2);
  }
}

void quantize_iq4_xs(const float* x, uint8_t* out, int64_t nb) {
  for (int64_t b = 0; b < nb; b++, x += 256, out += 136) {
    float scale[8];
    for (int ib = 0; ib < 8; ib++) scale[ib] = signed_extreme(x + 32 * ib, 32) / -127.f;
    std::memset(out, 0, 8);
    store_f16(out, signed_extreme(scale, 8) / -32.f);
    const float dq = f16_load(out);
    for (int ib = 0; ib < 8; ib++) {
      const int s = std::min(31, std::max(-32, dq != 0 ? (int)std::nearbyint(scale[ib] / dq) : 0));
      iq4xs_put_scale(ib, s, out);
      iq4_nibbles(x + 32 * ib, dq * (float)s, out + 8 + 16 * ib);
    }
  }
}

void quantize_q2_k(const float* x, uint8_t* out, int64_t nb) {
  for (int64_t b = 0; b < nb; b++, x += 256, out += 84) {
    float scale[16], minv[16], max_scale = 0, max_min = 0;
    for (int g = 0; g < 16; g++) {
      float lo = 0, hi = 0;
      for (int i = 0; i < 16; i++) {
        lo = std::min(lo, x[16 * g + i]);
        hi = std::max(hi, x[16 * g + i]);
      }
      scale[g] = (hi - lo) / 3.f;
      minv[g] = -lo;
      max_scale = std::max(max_scale, scale[g]);
      max_min = std::max(max_min, minv[g]);
    }
    std::memset(out, 0, 84);
    store_f16(out + 80, max_scale / 15.f);
    store_f16(out + 82, f16_load(out + 80) != 0 ? max_min / 15.f : 0.f);  // as q4_k: no minimums without scales
    const float dq = f16_load(out + 80), dminq = f16_load(out + 82);
    for (int g = 0; g < 16; g++) {
      const int sc = (int)std::min(15.f, std::max(0.f, dq > 0 ? std::nearbyint(scale[g] / dq) : 0.f));
      const int m = (int)std::min(15.f, std::max(0.f, dminq > 0 ? std::nearbyint(minv[g] / dminq) : 0.f));
      out[g] = (uint8_t)(sc | (m << 4));
      const float ds = dq * (float)sc, dm = dminq * (float)m;
      for (int i = 0; i < 16; i++) {
        const int e = 16 * g + i;
        const int q = std::min(3, std::max(0, ds > 0 ? (int)std::nearbyint((x[e] + dm) / ds) : 0));
        out[16 + 32 * (e / 128) + e % 32] |= (uint8_t)(q << (2 * (e % 128 / 32)));
      }
    }
  }
}

// q6_k: 16 groups of 16, value = d * sc[g] * (q - 32), q in 0..63, sc int8.
void quantize_q6_k(const float* x, uint8_t* out, int64_t nb) {
  for (int64_t b = 0; b < nb; b++, x += 256, out += 210) {
    float scale[16];
    for (int g = 0; g < 16; g++) scale[g] = signed_extreme(x + 16 * g, 16) / -32.f;
    const float d = signed_extreme(scale, 16) / -128.f;
    uint8_t* ql = out;
    uint8_t* qh = out + 128;
    int8_t* sc = (int8_t*)(out + 192);
    store_f16(out + 208, d);
    const float dq = f16_load(out + 208);
    std::memset(ql, 0, 128);
    std::memset(qh, 0, 64);
    for (int g = 0; g < 16; g++) {
      int s = dq != 0 ? (int)std::nearbyint(scale[g] / dq) : 0;
      sc[g] = (int8_t)std::min(127, std::max(-128, s));
      const float ds = dq * sc[g];
      for (int i = 0; i < 16; i++) {
        const int f = 16 * g + i;
        int q = ds != 0 ? (int)std::nearbyint(x[f] / ds) + 32 : 32;
        q = std::min(63, std::max(0, q));
        const int a = f / 128, r = f % 128;
        ql[a * 64 + r % 64] |= (uint8_t)((q & 0x0F) << (4 * (r / 64)));
        qh[a * 32 + r % 32] |= (uint8_t)((q >> 4) << (2 * (r / 32)));
      }
    }
  }
}

}  // namespace

void quantize_row_q8(const float* x, BlockQ8* out, int64_t n) {
  for (int64_t b = 0; b < n / 32; b++, x += 32) {
    float amax = 0;
    for (int i = 0; i < 32; i++) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127.f, id = d != 0 ? 1.f / d : 0.f;
    out[b].d = d;
    float res[32], rmax = 0;
    for (int h = 0; h < 2; h++) {
      int s = 0;
      for (int i = 16 * h; i < 16 * h + 16; i++) {
        out[b].q[i] = (int8_t)round_away(x[i] * id);
        s += out[b].q[i];
        res[i] = x[i] - (float)out[b].q[i] * d;
        rmax = std::max(rmax, std::fabs(res[i]));
      }
      out[b].sum[h] = (int16_t)s;
    }
    const float d2 = rmax / 127.f, id2 = d2 != 0 ? 1.f / d2 : 0.f;
    out[b].d2 = d2;
    int rs = 0;
    for (int i = 0; i < 32; i++) {
      out[b].r[i] = (int8_t)round_away(res[i] * id2);
      rs += out[b].r[i];
    }
    out[b].rsum = (int16_t)rs;
    out[b].unused = 0;
  }
}

void quantize_rows_q8(const float* x, int64_t ldx, int64_t t0, int64_t t1, int64_t K, int8_t* q, float* d,
                      int32_t* sum) {
  for (int64_t t = t0; t < t1; t++) {
    const float* xr = x + t * ldx;
    float amax = 0;
    for (int64_t i = 0; i < K; i++) amax = std::max(amax, std::fabs(xr[i]));
    const float dt = amax / 127.f, id = dt != 0 ? 1.f / dt : 0.f;
    int8_t* o = q + t / kRowGroup * kRowGroup * K + 4 * (t % kRowGroup);
    int32_t s = 0;
    for (int64_t i = 0; i < K; i++) {
      const int8_t v = (int8_t)round_away(xr[i] * id);
      o[i / 4 * 4 * kRowGroup + i % 4] = v;
      s += v;
    }
    d[t] = dt;
    sum[t] = s;
  }
}

void quantize_row_q8_0_shared(const float* x, void* out, int64_t n) {
  float amax = 0;
  for (int64_t i = 0; i < n; i++) amax = std::max(amax, std::fabs(x[i]));
  const uint16_t h = f32_to_f16(amax / 127.f);
  const float d = f16_to_f32(h), id = d != 0 ? 1.f / d : 0.f;  // the stored scale, which the products use
  uint8_t* o = (uint8_t*)out;
  for (int64_t b = 0; b < n / 32; b++, x += 32, o += 34) {
    std::memcpy(o, &h, 2);
    for (int i = 0; i < 32; i++) o[2 + i] = (uint8_t)(int8_t)std::min(127.f, std::max(-127.f, round_away(x[i] * id)));
  }
}

bool q8_0_row_shares_scale(const uint8_t* row, int64_t K) {
  for (int64_t b = 1; b < K / 32; b++)
    if (std::memcmp(row, row + 34 * b, 2) != 0) return false;
  return true;
}

void quantize_row(DType to, const float* x, void* out, int64_t n) {
  const int64_t nb = n / dtype_block(to);
  uint8_t* o = (uint8_t*)out;
  switch (to) {
    case DType::Q8_0: return quantize_q8_0(x, o, nb);
    case DType::Q4_0: return quantize_q4_0(x, o, nb);
    case DType::Q4_K: return quantize_qk_min<15>(x, o, nb);
    case DType::Q6_K: return quantize_q6_k(x, o, nb);
    case DType::Q5_K: return quantize_qk_min<31>(x, o, nb);
    case DType::Q4_1: return quantize_q32<DType::Q4_1>(x, o, nb);
    case DType::Q5_0: return quantize_q32<DType::Q5_0>(x, o, nb);
    case DType::Q5_1: return quantize_q32<DType::Q5_1>(x, o, nb);
    case DType::Q3_K: return quantize_q3_k(x, o, nb);
    case DType::Q2_K: return quantize_q2_k(x, o, nb);
    case DType::IQ4_NL: return quantize_iq4_nl(x, o, nb);
    case DType::IQ4_XS: return quantize_iq4_xs(x, o, nb);
    default:
      if (is_grid(to))
        throw ValueError(std::string("quantize: no quantizer for ") + dtype_name(to) +
                         " (the 1- to 3-bit i-quants are read from llama.cpp's GGUF files; llama-quantize makes them "
                         "with an importance matrix)");
      throw ValueError(std::string("quantize: not a quantized type: ") + dtype_name(to));
  }
}

void dequantize_row(DType from, const void* src, float* y, int64_t n) {
  const uint8_t* p = (const uint8_t*)src;
  const int64_t nb = n / dtype_block(from);
  switch (from) {
    case DType::Q8_0:
      for (int64_t b = 0; b < nb; b++, p += 34, y += 32) {
        const float d = f16_load(p);
        for (int i = 0; i < 32; i++) y[i] = (float)(int8_t)p[2 + i] * d;
      }
      return;
    case DType::Q4_0:
      for (int64_t b = 0; b < nb; b++, p += 18, y += 32) {
        const float d = f16_load(p);
        for (int i = 0; i < 16; i++) {
          y[i] = d * (float)((p[2 + i] & 0x0F) - 8);
          y[i + 16] = d * (float)((p[2 + i] >> 4) - 8);
        }
      }
      return;
    case DType::Q4_K:
    case DType::Q5_K: {  // q5_k: q4_k with a fifth bit per element (32 bytes before the nibbles)
      const bool five = from == DType::Q5_K;
      const int bytes = five ? 176 : 144, qs = five ? 48 : 16;
      for (int64_t b = 0; b < nb; b++, p += bytes, y += 256) {
        const float d = f16_load(p), dmin = f16_load(p + 2);
        for (int j = 0; j < 8; j++) {
          int sc, m;
          q4k_scale_min(j, p + 4, sc, m);
          const float ds = d * (float)sc, dm = dmin * (float)m;
          for (int i = 0; i < 32; i++) {
            int q = (p[qs + 32 * (j / 2) + i] >> (4 * (j % 2))) & 0x0F;
            if (five) q |= ((p[16 + i] >> j) & 1) << 4;
            y[32 * j + i] = ds * (float)q - dm;
          }
        }
      }
      return;
    }
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1: {  // gguf-py: d * (q - 16) for q5_0, d * q + m for the others
      const bool has_m = from != DType::Q5_0, five = from != DType::Q4_1;
      const int bytes = (int)dtype_block_bytes(from), qs = bytes - 16;
      for (int64_t b = 0; b < nb; b++, p += bytes, y += 32) {
        const float d = f16_load(p), m = has_m ? f16_load(p + 2) : 0.f;
        uint32_t qh = 0;
        if (five) qh = (uint32_t)p[qs - 4] | (uint32_t)p[qs - 3] << 8 | (uint32_t)p[qs - 2] << 16 | (uint32_t)p[qs - 1] << 24;
        for (int i = 0; i < 32; i++) {
          const int q = ((p[qs + i % 16] >> (4 * (i / 16))) & 0x0F) | (int)((qh >> i) & 1) << 4;
          y[i] = has_m ? d * (float)q + m : d * (float)(q - 16);
        }
      }
      return;
    }
    case DType::Q3_K:
      for (int64_t b = 0; b < nb; b++, p += 110, y += 256) {
        const float d = f16_load(p + 108);
        for (int g = 0; g < 16; g++) {
          const float dl = d * (float)q3k_scale(g, p);
          for (int i = 0; i < 16; i++) {
            const int e = 16 * g + i;
            const int lo = (p[32 + 32 * (e / 128) + e % 32] >> (2 * (e % 128 / 32))) & 3;
            const int hi = (p[e % 32] >> (e / 32)) & 1;
            y[e] = dl * (float)(lo - (hi ? 0 : 4));
          }
        }
      }
      return;
    case DType::IQ4_NL:
    case DType::IQ4_XS: {  // gguf-py: d * value, and iq4_xs's d * (scale - 32) first
      const bool xs = from == DType::IQ4_XS;
      const int bytes = xs ? 136 : 18, subs = xs ? 8 : 1;
      for (int64_t b = 0; b < nb; b++, p += bytes) {
        const float d = f16_load(p);
        for (int ib = 0; ib < subs; ib++, y += 32) {
          const float dl = xs ? d * (float)iq4xs_scale(ib, p) : d;
          const uint8_t* qs = p + (xs ? 8 + 16 * ib : 2);
          for (int i = 0; i < 32; i++) y[i] = dl * (float)kIQ4Values[(qs[i % 16] >> (4 * (i / 16))) & 0x0F];
        }
      }
      return;
    }
    case DType::Q2_K:
      for (int64_t b = 0; b < nb; b++, p += 84, y += 256) {
        const float d = f16_load(p + 80), dmin = f16_load(p + 82);
        for (int g = 0; g < 16; g++) {
          const float dl = d * (float)(p[g] & 0x0F), ml = dmin * (float)(p[g] >> 4);
          for (int i = 0; i < 16; i++) {
            const int e = 16 * g + i;
            y[e] = dl * (float)((p[16 + 32 * (e / 128) + e % 32] >> (2 * (e % 128 / 32))) & 3) - ml;
          }
        }
      }
      return;
    case DType::Q6_K:
      for (int64_t b = 0; b < nb; b++, p += 210, y += 256) {
        const float d = f16_load(p + 208);
        const int8_t* sc = (const int8_t*)(p + 192);
        for (int f = 0; f < 256; f++) {
          const int a = f / 128, r = f % 128;
          const int lo = (p[a * 64 + r % 64] >> (4 * (r / 64))) & 0x0F;
          const int hi = (p[128 + a * 32 + r % 32] >> (2 * (r / 32))) & 0x03;
          y[f] = (d * (float)sc[f / 16]) * (float)((int8_t)(lo | (hi << 4)) - 32);
        }
      }
      return;
    default:
      if (is_grid(from)) {  // d * (sc * mul) * v, exact (iquant.h): gguf-py's products in any order
        const GridTraits tr = grid_traits(from);
        const size_t bytes = dtype_block_bytes(from);
        GridBlock g;
        int8_t v[256];
        for (int64_t b = 0; b < nb; b++, p += bytes, y += 256) {
          parse_grid_block(from, p, g);
          grid_values(from, g, v);
          const float d = f16_to_f32(g.d);
          for (int e = 0; e < 256; e++) y[e] = d * ((float)g.sc[e / tr.unit] * tr.mul) * (float)v[e];
        }
        return;
      }
      throw ValueError(std::string("dequantize: not a quantized type: ") + dtype_name(from));
  }
}

void mxfp4_row_to_q5_0(const uint8_t* src, uint8_t* dst, int64_t n) {
  static const int8_t kValues2[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
  for (int64_t b = 0; b < n / 32; b++, src += 17, dst += 22) {
    const int exp = (int)src[0] - 128;
    if (exp > 15)
      throw ValueError("an MXFP4 block scale of 2^" + std::to_string(exp + 1) + " exceeds what q5_0's f16 scale holds");
    const uint16_t d = f32_to_f16(std::ldexp(1.f, exp));  // exact down to 2^-24; smaller rounds to zero
    uint8_t q[32];
    for (int i = 0; i < 16; i++) {
      q[i] = (uint8_t)(kValues2[src[1 + i] & 15] + 16);
      q[i + 16] = (uint8_t)(kValues2[src[1 + i] >> 4] + 16);
    }
    uint32_t qh = 0;
    for (int i = 0; i < 32; i++) qh |= (uint32_t)(q[i] >> 4) << i;
    dst[0] = (uint8_t)(d & 0xff);
    dst[1] = (uint8_t)(d >> 8);
    for (int i = 0; i < 4; i++) dst[2 + i] = (uint8_t)(qh >> (8 * i));
    for (int i = 0; i < 16; i++) dst[6 + i] = (uint8_t)((q[i] & 15) | (q[i + 16] & 15) << 4);
  }
}

void ternary_row_to_q8_0(DType from, const uint8_t* src, uint8_t* dst, int64_t n) {
  const size_t bytes = dtype_block_bytes(from);
  for (int64_t b = 0; b < n / 256; b++, src += bytes) {
    int8_t v[256];
    if (from == DType::TQ2_0) {  // element 128 h + 32 l + m: byte 32 h + m, bits 2l
      for (int e = 0; e < 256; e++) v[e] = (int8_t)(((src[32 * (e / 128) + e % 32] >> (2 * (e % 128 / 32))) & 3) - 1);
    } else {  // TQ1_0: 5 base-3 digits a byte (the digit n of q: (q * 3^n mod 256) * 3 >> 8), the most significant first
      static const uint8_t pow3[6] = {1, 3, 9, 27, 81, 243};
      auto digit = [&](uint8_t q, int k) { return (int8_t)((((uint16_t)(uint8_t)(q * pow3[k])) * 3 >> 8) - 1); };
      int e = 0;
      for (int n5 = 0; n5 < 5; n5++)  // qs[0..32): 5 runs of 32
        for (int m = 0; m < 32; m++) v[e++] = digit(src[m], n5);
      for (int n5 = 0; n5 < 5; n5++)  // qs[32..48): 5 runs of 16
        for (int m = 0; m < 16; m++) v[e++] = digit(src[32 + m], n5);
      for (int n4 = 0; n4 < 4; n4++)  // qh[0..4): 4 runs of 4
        for (int m = 0; m < 4; m++) v[e++] = digit(src[48 + m], n4);
    }
    const uint8_t* d = src + bytes - 2;
    for (int q = 0; q < 8; q++, dst += 34) {
      std::memcpy(dst, d, 2);
      std::memcpy(dst + 2, v + 32 * q, 32);
    }
  }
}

}  // namespace ef
