// The calls Model (CPU) and CudaModel (device) share, bound once for both: each model type has spec(),
// mutex(), reset(), truncate(), forward(ForwardArgs), set_encoder_output() and copy_cache_from().
// Every call runs with the GIL released and the model's mutex held (one call at a time per model).
#pragma once
#include <algorithm>
#include <cmath>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "bindings.h"
#include "edgeformer/errors.h"
#include "edgeformer/model.h"
#include "edgeformer/sampler.h"

namespace ef_py {

using IdArray = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;
using U8Array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

// What generate(logprobs=k) reports for one sampled token: its log-probability under the model's distribution
// (log-softmax of the raw logits, before temperature, penalties or truncation) and the k most likely tokens
// with theirs, most likely first (ties: lower id first).
struct TokenLogprobs {
  int32_t token = -1;
  float logprob = 0.f;
  std::vector<std::pair<int32_t, float>> top;
};

inline TokenLogprobs token_logprobs(const float* raw, int64_t V, int32_t tok, int32_t k) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < V; i++) mx = std::max(mx, raw[i]);
  double sum = 0;
  for (int64_t i = 0; i < V; i++) sum += std::exp((double)raw[i] - mx);
  const double lse = mx + std::log(sum);
  TokenLogprobs r;
  r.token = tok;
  r.logprob = (float)(raw[tok] - lse);
  k = (int32_t)std::min<int64_t>(k, V);
  std::vector<int32_t> idx(V);
  for (int64_t i = 0; i < V; i++) idx[i] = (int32_t)i;
  const auto better = [&](int32_t a, int32_t b) { return raw[a] > raw[b] || (raw[a] == raw[b] && a < b); };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), better);
  for (int32_t i = 0; i < k; i++) r.top.emplace_back(idx[i], (float)(raw[idx[i]] - lse));
  return r;
}

inline py::object to_python(const TokenLogprobs& r) {
  py::list top;
  for (const auto& p : r.top) top.append(py::make_tuple(p.first, p.second));
  return py::make_tuple(r.token, r.logprob, top);
}

inline int32_t check_logprobs(int32_t k) {
  if (k > 20) throw ef::ValueError("argument 'logprobs' must be at most 20, got " + std::to_string(k));
  return k;
}

template <class M>
void forward_locked(M& m, const ef::ForwardArgs& a) {
  InterruptScope irq;
  py::gil_scoped_release nogil;
  std::lock_guard<std::mutex> lk(m.mutex());
  m.forward(a);
}

template <class M>
py::array_t<float> run_forward(M& m, IdArray ids, bool all_logits, bool want_logits, bool decode_precision = false,
                               int64_t rope_length = 0) {
  if (ids.ndim() != 1) throw ef::ValueError("input_ids: expected a 1-D array of token ids");
  const int32_t T = (int32_t)ids.shape(0);
  if (T == 0) throw ef::ValueError("input_ids: empty");
  const int64_t V = m.spec().vocab_size;
  py::array_t<float> out = want_logits ? py::array_t<float>({(int64_t)(all_logits ? T : 1), V}) : py::array_t<float>();
  ef::ForwardArgs a;
  a.tokens = ids.data();
  a.T = T;
  a.output = want_logits ? (all_logits ? ef::Output::AllLogits : ef::Output::LastLogits) : ef::Output::None;
  a.out = want_logits ? out.mutable_data() : nullptr;
  a.decode_precision = decode_precision;
  a.rope_length = rope_length;
  forward_locked(m, a);
  return out;
}

