#include "edgeformer/threadpool.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <string>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>  // _mm_pause: SSE2, the x86-64 baseline; MSVC has no __builtin_ia32_pause
#endif

namespace ef {

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  for (int i = 1; i < n_threads_; i++) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
    generation_.fetch_add(1);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker(int index) {
  uint64_t seen = 0;
  while (true) {
    // spin briefly (a decode step launches many short regions), then sleep
    uint64_t g = generation_.load(std::memory_order_acquire);
    for (int spin = 0; g == seen && spin < 20000; spin++) {
#if defined(__x86_64__) || defined(_M_X64)
      if (spin < 4000) _mm_pause();
      else std::this_thread::yield();
#else
      std::this_thread::yield();
#endif
      g = generation_.load(std::memory_order_acquire);
    }
    if (g == seen) {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return generation_.load() != seen || stop_; });
      g = generation_.load();
    }
    std::function<void(int)> job;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stop_) return;
      job = job_;
    }
    seen = g;
    job(index);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run_on_all(const std::function<void(int)>& fn) {
  std::lock_guard<std::mutex> run(run_mu_);
  if (n_threads_ == 1) {
    fn(0);
    return;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    job_ = fn;
    pending_.store(n_threads_ - 1);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  cv_.notify_all();
  std::exception_ptr err;
  try {
    fn(0);
  } catch (...) {
    err = std::current_exception();
  }
  // spin briefly, then yield: on a loaded machine the worker may need this very core to finish
  for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; spin++) {
#if defined(__x86_64__) || defined(_M_X64)
    if (spin < 4000) {
      _mm_pause();
      continue;
    }
#endif
    std::this_thread::yield();
  }
  if (err) std::rethrow_exception(err);
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int, int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  int64_t units = (n + grain - 1) / grain;
  int nt = (int)std::min<int64_t>(n_threads_, units);
  if (nt <= 1) {
    fn(0, 0, n);
    return;
  }
  // up to 4 chunks per thread, claimed in order
  const int64_t chunks = std::min<int64_t>(units, (int64_t)nt * 4);
  std::atomic<int64_t> next{0};
  run_on_all([&](int t) {
    if (t >= nt) return;
    for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < chunks;
         c = next.fetch_add(1, std::memory_order_relaxed)) {
      const int64_t u0 = units * c / chunks, u1 = units * (c + 1) / chunks;
      const int64_t b = std::min(n, u0 * grain), e = std::min(n, u1 * grain);
      if (b < e) fn(t, b, e);
    }
  });
}

int physical_cores() {
  int logical = (int)std::max(1u, std::thread::hardware_concurrency());
#if defined(__linux__)
  std::set<std::pair<std::string, std::string>> cores;
  for (int cpu = 0; cpu < logical; cpu++) {
    std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    std::ifstream a(base + "core_id"), b(base + "physical_package_id");
    std::string core, pkg;
    if (!(a >> core) || !(b >> pkg)) return logical;
    cores.insert({pkg, core});
  }
  if (!cores.empty()) return (int)cores.size();
#endif
  return logical;
}

}  // namespace ef
