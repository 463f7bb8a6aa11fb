// Mirrors transformers' modeling_rope_utils (default, linear, dynamic, llama3, yarn, longrope) in float32 where it
// computes in float32, so the frequencies agree to the last bit or nearly.
#include "edgeformer/rope.h"

#include <algorithm>
#include <cmath>

#include "edgeformer/errors.h"

namespace ef {

constexpr double kPi = 3.14159265358979323846;

void rope_inv_freq(const ArchSpec& s, int64_t seq_len, std::vector<float>& inv_freq, float& mscale) {
  const RopeSpec& r = s.rope;
  const int dim = r.rotary_dim > 0 ? r.rotary_dim : s.head_dim;
  const int half = dim / 2;
  double base = r.theta;
  mscale = 1.f;
  if (r.scaling == RopeScaling::Dynamic) {
    double L = std::max<double>((double)seq_len, (double)s.max_position);
    base = base * std::pow((r.factor * L / s.max_position) - (r.factor - 1), (double)dim / (dim - 2));
  }
  inv_freq.resize(half);
  for (int i = 0; i < half; i++) {
    float e = (float)(2 * i) / (float)dim;
    inv_freq[i] = 1.f / std::pow((float)base, e);
  }
  switch (r.scaling) {
    case RopeScaling::None:
    case RopeScaling::Dynamic:
      break;
    case RopeScaling::Linear:
      for (auto& f : inv_freq) f /= r.factor;
      break;
    case RopeScaling::LongRope: {
      const std::vector<float>& ext = seq_len > r.original_max_position ? r.long_factor : r.short_factor;
      for (int i = 0; i < half; i++) {
        float e = (float)(2 * i) / (float)dim;
        inv_freq[i] = 1.f / (ext[i] * std::pow((float)base, e));
      }
      mscale = r.attention_factor;
      break;
    }
    case RopeScaling::Llama3: {
      const float old_ctx = (float)r.original_max_position;
      const float low_wl = old_ctx / r.low_freq_factor, high_wl = old_ctx / r.high_freq_factor;
      for (auto& f : inv_freq) {
        float wl = (float)(2 * kPi) / f;
        float g = wl > low_wl ? f / r.factor : f;
        if (!(wl < high_wl) && !(wl > low_wl)) {
          float smooth = (old_ctx / wl - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
          g = (1 - smooth) * g / r.factor + smooth * g;
        }
        f = g;
      }
      break;
    }
    case RopeScaling::Yarn: {
      auto get_mscale = [](double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; };
      double att = r.attention_factor;
      if (att <= 0) {
        if (r.mscale > 0 && r.mscale_all_dim > 0)
          att = get_mscale(r.factor, r.mscale) / get_mscale(r.factor, r.mscale_all_dim);
        else
          att = get_mscale(r.factor, 1.0);
      }
      mscale = (float)att;
      const double pi = kPi;
      auto corr_dim = [&](double rot) {
        return (dim * std::log((double)r.original_max_position / (rot * 2 * pi))) / (2 * std::log((double)r.theta));
      };
      double low = corr_dim(r.beta_fast), high = corr_dim(r.beta_slow);
      if (r.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
      }
      low = std::max(low, 0.0);
      high = std::min(high, (double)dim - 1);
      if (low == high) high += 0.001;
      for (int i = 0; i < half; i++) {
        float pos_freq = std::pow((float)r.theta, (float)(2 * i) / (float)dim);
        float extra = 1.f / pos_freq, inter = 1.f / ((float)r.factor * pos_freq);
        float ramp = std::min(1.f, std::max(0.f, (float)(((float)i - (float)low) / (float)(high - low))));
        float ef = 1.f - ramp;
        inv_freq[i] = inter * (1 - ef) + extra * ef;
      }
      break;
    }
  }
  if (!r.freq_factors.empty())  // (validate: half of them; an infinite factor leaves its pair unrotated)
    for (int i = 0; i < half; i++) inv_freq[i] /= r.freq_factors[i];
}

}  // namespace ef
