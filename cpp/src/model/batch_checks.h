// decode_batch's argument checks, shared by the CPU model (model.cc) and the CUDA model (cuda/cuda_model.cc) so
// that both refuse the same batches with the same messages.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "edgeformer/errors.h"

namespace ef {

// seqs: distinct models, each a fork of seqs[0]'s (same_model(i)); tokens[i] in [0, vocab).
template <class M, class SameModel>
void check_batch(const std::vector<M*>& seqs, const int32_t* tokens, int32_t vocab, SameModel same_model) {
  EF_CHECK(!seqs.empty() && tokens, "decode_batch: no sequences");
  for (size_t i = 0; i < seqs.size(); i++) {
    EF_CHECK(same_model(i), "decode_batch: sequence " + std::to_string(i) + " is not a fork of the first one's model");
    for (size_t j = 0; j < i; j++)
      EF_CHECK(seqs[j] != seqs[i], "decode_batch: sequences " + std::to_string(j) + " and " + std::to_string(i) +
                                       " are the same model");
  }
  for (size_t i = 0; i < seqs.size(); i++)
    EF_CHECK(tokens[i] >= 0 && tokens[i] < vocab, "decode_batch: token id " + std::to_string(tokens[i]) +
                                                      " of sequence " + std::to_string(i) +
                                                      " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
}

}  // namespace ef
