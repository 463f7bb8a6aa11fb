// Every ISA's kernel table against the scalar reference (generic), on random inputs at sizes around the
// vector widths. Built with -DEF_BUILD_TESTS=ON; runs natively and, cross-compiled, under qemu-aarch64
// (tools/test_neon_qemu.sh) to cover the NEON kernels. Prints "N passed, M failed".
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "edgeformer/cpu.h"
#include "edgeformer/iquant.h"
#include "edgeformer/ops.h"
#include "edgeformer/quant.h"
#include "edgeformer/tensor.h"
#include "edgeformer/threadpool.h"

using namespace ef;

static int passed = 0, failed = 0;
static const DType kQuantTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                                    DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K,
                                    DType::IQ4_NL, DType::IQ4_XS};
static const DType kGridTypes[] = {DType::IQ2_XXS, DType::IQ2_XS, DType::IQ2_S, DType::IQ3_XXS,
                                   DType::IQ3_S, DType::IQ1_S, DType::IQ1_M};
static std::mt19937 rng(1234);

// Rows of random i-quant blocks (no quantizer: every bit pattern of indices, signs and scales is valid) with
// a finite d of about `scale`.
static std::vector<uint8_t> random_grid_rows(DType q, int rows, int K, float scale) {
  const size_t bb = dtype_block_bytes(q);
  std::vector<uint8_t> w(rows * dtype_bytes(q, K));
  std::uniform_int_distribution<int> byte(0, 255);
  std::normal_distribution<float> nd(0.f, scale);
  for (auto& b : w) b = (uint8_t)byte(rng);
  for (size_t off = 0; off < w.size(); off += bb) {
    GridBlock g;
    parse_grid_block(q, w.data() + off, g);
    g.d = f32_to_f16(nd(rng));
    emit_grid_block(q, g, w.data() + off);
  }
  return w;
}

static std::vector<float> randn(size_t n, float scale = 1.f) {
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// den_floor: the least denominator, where outputs may all be tiny beside the inputs (an activation's tail)
static void check(const std::string& what, const std::vector<float>& got, const std::vector<float>& ref, double tol,
                  double den_floor = 0) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); i++) {
    num += (got[i] - ref[i]) * (double)(got[i] - ref[i]);
    den += ref[i] * (double)ref[i];
  }
  den = std::max(den, den_floor);
  double nmse = den > 0 ? num / den : num;
  bool ok = std::isfinite(nmse) && nmse <= tol;
  if (ok) passed++;
  else {
    failed++;
    std::printf("FAIL %s: nmse %.3g > %.3g\n", what.c_str(), nmse, tol);
  }
}

