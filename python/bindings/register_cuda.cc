// The CUDA path: device queries, CudaModel (the same calls as Model, on a device), and the op entry points the
// tests compare with the CPU kernels (submodule `cuda`). Present in every build: without EF_CUDA,
// cuda_device_count() is 0 and the rest raises RuntimeError saying how to build with CUDA.
#include <algorithm>
#include <cstring>
#include <mutex>

#include "bindings.h"
#include "model_calls.h"
#include "edgeformer/cuda.h"
#include "edgeformer/errors.h"

namespace ef_py {

namespace {

// A host weight matrix as a Tensor view over a NumPy array: float types [O, K] (bf16 as uint16 bits), quantized
// types uint8 [O, bytes per row].
ef::Tensor weight_view(py::array w, ef::DType dtype, const char* what) {
  if (w.ndim() != 2 || !(w.flags() & py::array::c_style))
    throw ef::ValueError(std::string(what) + ": expected a C-contiguous 2-D array");
  ef::Tensor t;
  t.dtype = dtype;
  t.data = w.mutable_data();
  t.name = what;
  int64_t cols = w.shape(1);
  if (ef::is_quantized(dtype)) {
    if (w.itemsize() != 1 || cols % (int64_t)ef::dtype_block_bytes(dtype))
      throw ef::ValueError(std::string(what) + ": expected uint8 rows of whole blocks");
    cols = cols / (int64_t)ef::dtype_block_bytes(dtype) * ef::dtype_block(dtype);
  } else if (!ef::is_weight(dtype) || (size_t)w.itemsize() != ef::dtype_size(dtype)) {
    throw ef::ValueError(std::string(what) + ": element size does not match the dtype");
  }
  t.shape = {(int64_t)w.shape(0), cols};
  t.strides = ef::contiguous_strides(dtype, t.shape);
  return t;
}

const float* opt_f32(const py::object& o, F32Array& keep, int64_t n, const char* what) {
  if (o.is_none()) return nullptr;
  keep = F32Array(o);
  if (keep.size() != n) throw ef::ValueError(std::string(what) + ": expected " + std::to_string(n) + " elements");
  return keep.data();
}

void register_cuda_ops(py::module_& m) {
  py::module_ c = m.def_submodule("cuda", "CUDA kernels on NumPy arrays (for tests): each runs on one device");
  c.def("linear", [](F32Array x, py::array w, ef::DType wdtype, py::object bias, int device) {
    // x: [T, K]; w: [O, K] (quantized: uint8 [O, bytes per row]) -> [T, O]
    if (x.ndim() != 2) throw ef::ValueError("x: expected [T, K]");
    const ef::Tensor W = weight_view(w, wdtype, "w");
    if (W.shape[1] != x.shape(1)) throw ef::ValueError("linear: x and w disagree on K");
    F32Array b;
    const float* bp = opt_f32(bias, b, W.shape[0], "bias");
    py::array_t<float> y({(int64_t)x.shape(0), W.shape[0]});
    float* yp = y.mutable_data();
    const float* xp = x.data();
    py::gil_scoped_release nogil;
    ef::cuda::testing::linear(device, W, xp, x.shape(0), bp, yp);
    return y;
  }, py::arg("x"), py::arg("w"), py::arg("wdtype"), py::arg("bias") = py::none(), py::arg("device") = 0);
  c.def("embedding", [](py::array table, ef::DType dtype, IdArray ids, int device) {
    const ef::Tensor W = weight_view(table, dtype, "table");
    py::array_t<float> out({(int64_t)ids.size(), W.shape[1]});
    ef::cuda::testing::embedding(device, W, ids.data(), ids.size(), out.mutable_data());
    return out;
  }, py::arg("table"), py::arg("dtype"), py::arg("ids"), py::arg("device") = 0);
  c.def("rmsnorm", [](F32Array x, py::object w, float eps, int device) {
    if (x.ndim() != 2) throw ef::ValueError("x: expected [rows, n]");
    F32Array wk;
    const float* wp = opt_f32(w, wk, x.shape(1), "w");
    py::array_t<float> y({x.shape(0), x.shape(1)});
    ef::cuda::testing::rmsnorm(device, x.data(), wp, eps, y.mutable_data(), x.shape(0), x.shape(1));
    return y;
  }, py::arg("x"), py::arg("w"), py::arg("eps"), py::arg("device") = 0);
  c.def("layernorm", [](F32Array x, py::object w, py::object b, float eps, int device) {
    if (x.ndim() != 2) throw ef::ValueError("x: expected [rows, n]");
    F32Array wk, bk;
    const float* wp = opt_f32(w, wk, x.shape(1), "w");
    const float* bp = opt_f32(b, bk, x.shape(1), "b");
    py::array_t<float> y({x.shape(0), x.shape(1)});
    ef::cuda::testing::layernorm(device, x.data(), wp, bp, eps, y.mutable_data(), x.shape(0), x.shape(1));
    return y;
  }, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("eps"), py::arg("device") = 0);
  c.def("softmax", [](F32Array x, int device) {
    if (x.ndim() != 2) throw ef::ValueError("x: expected [rows, n]");
    py::array_t<float> y({x.shape(0), x.shape(1)});
    std::memcpy(y.mutable_data(), x.data(), x.size() * 4);
    ef::cuda::testing::softmax(device, y.mutable_data(), x.shape(0), x.shape(1));
    return y;
  }, py::arg("x"), py::arg("device") = 0);
  c.def("act", [](ef::Act a, F32Array x, int device) {
    py::array_t<float> y(x.size());
    std::memcpy(y.mutable_data(), x.data(), x.size() * 4);
    ef::cuda::testing::act(device, a, y.mutable_data(), x.size());
    return y;
  }, py::arg("act"), py::arg("x"), py::arg("device") = 0);
  c.def("act_mul", [](ef::Act a, F32Array g, F32Array u, int device) {
    if (g.size() != u.size()) throw ef::ValueError("act_mul: g and u differ in size");
    py::array_t<float> y(g.size());
    std::memcpy(y.mutable_data(), g.data(), g.size() * 4);
    ef::cuda::testing::act_mul(device, a, y.mutable_data(), u.data(), g.size());
    return y;
  }, py::arg("act"), py::arg("g"), py::arg("u"), py::arg("device") = 0);
  c.def("rope", [](F32Array x, F32Array cos, F32Array sin, ef::RopeStyle style, int device) {
    // x: [T, heads, head_dim]  cos, sin: [T, half]  ->  rotated copy of x
    if (x.ndim() != 3 || cos.ndim() != 2 || sin.ndim() != 2 || cos.shape(0) != x.shape(0) ||
        sin.shape(0) != x.shape(0) || cos.shape(1) != sin.shape(1) || 2 * cos.shape(1) > x.shape(2))
      throw ef::ValueError("rope: expected x [T, heads, head_dim], cos and sin [T, half] with 2 * half <= head_dim");
    py::array_t<float> y({x.shape(0), x.shape(1), x.shape(2)});
    std::memcpy(y.mutable_data(), x.data(), x.size() * 4);
    ef::cuda::testing::rope(device, y.mutable_data(), cos.data(), sin.data(), x.shape(0), x.shape(1), x.shape(2),
                            cos.shape(1), style);
    return y;
  }, py::arg("x"), py::arg("cos"), py::arg("sin"), py::arg("style"), py::arg("device") = 0);
  c.def("attention", [](F32Array q, F32Array k, F32Array v, int32_t pos0, bool causal, int32_t window, float scale,
                        py::object alibi_slopes, bool alibi_bf16, bool alibi_scaled, py::object rel, int32_t rel_lo,
                        py::object key_mask, bool kv_f16, int device) {
    // q: [T, heads, head_dim]  k, v: [n_keys, kv_heads, head_dim]  ->  [T, heads, head_dim]
    if (q.ndim() != 3 || k.ndim() != 3 || v.ndim() != 3 || k.shape(0) != v.shape(0) || k.shape(1) != v.shape(1) ||
        k.shape(2) != q.shape(2) || v.shape(2) != q.shape(2))
      throw ef::ValueError("attention: expected q [T, heads, head_dim], k and v [n_keys, kv_heads, head_dim]");
    ef::cuda::testing::AttentionArgs a;
    a.T = (int32_t)q.shape(0), a.n_heads = (int32_t)q.shape(1), a.head_dim = (int32_t)q.shape(2);
    a.n_keys = (int32_t)k.shape(0), a.n_kv_heads = (int32_t)k.shape(1);
    a.pos0 = pos0, a.causal = causal, a.window = window, a.scale = scale;
    if (!alibi_slopes.is_none()) a.alibi_slopes = alibi_slopes.cast<std::vector<float>>();
    a.alibi_bf16 = alibi_bf16, a.alibi_scaled = alibi_scaled;
    if (!rel.is_none()) {
      F32Array r(rel);
      if (r.ndim() != 2 || r.shape(0) != a.n_heads) throw ef::ValueError("rel: expected [heads, width]");
      a.rel.assign(r.data(), r.data() + r.size());
      a.rel_width = (int32_t)r.shape(1), a.rel_lo = rel_lo;
    }
    if (!key_mask.is_none()) a.key_mask = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>(key_mask)
                                              .cast<std::vector<uint8_t>>();
    a.kv_f16 = kv_f16;
    py::array_t<float> out({q.shape(0), q.shape(1), q.shape(2)});
    ef::cuda::testing::attention(device, a, q.data(), k.data(), v.data(), out.mutable_data());
    return out;
  }, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("pos0"), py::arg("causal") = true, py::arg("window") = 0,
     py::arg("scale") = 0.f, py::arg("alibi_slopes") = py::none(), py::arg("alibi_bf16") = false,
     py::arg("alibi_scaled") = false, py::arg("rel") = py::none(), py::arg("rel_lo") = 0,
     py::arg("key_mask") = py::none(), py::arg("kv_f16") = false, py::arg("device") = 0);
  c.def("sample", [](F32Array logits, const ef::SamplerOptions& o, IdArray history, double u, int device) {
    return ef::cuda::testing::sample(device, logits.data(), (int32_t)logits.size(), o, history.data(), history.size(), u);
  }, py::arg("logits"), py::arg("options"), py::arg("history"), py::arg("u"), py::arg("device") = 0);
}

}  // namespace

void register_cuda(py::module_& m) {
  m.def("cuda_built", &ef::cuda::built, "whether this build has the CUDA path (EF_CUDA)");
  m.def("cuda_device_count", &ef::cuda::device_count, "usable CUDA devices (0 without CUDA, driver or device)");
  m.def("cuda_device_info", [](int device) {
    const ef::cuda::DeviceInfo i = ef::cuda::device_info(device);
    py::dict d;
    d["index"] = i.index;
    d["name"] = i.name;
    d["compute_capability"] = py::make_tuple(i.major, i.minor);
    d["multiprocessors"] = i.sm_count;
    d["total_memory"] = i.total_memory;
    d["free_memory"] = i.free_memory;
    d["l2_bytes"] = i.l2_bytes;
    d["peak_bandwidth_gbs"] = i.peak_bandwidth;
    d["driver_version"] = i.driver_version;
    d["runtime_version"] = i.runtime_version;
    const int blas = ef::cuda::blas_version();
    d["cublas"] = blas ? py::object(py::str(std::to_string(blas / 10000) + "." + std::to_string(blas / 100 % 100) +
                                            "." + std::to_string(blas % 100)))
                       : py::object(py::none());
    return d;
  }, py::arg("device") = 0);
  m.def("cuda_blas_calls", &ef::cuda::blas_calls, "GEMMs run through cuBLAS in this process so far");
  m.def("cuda_set_blas_path", &ef::cuda::set_blas_path, py::arg("paths"),
        "libcublas files to try first for prompt GEMMs (':'-separated), before the sonames; read at first use");
  m.def("cuda_bandwidth", [](int device, int64_t bytes, int iters) {
    py::gil_scoped_release nogil;
    return ef::cuda::measure_bandwidth(device, bytes, iters);
  }, py::arg("device") = 0, py::arg("bytes") = (int64_t)1 << 30, py::arg("iters") = 20,
     "GB/s of a device-to-device copy, counting bytes read and written");

  using CM = ef::cuda::CudaModel;
  py::class_<CM> model(m, "CudaModel");
  def_model_calls(model);
  model
      .def(py::init([](ef::Model& host, int device, const std::string& kv_dtype) {
             ef::cuda::CudaOptions o;
             o.device = device;
             o.kv_dtype = kv_dtype;
             std::lock_guard<std::mutex> lk(host.mutex());
             return std::make_unique<CM>(host, o);
           }),
           py::arg("host"), py::arg("device") = 0, py::arg("kv_dtype") = "f16", py::call_guard<py::gil_scoped_release>(),
           "Uploads host's weights to the device (once) and allocates the KV cache there.")
      .def("fork", &CM::fork, py::call_guard<py::gil_scoped_release>(),
           "Another model over the same device weights, with its own KV cache.")
      .def_property_readonly("spec", &CM::spec)
      .def_property_readonly("max_context", &CM::max_context)
      .def_property_readonly("n_past", &CM::n_past)
      .def_property_readonly("threads", &CM::host_threads)
      .def_property_readonly("device", &CM::device)
      .def_property_readonly("kv_dtype", &CM::kv_dtype)
      .def_property_readonly("weight_bytes", &CM::weight_bytes)
      .def_property_readonly("graph_stats", [](const CM& m) {
        const ef::cuda::CudaGraphStats g = m.graph_stats();
        py::dict d;
        d["enabled"] = g.enabled, d["graphs"] = g.graphs, d["captures"] = g.captures, d["launches"] = g.launches;
        return d;
      }, "decode steps replayed as CUDA graphs: enabled, graphs held, captures and replays so far")
      .def("set_graphs", [](CM& m, bool on) {
        py::gil_scoped_release nogil;
        std::lock_guard<std::mutex> lk(m.mutex());
        m.set_graphs(on);
      }, py::arg("on"), "decode steps as CUDA graphs on or off for this model (off drops the graphs held)")
      .def("step", [](CM& m, IdArray ids, ef::Sampler& s, IdArray history, int32_t logprobs) -> py::object {
        // forward + sampling on the device: only the token id comes back (with logprobs >= 0 the logits row
        // too, before the sampler changes it: (token, its log-probability, top), as Model.step)
        if (ids.ndim() != 1 || ids.shape(0) == 0) throw ef::ValueError("input_ids: expected a non-empty 1-D array");
        const int32_t* p = ids.data();
        const int32_t T = (int32_t)ids.shape(0);
        const int32_t* hp = history.data();
        const int64_t hn = history.size();
        const int32_t k = check_logprobs(logprobs);
        std::vector<float> raw(k >= 0 ? m.spec().vocab_size : 0);
        int32_t tok = -1;
        TokenLogprobs lp;
        {
          InterruptScope irq;
          py::gil_scoped_release nogil;
          std::lock_guard<std::mutex> lk(m.mutex());
          tok = m.step(p, T, s, hp, hn, k >= 0 ? raw.data() : nullptr);
          if (k >= 0) lp = token_logprobs(raw.data(), (int64_t)raw.size(), tok, k);
        }
        return k >= 0 ? to_python(lp) : py::cast(tok);
      }, py::arg("input_ids"), py::arg("sampler"), py::arg("history"), py::arg("logprobs") = -1);

  // the same call for forks of one device model: sampling on the device; logits come back only when asked
  m.def("decode_batch", [](const std::vector<CM*>& models, IdArray tokens, py::object samplers, py::object histories,
                           std::vector<int32_t> logprobs) {
    const bool raw = samplers.is_none() || std::any_of(logprobs.begin(), logprobs.end(), [](int32_t k) { return k >= 0; });
    return decode_batch_call(models, tokens, samplers, histories, logprobs,
                             [&](const std::vector<CM*>& ms, const int32_t* toks, const std::vector<ef::Sampler*>& ss,
                                 const int32_t* const* hp, const int64_t* hn, float* lp, int32_t* next) {
      CM::decode_batch(ms, toks, ss.empty() ? nullptr : ss.data(), hp, hn, raw ? lp : nullptr, next);
    });
  }, py::arg("models"), py::arg("tokens"), py::arg("samplers") = py::none(), py::arg("histories") = py::none(),
     py::arg("logprobs") = std::vector<int32_t>(), kDecodeBatchDoc);

  register_cuda_ops(m);
}

}  // namespace ef_py
