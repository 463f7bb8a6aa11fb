#include "edgeformer/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "edgeformer/errors.h"

namespace ef {

void SamplerOptions::validate() const {
  EF_CHECK(std::isfinite(temperature) && temperature >= 0,
           "argument 'temperature' must be a finite number >= 0, got " + std::to_string(temperature));
  EF_CHECK(top_k >= 0, "argument 'top_k' must be >= 0 (0 disables it), got " + std::to_string(top_k));
  EF_CHECK(std::isfinite(top_p) && top_p > 0 && top_p <= 1, "argument 'top_p' must be in (0, 1], got " + std::to_string(top_p));
  EF_CHECK(std::isfinite(min_p) && min_p >= 0 && min_p <= 1, "argument 'min_p' must be in [0, 1], got " + std::to_string(min_p));
  EF_CHECK(std::isfinite(repetition_penalty) && repetition_penalty > 0,
           "argument 'repetition_penalty' must be a finite number > 0, got " + std::to_string(repetition_penalty));
  EF_CHECK(std::isfinite(presence_penalty) && presence_penalty >= -2 && presence_penalty <= 2,
           "argument 'presence_penalty' must be in [-2, 2], got " + std::to_string(presence_penalty));
  EF_CHECK(std::isfinite(frequency_penalty) && frequency_penalty >= -2 && frequency_penalty <= 2,
           "argument 'frequency_penalty' must be in [-2, 2], got " + std::to_string(frequency_penalty));
  std::vector<int32_t> ids;
  for (const auto& b : logit_bias) {
    EF_CHECK(b.first >= 0, "argument 'logit_bias': token id " + std::to_string(b.first) + " is negative");
    EF_CHECK(std::isfinite(b.second) && b.second >= -100 && b.second <= 100,
             "argument 'logit_bias': the bias of token " + std::to_string(b.first) + " must be in [-100, 100], got " +
                 std::to_string(b.second));
    ids.push_back(b.first);
  }
  std::sort(ids.begin(), ids.end());
  EF_CHECK(std::adjacent_find(ids.begin(), ids.end()) == ids.end(), "argument 'logit_bias': a token id twice");
}

namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

Sampler::Sampler(const SamplerOptions& opts) : o_(opts) {
  o_.validate();
  uint64_t s = opts.seed;
  for (auto& v : state_) v = splitmix64(s);
  if (o_.grammar) grammar_ = std::make_unique<GrammarState>(o_.grammar);
}

double Sampler::next_uniform() {  // xoshiro256**, 53 random bits
  uint64_t r = rotl(state_[1] * 5, 7) * 9;
  uint64_t t = state_[1] << 17;
  state_[2] ^= state_[0];
  state_[3] ^= state_[1];
  state_[1] ^= state_[2];
  state_[0] ^= state_[3];
  state_[2] ^= t;
  state_[3] = rotl(state_[3], 45);
  return (double)(r >> 11) * (1.0 / 9007199254740992.0);
}

int32_t Sampler::sample(float* logits, int64_t vocab, const int32_t* history, int64_t n_history) {
  EF_CHECK(vocab > 0, "sample: empty logits");
  if (o_.repetition_penalty != 1.f) {
    // each distinct token once, as transformers' gather/scatter does
    std::vector<int32_t> seen(history, history + n_history);
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    for (int32_t t : seen) {
      if (t < 0 || t >= vocab) continue;
      float& l = logits[t];
      l = l > 0 ? l / o_.repetition_penalty : l * o_.repetition_penalty;
    }
  }
  for (const auto& c : penalties())
    if (c.first < vocab) logits[c.first] -= c.second;
  if (grammar_ && o_.temperature == 0.f) {
    // greedy: the most likely token, when the grammar allows it, is the masked logits' argmax too (ties go to
    // the lower id either way), found without the state's mask; only a refused one needs it
    const int32_t best = pick(logits, vocab);
    if (grammar_->try_accept(best)) {
      record(best);
      return best;
    }
  }
  if (grammar_ && !grammar_->mask(logits, vocab)) return -1;
  const int32_t tok = pick(logits, vocab);
  record(tok);
  if (grammar_) grammar_->accept(tok);
  return tok;
}

std::vector<std::pair<int32_t, float>> Sampler::penalties() const {
  std::vector<std::pair<int32_t, float>> out;
  out.reserve(counts_.size() + o_.logit_bias.size());
  for (const auto& c : counts_) out.emplace_back(c.first, o_.frequency_penalty * (float)c.second + o_.presence_penalty);
  for (const auto& b : o_.logit_bias) {
    auto it = std::find_if(out.begin(), out.begin() + (ptrdiff_t)counts_.size(),
                           [&](const std::pair<int32_t, float>& c) { return c.first == b.first; });
    if (it != out.begin() + (ptrdiff_t)counts_.size()) it->second -= b.second;
    else out.emplace_back(b.first, -b.second);
  }
  return out;
}

void Sampler::record(int32_t tok) {
  if (!counts_tokens()) return;
  auto it = std::find_if(counts_.begin(), counts_.end(), [&](const std::pair<int32_t, int32_t>& c) { return c.first == tok; });
  if (it != counts_.end()) it->second++;
  else counts_.emplace_back(tok, 1);
}

int32_t Sampler::pick(float* logits, int64_t vocab) {
  if (o_.temperature == 0.f) {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; i++)
      if (logits[i] > logits[best]) best = i;
    return (int32_t)best;
  }
  const float inv_t = 1.f / o_.temperature;
  // candidates sorted by logit, descending (only the top k when top_k is set)
  idx_.resize(vocab);
  for (int64_t i = 0; i < vocab; i++) idx_[i] = (int32_t)i;
  auto desc = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  int64_t n = vocab;
  if (o_.top_k > 0 && o_.top_k < vocab) {
    std::nth_element(idx_.begin(), idx_.begin() + (o_.top_k - 1), idx_.end(), desc);
    const float kth = logits[idx_[o_.top_k - 1]];
    // keep ties with the k-th value, as transformers does (it removes only scores < k-th)
    auto mid = std::partition(idx_.begin(), idx_.end(), [&](int32_t i) { return logits[i] >= kth; });
    n = mid - idx_.begin();
  }
  std::sort(idx_.begin(), idx_.begin() + n, desc);
  // probabilities of the current candidates
  auto softmax = [&](int64_t m) {
    probs_.resize(m);
    const float mx = logits[idx_[0]] * inv_t;
    double s = 0;
    for (int64_t i = 0; i < m; i++) s += probs_[i] = std::exp(logits[idx_[i]] * inv_t - mx);
    for (int64_t i = 0; i < m; i++) probs_[i] = (float)(probs_[i] / s);
  };
  if (o_.top_p < 1.f) {
    softmax(n);
    // remove tokens whose ascending cumulative probability is <= 1 - top_p; the most likely always stays
    double cum = 0;
    int64_t keep = n;
    for (int64_t i = n - 1; i >= 1; i--) {
      cum += probs_[i];
      if (cum <= 1.0 - o_.top_p) keep = i;
      else break;
    }
    n = keep;
  }
  if (o_.min_p > 0.f) {
    softmax(n);
    const float thr = o_.min_p * probs_[0];
    int64_t keep = 1;
    while (keep < n && probs_[keep] >= thr) keep++;
    n = keep;
  }
  softmax(n);
  double u = next_uniform(), acc = 0;
  for (int64_t i = 0; i < n; i++) {
    acc += probs_[i];
    if (u < acc) return idx_[i];
  }
  while (n > 1 && probs_[n - 1] == 0.f) n--;  // (u beyond the rounded sum: never a token of probability 0)
  return idx_[n - 1];
}

}  // namespace ef
