// The CUDA kernels' host entry points: raw device pointers and a stream; each validates its arguments and
// launches. The kernel files (*.cu) are their only definitions; the model (cuda_upload.cc, cuda_model.cc) and the
// test entry points (cuda_api.cc) call nothing else. All activations are f32 in device memory.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "common.h"
#include "edgeformer/arch.h"
#include "edgeformer/cpu.h"
#include "edgeformer/dtype.h"

namespace ef {
namespace cuda {

// A weight matrix [rows, cols] on the device, in the layout the kernels read:
//   F16 / BF16  values, row r at data + r * ld elements; ld a multiple of 8 (rows padded with zeros) and
//               data 16-byte aligned, so rows load as 16-byte vectors
//   Q8_0        int8 quants [rows][cols] at data, f16 scales [rows][cols / 32] at scales
//   Q4_0        nibbles [rows][cols / 32][16] at data (byte i of a block: element i low, i + 16 high; the
//               value is nibble - 8), f16 scales [rows][cols / 32] at scales
//   Q4_K / Q6_K llama.cpp's blocks as stored, row r at data + r * ld bytes
// (q8_0 and q4_0 blocks are split into quants and scales at upload so that quants load as 16-byte vectors.)
struct DevMatrix {
  DType dtype = DType::F16;
  int64_t rows = 0, cols = 0;
  int64_t ld = 0;
  const void* data = nullptr;
  const uint16_t* scales = nullptr;
};

// ---- elementwise.cu -----------------------------------------------------------------------------------------
// out[t, :] (+)= row ids[t] of table (any DevMatrix type), row stride ldo. ids are checked on the host.
void embedding(const DevMatrix& table, const int32_t* ids, int64_t T, float* out, int64_t ldo, bool accumulate,
               cudaStream_t s);
// y = x / sqrt(mean(x^2) + eps) * w  (w may be null); rows of n, contiguous; in place allowed
void rmsnorm(const float* x, const float* w, float eps, float* y, int64_t rows, int64_t n, cudaStream_t s);
// rows of n at (r / heads) * ld + (r % heads) * n: each head of each token (y may be x)
void rmsnorm_heads(const float* x, const float* w, float eps, float* y, int64_t rows, int64_t n, int64_t heads,
                   int64_t ld, cudaStream_t s);
// Each head's row (as rmsnorm_heads lays them out) normalized in place by LayerNorm without bias (ln) or RMSNorm,
// times weights of its own (w_head: elements from one head's weights to the next; 0: one weight for all heads;
// w may be null): the q/k norms of StableLM 2 and Command R+ (LayerNorm, a weight per head)
void norm_heads(bool ln, const float* x, const float* w, int64_t w_head, float eps, float* y, int64_t rows, int64_t n,
                int64_t heads, int64_t ld, cudaStream_t s);
// y = (x - mean) / sqrt(var + eps) * w + b  (w, b may be null); in place allowed
void layernorm(const float* x, const float* w, const float* b, float eps, float* y, int64_t rows, int64_t n,
               cudaStream_t s);
void softmax_rows(float* x, int64_t rows, int64_t n, cudaStream_t s);
// x[r, :n] = act(x[r, :n]) for rows at stride ld
void act(Act a, float* x, int64_t rows, int64_t n, int64_t ld, cudaStream_t s);
// g[r, :n] = act(g[r, :n]) * u[r, :n]   (row strides ldg, ldu)
void act_mul(Act a, float* g, int64_t ldg, const float* u, int64_t ldu, int64_t rows, int64_t n, cudaStream_t s);
void add(float* y, const float* x, int64_t n, cudaStream_t s);   // y += x
void scale(float* x, float a, int64_t n, cudaStream_t s);       // x *= a
void softcap(float* x, float cap, int64_t n, cudaStream_t s);  // x = cap * tanh(x / cap)
void clamp(float* x, float lim, int64_t n, cudaStream_t s);    // x = min(max(x, -lim), lim)
// x[r, :cols] *= f[r] for r < rows (rows ld apart): queries scaled by their position (ArchSpec::q_temp_beta)
void scale_rows(float* x, int64_t ld, const float* f, int64_t rows, int64_t cols, cudaStream_t s);
// y[t, o] = x[t, :K] . w[o, :K] (+ b[o]) in f32 for o < n, t < T (rows dense): a mixture's router, kept in f32
void linear_f32(const float* x, const float* w, const float* b, int64_t T, int64_t K, int64_t n, float* y,
                cudaStream_t s);
// Mixture of experts: dst[i, :cols] = src[idx[i], :cols] (rows ld apart in src, dense in dst), i < n
void gather_rows(const float* src, int64_t ld, const int32_t* idx, int64_t n, int64_t cols, float* dst, cudaStream_t s);
// dst[idx[i], :cols] += w[i] * src[i, :cols] (rows ld apart in dst, dense in src); idx without repeats
void scatter_add_rows(float* dst, int64_t ld, const int32_t* idx, const float* w, const float* src, int64_t n,
                      int64_t cols, cudaStream_t s);
// dst[r, :cols] += sigmoid(x[r, :cols] . v) * y[r, :cols] for r < rows (a shared expert behind its gate)
void sigmoid_gate_add(float* dst, const float* y, const float* x, const float* v, int64_t rows, int64_t cols,
                      cudaStream_t s);
// f32 rows (cols each, lds apart) -> f16 rows at stride ldd (padding left as is): uploads, and the activations
// of a prompt for cuBLAS
void f32_to_f16_rows(const float* src, int64_t lds, int64_t rows, int64_t cols, uint16_t* dst, int64_t ldd,
                     cudaStream_t s);
// q8_0 / q4_0 blocks as stored (contiguous) -> quants and f16 scales (DevMatrix layout)
void split_blocks(DType t, const uint8_t* src, int64_t nblocks, uint8_t* quants, uint16_t* scales, cudaStream_t s);

// ---- gemm.cu ------------------------------------------------------------------------------------------------
// y[t, o] (+)= sum_k x[t, k] * W[o, k] + bias[o] for t < T, o < W.rows. x: row stride ldx; y: row stride ldy.
// T <= 8: one warp per output row reads W once for every t (decode: bandwidth-bound); quantized W
// multiplies activations quantized to 8 bits per block of 32 with integer dot products (dp4a), as the CPU
// kernels do. T >= 64 with cuBLAS loaded (blas.cc): x rounded to f16, W as f16 (other types dequantized to f16
// a chunk of rows at a time), cublasGemmEx with f32 accumulation, in the scratch `ws`. Otherwise, T > 8:
// tensor-core tiles (WMMA 16x16x16, f32 accumulation) with W dequantized into shared memory on the fly as f16
// and x rounded to f16: 64 x 64 tiles, 128 x 128 from 64 tokens on. Both ways bf16 weights become f16: exact
// but for magnitudes below 6e-5 (rounded) and above 65504 (infinite).
void linear(const DevMatrix& W, const float* x, int64_t ldx, int64_t T, const float* bias, float* y, int64_t ldy,
            bool accumulate, Scratch& ws, cudaStream_t s);
constexpr int64_t kGemvMaxT = 8, kGemmBigMinT = 64;

// ---- blas.cc ------------------------------------------------------------------------------------------------
// cuBLAS, loaded at run time (edgeformer/cuda.h set_blas_path): C [m x n] (column-major, ldc; f32) = A^T B
// (+ C when accumulate) for A f16 [k x m] column-major (a matrix's rows, lda apart) and B f16 [k x n] (the
// activations' rows, ldb apart), on stream s of the current device, with `workspace` (kBlasWorkspace bytes of
// device memory used by this stream alone). False when there is no usable cuBLAS, EDGEFORMER_CUBLAS=0, or the
// call fails: nothing was written, and the caller runs its own kernel.
constexpr size_t kBlasWorkspace = (size_t)32 << 20;  // cuBLAS's advice for Hopper
bool blas_gemm_f16(int64_t m, int64_t n, int64_t k, const void* A, int64_t lda, const void* B, int64_t ldb, float* C,
                   int64_t ldc, bool accumulate, void* workspace, size_t workspace_bytes, cudaStream_t s);
bool blas_usable();  // a handle for the current device (loading the library at first use), and not turned off

// ---- attention.cu -------------------------------------------------------------------------------------------
// Rotary embedding of q (in place) and k, and k, v appended to the cache at positions pos0 .. pos0 + T - 1.
struct RopeStoreArgs {
  float* q = nullptr;  // [T][n_heads * head_dim] at row stride ldq
  int64_t ldq = 0;
  const float* k = nullptr;  // [T][n_kv * head_dim] at row stride ldk (v likewise)
  const float* v = nullptr;
  int64_t ldk = 0, ldv = 0;
  void* kc = nullptr;  // this layer's cache: element d of key j of kv head g at g * head_stride + j * pos_stride + d
  void* vc = nullptr;
  bool kv_f16 = true;
  int64_t head_stride = 0, pos_stride = 0;
  int32_t T = 0, n_heads = 0, n_kv = 0, head_dim = 0, pos0 = 0;
  const float* cos = nullptr;  // null: no rotary. Query t uses row tab_row0 + t of cos, sin [rows][half]
  const float* sin = nullptr;
  int32_t half = 0, tab_row0 = 0;
  bool interleaved = false;  // RopeStyle::Interleaved: pairs (2i, 2i+1); else (i, i + half)
  // Not null (decode steps replayed as CUDA graphs): pos0 and tab_row0 are both read from *dyn_pos on the
  // device when the kernel runs, so one captured launch serves every position.
  const int32_t* dyn_pos = nullptr;
};
void rope_store(const RopeStoreArgs& a, cudaStream_t s);
// The same rotation on a plain array x [T][heads][head_dim] (tests): row t uses cos/sin row t.
void rope_inplace(float* x, int64_t T, int64_t heads, int64_t head_dim, const float* cos, const float* sin,
                  int64_t half, bool interleaved, cudaStream_t s);

// softmax(q . k * scale + bias) v over the keys each query sees, per head. Queries are at positions
// pos0 .. pos0 + T - 1; query i sees keys j < n_keys with j <= its position (causal) and j > position - window
// (window > 0), except those whose key_mask is 0. bias: ALiBi slope * j (rounded to bf16 and/or multiplied by
// scale as the flags say), or rel[h][j - position - rel_lo]. T == 1: split-K over the keys (decode); T > 1:
// query tiles against key tiles in shared memory with an online softmax (flash-style).
struct AttnArgs {
  const float* q = nullptr;  // q[t * ldq + h * head_dim + d]
  int64_t ldq = 0;
  float* out = nullptr;  // same layout, row stride ldo
  int64_t ldo = 0;
  const void* k = nullptr;  // as RopeStoreArgs::kc
  const void* v = nullptr;
  bool kv_f16 = true;
  int64_t head_stride = 0, pos_stride = 0;
  int32_t T = 0, n_heads = 0, group = 1, head_dim = 0, pos0 = 0, n_keys = 0;
  bool causal = true;
  int32_t window = 0;
  float scale = 1.f;
  float softcap = 0.f;  // scaled scores become softcap * tanh(s / softcap) (Gemma 2); 0 = none
  const float* alibi = nullptr;  // [n_heads] slopes (already rounded to bf16 when alibi_bf16)
  bool alibi_bf16 = false, alibi_scaled = false;
  const float* rel = nullptr;
  int32_t rel_width = 0, rel_lo = 0;
  const uint8_t* key_mask = nullptr;
  // Not null (T == 1, causal; decode steps replayed as CUDA graphs): the query's position is *dyn_pos, read on
  // the device, and it sees keys up to that position; n_keys is then only an upper bound on position + 1,
  // which sizes the split-K grid (blocks past the position's keys find none). The splits are fixed chunks of
  // keys, so a replay and a plain step at the same position give the same bits.
  const int32_t* dyn_pos = nullptr;
};
void attention(const AttnArgs& a, Scratch& ws, cudaStream_t s);

// ---- sample.cu ----------------------------------------------------------------------------------------------
// One token from logits [vocab] (modified in place by the repetition penalty), in one thread block: greedy
// argmax (lowest index among ties), or top-k (ties with the k-th kept), top-p and min-p as the CPU sampler
// applies them, then the token where u * (kept mass) falls, in vocabulary order. Masses are fixed-point
// integers, so the result is deterministic. penalized: distinct token ids (the host deduplicates). Then
// counted[i] (distinct ids) loses count_penalty[i]: OpenAI's presence and frequency penalties, which the host's
// Sampler computes from the tokens it has returned, less logit_bias (Sampler::penalties).
struct SampleArgs {
  float* logits = nullptr;
  int32_t vocab = 0;
  const int32_t* penalized = nullptr;
  int32_t n_penalized = 0;
  float repetition_penalty = 1.f;
  const int32_t* counted = nullptr;
  const float* count_penalty = nullptr;
  int32_t n_counted = 0;
  bool greedy = true;
  float inv_temperature = 1.f;
  int32_t top_k = 0;
  float top_p = 1.f, min_p = 0.f;
  double u = 0;
  int32_t* out = nullptr;  // device int
};
void sample(const SampleArgs& a, Scratch& ws, cudaStream_t s);

}  // namespace cuda
}  // namespace ef
