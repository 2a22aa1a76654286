// The process tree: pid, parent, process group and session of every
// process, and its thread ids (pstree.img, parents before children).
#pragma once

#include <vector>

#include "objects/dump_context.h"
#include "pstree.pb.h"

namespace ckpt {

constexpr const char* kPstreeImage = "pstree.img";
constexpr const char* kInventoryImage = "inventory.img";

void dump_pstree(DumpContext& ctx);

// Reads pstree.img and checks it describes one tree: the first entry is the
// root, every other entry's parent comes before it, pids are unique.
std::vector<img::PstreeEntry> load_pstree(const image::ImageSource& src);

}  // namespace ckpt
