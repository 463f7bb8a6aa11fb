// Kernel entry points on NumPy arrays, for the op tests: each takes isa= to run one ISA's table directly
// ("" = the active one). 2-D inputs may be row-strided views (rows need unit inner stride).
#include <cstring>

#include "bindings.h"
#include "edgeformer/cpu.h"
#include "edgeformer/errors.h"
#include "edgeformer/ops.h"
#include "edgeformer/quant.h"
#include "edgeformer/rope.h"
#include "edgeformer/tensor.h"

namespace ef_py {

namespace {

const ef::KernelTable& table(const std::string& isa) { return isa.empty() ? ef::kernels() : ef::kernels_for(ef::parse_isa(isa)); }

// A 1-D or 2-D array viewed as rows: pointer, rows, cols, row stride in elements.
struct Rows {
  char* ptr;
  int64_t rows, cols, ld;
  py::array keep;
};

Rows rows_of(py::array a, size_t itemsize, const char* what) {
  if (a.ndim() != 1 && a.ndim() != 2) throw ef::ValueError(std::string(what) + ": expected a 1-D or 2-D array");
  if ((size_t)a.itemsize() != itemsize) throw ef::ValueError(std::string(what) + ": wrong element size");
  bool unit = a.shape(a.ndim() - 1) <= 1 || a.strides(a.ndim() - 1) == (py::ssize_t)itemsize;
  bool row_ok = a.ndim() == 1 || a.strides(0) % (py::ssize_t)itemsize == 0;
  if (!unit || !row_ok || a.strides(0) < 0) a = py::module_::import("numpy").attr("ascontiguousarray")(a);
  Rows r;
  r.keep = a;
  r.ptr = (char*)a.data();  // read only: inputs are never written
  r.rows = a.ndim() == 2 ? a.shape(0) : 1;
  r.cols = a.shape(a.ndim() - 1);
  r.ld = a.ndim() == 2 ? a.strides(0) / (py::ssize_t)itemsize : r.cols;
  return r;
}

Rows f32_rows(py::array a, const char* what) {
  if (!a.dtype().is(py::dtype::of<float>())) throw ef::ValueError(std::string(what) + ": expected float32");
  return rows_of(a, 4, what);
}

py::array_t<float> new_like(const Rows& r, bool two_d) {
  if (two_d) return py::array_t<float>({r.rows, r.cols});
  return py::array_t<float>(r.cols);
}

}  // namespace

void register_ops(py::module_& m) {
  py::module_ ops = m.def_submodule("ops", "kernels on NumPy arrays (for tests)");
  py::enum_<ef::Act>(m, "Act")
      .value("none", ef::Act::None)
      .value("relu", ef::Act::ReLU)
      .value("silu", ef::Act::SiLU)
      .value("gelu", ef::Act::GELU)
      .value("gelu_tanh", ef::Act::GELUTanh)
      .value("relu2", ef::Act::ReLU2);

  ops.def("matmul", [](py::array x, py::array w, ef::DType wdtype, py::object bias, const std::string& isa) {
    const ef::KernelTable& k = table(isa);
    if (!ef::is_float_weight(wdtype)) throw ef::ValueError("matmul: wdtype must be f32, f16 or bf16");
    Rows xr = f32_rows(x, "x");
    Rows wr = rows_of(w, ef::dtype_size(wdtype), "w");
    if (xr.cols != wr.cols) throw ef::ValueError("matmul: x and w disagree on K");
    py::array_t<float> b;
    const float* bp = nullptr;
    if (!bias.is_none()) {
      b = py::array_t<float, py::array::c_style | py::array::forcecast>(bias);
      if (b.size() != wr.rows) throw ef::ValueError("matmul: bias must have O elements");
      bp = b.data();
    }
    py::array_t<float> y({xr.rows, wr.rows});
    k.matmul[(int)wdtype]((const float*)xr.ptr, xr.ld, wr.ptr, wr.ld, bp, y.mutable_data(), wr.rows, xr.rows, 0, wr.rows,
                          xr.cols);
    return y;
  }, py::arg("x"), py::arg("w"), py::arg("wdtype") = ef::DType::F32, py::arg("bias") = py::none(), py::arg("isa") = "");

  ops.def("quantize", [](py::array_t<float, py::array::c_style | py::array::forcecast> x, ef::DType to) {
    // x: [rows, K] -> uint8 [rows, bytes per row] of `to` blocks
    if (!ef::is_quantized(to)) throw ef::ValueError("quantize: dtype must be a quantized type (q8_0, q4_0, q4_k, ...)");
    if (x.ndim() != 2 || x.shape(1) % ef::dtype_block(to)) throw ef::ValueError("quantize: x must be [rows, K] with K a multiple of the block");
    const int64_t rows = x.shape(0), K = x.shape(1), rb = (int64_t)ef::dtype_bytes(to, K);
    py::array_t<uint8_t> out({rows, rb});
    for (int64_t r = 0; r < rows; r++) ef::quantize_row(to, x.data() + r * K, out.mutable_data() + r * rb, K);
    return out;
  }, py::arg("x"), py::arg("dtype"));
  ops.def("qmatmul", [](py::array_t<float, py::array::c_style | py::array::forcecast> x,
                        py::array_t<uint8_t, py::array::c_style | py::array::forcecast> w, ef::DType wdtype,
                        py::object bias, const std::string& isa) {
    // x: [T, K] f32; w: [O, bytes per row] blocks of wdtype -> [T, O], activations quantized to 8 bits
    const ef::KernelTable& k = table(isa);
    if (!ef::is_quantized(wdtype)) throw ef::ValueError("qmatmul: wdtype must be a quantized type");
    if (x.ndim() != 2 || w.ndim() != 2) throw ef::ValueError("qmatmul: x [T, K] and w [O, row bytes]");
    const int64_t T = x.shape(0), K = x.shape(1), O = w.shape(0);
    if (K % ef::dtype_block(wdtype) || (int64_t)ef::dtype_bytes(wdtype, K) != w.shape(1))
      throw ef::ValueError("qmatmul: w rows do not hold K elements of this type");
    std::vector<ef::BlockQ8> xq(T * (K / 32));
    for (int64_t t = 0; t < T; t++) ef::quantize_row_q8(x.data() + t * K, xq.data() + t * (K / 32), K);
    py::array_t<float> b;
    const float* bp = nullptr;
    if (!bias.is_none()) {
      b = py::array_t<float, py::array::c_style | py::array::forcecast>(bias);
      if (b.size() != O) throw ef::ValueError("qmatmul: bias must have O elements");
      bp = b.data();
    }
    py::array_t<float> y({T, O});
    k.qmatmul[(int)wdtype](xq.data(), K / 32, w.data(), w.shape(1), bp, y.mutable_data(), O, T, 0, O, K);
    return y;
  }, py::arg("x"), py::arg("w"), py::arg("wdtype"), py::arg("bias") = py::none(), py::arg("isa") = "");
  ops.def("linear_packed", [](py::array_t<float, py::array::c_style | py::array::forcecast> x,
                              py::array_t<uint8_t, py::array::c_style | py::array::forcecast> w, ef::DType wdtype,
                              float scale, const std::string& isa, bool direct, bool prompt) {
    // x: [T, K] f32; w: [O, bytes per row] of wdtype (blocks, or the bytes of f32 / f16 / bf16 values), repacked into
    // panels as the loader repacks them (q8_0 rows sharing one scale: the row-scaled layout, or the ternary one)
    // -> ([T, O], the layout's name). direct: a float type's panel kernel on the f32 rows, not through
    // ops::linear (which rounds bf16 activations once per group where the ISA takes them so). prompt: q8_0 panels
    // times the activations' first level, as a model's prompts are
    const ef::KernelTable& k = table(isa);
    if (!ef::is_weight(wdtype) || x.ndim() != 2 || w.ndim() != 2)
      throw ef::ValueError("linear_packed: x [T, K] f32, w [O, row bytes] of a weight type");
    const int64_t T = x.shape(0), K = x.shape(1), O = w.shape(0);
    if (!ef::packable(wdtype, K) || (int64_t)ef::dtype_bytes(wdtype, K) != w.shape(1))
      throw ef::ValueError("linear_packed: w rows do not hold K elements of this type");
    ef::Tensor t = ef::Tensor::empty(wdtype, {O, K});
    std::memcpy(t.data, w.data(), t.nbytes());
    t.scale = scale;
    ef::Tensor p = ef::pack_panels(t);
    py::array_t<float> y({T, O});
    if (direct && !ef::is_quantized(wdtype) && p.packed)
      ef::ops::panel_kernel(k, &ef::KernelTable::matmul_panel, wdtype)(x.data(), K, p.data, 0, nullptr, y.mutable_data(),
                                                                      O, T, 0, O, K);
    else {
      ef::KernelTable kt = k;
      if (prompt && kt.q8_0_panel_one_level) kt.qmatmul_panel[(int)ef::DType::Q8_0] = kt.q8_0_panel_one_level;
      ef::ops::linear(nullptr, kt, x.data(), K, T, p, nullptr, y.mutable_data(), O);
    }
    return py::make_tuple(y, p.ternary ? "ternary" : p.row_scaled ? "row_scaled" : "blocks");
  }, py::arg("x"), py::arg("w"), py::arg("wdtype"), py::arg("scale") = 1.f, py::arg("isa") = "",
     py::arg("direct") = false, py::arg("prompt") = false);
  ops.def("quantize_q8", [](py::array_t<float, py::array::c_style | py::array::forcecast> x, int levels) {
    // activation blocks, dequantized back: what the quantized kernels multiply with (levels 2: with residual)
    if (x.ndim() != 1 || x.shape(0) % 32) throw ef::ValueError("quantize_q8: a 1-D array of a multiple of 32");
    std::vector<ef::BlockQ8> q(x.shape(0) / 32);
    ef::quantize_row_q8(x.data(), q.data(), x.shape(0));
    py::array_t<float> y(x.shape(0));
    for (size_t b = 0; b < q.size(); b++)
      for (int i = 0; i < 32; i++)
        y.mutable_data()[b * 32 + i] = (float)((double)q[b].q[i] * q[b].d + (levels > 1 ? (double)q[b].r[i] * q[b].d2 : 0.0));
    return y;
  }, py::arg("x"), py::arg("levels") = 1);

  ops.def("to_f32", [](py::array src, ef::DType dtype, const std::string& isa) {
    const ef::KernelTable& k = table(isa);
    if (!ef::is_weight(dtype)) throw ef::ValueError("to_f32: dtype must be a weight type");
    if (ef::is_quantized(dtype)) {  // src: uint8 [rows, bytes per row]
      Rows r = rows_of(src, 1, "src");
      const int64_t n = r.cols / (int64_t)ef::dtype_block_bytes(dtype) * ef::dtype_block(dtype);
      if ((int64_t)ef::dtype_bytes(dtype, n) != r.cols) throw ef::ValueError("to_f32: rows are not whole blocks");
      py::array_t<float> y({r.rows, n});
      for (int64_t i = 0; i < r.rows; i++) k.to_f32[(int)dtype](r.ptr + i * r.ld, y.mutable_data() + i * n, n);
      return y;
    }
    Rows r = rows_of(src, ef::dtype_size(dtype), "src");
    py::array_t<float> y({r.rows, r.cols});
    for (int64_t i = 0; i < r.rows; i++)
      k.to_f32[(int)dtype](r.ptr + i * r.ld * ef::dtype_size(dtype), y.mutable_data() + i * r.cols, r.cols);
    return y;
  }, py::arg("src"), py::arg("dtype"), py::arg("isa") = "");

  ops.def("rope", [](py::array_t<float, py::array::c_style | py::array::forcecast> x,
                     py::array_t<float, py::array::c_style | py::array::forcecast> cos,
                     py::array_t<float, py::array::c_style | py::array::forcecast> sin, ef::RopeStyle style) {
    // x: [T, heads, head_dim]  cos, sin: [T, half]  ->  rotated copy of x
    if (x.ndim() != 3 || cos.ndim() != 2 || sin.ndim() != 2 || cos.shape(0) != x.shape(0) ||
        sin.shape(0) != x.shape(0) || cos.shape(1) != sin.shape(1) || 2 * cos.shape(1) > x.shape(2))
      throw ef::ValueError("rope: expected x [T, heads, head_dim], cos and sin [T, half] with 2 * half <= head_dim");
    py::array_t<float> y({x.shape(0), x.shape(1), x.shape(2)});
    std::memcpy(y.mutable_data(), x.data(), x.size() * sizeof(float));
    const size_t half = cos.shape(1);
    for (py::ssize_t t = 0; t < x.shape(0); t++)
      for (py::ssize_t h = 0; h < x.shape(1); h++)
        ef::ops::rope(y.mutable_data() + (t * x.shape(1) + h) * x.shape(2), cos.data() + t * half, sin.data() + t * half,
                      half, style);
    return y;
  }, py::arg("x"), py::arg("cos"), py::arg("sin"), py::arg("style"));

  ops.def("rope_inv_freq", [](const ef::ArchSpec& spec, int64_t seq_len) {
    std::vector<float> f;
    float mscale = 1.f;
    ef::rope_inv_freq(spec, seq_len, f, mscale);
    return py::make_tuple(py::array_t<float>(f.size(), f.data()), mscale);
  }, py::arg("spec"), py::arg("seq_len"), "(inverse frequencies, attention factor) for a spec's rotary settings");

  ops.def("dot", [](py::array a, py::array b, const std::string& isa) {
    Rows ar = f32_rows(a, "a"), br = f32_rows(b, "b");
    if (ar.cols != br.cols || ar.rows != 1 || br.rows != 1) throw ef::ValueError("dot: two 1-D arrays of one length");
    return table(isa).dot((const float*)ar.ptr, (const float*)br.ptr, ar.cols);
  }, py::arg("a"), py::arg("b"), py::arg("isa") = "");

  ops.def("axpy", [](float alpha, py::array x, py::array y, const std::string& isa) {
    Rows xr = f32_rows(x, "x"), yr = f32_rows(y, "y");
    if (xr.cols != yr.cols || xr.rows != 1 || yr.rows != 1) throw ef::ValueError("axpy: two 1-D arrays of one length");
    py::array_t<float> out(yr.cols);
    std::memcpy(out.mutable_data(), yr.ptr, yr.cols * 4);
    table(isa).axpy(alpha, (const float*)xr.ptr, out.mutable_data(), xr.cols);
    return out;
  }, py::arg("alpha"), py::arg("x"), py::arg("y"), py::arg("isa") = "");

  // Row-wise ops: f(row) for every row of a 1-D or 2-D (possibly row-strided) array.
  auto rowwise = [](py::array x, const char* what, const std::function<void(const float*, float*, int64_t)>& f) {
    Rows r = f32_rows(x, what);
    py::array_t<float> y = new_like(r, x.ndim() == 2);
    for (int64_t i = 0; i < r.rows; i++) f((const float*)r.ptr + i * r.ld, y.mutable_data() + i * r.cols, r.cols);
    return y;
  };
  auto opt_vec = [](py::object o, int64_t n, const char* what) -> py::array_t<float> {
    if (o.is_none()) return py::array_t<float>();
    py::array_t<float, py::array::c_style | py::array::forcecast> a(o);
    if (a.size() != n) throw ef::ValueError(std::string(what) + ": wrong length");
    return a;
  };
  ops.def("rmsnorm", [=](py::array x, py::object w, float eps, const std::string& isa) {
    const ef::KernelTable& k = table(isa);
    py::array_t<float> wa = opt_vec(w, x.shape(x.ndim() - 1), "w");
    const float* wp = w.is_none() ? nullptr : wa.data();
    return rowwise(x, "x", [&](const float* in, float* out, int64_t n) { k.rmsnorm(in, wp, eps, out, n); });
  }, py::arg("x"), py::arg("w") = py::none(), py::arg("eps") = 1e-6f, py::arg("isa") = "");
  ops.def("layernorm", [=](py::array x, py::object w, py::object b, float eps, const std::string& isa) {
    const ef::KernelTable& k = table(isa);
    int64_t n = x.shape(x.ndim() - 1);
    py::array_t<float> wa = opt_vec(w, n, "w"), ba = opt_vec(b, n, "b");
    const float* wp = w.is_none() ? nullptr : wa.data();
    const float* bp = b.is_none() ? nullptr : ba.data();
    return rowwise(x, "x", [&](const float* in, float* out, int64_t n) { k.layernorm(in, wp, bp, eps, out, n); });
  }, py::arg("x"), py::arg("w") = py::none(), py::arg("b") = py::none(), py::arg("eps") = 1e-5f, py::arg("isa") = "");
  ops.def("softmax", [=](py::array x, const std::string& isa) {
    const ef::KernelTable& k = table(isa);
    return rowwise(x, "x", [&](const float* in, float* out, int64_t n) {
      std::memcpy(out, in, n * 4);
      k.softmax(out, n);
    });
  }, py::arg("x"), py::arg("isa") = "");
  ops.def("f32_to_f16", [=](py::array x, const std::string& isa) {
    const ef::KernelTable& k = table(isa);
    py::array_t<float, py::array::c_style | py::array::forcecast> a(x);
    py::array_t<uint16_t> out(a.size());
    k.f32_to_f16(a.data(), out.mutable_data(), (int64_t)a.size());
    return out;
  }, py::arg("x"), py::arg("isa") = "", "the bits of x (flattened) in f16, as the KV cache stores them");
  ops.def("act", [=](py::array x, ef::Act a, const std::string& isa) {
    const ef::KernelTable& k = table(isa);
    return rowwise(x, "x", [&](const float* in, float* out, int64_t n) {
      std::memcpy(out, in, n * 4);
      k.act(a, out, n);
    });
  }, py::arg("x"), py::arg("act"), py::arg("isa") = "");
  ops.def("act_mul", [](py::array g, py::array u, ef::Act a, const std::string& isa) {
    const ef::KernelTable& k = table(isa);
    Rows gr = f32_rows(g, "g"), ur = f32_rows(u, "u");
    if (gr.rows != ur.rows || gr.cols != ur.cols) throw ef::ValueError("act_mul: g and u differ in shape");
    py::array_t<float> y = new_like(gr, g.ndim() == 2);
    for (int64_t i = 0; i < gr.rows; i++) {
      float* o = y.mutable_data() + i * gr.cols;
      std::memcpy(o, (const float*)gr.ptr + i * gr.ld, gr.cols * 4);
      k.act_mul(a, o, (const float*)ur.ptr + i * ur.ld, gr.cols);
    }
    return y;
  }, py::arg("g"), py::arg("u"), py::arg("act"), py::arg("isa") = "");
}

}  // namespace ef_py
