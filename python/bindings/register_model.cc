#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "bindings.h"
#include "model_calls.h"
#include "edgeformer/arch.h"
#include "edgeformer/errors.h"
#include "edgeformer/grammar.h"
#include "edgeformer/model.h"
#include "edgeformer/sampler.h"

namespace ef_py {

void register_model(py::module_& m) {
  py::enum_<ef::NormKind>(m, "NormKind").value("rms", ef::NormKind::RMS).value("layer", ef::NormKind::Layer);
  py::enum_<ef::PosKind>(m, "PosKind")
      .value("none", ef::PosKind::None)
      .value("rotary", ef::PosKind::Rotary)
      .value("learned", ef::PosKind::Learned)
      .value("alibi", ef::PosKind::ALiBi)
      .value("relative", ef::PosKind::Relative);
  py::enum_<ef::RopeStyle>(m, "RopeStyle").value("half", ef::RopeStyle::Half).value("interleaved", ef::RopeStyle::Interleaved);
  py::enum_<ef::RopeScaling>(m, "RopeScaling")
      .value("none", ef::RopeScaling::None)
      .value("linear", ef::RopeScaling::Linear)
      .value("dynamic", ef::RopeScaling::Dynamic)
      .value("llama3", ef::RopeScaling::Llama3)
      .value("yarn", ef::RopeScaling::Yarn)
      .value("longrope", ef::RopeScaling::LongRope);
  py::enum_<ef::ModelKind>(m, "ModelKind")
      .value("decoder", ef::ModelKind::Decoder)
      .value("encoder", ef::ModelKind::Encoder)
      .value("encoder_decoder", ef::ModelKind::EncoderDecoder);

  py::enum_<ef::NormPosition>(m, "NormPosition").value("pre", ef::NormPosition::Pre).value("post", ef::NormPosition::Post);

  py::class_<ef::RopeSpec>(m, "RopeSpec")
      .def(py::init<>())
      .def_readwrite("theta", &ef::RopeSpec::theta)
      .def_readwrite("rotary_dim", &ef::RopeSpec::rotary_dim)
      .def_readwrite("style", &ef::RopeSpec::style)
      .def_readwrite("scaling", &ef::RopeSpec::scaling)
      .def_readwrite("factor", &ef::RopeSpec::factor)
      .def_readwrite("original_max_position", &ef::RopeSpec::original_max_position)
      .def_readwrite("low_freq_factor", &ef::RopeSpec::low_freq_factor)
      .def_readwrite("high_freq_factor", &ef::RopeSpec::high_freq_factor)
      .def_readwrite("beta_fast", &ef::RopeSpec::beta_fast)
      .def_readwrite("beta_slow", &ef::RopeSpec::beta_slow)
      .def_readwrite("attention_factor", &ef::RopeSpec::attention_factor)
      .def_readwrite("mscale", &ef::RopeSpec::mscale)
      .def_readwrite("mscale_all_dim", &ef::RopeSpec::mscale_all_dim)
      .def_readwrite("truncate", &ef::RopeSpec::truncate)
      .def_readwrite("short_factor", &ef::RopeSpec::short_factor)
      .def_readwrite("long_factor", &ef::RopeSpec::long_factor)
      .def_readwrite("freq_factors", &ef::RopeSpec::freq_factors);

  py::class_<ef::ArchSpec>(m, "ArchSpec")
      .def(py::init<>())
      .def_readwrite("model_type", &ef::ArchSpec::model_type)
      .def_readwrite("kind", &ef::ArchSpec::kind)
      .def_readwrite("vocab_size", &ef::ArchSpec::vocab_size)
      .def_readwrite("hidden_size", &ef::ArchSpec::hidden_size)
      .def_readwrite("n_layers", &ef::ArchSpec::n_layers)
      .def_readwrite("n_heads", &ef::ArchSpec::n_heads)
      .def_readwrite("n_kv_heads", &ef::ArchSpec::n_kv_heads)
      .def_readwrite("head_dim", &ef::ArchSpec::head_dim)
      .def_readwrite("ffn_size", &ef::ArchSpec::ffn_size)
      .def_readwrite("max_position", &ef::ArchSpec::max_position)
      .def_readwrite("norm", &ef::ArchSpec::norm)
      .def_readwrite("norm_eps", &ef::ArchSpec::norm_eps)
      .def_readwrite("act", &ef::ArchSpec::act)
      .def_readwrite("gated_mlp", &ef::ArchSpec::gated_mlp)
      .def_readwrite("pos", &ef::ArchSpec::pos)
      .def_readwrite("rope", &ef::ArchSpec::rope)
      .def_readwrite("parallel_residual", &ef::ArchSpec::parallel_residual)
      .def_readwrite("attn_bias", &ef::ArchSpec::attn_bias)
      .def_readwrite("attn_out_bias", &ef::ArchSpec::attn_out_bias)
      .def_readwrite("mlp_bias", &ef::ArchSpec::mlp_bias)
      .def_readwrite("tie_embeddings", &ef::ArchSpec::tie_embeddings)
      .def_readwrite("sliding_window", &ef::ArchSpec::sliding_window)
      .def_readwrite("layer_windows", &ef::ArchSpec::layer_windows)
      .def_readwrite("attn_scale", &ef::ArchSpec::attn_scale)
      .def_readwrite("q_temp_beta", &ef::ArchSpec::q_temp_beta)
      .def_readwrite("q_temp_length", &ef::ArchSpec::q_temp_length)
      .def_readwrite("q_temp_offset", &ef::ArchSpec::q_temp_offset)
      .def_readwrite("q_temp_nope_only", &ef::ArchSpec::q_temp_nope_only)
      .def_readwrite("residual_scale", &ef::ArchSpec::residual_scale)
      .def_readwrite("norm_position", &ef::ArchSpec::norm_position)
      .def_readwrite("final_norm", &ef::ArchSpec::final_norm)
      .def_readwrite("emb_norm", &ef::ArchSpec::emb_norm)
      .def_readwrite("qk_norm", &ef::ArchSpec::qk_norm)
      .def_readwrite("qk_norm_full", &ef::ArchSpec::qk_norm_full)
      .def_readwrite("norm_weights", &ef::ArchSpec::norm_weights)
      .def_readwrite("clip_qkv", &ef::ArchSpec::clip_qkv)
      .def_readwrite("qk_norm_per_head", &ef::ArchSpec::qk_norm_per_head)
      .def_readwrite("v_head_dim", &ef::ArchSpec::v_head_dim)
      .def_readwrite("mla_kv_lora", &ef::ArchSpec::mla_kv_lora)
      .def_readwrite("mla_q_lora", &ef::ArchSpec::mla_q_lora)
      .def_readwrite("mla_nope", &ef::ArchSpec::mla_nope)
      .def_readwrite("mla_v", &ef::ArchSpec::mla_v)
      .def_readwrite("moe_sigmoid", &ef::ArchSpec::moe_sigmoid)
      .def_readwrite("moe_select_bias", &ef::ArchSpec::moe_select_bias)
      .def_readwrite("moe_groups", &ef::ArchSpec::moe_groups)
      .def_readwrite("moe_groups_used", &ef::ArchSpec::moe_groups_used)
      .def_readwrite("moe_group_top", &ef::ArchSpec::moe_group_top)
      .def_readwrite("moe_routed_scale", &ef::ArchSpec::moe_routed_scale)
      .def_readwrite("qk_norm_after_rope", &ef::ArchSpec::qk_norm_after_rope)
      .def_readwrite("pre_norms", &ef::ArchSpec::pre_norms)
      .def_readwrite("emb_scale", &ef::ArchSpec::emb_scale)
      .def_readwrite("attn_softcap", &ef::ArchSpec::attn_softcap)
      .def_readwrite("logit_softcap", &ef::ArchSpec::logit_softcap)
      .def_readwrite("post_norms", &ef::ArchSpec::post_norms)
      .def_readwrite("rope_local", &ef::ArchSpec::rope_local)
      .def_readwrite("layer_rope", &ef::ArchSpec::layer_rope)
      .def_readwrite("layer_nope", &ef::ArchSpec::layer_nope)
      .def_readwrite("n_experts", &ef::ArchSpec::n_experts)
      .def_readwrite("n_experts_used", &ef::ArchSpec::n_experts_used)
      .def_readwrite("moe_ffn_size", &ef::ArchSpec::moe_ffn_size)
      .def_readwrite("shared_ffn_size", &ef::ArchSpec::shared_ffn_size)
      .def_readwrite("moe_norm_topk", &ef::ArchSpec::moe_norm_topk)
      .def_readwrite("shared_expert_gate", &ef::ArchSpec::shared_expert_gate)
      .def_readwrite("layer_moe", &ef::ArchSpec::layer_moe)
      .def_readwrite("expert_bias", &ef::ArchSpec::expert_bias)
      .def_readwrite("swiglu_limit", &ef::ArchSpec::swiglu_limit)
      .def_readwrite("swiglu_alpha", &ef::ArchSpec::swiglu_alpha)
      .def_readwrite("attn_sinks", &ef::ArchSpec::attn_sinks)
      .def_readwrite("attn_out_gate", &ef::ArchSpec::attn_out_gate)
      .def_readwrite("layer_linear", &ef::ArchSpec::layer_linear)
      .def_readwrite("layer_mlp", &ef::ArchSpec::layer_mlp)
      .def_readwrite("layer_head_dim", &ef::ArchSpec::layer_head_dim)
      .def_readwrite("layer_kv_heads", &ef::ArchSpec::layer_kv_heads)
      .def_readwrite("layer_ffn", &ef::ArchSpec::layer_ffn)
      .def_readwrite("layer_kv_source", &ef::ArchSpec::layer_kv_source)
      .def_readwrite("v_norm", &ef::ArchSpec::v_norm)
      .def_readwrite("sub_norms", &ef::ArchSpec::sub_norms)
      .def_readwrite("layer_scale", &ef::ArchSpec::layer_scale)
      .def_readwrite("ple_dim", &ef::ArchSpec::ple_dim)
      .def_readwrite("ple_vocab", &ef::ArchSpec::ple_vocab)
      .def_readwrite("moe_beside_mlp", &ef::ArchSpec::moe_beside_mlp)
      .def_readwrite("altup", &ef::ArchSpec::altup)
      .def_readwrite("laurel_rank", &ef::ArchSpec::laurel_rank)
      .def_readwrite("altup_correct_scale", &ef::ArchSpec::altup_correct_scale)
      .def_readwrite("layer_gate_sigma", &ef::ArchSpec::layer_gate_sigma)
      .def_readwrite("moe_router_norm", &ef::ArchSpec::moe_router_norm)
      .def_readwrite("moe_expert_scale", &ef::ArchSpec::moe_expert_scale)
      .def_readwrite("lin_k_heads", &ef::ArchSpec::lin_k_heads)
      .def_readwrite("lin_v_heads", &ef::ArchSpec::lin_v_heads)
      .def_readwrite("lin_k_dim", &ef::ArchSpec::lin_k_dim)
      .def_readwrite("lin_v_dim", &ef::ArchSpec::lin_v_dim)
      .def_readwrite("lin_conv", &ef::ArchSpec::lin_conv)
      .def_readwrite("lin_v_tiled", &ef::ArchSpec::lin_v_tiled)
      .def_readwrite("ssm_heads", &ef::ArchSpec::ssm_heads)
      .def_readwrite("ssm_head_dim", &ef::ArchSpec::ssm_head_dim)
      .def_readwrite("ssm_state", &ef::ArchSpec::ssm_state)
      .def_readwrite("ssm_groups", &ef::ArchSpec::ssm_groups)
      .def_readwrite("ssm_dt_min", &ef::ArchSpec::ssm_dt_min)
      .def_readwrite("ssm_dt_max", &ef::ArchSpec::ssm_dt_max)
      .def_readwrite("ssm_conv_bias", &ef::ArchSpec::ssm_conv_bias)
      .def_readwrite("ssm_parallel", &ef::ArchSpec::ssm_parallel)
      .def_readwrite("ssm_norm", &ef::ArchSpec::ssm_norm)
      .def_readwrite("ssm_dt_rank", &ef::ArchSpec::ssm_dt_rank)
      .def_readwrite("ssm_bcdt_eps", &ef::ArchSpec::ssm_bcdt_eps)
      .def_readwrite("ssm_bcdt_weights", &ef::ArchSpec::ssm_bcdt_weights)
      .def("recurrent", &ef::ArchSpec::recurrent)
      .def_readwrite("pos_offset", &ef::ArchSpec::pos_offset)
      .def_readwrite("n_token_types", &ef::ArchSpec::n_token_types)
      .def_readwrite("parallel_mlp_norm", &ef::ArchSpec::parallel_mlp_norm)
      .def_readwrite("lm_head_bias", &ef::ArchSpec::lm_head_bias)
      .def_readwrite("proj_dim", &ef::ArchSpec::proj_dim)
      .def_readwrite("logits_scale", &ef::ArchSpec::logits_scale)
      .def_readwrite("alibi_slopes", &ef::ArchSpec::alibi_slopes)
      .def_readwrite("alibi_bf16", &ef::ArchSpec::alibi_bf16)
      .def_readwrite("alibi_scaled", &ef::ArchSpec::alibi_scaled)
      .def_readwrite("rel_buckets", &ef::ArchSpec::rel_buckets)
      .def_readwrite("rel_max_distance", &ef::ArchSpec::rel_max_distance)
      .def_readwrite("rel_bias", &ef::ArchSpec::rel_bias)
      .def_readwrite("first_attn_norm", &ef::ArchSpec::first_attn_norm)
      .def_readwrite("no_head", &ef::ArchSpec::no_head)
      .def_readwrite("cross_attention", &ef::ArchSpec::cross_attention)
      .def("validate", &ef::ArchSpec::validate);

  py::class_<ef::ModelOptions>(m, "ModelOptions")
      .def(py::init<>())
      .def_readwrite("threads", &ef::ModelOptions::threads)
      .def_readwrite("max_context", &ef::ModelOptions::max_context)
      .def_readwrite("dtype", &ef::ModelOptions::dtype)
      .def_readwrite("progress", &ef::ModelOptions::progress)
      .def_readwrite("exact_q8_prompts", &ef::ModelOptions::exact_q8_prompts)
      .def_readwrite("kv_dtype", &ef::ModelOptions::kv_dtype);

  py::class_<ef::GrammarRules, std::shared_ptr<ef::GrammarRules>>(m, "GrammarRules",
      "A GBNF grammar, parsed and checked (ValueError names the line and column)")
      .def(py::init([](const std::string& text, const std::string& root) {
             py::gil_scoped_release nogil;
             return std::make_shared<ef::GrammarRules>(text, root);
           }),
           py::arg("text"), py::arg("root") = "root")
      .def_property_readonly("n_rules", [](const ef::GrammarRules& g) { return g.alts.size(); });
  py::class_<ef::GrammarVocab, std::shared_ptr<ef::GrammarVocab>>(m, "GrammarVocab",
      "A tokenizer's token bytes for grammars: (bytes per token id, end token ids, whether the decoder drops the "
      "text's first space)")
      .def(py::init([](const std::vector<py::bytes>& tokens, std::vector<int32_t> eos, bool strip_first_space) {
             std::vector<std::string> b;
             b.reserve(tokens.size());
             for (const py::bytes& t : tokens) b.emplace_back(t);
             py::gil_scoped_release nogil;
             return std::make_shared<ef::GrammarVocab>(std::move(b), std::move(eos), strip_first_space);
           }),
           py::arg("token_bytes"), py::arg("eos"), py::arg("strip_first_space"))
      .def_property_readonly("size", &ef::GrammarVocab::size);
  py::class_<ef::Grammar, std::shared_ptr<ef::Grammar>>(m, "Grammar", "A grammar bound to a vocabulary")
      .def(py::init<std::shared_ptr<const ef::GrammarRules>, std::shared_ptr<const ef::GrammarVocab>>(),
           py::arg("rules"), py::arg("vocab"))
      .def_property_readonly("cached_states", &ef::Grammar::cached_states)
      .def("allowed", [](ef::Grammar& g, std::vector<int32_t> tokens) -> py::object {
        std::vector<float> l;
        bool ok = true;
        {
          py::gil_scoped_release nogil;
          ef::GrammarPos p = g.start();
          for (int32_t t : tokens) ok = ok && g.advance(p, t);
          if (ok) {
            l.assign((size_t)g.vocab_size(), 0.f);
            g.apply(p, l.data(), (int64_t)l.size());
          }
        }
        if (!ok) return py::none();
        py::array_t<bool> out((py::ssize_t)l.size());
        bool* o = out.mutable_data();
        for (size_t i = 0; i < l.size(); i++) o[i] = l[i] == 0.f;
        return std::move(out);
      }, py::arg("tokens"), "which tokens may follow `tokens` (a bool per token id), or None if the grammar refuses them");

  py::class_<ef::SamplerOptions>(m, "SamplerOptions")
      .def(py::init<>())
      .def_readwrite("temperature", &ef::SamplerOptions::temperature)
      .def_readwrite("top_k", &ef::SamplerOptions::top_k)
      .def_readwrite("top_p", &ef::SamplerOptions::top_p)
      .def_readwrite("min_p", &ef::SamplerOptions::min_p)
      .def_readwrite("repetition_penalty", &ef::SamplerOptions::repetition_penalty)
      .def_readwrite("presence_penalty", &ef::SamplerOptions::presence_penalty)
      .def_readwrite("frequency_penalty", &ef::SamplerOptions::frequency_penalty)
      .def_readwrite("logit_bias", &ef::SamplerOptions::logit_bias)
      .def_readwrite("seed", &ef::SamplerOptions::seed)
      .def_readwrite("grammar", &ef::SamplerOptions::grammar)
      .def("validate", &ef::SamplerOptions::validate);

  py::class_<ef::Sampler>(m, "Sampler")
      .def(py::init<const ef::SamplerOptions&>(), py::arg("options"))
      .def("sample", [](ef::Sampler& s, py::array_t<float, py::array::c_style | py::array::forcecast> logits,
                        py::array_t<int32_t, py::array::c_style | py::array::forcecast> history) {
        py::array_t<float> l(logits.size());
        std::memcpy(l.mutable_data(), logits.data(), logits.size() * sizeof(float));
        return s.sample(l.mutable_data(), l.size(), history.data(), history.size());
      }, py::arg("logits"), py::arg("history"))
      .def_property_readonly("grammar_finished", &ef::Sampler::grammar_finished,
                             "with a grammar: nothing but an end token can follow the tokens sampled so far");

  py::class_<ef::Model> model(m, "Model");
  def_model_calls(model);
  model
      .def(py::init([](const ef::ArchSpec& spec, ef::TensorMap& ckpt, const std::map<std::string, std::string>& names,
                       const ef::ModelOptions& opts, bool consume) {
             return std::make_unique<ef::Model>(spec, ckpt, names, opts, consume ? &ckpt : nullptr);
           }),
           py::arg("spec"), py::arg("checkpoint"), py::arg("names"), py::arg("options"), py::arg("consume") = false,
           py::call_guard<py::gil_scoped_release>(),
           "consume=True erases the checkpoint's consumable entries (weights derived at load) once the model has "
           "its own copy of each")
      .def_property_readonly("spec", &ef::Model::spec)
      .def_property_readonly("max_context", &ef::Model::max_context)
      .def_property_readonly("n_past", &ef::Model::n_past)
      .def_property_readonly("threads", &ef::Model::threads)
      .def_property_readonly("weight_bytes", &ef::Model::weight_bytes)
      .def_property_readonly("kv_dtype", &ef::Model::kv_dtype, "the self-attention KV cache's element type")
      .def("weights", &ef::Model::weights, "[(canonical name, Tensor)] of what the model computes with")
      .def("step", [](ef::Model& m, IdArray ids, ef::Sampler& s, IdArray history, int32_t logprobs) -> py::object {
        // forward + sample in C++ with the GIL released: returns the next token id, or with logprobs >= 0
        // (token, its log-probability, [(id, log-probability)] of the `logprobs` most likely)
        if (ids.ndim() != 1 || ids.shape(0) == 0) throw ef::ValueError("input_ids: expected a non-empty 1-D array");
        const int64_t V = m.spec().vocab_size;
        std::vector<float> logits(V), raw;
        const int32_t* p = ids.data();
        const int32_t T = (int32_t)ids.shape(0);
        const int32_t* hp = history.data();
        const int64_t hn = history.size();
        const int32_t k = check_logprobs(logprobs);
        int32_t tok = -1;
        TokenLogprobs lp;
        {
          InterruptScope irq;
          py::gil_scoped_release nogil;
          std::lock_guard<std::mutex> lk(m.mutex());
          m.forward(p, T, false, logits.data());
          if (k >= 0) raw = logits;  // the sampler changes logits in place
          tok = s.sample(logits.data(), V, hp, hn);
          if (k >= 0 && tok >= 0) lp = token_logprobs(raw.data(), V, tok, k);
        }
        return k >= 0 ? to_python(lp) : py::cast(tok);
      }, py::arg("input_ids"), py::arg("sampler"), py::arg("history"), py::arg("logprobs") = -1)
      .def("fork", [](const ef::Model& m) {
        py::gil_scoped_release nogil;
        std::lock_guard<std::mutex> lk(const_cast<ef::Model&>(m).mutex());  // not while a call changes it
        return m.fork();
      },
           "Another model over the same weights (shared) with its own empty KV cache: one per sequence of a "
           "batch (decode_batch) or per beam.");

  // one decode step for several forks of one model: logits [B, vocab], or with samplers the next token of each
  m.def("decode_batch", [](const std::vector<ef::Model*>& models, IdArray tokens, py::object samplers,
                           py::object histories, std::vector<int32_t> logprobs) {
    return decode_batch_call(models, tokens, samplers, histories, logprobs,
                             [&](const std::vector<ef::Model*>& ms, const int32_t* toks, const std::vector<ef::Sampler*>& ss,
                                 const int32_t* const* hp, const int64_t* hn, float* lp, int32_t* next) {
      ef::Model::decode_batch(ms, toks, lp);
      const int64_t V = ms[0]->spec().vocab_size;
      std::vector<float> row;
      for (size_t i = 0; i < ss.size(); i++) {  // rows whose logprobs are asked keep their raw values
        float* r = lp + (int64_t)i * V;
        const bool keep = !logprobs.empty() && logprobs[i] >= 0;
        if (keep) row.assign(r, r + V);
        next[i] = ss[i]->sample(keep ? row.data() : r, V, hp[i], hn[i]);
      }
    });
  }, py::arg("models"), py::arg("tokens"), py::arg("samplers") = py::none(), py::arg("histories") = py::none(),
     py::arg("logprobs") = std::vector<int32_t>(), kDecodeBatchDoc);
}

}  // namespace ef_py
