// Token sampling: repetition penalty, temperature, top-k, top-p, min-p, in the order transformers applies
// them, with a seeded, platform-independent RNG (same seed, same tokens).
#pragma once
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "edgeformer/grammar.h"

namespace ef {

struct SamplerOptions {
  float temperature = 1.f;  // 0 = greedy
  int32_t top_k = 0;        // 0 = off
  float top_p = 1.f;        // 1 = off
  float min_p = 0.f;        // 0 = off
  float repetition_penalty = 1.f;
  // OpenAI's: each token's logit less frequency_penalty * (times this sampler has returned it) and
  // presence_penalty once it has returned it at all (the generated tokens only, not the prompt); -2 .. 2
  float presence_penalty = 0.f, frequency_penalty = 0.f;
  // OpenAI's logit_bias: (token, amount added to its logit; -100 .. 100, -100 bans it in practice), distinct
  // tokens, applied with the presence / frequency penalties (after the repetition penalty)
  std::vector<std::pair<int32_t, float>> logit_bias;
  uint64_t seed = 0;
  // only tokens that keep the text within this grammar (after the penalties, before temperature and truncation)
  std::shared_ptr<Grammar> grammar;
  void validate() const;  // throws ValueError naming the argument
};

class Sampler {
 public:
  explicit Sampler(const SamplerOptions& opts);
  // logits are modified in place. history: the tokens the repetition penalty applies to. -1: the grammar
  // allows no token (the text cannot go on within it)
  int32_t sample(float* logits, int64_t vocab, const int32_t* history, int64_t n_history);
  // with a grammar: nothing but an end token can follow the tokens sampled so far
  bool grammar_finished() const { return grammar_ && grammar_->finished(); }
  bool has_grammar() const { return grammar_ != nullptr; }
  bool counts_tokens() const { return o_.presence_penalty != 0.f || o_.frequency_penalty != 0.f; }
  double next_uniform();  // [0, 1)
  // The additive adjustments due now: (token, amount its logit loses), one per distinct token: the OpenAI
  // penalties of the tokens returned so far, less logit_bias. record(tok): a token picked elsewhere (on a device,
  // after these adjustments) counts as returned, as sample() counts its own.
  std::vector<std::pair<int32_t, float>> penalties() const;
  void record(int32_t tok);
  const SamplerOptions& options() const { return o_; }

 private:
  SamplerOptions o_;
  uint64_t state_[4];
  int32_t pick(float* logits, int64_t vocab);  // temperature, top-k/p, min-p and the draw
  std::vector<int32_t> idx_;
  std::vector<float> probs_;
  std::vector<std::pair<int32_t, int32_t>> counts_;  // (token, times returned), for the OpenAI penalties
  std::unique_ptr<GrammarState> grammar_;
};

}  // namespace ef