int main() {
  const KernelTable& ref = kernels_for(Isa::Generic);
  const int sizes[] = {1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 29, 53, 64, 100};
  for (Isa isa : cpu_info().supported) {
    const KernelTable& k = kernels_for(isa);
    const std::string name = isa_name(isa);
    for (int K : sizes) {
      for (int dt = 0; dt < kNumFloatDTypes; dt++)
      for (int T : {1, 5, 50}) {  // decode, one chunk of tokens, more than one chunk
        const int O = 13;
        auto x = randn(T * K), w32 = randn(O * K), bias = randn(O);
        std::vector<uint16_t> w16(O * K);
        const void* w = w32.data();
        if (dt == 1) { for (int i = 0; i < O * K; i++) w16[i] = f32_to_f16(w32[i]); w = w16.data(); }
        if (dt == 2) { for (int i = 0; i < O * K; i++) w16[i] = f32_to_bf16(w32[i]); w = w16.data(); }
        std::vector<float> y(T * O), yr(T * O);
        k.matmul[dt](x.data(), K, w, K, bias.data(), y.data(), O, T, 0, O, K);
        ref.matmul[dt](x.data(), K, w, K, bias.data(), yr.data(), O, T, 0, O, K);
        check(name + " matmul dtype " + std::to_string(dt) + " T=" + std::to_string(T) + " K=" + std::to_string(K), y, yr,
              1e-10);
      }
      auto a = randn(K, 3), b = randn(K), w = randn(K);
      std::vector<float> y(K), yr(K);
      k.rmsnorm(a.data(), w.data(), 1e-5f, y.data(), K);
      ref.rmsnorm(a.data(), w.data(), 1e-5f, yr.data(), K);
      check(name + " rmsnorm K=" + std::to_string(K), y, yr, 1e-10);
      k.layernorm(a.data(), w.data(), b.data(), 1e-5f, y.data(), K);
      ref.layernorm(a.data(), w.data(), b.data(), 1e-5f, yr.data(), K);
      check(name + " layernorm K=" + std::to_string(K), y, yr, 1e-10);
      {  // the KV cache's f16 rows: bit for bit (round to nearest even) on every ISA
        std::vector<uint16_t> h(K), hr(K);
        k.f32_to_f16(a.data(), h.data(), K);
        ref.f32_to_f16(a.data(), hr.data(), K);
        if (h == hr) passed++;
        else {
          failed++;
          std::printf("FAIL %s f32_to_f16 K=%d\n", name.c_str(), K);
        }
      }
      y = a; yr = a;
      k.softmax(y.data(), K);
      ref.softmax(yr.data(), K);
      check(name + " softmax K=" + std::to_string(K), y, yr, 1e-11);
      // against the inputs' magnitude too: GELU's negative tail (x / (1 + exp(-2z)), outputs ~1e-3 of x) has
      // the relative error of the exp approximations, which a single element (K = 1) would measure alone
      double in2 = 0;
      for (int i = 0; i < K; i++) in2 += (double)a[i] * a[i] * b[i] * b[i];
      for (Act act : {Act::ReLU, Act::SiLU, Act::GELU, Act::GELUTanh}) {
        y = a; yr = a;
        k.act_mul(act, y.data(), b.data(), K);
        ref.act_mul(act, yr.data(), b.data(), K);
        check(name + " act_mul " + std::to_string((int)act) + " K=" + std::to_string(K), y, yr, 1e-11, 1e-2 * in2);
      }
      std::vector<float> d1 = {k.dot(a.data(), b.data(), K)}, d2 = {ref.dot(a.data(), b.data(), K)};
      double mag = 0;  // a sum that cancels has no relative accuracy: measure against sum |a b|
      for (int i = 0; i < K; i++) mag += std::fabs((double)a[i] * b[i]);
      check(name + " dot K=" + std::to_string(K), {(float)(d1[0] / mag), 1.f}, {(float)(d2[0] / mag), 1.f}, 1e-10);
      y = b; yr = b;
      k.axpy(0.3f, a.data(), y.data(), K);
      ref.axpy(0.3f, a.data(), yr.data(), K);
      check(name + " axpy K=" + std::to_string(K), y, yr, 1e-12);
      {  // Mamba's scan step: 5 channels of K states, negative rates, positive time steps, two steps
        const int C = 5;
        auto A = randn((size_t)C * K), dt = randn(C), xs = randn(C), B = randn(K), Cv = randn(K), S = randn((size_t)C * K);
        for (auto& v : A) v = -std::fabs(v);
        for (auto& v : dt) v = std::fabs(v) * 0.5f;
        std::vector<float> Sr = S, ys(C), yr(C);
        for (int step = 0; step < 2; step++) {
          k.ssm_step(A.data(), dt.data(), xs.data(), B.data(), Cv.data(), S.data(), ys.data(), C, K);
          ref.ssm_step(A.data(), dt.data(), xs.data(), B.data(), Cv.data(), Sr.data(), yr.data(), C, K);
        }
        check(name + " ssm_step state K=" + std::to_string(K), S, Sr, 1e-11);
        check(name + " ssm_step y K=" + std::to_string(K), ys, yr, 1e-10);
      }
      for (int d : {K, 64}) {  // attention-weighted rows: n = K rows of d, a row stride past d
        const int ld = d + 3;
        auto rows = randn((size_t)K * ld), p = randn(K);
        std::vector<float> w(d), wr(d);
        k.wsum(p.data(), rows.data(), ld, K, d, w.data());
        ref.wsum(p.data(), rows.data(), ld, K, d, wr.data());
        check(name + " wsum n=" + std::to_string(K) + " d=" + std::to_string(d), w, wr, 1e-11);
      }
    }
    {  // activation quantizer, bit for bit, ties included (amax 127 makes the scale 1: x = k + 0.5 are ties)
      const int K = 256;
      auto x = randn(K, 20.f);
      for (int i = 0; i < K; i += 3) x[i] = (float)((int)x[i]) + (x[i] < 0 ? -0.5f : 0.5f);
      x[5] = 127.f;
      x[100] = 0.49999997f;
      std::vector<BlockQ8> a(K / 32), b(K / 32);
      k.quantize_q8(x.data(), a.data(), K);
      quantize_row_q8(x.data(), b.data(), K);
      if (std::memcmp(a.data(), b.data(), sizeof(BlockQ8) * a.size()) == 0) passed++;
      else {
        failed++;
        std::printf("FAIL %s quantize_q8 differs from quantize_row_q8\n", name.c_str());
      }
    }
    // i-quants: the row kernel against the float product of the dequantized weights and activations; panels
    // against the row kernel and (bit for bit) the scalar panels; pack/unpack returns the bytes unchanged
    for (DType q : kGridTypes) {
      for (int T : {1, 2, 5, 7, 70}) {
        const int K = 512, O = 37;
        auto x = randn(T * K), bias = randn(O);
        Tensor wt = Tensor::empty(q, {O, K});
        const std::vector<uint8_t> raw = random_grid_rows(q, O, K, 0.01f);
        std::memcpy(wt.data, raw.data(), raw.size());
        std::vector<BlockQ8> xq(T * K / 32);
        for (int t = 0; t < T; t++) quantize_row_q8(x.data() + t * K, xq.data() + t * K / 32, K);
        std::vector<float> y(T * O), yr(T * O), yf(T * O), wf(K), xf(K);
        k.qmatmul[(int)q](xq.data(), K / 32, wt.data, wt.row_bytes(), bias.data(), yr.data(), O, T, 0, O, K);
        if (isa == Isa::Generic || T == 5) {
          for (int o = 0; o < O; o++) {
            dequantize_row(q, (const uint8_t*)wt.data + o * wt.row_bytes(), wf.data(), K);
            for (int t = 0; t < T; t++) {
              double acc = bias[o];
              for (int i = 0; i < K; i++) {
                const BlockQ8& b = xq[t * K / 32 + i / 32];
                acc += (double)wf[i] * ((double)b.q[i % 32] * b.d);
              }
              yf[t * O + o] = (float)acc;
            }
          }
          check(name + " qmatmul " + dtype_name(q) + " vs dequantized T=" + std::to_string(T), yr, yf, 1e-11);
        }
        if (isa != Isa::Generic) {
          std::vector<float> yg(T * O);
          ref.qmatmul[(int)q](xq.data(), K / 32, wt.data, wt.row_bytes(), bias.data(), yg.data(), O, T, 0, O, K);
          check(name + " qmatmul " + dtype_name(q) + " vs generic", yr, yg, 0.0);
        }
        if (!k.qmatmul_panel[(int)q]) continue;
        Tensor pk = pack_panels(wt);
        if (std::memcmp(unpack_panels(pk).data, wt.data, wt.nbytes()) == 0) passed++;
        else {
          failed++;
          std::printf("FAIL pack/unpack %s\n", dtype_name(q));
        }
        k.qmatmul_panel[(int)q](xq.data(), K / 32, pk.data, 0, bias.data(), y.data(), O, T, 0, 16, K);
        k.qmatmul_panel[(int)q](xq.data(), K / 32, pk.data, 0, bias.data(), y.data(), O, T, 16, O, K);
        check(name + " panels " + dtype_name(q) + " T=" + std::to_string(T), y, yr, 1e-11);
        if (T == 70) {  // a prompt (looked up once per panel and chunk) gives each token's decode-step result
          std::vector<float> y1(T * O);
          for (int t = 0; t < T; t++)
            k.qmatmul_panel[(int)q](xq.data() + t * K / 32, K / 32, pk.data, 0, bias.data(), y1.data() + t * O, O, 1, 0, O, K);
          check(name + " panels " + dtype_name(q) + " prompt vs steps", y, y1, 0.0);
        }
        if (isa != Isa::Generic) {
          std::vector<float> yg(T * O);
          ref.qmatmul_panel[(int)q](xq.data(), K / 32, pk.data, 0, bias.data(), yg.data(), O, T, 0, O, K);
          check(name + " panels vs generic panels " + dtype_name(q), y, yg, 0.0);
        }
      }
      const int K = 512;
      const std::vector<uint8_t> raw = random_grid_rows(q, 1, K, 0.01f);
      std::vector<float> d(K), dr(K);
      k.to_f32[(int)q](raw.data(), d.data(), K);
      ref.to_f32[(int)q](raw.data(), dr.data(), K);
      check(name + " dequant " + dtype_name(q), d, dr, 0.0);
    }
    // panels: packed weights against the stored rows' generic product, odd row counts and token counts,
    // row ranges split at panel boundaries as the thread pool does; pack/unpack returns the bytes unchanged
    for (DType q : kQuantTypes) {
      if (!k.qmatmul_panel[(int)q]) continue;
      for (int T : {1, 2, 5, 7, 13, 70}) {
        const int K = 512, O = 37;
        auto w = randn(O * K), x = randn(T * K), bias = randn(O);
        Tensor wt = Tensor::empty(q, {O, K});
        for (int o = 0; o < O; o++) quantize_row(q, w.data() + o * K, (uint8_t*)wt.data + o * wt.row_bytes(), K);
        Tensor pk = pack_panels(wt);
        Tensor back = unpack_panels(pk);
        bool same = std::memcmp(back.data, wt.data, wt.nbytes()) == 0;
        if (same) passed++;
        else {
          failed++;
          std::printf("FAIL pack/unpack %s\n", dtype_name(q));
        }
        std::vector<BlockQ8> xq(T * K / 32);
        for (int t = 0; t < T; t++) quantize_row_q8(x.data() + t * K, xq.data() + t * K / 32, K);
        std::vector<float> y(T * O), yr(T * O);
        k.qmatmul_panel[(int)q](xq.data(), K / 32, pk.data, 0, bias.data(), y.data(), O, T, 0, 16, K);
        k.qmatmul_panel[(int)q](xq.data(), K / 32, pk.data, 0, bias.data(), y.data(), O, T, 16, O, K);
        ref.qmatmul[(int)q](xq.data(), K / 32, wt.data, wt.row_bytes(), bias.data(), yr.data(), O, T, 0, O, K);
        check(name + " panels " + dtype_name(q) + " T=" + std::to_string(T), y, yr, 1e-11);
        if (isa != Isa::Generic) {  // every copy takes the same integer and float steps as the scalar panels
          std::vector<float> yg(T * O);
          ref.qmatmul_panel[(int)q](xq.data(), K / 32, pk.data, 0, bias.data(), yg.data(), O, T, 0, O, K);
          check(name + " panels vs generic panels " + dtype_name(q), y, yg, 0.0);
        }
        if (q == DType::Q8_0 && k.q8_0_panel_one_level) {
          // one level: the two-level product of activations whose residual level is zero
          std::vector<BlockQ8> x1 = xq;
          for (BlockQ8& b : x1) {
            b.d2 = 0.f;
            b.rsum = 0;
            std::memset(b.r, 0, sizeof b.r);
          }
          ref.qmatmul[(int)q](x1.data(), K / 32, wt.data, wt.row_bytes(), bias.data(), yr.data(), O, T, 0, O, K);
          k.q8_0_panel_one_level(xq.data(), K / 32, pk.data, 0, bias.data(), y.data(), O, T, 0, 16, K);
          k.q8_0_panel_one_level(xq.data(), K / 32, pk.data, 0, bias.data(), y.data(), O, T, 16, O, K);
          check(name + " q8_0 one-level panels T=" + std::to_string(T), y, yr, 1e-11);
          std::vector<float> yg(T * O);
          ref.q8_0_panel_one_level(xq.data(), K / 32, pk.data, 0, bias.data(), yg.data(), O, T, 0, O, K);
          check(name + " q8_0 one-level panels vs generic", y, yg, 0.0);
        }
      }
    }
    {  // the row-scaled activations' quantizer (grouped layout), bit for bit, ties included, a partial group
      const int K = 256, T = 11;
      auto x = randn(T * K, 20.f);
      for (int i = 0; i < T * K; i += 3) x[i] = (float)((int)x[i]) + (x[i] < 0 ? -0.5f : 0.5f);
      x[7] = -127.f;
      const int G = (T + kRowGroup - 1) / kRowGroup * kRowGroup;
      std::vector<int8_t> qa(G * K, 0), qb(G * K, 0);
      std::vector<float> da(T), db(T);
      std::vector<int32_t> sa(T), sb(T);
      k.quantize_q8_rows(x.data(), K, 0, 8, K, qa.data(), da.data(), sa.data());
      k.quantize_q8_rows(x.data(), K, 8, T, K, qa.data(), da.data(), sa.data());
      quantize_rows_q8(x.data(), K, 0, T, K, qb.data(), db.data(), sb.data());
      if (qa == qb && da == db && sa == sb) passed++;
      else {
        failed++;
        std::printf("FAIL %s quantize_q8_rows differs from quantize_rows_q8\n", name.c_str());
      }
    }
    // row-scaled q8_0 ("int8"), and its ternary form (BitNet's -1, 0, 1 at 2 bits): exact integer sums over all of
    // K, one float step per output, computed here; ranges split inside a tile of panels, a partial last panel and
    // token group; pack/unpack returns the rows
    if (k.q8_0_rows)
      for (bool tern : {false, true})
      for (int K : {32, 96, 2048})
        for (int T : {1, 2, 9, 13, 70}) {
          const int O = 53;
          auto w = randn(O * K), x = randn(T * K), bias = randn(O);
          w[5] = 40.f;  // an outlier in one row
          Tensor wt = Tensor::empty(DType::Q8_0, {O, K});
          for (int o = 0; o < O; o++) {
            uint8_t* row = (uint8_t*)wt.data + o * wt.row_bytes();
            quantize_row_q8_0_shared(w.data() + o * K, row, K);
            for (int i = 0; tern && i < K; i++)  // (the row's scale kept, its values cut to -1, 0, 1)
              row[34 * (i / 32) + 2 + i % 32] = (uint8_t)(int8_t)((int)(w[o * K + i] * 3.f) % 2);
          }
          Tensor pk = pack_panels(wt);
          const bool same = pk.row_scaled && pk.ternary == tern &&
                            std::memcmp(unpack_panels(pk).data, wt.data, wt.nbytes()) == 0;
          if (same) passed++;
          else {
            failed++;
            std::printf("FAIL row-scaled pack/unpack K=%d ternary=%d\n", K, (int)tern);
          }
          std::vector<int8_t> xq((T + kRowGroup - 1) / kRowGroup * kRowGroup * K);
          std::vector<float> xd(T);
          std::vector<int32_t> xs(T);
          quantize_rows_q8(x.data(), K, 0, T, K, xq.data(), xd.data(), xs.data());
          std::vector<float> y(T * O), yr(T * O);
          for (int t = 0; t < T; t++)
            for (int o = 0; o < O; o++) {
              const uint8_t* row = (const uint8_t*)wt.data + o * wt.row_bytes();
              int64_t acc = 0;
              for (int i = 0; i < K; i++)
                acc += (int64_t)(int8_t)row[34 * (i / 32) + 2 + i % 32] *
                       xq[t / kRowGroup * kRowGroup * K + i / 4 * 4 * kRowGroup + 4 * (t % kRowGroup) + i % 4];
              // the kernels' steps: one rounding for the product (no contraction with the bias), then the bias
              yr[t * O + o] = std::fma((float)acc, f16_load(row) * xd[t], 0.f) + bias[o];
            }
          for (auto [a, b] : {std::pair<int, int>{0, 16}, {16, 48}, {48, O}})
            (tern ? k.q8_0_rows_ternary : k.q8_0_rows)(xq.data(), xd.data(), xs.data(), pk.data, bias.data(), y.data(), O,
                                                       T, a, b, K);
          check(name + (tern ? " ternary" : " row-scaled q8_0") + " K=" + std::to_string(K) + " T=" + std::to_string(T),
                y, yr, 0.0);
        }
    {  // rows whose blocks differ, or longer than the int32 sums take, keep the per-block layout
      std::vector<float> w = randn(2 * 64);
      Tensor wt = Tensor::empty(DType::Q8_0, {2, 64});
      for (int o = 0; o < 2; o++) quantize_row(DType::Q8_0, w.data() + 64 * o, (uint8_t*)wt.data + o * wt.row_bytes(), 64);
      const int64_t K = kRowScaledMaxK + 32;
      std::vector<float> wl = randn(K);
      Tensor wlt = Tensor::empty(DType::Q8_0, {1, K});
      quantize_row_q8_0_shared(wl.data(), wlt.data, K);
      if (!pack_panels(wt).row_scaled && !pack_panels(wlt).row_scaled) passed++;
      else {
        failed++;
        std::printf("FAIL per-block or long q8_0 rows took the row-scaled layout\n");
      }
    }
    // float panels: against the stored rows' generic product (bf16: the same bf16-rounded activations),
    // panel boundaries and a partial last panel, decode and prompt shapes; pack/unpack returns the rows
    for (DType f : {DType::F32, DType::F16, DType::BF16}) {
      if (!k.matmul_panel[(int)f]) continue;
      for (int K : {32, 96, 2048})
        for (int T : {1, 3, 9, 70}) {
          const int O = 53;
          auto w32 = randn(O * K), x = randn(T * K), bias = randn(O);
          Tensor wt = Tensor::empty(f, {O, K});
          for (int i = 0; i < O * K; i++) {
            if (f == DType::F32) ((float*)wt.data)[i] = w32[i];
            else ((uint16_t*)wt.data)[i] = f == DType::F16 ? f32_to_f16(w32[i]) : f32_to_bf16(w32[i]);
          }
          Tensor pk = pack_panels(wt);
          Tensor back = unpack_panels(pk);
          if (std::memcmp(back.data, wt.data, wt.nbytes()) == 0) passed++;
          else {
            failed++;
            std::printf("FAIL pack/unpack %s K=%d\n", dtype_name(f), K);
          }
          std::vector<float> y(T * O), yr(T * O);
          k.matmul_panel[(int)f](x.data(), K, pk.data, 0, bias.data(), y.data(), O, T, 0, 16, K);
          k.matmul_panel[(int)f](x.data(), K, pk.data, 0, nullptr, y.data(), O, T, 16, O, K);
          for (int t = 0; t < T; t++)
            for (int o = 16; o < O; o++) y[t * O + o] += bias[o];
          ref.matmul[(int)f](x.data(), K, wt.data, K, bias.data(), yr.data(), O, T, 0, O, K);
          check(name + " " + dtype_name(f) + " panels K=" + std::to_string(K) + " T=" + std::to_string(T), y, yr, 1e-10);
        }
    }
    for (DType q : kQuantTypes) {
      const int K = 512, T = 3, O = 7;
      auto w = randn(O * K), x = randn(T * K), bias = randn(O);
      const size_t rb = dtype_bytes(q, K);
      std::vector<uint8_t> wq(O * rb);
      for (int o = 0; o < O; o++) quantize_row(q, w.data() + o * K, wq.data() + o * rb, K);
      std::vector<BlockQ8> xq(T * K / 32);
      for (int t = 0; t < T; t++) quantize_row_q8(x.data() + t * K, xq.data() + t * K / 32, K);
      std::vector<float> y(T * O), yr(T * O);
      k.qmatmul[(int)q](xq.data(), K / 32, wq.data(), rb, bias.data(), y.data(), O, T, 0, O, K);
      ref.qmatmul[(int)q](xq.data(), K / 32, wq.data(), rb, bias.data(), yr.data(), O, T, 0, O, K);
      // integer sums are exact; the block-by-block types take the same float steps (exact), q8_0 / q4_0 rows
      // accumulate in vectors
      check(name + " qmatmul " + dtype_name(q), y, yr, q == DType::Q8_0 || q == DType::Q4_0 ? 1e-12 : 0.0);
      std::vector<float> d(K), dr(K);
      k.to_f32[(int)q](wq.data(), d.data(), K);
      ref.to_f32[(int)q](wq.data(), dr.data(), K);
      check(name + " dequant " + dtype_name(q), d, dr, 0.0);
    }
    std::printf("%s: checked\n", name.c_str());
  }
  // ops::linear_group with outputs that take inputs of their own (a token's experts: the down products of
  // different gates) gives what one product per output gives, bit for bit: float, quantized, stored rows and panels
  {
    ThreadPool pool(2);
    const KernelTable& k = kernels();
    const int K = 256, O = 48;
    for (DType dt : {DType::F32, DType::Q8_0, DType::Q4_0, DType::Q4_K})
      for (bool packed : {false, true})
        for (int T : {1, 3}) {
          std::vector<Tensor> W;
          std::vector<std::vector<float>> xs, ys(3), yr(3);
          for (int i = 0; i < 3; i++) {
            auto w = randn(O * K);
            Tensor t = Tensor::empty(dt, {O, K});
            for (int o = 0; o < O; o++)
              if (dt == DType::F32) std::memcpy((float*)t.data + o * K, w.data() + o * K, K * 4);
              else quantize_row(dt, w.data() + o * K, (uint8_t*)t.data + o * t.row_bytes(), K);
            W.push_back(packed && packable(dt, K) ? pack_panels(t, &pool) : t);
            xs.push_back(randn(T * K));
            ys[i].resize(T * O);
            yr[i].resize(T * O);
          }
          // outputs 0 and 2 share the group's x; output 1 has its own
          ops::LinearOut outs[3] = {{&W[0], nullptr, ys[0].data(), O}, {&W[1], nullptr, ys[1].data(), O, xs[1].data()},
                                    {&W[2], nullptr, ys[2].data(), O, xs[0].data()}};
          ops::linear_group(&pool, k, xs[0].data(), K, T, outs, 3);
          for (int i = 0; i < 3; i++)
            ops::linear(&pool, k, xs[i == 1 ? 1 : 0].data(), K, T, W[i], nullptr, yr[i].data(), O);
          for (int i = 0; i < 3; i++)
            check(std::string("linear_group own x ") + dtype_name(dt) + (packed ? " panels" : " rows") + " T=" +
                      std::to_string(T) + " out " + std::to_string(i), ys[i], yr[i], 0.0);
        }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
