// Concurrency of the C++ core, for ThreadSanitizer (tools/tsan.sh) and as a plain test: two models, each
// with its own thread pool, driven from several threads at once (calls on one model serialized by its
// mutex, as the bindings do); every result must equal the single-threaded one. Then an interrupt requested
// from another thread stops a long forward pass and leaves the model usable. Prints "N passed, M failed".
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "edgeformer/errors.h"
#include "edgeformer/model.h"

using namespace ef;

static int passed = 0, failed = 0;
static void expect(bool ok, const std::string& what) {
  if (ok) passed++;
  else {
    failed++;
    std::printf("FAIL %s\n", what.c_str());
  }
}

static Tensor random_tensor(std::vector<int64_t> shape, std::mt19937& rng, float mean, float std) {
  Tensor t = Tensor::empty(DType::F32, shape);
  std::normal_distribution<float> d(mean, std);
  float* p = (float*)t.data;
  for (int64_t i = 0; i < t.numel(); i++) p[i] = d(rng);
  return t;
}

static void tiny_llama(ArchSpec& s, TensorMap& m, std::map<std::string, std::string>& names, unsigned seed) {
  s.model_type = "llama";
  s.vocab_size = 100; s.hidden_size = 64; s.n_layers = 2; s.n_heads = 4; s.n_kv_heads = 2; s.head_dim = 16;
  s.ffn_size = 128; s.max_position = 4096;
  std::mt19937 rng(seed);
  auto add = [&](const std::string& n, std::vector<int64_t> shape, float mean, float std) {
    m.add(n, random_tensor(shape, rng, mean, std));
    names[n] = n;
  };
  add("tok_embeddings.weight", {100, 64}, 0, 0.5f);
  add("norm.weight", {64}, 1, 0.1f);
  add("lm_head.weight", {100, 64}, 0, 0.08f);
  for (int i = 0; i < 2; i++) {
    std::string p = "layers." + std::to_string(i) + ".";
    add(p + "attn_norm.weight", {64}, 1, 0.1f);
    add(p + "mlp_norm.weight", {64}, 1, 0.1f);
    add(p + "attn.q.weight", {64, 64}, 0, 0.08f);
    add(p + "attn.k.weight", {32, 64}, 0, 0.08f);
    add(p + "attn.v.weight", {32, 64}, 0, 0.08f);
    add(p + "attn.o.weight", {64, 64}, 0, 0.08f);
    add(p + "mlp.gate.weight", {128, 64}, 0, 0.08f);
    add(p + "mlp.up.weight", {128, 64}, 0, 0.08f);
    add(p + "mlp.down.weight", {64, 128}, 0, 0.08f);
  }
}

static std::vector<float> run(Model& m, const std::vector<int32_t>& ids) {
  std::lock_guard<std::mutex> lk(m.mutex());
  m.reset();
  std::vector<float> out(ids.size() * 100);
  m.forward(ids.data(), (int32_t)ids.size(), true, out.data());
  return out;
}

int main() {
  ModelOptions opts;
  opts.threads = 2;
  opts.max_context = 4096;
  std::vector<std::unique_ptr<Model>> models;
  for (unsigned seed : {1u, 2u}) {
    ArchSpec s;
    TensorMap tm;
    std::map<std::string, std::string> names;
    tiny_llama(s, tm, names, seed);
    models.push_back(std::make_unique<Model>(s, tm, names, opts));
  }
  std::vector<std::vector<int32_t>> prompts;
  for (int j = 0; j < 4; j++) {
    std::vector<int32_t> ids;
    for (int i = 0; i < 24 + j; i++) ids.push_back((i * 7 + j * 13) % 100);
    prompts.push_back(ids);
  }
  std::vector<std::vector<float>> ref;
  for (auto& m : models)
    for (auto& p : prompts) ref.push_back(run(*m, p));

  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; t++)
    threads.emplace_back([&, t] {
      for (int it = 0; it < 10; it++) {
        const int mi = (t + it) % 2, pi = (t * 3 + it) % 4;
        if (run(*models[mi], prompts[pi]) != ref[mi * 4 + pi]) mismatches++;
      }
    });
  for (auto& th : threads) th.join();
  expect(mismatches == 0, "concurrent forwards equal the single-threaded ones");

  // an interrupt from another thread stops a long forward; the model stays usable
  std::vector<int32_t> longp(3000);
  for (int i = 0; i < 3000; i++) longp[i] = i % 100;
  Model& m = *models[0];
  bool interrupted = false;
  std::thread killer([] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    request_interrupt();
  });
  try {
    std::lock_guard<std::mutex> lk(m.mutex());
    m.reset();
    for (int rep = 0; rep < 50; rep++) {  // long enough that the request lands inside a call
      m.reset();
      m.forward(longp.data(), 3000, false, nullptr);
    }
  } catch (const Interrupted&) {
    interrupted = true;
  }
  killer.join();
  expect(interrupted, "an interrupt stops a long forward pass");
  expect(run(m, prompts[0]) == ref[0], "the model is usable after an interrupt");

  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
