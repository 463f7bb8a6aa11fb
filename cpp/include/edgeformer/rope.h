// Rotary embedding frequencies for every rope_scaling type transformers knows for these models.
#pragma once
#include <vector>

#include "edgeformer/arch.h"

namespace ef {

// inverse frequencies (rotary_dim / 2 of them) and the attention factor that multiplies cos and sin.
// seq_len: positions in use (max position + 1), read by "dynamic" scaling only.
void rope_inv_freq(const ArchSpec& spec, int64_t seq_len, std::vector<float>& inv_freq, float& mscale);

}  // namespace ef
