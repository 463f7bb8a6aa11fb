#include "edgeformer/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "edgeformer/errors.h"

namespace ef {

namespace {

inline void store_f16(uint8_t* p, float f) {
  uint16_t h = f32_to_f16(f);
  std::memcpy(p, &h, 2);
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
    float amax = 0, max = 0;
    for (int i = 0; i < 32; i++)
      if (std::fabs(x[i]) > amax) {
        amax = std::fabs(x[i]);
        max = x[i];
      }
    const float d = max / -8.f, id = d != 0 ? 1.f / d : 0.f;
    store_f16(out, d);
    for (int i = 0; i < 16; i++) {
      int q0 = std::min(15, std::max(0, (int)(uint8_t)(int)std::trunc(x[i] * id + 8.5f)));
      int q1 = std::min(15, std::max(0, (int)(uint8_t)(int)std::trunc(x[i + 16] * id + 8.5f)));
      out[2 + i] = (uint8_t)(q0 | (q1 << 4));
    }
  }
}

// q4_k: 8 sub-blocks of 32, value = d * sc[j] * q - dmin * m[j], q in 0..15, sc and m in 0..63.
void quantize_q4_k(const float* x, uint8_t* out, int64_t nb) {
  for (int64_t b = 0; b < nb; b++, x += 256, out += 144) {
    float scale[8], minv[8];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
      float lo = 0, hi = 0;  // the minimum is clamped to <= 0, as llama.cpp does
      for (int i = 0; i < 32; i++) {
        lo = std::min(lo, x[32 * j + i]);
        hi = std::max(hi, x[32 * j + i]);
      }
      scale[j] = (hi - lo) / 15.f;
      minv[j] = -lo;
      max_scale = std::max(max_scale, scale[j]);
      max_min = std::max(max_min, minv[j]);
    }
    const float d = max_scale / 63.f, dmin = max_min / 63.f;
    store_f16(out, d);
    store_f16(out + 2, dmin);
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
    uint8_t* qs = out + 16;
    std::memset(qs, 0, 128);
    for (int j = 0; j < 8; j++) {
      const float ds = dq * sc[j], dm = dminq * m[j];
      for (int i = 0; i < 32; i++) {
        int q = ds > 0 ? (int)std::nearbyint((x[32 * j + i] + dm) / ds) : 0;
        q = std::min(15, std::max(0, q));
        qs[32 * (j / 2) + i] |= (uint8_t)(q << (4 * (j % 2)));
      }
    }
  }
}

// q6_k: 16 groups of 16, value = d * sc[g] * (q - 32), q in 0..63, sc int8.
void quantize_q6_k(const float* x, uint8_t* out, int64_t nb) {
  for (int64_t b = 0; b < nb; b++, x += 256, out += 210) {
    float scale[16], max_abs_scale = 0, max_scale = 0;
    for (int g = 0; g < 16; g++) {
      float amax = 0, mx = 0;
      for (int i = 0; i < 16; i++)
        if (std::fabs(x[16 * g + i]) > amax) {
          amax = std::fabs(x[16 * g + i]);
          mx = x[16 * g + i];
        }
      scale[g] = mx / -32.f;
      if (std::fabs(scale[g]) > max_abs_scale) {
        max_abs_scale = std::fabs(scale[g]);
        max_scale = scale[g];
      }
    }
    const float d = max_scale / -128.f;
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
    case DType::Q4_K: return quantize_q4_k(x, o, nb);
    case DType::Q6_K: return quantize_q6_k(x, o, nb);
    default: throw ValueError(std::string("quantize: not a quantized type: ") + dtype_name(to));
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
      for (int64_t b = 0; b < nb; b++, p += 144, y += 256) {
        const float d = f16_load(p), dmin = f16_load(p + 2);
        for (int j = 0; j < 8; j++) {
          int sc, m;
          q4k_scale_min(j, p + 4, sc, m);
          const float ds = d * (float)sc, dm = dmin * (float)m;
          for (int i = 0; i < 32; i++) y[32 * j + i] = ds * (float)((p[16 + 32 * (j / 2) + i] >> (4 * (j % 2))) & 0x0F) - dm;
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
      throw ValueError(std::string("dequantize: not a quantized type: ") + dtype_name(from));
  }
}

}  // namespace ef