// the last hidden state [T, hidden] of one sequence (encoders: the whole input, with its padding mask)
template <class M>
py::array_t<float> hidden_states(M& m, IdArray ids, py::object token_types, py::object mask, py::object pos_rows,
                                 py::object seg_lens) {
  if (ids.ndim() != 1 || ids.shape(0) == 0) throw ef::ValueError("input_ids: expected a non-empty 1-D array");
  const int32_t T = (int32_t)ids.shape(0);
  IdArray tt;
  U8Array mk;
  ef::ForwardArgs a;
  a.tokens = ids.data();
  a.T = T;
  if (!token_types.is_none()) {
    tt = IdArray(token_types);
    if (tt.size() != T) throw ef::ValueError("token_type_ids: length differs from input_ids");
    a.token_types = tt.data();
  }
  if (!mask.is_none()) {
    mk = U8Array(mask);
    if (mk.size() != T) throw ef::ValueError("attention_mask: length differs from input_ids");
    a.key_mask = mk.data();
  }
  IdArray pr;
  if (!pos_rows.is_none()) {
    pr = IdArray(pos_rows);
    if (pr.size() != T) throw ef::ValueError("position_ids: length differs from input_ids");
    a.pos_rows = pr.data();
  }
  IdArray sl;
  if (!seg_lens.is_none()) {
    sl = IdArray(seg_lens);
    if (sl.ndim() != 1) throw ef::ValueError("seg_lens: expected a 1-D array of sequence lengths");
    a.seg_lens = sl.data();
    a.n_segs = (int32_t)sl.size();
  }
  py::array_t<float> out({(int64_t)T, (int64_t)m.spec().hidden_size});
  a.output = ef::Output::Hidden;
  a.out = out.mutable_data();
  forward_locked(m, a);
  return out;
}

template <class M>
void set_encoder_output(M& m, F32Array enc, py::object mask) {
  if (enc.ndim() != 2 || enc.shape(1) != m.spec().hidden_size) throw ef::ValueError("encoder output: expected [T, hidden]");
  const int32_t T = (int32_t)enc.shape(0);
  U8Array mk;
  const uint8_t* mp = nullptr;
  if (!mask.is_none()) {
    mk = U8Array(mask);
    if (mk.size() != T) throw ef::ValueError("attention_mask: length differs from the encoder output");
    mp = mk.data();
  }
  const float* ep = enc.data();
  py::gil_scoped_release nogil;
  std::lock_guard<std::mutex> lk(m.mutex());
  m.set_encoder_output(ep, T, mp);
}

// _core.decode_batch for forks of one Model or of one CudaModel: argument checks, the models' locks, logprobs.
// run(models, tokens, samplers, history pointers, history lengths, logits, next) is the step itself: logits
// [B, vocab] (host) must hold the raw rows when there are no samplers, and at least the rows whose logprobs are
// asked for; with samplers, next[i] gets sequence i's token.
template <class M, class Run>
py::object decode_batch_call(const std::vector<M*>& models, IdArray tokens, py::object samplers, py::object histories,
                             std::vector<int32_t> logprobs, Run run) {
  const size_t B = models.size();
  if (B == 0) throw ef::ValueError("decode_batch: no models");
  if (tokens.ndim() != 1 || (size_t)tokens.shape(0) != B) throw ef::ValueError("decode_batch: expected one token per model");
  for (M* p : models)
    if (!p) throw ef::ValueError("decode_batch: a model is None");
  std::vector<ef::Sampler*> ss;
  std::vector<IdArray> hs;
  if (!samplers.is_none()) {
    ss = samplers.cast<std::vector<ef::Sampler*>>();
    hs = histories.cast<std::vector<IdArray>>();
    if (ss.size() != B || hs.size() != B) throw ef::ValueError("decode_batch: expected one sampler and history per model");
    for (size_t i = 0; i < B; i++) {
      if (!ss[i]) throw ef::ValueError("decode_batch: a sampler is None");
      for (size_t j = 0; j < i; j++)  // (its random stream and counts are one sequence's)
        if (ss[j] == ss[i])
          throw ef::ValueError("decode_batch: sequences " + std::to_string(j) + " and " + std::to_string(i) +
                               " share a sampler");
    }
  }
  if (!logprobs.empty() && (ss.empty() || logprobs.size() != B))
    throw ef::ValueError("decode_batch: logprobs needs samplers, and one count (-1: none) per model");
  bool any = false;
  for (int32_t k : logprobs) any |= check_logprobs(k) >= 0;
  std::vector<const int32_t*> hp(hs.size());
  std::vector<int64_t> hn(hs.size());
  for (size_t i = 0; i < hs.size(); i++) hp[i] = hs[i].data(), hn[i] = hs[i].size();
  const int64_t V = models[0]->spec().vocab_size;
  py::array_t<float> logits({(int64_t)B, V});
  float* lp = logits.mutable_data();
  std::vector<int32_t> next(B);
  std::vector<TokenLogprobs> lps(any ? B : 0);
  {
    InterruptScope irq;
    py::gil_scoped_release nogil;
    {
      std::vector<M*> order(models);  // every model's lock, in one global order (no deadlock)
      std::sort(order.begin(), order.end());
      order.erase(std::unique(order.begin(), order.end()), order.end());
      std::vector<std::unique_lock<std::mutex>> locks;
      for (M* p : order) locks.emplace_back(p->mutex());
      run(models, tokens.data(), ss, hp.data(), hn.data(), lp, next.data());
    }
    for (size_t i = 0; i < lps.size(); i++)  // the models are free again meanwhile
      if (logprobs[i] >= 0 && next[i] >= 0) lps[i] = token_logprobs(lp + (int64_t)i * V, V, next[i], logprobs[i]);
  }
  if (samplers.is_none()) return std::move(logits);
  if (!any) return py::cast(next);
  py::list out;
  for (size_t i = 0; i < B; i++) out.append(logprobs[i] >= 0 ? to_python(lps[i]) : py::cast(next[i]));
  return std::move(out);
}

