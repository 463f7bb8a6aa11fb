// Built instead of the CUDA sources when EF_CUDA is off: no device, and every entry point says how to get one.
#include "edgeformer/cuda.h"
#include "edgeformer/errors.h"

namespace ef {
namespace cuda {

namespace {
[[noreturn]] void not_built() {
  throw Error("edgeformer was built without CUDA: rebuild with pip install . -C cmake.define.EF_CUDA=ON "
              "(needs the CUDA toolkit, 12 or newer)");
}
}  // namespace

bool built() { return false; }
int device_count() { return 0; }
DeviceInfo device_info(int) { not_built(); }
double measure_bandwidth(int, int64_t, int) { not_built(); }
void set_blas_path(const std::string&) {}
int blas_version() { return 0; }
int64_t blas_calls() { return 0; }

struct CudaModel::State {};
CudaModel::CudaModel() = default;
CudaModel::CudaModel(const Model&, const CudaOptions&) { not_built(); }
CudaModel::~CudaModel() = default;
std::unique_ptr<CudaModel> CudaModel::fork() const { not_built(); }
const ArchSpec& CudaModel::spec() const { not_built(); }
int32_t CudaModel::max_context() const { not_built(); }
int32_t CudaModel::n_past() const { not_built(); }
int32_t CudaModel::device() const { not_built(); }
int32_t CudaModel::host_threads() const { not_built(); }
std::string CudaModel::kv_dtype() const { not_built(); }
int64_t CudaModel::weight_bytes() const { not_built(); }
CudaGraphStats CudaModel::graph_stats() const { not_built(); }
void CudaModel::set_graphs(bool) { not_built(); }
void CudaModel::reset() { not_built(); }
void CudaModel::truncate(int32_t) { not_built(); }
void CudaModel::copy_cache_from(const CudaModel&, int32_t) { not_built(); }
void CudaModel::forward(const ForwardArgs&) { not_built(); }
int32_t CudaModel::step(const int32_t*, int32_t, Sampler&, const int32_t*, int64_t, float*) { not_built(); }
void CudaModel::set_encoder_output(const float*, int32_t, const uint8_t*) { not_built(); }
void CudaModel::decode_batch(const std::vector<CudaModel*>&, const int32_t*, Sampler* const*, const int32_t* const*,
                             const int64_t*, float*, int32_t*) {
  not_built();
}
std::mutex& CudaModel::mutex() { not_built(); }

namespace testing {
void linear(int, const Tensor&, const float*, int64_t, const float*, float*) { not_built(); }
void embedding(int, const Tensor&, const int32_t*, int64_t, float*) { not_built(); }
void rmsnorm(int, const float*, const float*, float, float*, int64_t, int64_t) { not_built(); }
void layernorm(int, const float*, const float*, const float*, float, float*, int64_t, int64_t) { not_built(); }
void softmax(int, float*, int64_t, int64_t) { not_built(); }
void act(int, Act, float*, int64_t) { not_built(); }
void act_mul(int, Act, float*, const float*, int64_t) { not_built(); }
void rope(int, float*, const float*, const float*, int64_t, int64_t, int64_t, int64_t, RopeStyle) { not_built(); }
void attention(int, const AttentionArgs&, const float*, const float*, const float*, float*) { not_built(); }
int32_t sample(int, const float*, int32_t, const SamplerOptions&, const int32_t*, int64_t, double) { not_built(); }
}  // namespace testing

}  // namespace cuda
}  // namespace ef
