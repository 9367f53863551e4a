// The output cache: large CPU outputs are carved from blocks that earlier outputs freed.
//
// Why: an op writes its output right after allocating it, and every fresh page faults and is
// zeroed by the kernel first. Back to back, glibc hands the just-freed block back and nothing
// faults; but in a pipeline (a file read, another library's temporary freed between two
// calls) the output is mapped anew each call. On the project's Intel Xeon VMs that made
// `label` 2048^2 take 15-32 ms instead of 4.5 (slower than scipy); asking for transparent
// huge pages instead (madvise) sped up the hot loop but left a slow tail there, as faulting
// a 2 MiB page can wait on the kernel's compaction. A block this cache hands out has its
// pages in place whatever ran in between, on any machine. It is small and bounded:
// blocks of 1 MiB or more, at most kMaxBlocks of them and kMaxBytes in all, the least
// recently freed evicted first; medgan_fast.release_cached_outputs() empties it.
#include "common/output/output.h"

#include <c10/core/CPUAllocator.h>

#include <cstdlib>
#include <deque>
#include <mutex>
#include <new>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace medgan_fast {
namespace {

constexpr size_t kMinBytes = size_t{1} << 20;      // smaller outputs: torch's allocator
constexpr size_t kHugePage = size_t{1} << 21;
constexpr size_t kHugeFrom = 4 * kHugePage;        // blocks this large ask for huge pages
constexpr size_t kMaxBytes = size_t{256} << 20;
constexpr size_t kMaxBlocks = 8;

struct Block {
  void* data;
  size_t capacity;
};

// Blocks are sized in steps, so that outputs of one shape reuse one another's blocks.
size_t capacity_for(size_t bytes) {
  const size_t step = bytes >= kHugeFrom ? kHugePage : size_t{64} << 10;
  return (bytes + step - 1) / step * step;
}

class OutputCache final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) override {
    if (bytes < kMinBytes) return c10::GetCPUAllocator()->allocate(bytes);
    Block* block = take(capacity_for(bytes));
    if (block == nullptr) block = new Block{allocate_block(capacity_for(bytes)), capacity_for(bytes)};
    return {block->data, block, &give_back, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, size_t count) const override {
    default_copy_data(dest, src, count);
  }

  int64_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return static_cast<int64_t>(bytes_);
  }

  int64_t release() {
    std::deque<Block*> freed;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      freed.swap(blocks_);
      bytes_ = 0;
    }
    int64_t total = 0;
    for (Block* block : freed) total += static_cast<int64_t>(block->capacity), destroy(block);
    return total;
  }

 private:
  static void* allocate_block(size_t capacity) {
    void* data = nullptr;
    if (posix_memalign(&data, capacity >= kHugeFrom ? kHugePage : 64, capacity) != 0) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // Faulted once per block, not once per call: the hint's slow tail is paid only on a miss.
    if (capacity >= kHugeFrom) madvise(data, capacity, MADV_HUGEPAGE);
#endif
    return data;
  }

  static void destroy(Block* block) {
    std::free(block->data);
    delete block;
  }

  Block* take(size_t capacity) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = blocks_.begin(); it != blocks_.end(); ++it) {
      if ((*it)->capacity != capacity) continue;
      Block* block = *it;
      blocks_.erase(it);
      bytes_ -= capacity;
      return block;
    }
    return nullptr;
  }

  static void give_back(void* context);

  std::mutex mutex_;
  std::deque<Block*> blocks_;  // most recently freed first
  size_t bytes_ = 0;
};

// Never destroyed: tensors that outlive static destruction still free into it.
OutputCache& cache() {
  static OutputCache* instance = new OutputCache();
  return *instance;
}

void OutputCache::give_back(void* context) {
  auto* block = static_cast<Block*>(context);
  OutputCache& self = cache();
  std::vector<Block*> evicted;
  if (block->capacity > kMaxBytes) {
    evicted.push_back(block);
  } else {
    std::lock_guard<std::mutex> lock(self.mutex_);
    self.blocks_.push_front(block);
    self.bytes_ += block->capacity;
    while (self.bytes_ > kMaxBytes || self.blocks_.size() > kMaxBlocks) {
      evicted.push_back(self.blocks_.back());
      self.bytes_ -= self.blocks_.back()->capacity;
      self.blocks_.pop_back();
    }
  }
  for (Block* old : evicted) destroy(old);
}

}  // namespace

at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  if (!options.device().is_cpu() || options.layout() != at::kStrided || options.pinned_memory())
    return at::empty(sizes, options);
  return at::detail::empty_generic(sizes, &cache(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   options.dtype().toScalarType(), options.memory_format_opt());
}

int64_t cached_output_bytes() { return cache().cached_bytes(); }

int64_t release_cached_outputs() { return cache().release(); }

}  // namespace medgan_fast