constexpr const char* kDecodeBatchDoc =
    "One decode step for each model (distinct forks of one model): tokens[i] goes to models[i]. Returns the "
    "logits [B, vocab], or with samplers (and the histories their repetition penalty reads) the next tokens; "
    "logprobs: a count per model (-1: none), and for those with one a (token, log-probability, top) tuple in "
    "place of the token, as Model.step gives it.";

// reset, truncate, forward, prefill, hidden_states, set_encoder_output, copy_cache_from on class c
template <class M>
void def_model_calls(py::class_<M>& c) {
  c.def("reset", [](M& m) {
     std::lock_guard<std::mutex> lk(m.mutex());
     m.reset();
   })
      .def("truncate", [](M& m, int32_t n) {
        std::lock_guard<std::mutex> lk(m.mutex());
        m.truncate(n);
      })
      .def("forward", [](M& m, IdArray ids, bool all_logits, bool decode_precision, int64_t rope_length) {
        return run_forward(m, ids, all_logits, true, decode_precision, rope_length);
      }, py::arg("input_ids"), py::arg("all_logits") = true, py::arg("decode_precision") = false,
           py::arg("rope_length") = 0,
           "Appends input_ids to the KV cache; returns logits [T, vocab] (all_logits) or [1, vocab]. "
           "decode_precision: the products of decode steps for every row (q8_0 weights: two activation levels). "
           "rope_length: as prefill's.")
      .def("prefill", [](M& m, IdArray ids, int64_t rope_length) { run_forward(m, ids, false, false, false, rope_length); },
           py::arg("input_ids"), py::arg("rope_length") = 0,
           "Appends input_ids to the KV cache without computing logits. rope_length: the length of the whole prompt "
           "this is a piece of (length-dependent rotary scaling computes its frequencies for it; 0: this call's).")
      .def("hidden_states", &hidden_states<M>, py::arg("input_ids"), py::arg("token_type_ids") = py::none(),
           py::arg("attention_mask") = py::none(), py::arg("position_ids") = py::none(), py::arg("seg_lens") = py::none(),
           "position_ids: learned positions' table rows (RoBERTa's count past padding); default position + offset. "
           "seg_lens (encoders): input_ids holds sequences of these lengths one after another, each attending "
           "within itself with positions from 0 (a batch in one pass)")
      .def("set_encoder_output", &set_encoder_output<M>, py::arg("encoder_output"),
           py::arg("attention_mask") = py::none())
      .def("copy_cache_from", [](M& m, M& other, int32_t n) {
        if (&m == &other) {
          m.truncate(n);
          return;
        }
        py::gil_scoped_release nogil;
        std::scoped_lock lk(m.mutex(), other.mutex());
        m.copy_cache_from(other, n);
      }, py::arg("other"), py::arg("n"));
}

}  // namespace ef_py
