// A small fork-join thread pool: the caller thread works too, workers spin briefly then sleep.
// No OpenMP runtime to ship. One pool per loaded model; calls into one pool are serialized.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ef {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  // Runs fn(thread_index, begin, end) over [0, n) split into contiguous chunks (multiples of `grain`). With
  // enough work, each thread takes chunks of a few per thread until none is left, so a thread that another
  // process slows down (or a chunk that costs more, as later queries of a causal prompt do) leaves its share
  // to the others; fn may thus be called more than once per thread, with ranges in no particular order.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int, int64_t, int64_t)>& fn);
  // Runs fn(thread_index) once on each thread.
  void run_on_all(const std::function<void(int)>& fn);

 private:
  void worker(int index);
  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void(int)> job_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  bool stop_ = false;
  std::mutex run_mu_;  // one parallel region at a time
};

// Physical cores (not hyperthreads) where the OS tells, else hardware_concurrency.
int physical_cores();

}  // namespace ef
