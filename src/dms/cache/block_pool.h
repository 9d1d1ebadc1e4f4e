// One layer's store of key and value blocks. Every (sequence, KV head) of the layer draws its
// blocks from here and gives them back when they empty, so the layer's KV memory follows the
// keys that are live, not the tokens that were seen. A block may be held by several sequences
// (forked from one prefix): it counts its holders and is free again when the last one lets go.
#pragma once
#include <ATen/ATen.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace dms {

class BlockPool {
 public:
  // K and V storage of `num_blocks` blocks of `block_size` slots of `head_dim` values each, in
  // `dtype`: f32, bf16, f16 or q8 (cpu::kQ8, kv_quant.h).
  // The storage is reserved up front but the operating system only backs the pages that are
  // written, and released blocks are handed out again first (last in, first out).
  BlockPool(int64_t num_blocks, int64_t block_size, int64_t head_dim, at::ScalarType dtype);

  // Safe to call from several threads at once. allocate() throws Error when no block is free;
  // PagedKVCache checks a step's needs before it starts, so it never reaches that. A block is
  // allocated with one holder; retain adds one, release takes one away and frees the block when
  // none is left.
  int32_t allocate();
  void retain(int32_t block);
  void release(int32_t block);
  // Holders of a block (0 when free); shared blocks (2 or more) are copied before a write.
  int32_t holders(int32_t block) const { return holders_[block].load(std::memory_order_acquire); }
  bool shared(int32_t block) const { return holders(block) > 1; }
  // Blocks held by 2 or more.
  int64_t shared_blocks() const { return shared_.load(std::memory_order_acquire); }
  // Copies K and V of block `from` into block `to`.
  void copy_block(int32_t from, int32_t to);
  // Writes every block once, so that the whole pool is resident now rather than page by page as
  // sequences first reach it (a server takes its memory when it starts).
  void make_resident();

  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  int64_t head_dim() const { return head_dim_; }
  at::ScalarType dtype() const { return keys_.scalar_type(); }
  int64_t used_blocks() const;
  int64_t free_blocks() const { return num_blocks_ - used_blocks(); }
  int64_t peak_used_blocks() const;
  // Bytes of K and V in one block, q8 scales included.
  int64_t block_bytes() const { return 2 * block_size_ * keys_.size(2) * static_cast<int64_t>(keys_.element_size()); }

  // [num_blocks, block_size, row]: slot r of block b holds row b * block_size + r, each row one
  // key or value as stored (head_dim values, or kv_row_bytes(kQ8, head_dim) bytes for q8).
  const at::Tensor& keys() const { return keys_; }
  const at::Tensor& values() const { return values_; }

 private:
  int64_t num_blocks_, block_size_, head_dim_;
  at::Tensor keys_, values_;
  mutable std::mutex mutex_;
  std::vector<int32_t> free_;     // a stack: the most recently released block is reused first
  std::unique_ptr<std::atomic<int32_t>[]> holders_;  // per block; changed under mutex_
  std::atomic<int64_t> shared_{0};
  int64_t peak_used_ = 0;
};

}  // namespace dms
