#include "dms/cache/block_pool.h"

#include <cstring>
#include <limits>
#include <string>

#include "dms/kernels/cpu/kv_quant.h"
#include "dms/util/error.h"

namespace dms {

BlockPool::BlockPool(int64_t num_blocks, int64_t block_size, int64_t head_dim, at::ScalarType dtype)
    : num_blocks_(num_blocks), block_size_(block_size), head_dim_(head_dim) {
  if (num_blocks < 1 || num_blocks > std::numeric_limits<int32_t>::max())
    fail("kv cache", "a block pool needs between 1 and 2^31-1 blocks, got " + std::to_string(num_blocks));
  if (block_size < 1 || head_dim < 1)
    fail("kv cache", "block size and head dim must be positive, got " + std::to_string(block_size) + " and " +
                         std::to_string(head_dim));
  const int64_t row_bytes = cpu::kv_row_bytes(dtype, head_dim);  // rejects other dtypes
  const int64_t row_elems = row_bytes / static_cast<int64_t>(at::elementSize(dtype));
  keys_ = at::empty({num_blocks, block_size, row_elems}, dtype);
  values_ = at::empty({num_blocks, block_size, row_elems}, dtype);
  free_.resize(num_blocks);
  holders_ = std::make_unique<std::atomic<int32_t>[]>(num_blocks);
  for (int64_t i = 0; i < num_blocks; ++i) holders_[i] = 0;
  for (int64_t i = 0; i < num_blocks; ++i) free_[i] = static_cast<int32_t>(num_blocks - 1 - i);
}

int32_t BlockPool::allocate() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (free_.empty()) fail("kv cache", "block pool exhausted (" + std::to_string(num_blocks_) + " blocks)");
  const int32_t block = free_.back();
  free_.pop_back();
  holders_[block] = 1;
  peak_used_ = std::max(peak_used_, num_blocks_ - static_cast<int64_t>(free_.size()));
  return block;
}

void BlockPool::retain(int32_t block) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (block < 0 || block >= num_blocks_ || holders_[block] == 0)
    fail("kv cache", "retain of block " + std::to_string(block) + ", which is not allocated");
  if (++holders_[block] == 2) ++shared_;
}

void BlockPool::release(int32_t block) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (block < 0 || block >= num_blocks_ || holders_[block] == 0)
    fail("kv cache", "release of block " + std::to_string(block) + ", which is not allocated");
  const int32_t left = --holders_[block];
  if (left == 1) --shared_;
  if (left == 0) free_.push_back(block);
}

void BlockPool::copy_block(int32_t from, int32_t to) {
  const int64_t bytes = block_bytes() / 2;
  for (const at::Tensor* t : {&keys_, &values_}) {
    auto* base = static_cast<uint8_t*>(t->data_ptr());
    std::memcpy(base + to * bytes, base + from * bytes, bytes);
  }
}

void BlockPool::make_resident() {
  keys_.zero_();
  values_.zero_();
}

int64_t BlockPool::used_blocks() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return num_blocks_ - static_cast<int64_t>(free_.size());
}

int64_t BlockPool::peak_used_blocks() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return peak_used_;
}

}  // namespace dms
