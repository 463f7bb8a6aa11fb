// The i-quants' stored blocks <-> GridBlock (iquant.h). Byte layouts as gguf-py reads them (gguf/quants.py):
//   iq2_xxs (66):  f16 d | 8 x (u32 4 grid indices, u32 4 x 7 sign bits | 4-bit scale << 28), per 32 elements
//   iq2_xs (74):   f16 d | 32 u16 (9-bit index | 7 sign bits << 9) | 8 bytes of 4-bit scales, one per 16
//   iq2_s (82):    f16 d | 32 index bytes | 32 sign bytes | 8 bytes of 2 high index bits x 4 | 8 bytes of scales
//   iq3_xxs (98):  f16 d | 64 index bytes (4 elements each) | 8 x u32 (4 x 7 sign bits | 4-bit scale << 28)
//   iq3_s (110):   f16 d | 64 index bytes | 8 bytes of high index bits | 32 sign bytes | 4 bytes of scales
//   iq1_s (50):    f16 d | 32 index bytes | 8 x u16 (4 x 3 high index bits | 3-bit scale << 12 | offset sign << 15)
//   iq1_m (56):    32 index bytes | 16 bytes, a nibble per group (3 high index bits | offset sign << 3) | 4 x u16
//                  (4 x 3-bit scales, one per 16, | a nibble of f16 d << 12)
// Seven sign bits stand for eight: the eighth makes their count even (llama.cpp's ksigns_iq2xs table).
#include <cstring>

#include "edgeformer/errors.h"
#include "edgeformer/iquant.h"

