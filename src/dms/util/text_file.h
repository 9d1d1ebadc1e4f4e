// Small text files (configs, an index, a log): read whole, and replaced so that readers, and a run
// interrupted halfway, see the old content or the new, never a mix.
#pragma once
#include <string>

namespace dms {

// Writes `text` to "<path>.tmp", then renames it over `path`. Throws Error naming the file at
// fault.
void write_text_atomically(const std::string& path, const std::string& text);

// The whole content of `path`. Throws Error "<path>: cannot open" or "<path>: cannot be read".
std::string read_text_file(const std::string& path);

}  // namespace dms
