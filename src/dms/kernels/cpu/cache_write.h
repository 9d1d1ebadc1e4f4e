// Writing keys and values into a layer's pool. A slot's place in the pool is one line of
// index arithmetic over its head's block table; the rows are already in the pool's dtype.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <cstring>

namespace dms::cpu {

// Pool row (block * block_size + offset) of `slot` in a head whose blocks are `blocks`.
inline int64_t pool_row(const int32_t* blocks, int64_t slot, int64_t block_size) {
  return static_cast<int64_t>(blocks[slot / block_size]) * block_size + slot % block_size;
}

// The K and V rows of one pool ([blocks, block_size, D], contiguous) as bytes.
class PoolRows {
 public:
  PoolRows(const at::Tensor& keys, const at::Tensor& values)
      : k_(static_cast<uint8_t*>(keys.data_ptr())),
        v_(static_cast<uint8_t*>(values.data_ptr())),
        row_bytes_(keys.size(2) * static_cast<int64_t>(keys.element_size())) {}

  void write(int64_t row, const void* key, const void* value) const {
    std::memcpy(k_ + row * row_bytes_, key, row_bytes_);
    std::memcpy(v_ + row * row_bytes_, value, row_bytes_);
  }
  void move(int64_t from, int64_t to) const {
    std::memcpy(k_ + to * row_bytes_, k_ + from * row_bytes_, row_bytes_);
    std::memcpy(v_ + to * row_bytes_, v_ + from * row_bytes_, row_bytes_);
  }
  int64_t row_bytes() const { return row_bytes_; }

 private:
  uint8_t *k_, *v_;
  int64_t row_bytes_;
};

}  // namespace dms::cpu
