// Replacing a small text file (an index, a log) so that readers, and a run interrupted halfway,
// see the old content or the new, never a mix.
#pragma once
#include <string>

namespace dms {

// Writes `text` to "<path>.tmp", then renames it over `path`. Throws Error naming the file at
// fault.
void write_text_atomically(const std::string& path, const std::string& text);

}  // namespace dms