namespace ef {

namespace {
inline uint32_t le32(const uint8_t* p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
inline uint16_t le16(const uint8_t* p) { return (uint16_t)(p[0] | p[1] << 8); }
inline void put32(uint8_t* p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
inline void put16(uint8_t* p, uint32_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
inline uint8_t signs8(uint32_t s7) {  // the eighth bit: the parity of the seven
  uint32_t x = s7 ^ (s7 >> 4);
  x ^= x >> 2;
  x ^= x >> 1;
  return (uint8_t)(s7 | (x & 1) << 7);
}
inline int sc_of(int s) { return 2 * s + 1; }
inline int s_of(int sc) { return (sc - 1) / 2; }
}  // namespace

void parse_grid_block(DType t, const uint8_t* p, GridBlock& g) {
  std::memset(&g, 0, sizeof(g));
  switch (t) {
    case DType::IQ2_XXS:
    case DType::IQ3_XXS: {  // the scale and signs in one u32 per 32 elements
      const bool iq3 = t == DType::IQ3_XXS;
      g.d = le16(p);
      for (int ib = 0; ib < 8; ib++) {
        const uint32_t aux = le32(p + (iq3 ? 66 + 4 * ib : 6 + 8 * ib));
        for (int l = 0; l < 4; l++) g.sign[4 * ib + l] = signs8((aux >> (7 * l)) & 127);
        g.sc[ib] = (uint8_t)sc_of((int)(aux >> 28));
      }
      if (iq3) for (int j = 0; j < 64; j++) g.idx[j] = p[2 + j];
      else for (int j = 0; j < 32; j++) g.idx[j] = p[2 + 8 * (j / 4) + j % 4];
      return;
    }
    case DType::IQ2_XS:
      g.d = le16(p);
      for (int j = 0; j < 32; j++) {
        const uint16_t q = le16(p + 2 + 2 * j);
        g.idx[j] = q & 511;
        g.sign[j] = signs8(q >> 9);
      }
      for (int u = 0; u < 16; u++) g.sc[u] = (uint8_t)sc_of((p[66 + u / 2] >> (4 * (u % 2))) & 15);
      return;
    case DType::IQ2_S:
      g.d = le16(p);
      for (int j = 0; j < 32; j++) {
        g.idx[j] = (uint16_t)(p[2 + j] | ((p[66 + j / 4] >> (2 * (j % 4))) & 3) << 8);
        g.sign[j] = p[34 + j];
      }
      for (int u = 0; u < 16; u++) g.sc[u] = (uint8_t)sc_of((p[74 + u / 2] >> (4 * (u % 2))) & 15);
      return;
    case DType::IQ3_S:
      g.d = le16(p);
      for (int j = 0; j < 64; j++) g.idx[j] = (uint16_t)(p[2 + j] | ((p[66 + j / 8] >> (j % 8)) & 1) << 8);
      std::memcpy(g.sign, p + 74, 32);
      for (int ib = 0; ib < 8; ib++) g.sc[ib] = (uint8_t)sc_of((p[106 + ib / 2] >> (4 * (ib % 2))) & 15);
      return;
    case DType::IQ1_S:
      g.d = le16(p);
      for (int ib = 0; ib < 8; ib++) {
        const uint16_t q = le16(p + 34 + 2 * ib);
        for (int l = 0; l < 4; l++)
          g.idx[4 * ib + l] = (uint16_t)(p[2 + 4 * ib + l] | ((q >> (3 * l)) & 7) << 8 | (q >> 15) << 11);
        g.sc[ib] = (uint8_t)sc_of((q >> 12) & 7);
      }
      return;
    case DType::IQ1_M: {
      uint16_t s[4];
      for (int w = 0; w < 4; w++) s[w] = le16(p + 48 + 2 * w);
      g.d = (uint16_t)((s[0] >> 12) | ((s[1] >> 8) & 0xF0) | ((s[2] >> 4) & 0xF00) | (s[3] & 0xF000));
      for (int u = 0; u < 16; u++) g.sc[u] = (uint8_t)sc_of((s[u / 4] >> (3 * (u % 4))) & 7);
      for (int j = 0; j < 32; j++) {
        const int nib = (p[32 + j / 2] >> (4 * (j % 2))) & 15;
        g.idx[j] = (uint16_t)(p[j] | (nib & 7) << 8 | (nib >> 3) << 11);
      }
      return;
    }
    default: throw ValueError(std::string("not an i-quant grid type: ") + dtype_name(t));
  }
}

void emit_grid_block(DType t, const GridBlock& g, uint8_t* p) {
  std::memset(p, 0, dtype_block_bytes(t));
  switch (t) {
    case DType::IQ2_XXS:
    case DType::IQ3_XXS: {
      const bool iq3 = t == DType::IQ3_XXS;
      put16(p, g.d);
      for (int ib = 0; ib < 8; ib++) {
        uint32_t aux = (uint32_t)s_of(g.sc[ib]) << 28;
        for (int l = 0; l < 4; l++) aux |= (uint32_t)(g.sign[4 * ib + l] & 127) << (7 * l);
        put32(p + (iq3 ? 66 + 4 * ib : 6 + 8 * ib), aux);
      }
      if (iq3) for (int j = 0; j < 64; j++) p[2 + j] = (uint8_t)g.idx[j];
      else for (int j = 0; j < 32; j++) p[2 + 8 * (j / 4) + j % 4] = (uint8_t)g.idx[j];
      return;
    }
    case DType::IQ2_XS:
      put16(p, g.d);
      for (int j = 0; j < 32; j++) put16(p + 2 + 2 * j, (uint32_t)(g.idx[j] & 511) | (uint32_t)(g.sign[j] & 127) << 9);
      for (int u = 0; u < 16; u++) p[66 + u / 2] |= (uint8_t)(s_of(g.sc[u]) << (4 * (u % 2)));
      return;
    case DType::IQ2_S:
      put16(p, g.d);
      for (int j = 0; j < 32; j++) {
        p[2 + j] = (uint8_t)g.idx[j];
        p[34 + j] = g.sign[j];
        p[66 + j / 4] |= (uint8_t)(((g.idx[j] >> 8) & 3) << (2 * (j % 4)));
      }
      for (int u = 0; u < 16; u++) p[74 + u / 2] |= (uint8_t)(s_of(g.sc[u]) << (4 * (u % 2)));
      return;
    case DType::IQ3_S:
      put16(p, g.d);
      for (int j = 0; j < 64; j++) {
        p[2 + j] = (uint8_t)g.idx[j];
        p[66 + j / 8] |= (uint8_t)(((g.idx[j] >> 8) & 1) << (j % 8));
      }
      std::memcpy(p + 74, g.sign, 32);
      for (int ib = 0; ib < 8; ib++) p[106 + ib / 2] |= (uint8_t)(s_of(g.sc[ib]) << (4 * (ib % 2)));
      return;
    case DType::IQ1_S:
      put16(p, g.d);
      for (int ib = 0; ib < 8; ib++) {
        uint32_t q = (uint32_t)s_of(g.sc[ib]) << 12 | (uint32_t)(g.idx[4 * ib] >> 11) << 15;
        for (int l = 0; l < 4; l++) {
          p[2 + 4 * ib + l] = (uint8_t)g.idx[4 * ib + l];
          q |= (uint32_t)((g.idx[4 * ib + l] >> 8) & 7) << (3 * l);
        }
        put16(p + 34 + 2 * ib, q);
      }
      return;
    case DType::IQ1_M:
      for (int w = 0; w < 4; w++) {
        uint32_t s = (uint32_t)((g.d >> (4 * w)) & 15) << 12;
        for (int i = 0; i < 4; i++) s |= (uint32_t)s_of(g.sc[4 * w + i]) << (3 * i);
        put16(p + 48 + 2 * w, s);
      }
      for (int j = 0; j < 32; j++) {
        p[j] = (uint8_t)g.idx[j];
        p[32 + j / 2] |= (uint8_t)((((g.idx[j] >> 8) & 7) | (g.idx[j] >> 11) << 3) << (4 * (j % 2)));
      }
      return;
    default: throw ValueError(std::string("not an i-quant grid type: ") + dtype_name(t));
  }
}

}  // namespace ef
