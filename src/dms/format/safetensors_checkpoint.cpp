// A Hugging Face checkpoint directory: `model.safetensors` (preferred, as transformers does) or
// the shards listed by `model.safetensors.index.json`.
#include <filesystem>
#include <nlohmann/json.hpp>

#include "dms/format/safetensors.h"
#include "dms/util/error.h"
#include "dms/util/text_file.h"

namespace dms {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json weight_map_of(const std::string& text, const std::string& path) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(path, std::string("invalid JSON: ") + e.what());
  }
  if (!j.is_object()) fail(path, "not a JSON object");
  const auto map = j.find("weight_map");
  if (map == j.end() || !map->is_object()) fail(path, "has no 'weight_map' object");
  if (map->empty()) fail(path, "'weight_map' is empty");
  return *map;
}

}  // namespace

SafetensorsCheckpoint SafetensorsCheckpoint::open_dir(const std::string& dir) {
  SafetensorsCheckpoint c;
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(single)) {
    c.files_.push_back(SafetensorsFile::open(single.string()));
    c.tensors_ = c.files_.back()->tensors();
    return c;
  }
  if (!fs::exists(index)) fail(dir, "no model.safetensors or model.safetensors.index.json in this directory");

  const std::string index_path = index.string();
  return from_index(read_text_file(index_path), index_path, [&](const std::string& shard) -> std::shared_ptr<SafetensorsFile> {
    const fs::path shard_path = fs::path(dir) / shard;
    if (!fs::exists(shard_path)) return nullptr;
    return SafetensorsFile::open(shard_path.string());
  });
}

SafetensorsCheckpoint SafetensorsCheckpoint::from_index(const std::string& index_text, const std::string& index_path,
                                                        const ShardOpener& open_shard) {
  SafetensorsCheckpoint c;
  const json weight_map = weight_map_of(index_text, index_path);
  std::map<std::string, std::shared_ptr<SafetensorsFile>> shards;
  for (const auto& [name, shard_json] : weight_map.items()) {
    if (!shard_json.is_string()) fail(index_path, "weight_map entry for '" + name + "' is not a string");
    const std::string shard = shard_json.get<std::string>();
    // Shards live next to the index; a path elsewhere is a malformed (or hostile) index.
    if (shard.empty() || fs::path(shard).filename().string() != shard || shard == "." || shard == "..") {
      fail(index_path, "weight_map entry for '" + name + "' names '" + shard + "', which is not a file name");
    }
    auto it = shards.find(shard);
    if (it == shards.end()) {
      auto file = open_shard(shard);
      if (!file) {
        const fs::path beside = fs::path(index_path).parent_path() / shard;
        fail(index_path, "shard '" + shard + "' (for tensor '" + name + "') does not exist at " + beside.string());
      }
      it = shards.emplace(shard, std::move(file)).first;
      c.files_.push_back(it->second);
    }
    const auto t = it->second->tensors().find(name);
    if (t == it->second->tensors().end()) {
      fail(index_path, "tensor '" + name + "' is mapped to shard '" + shard + "', which does not contain it");
    }
    c.tensors_[name] = t->second;
  }
  return c;
}

const StTensor* SafetensorsCheckpoint::find(const std::string& name) const {
  const auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

}  // namespace dms
