// CRC-32C (Castagnoli): SSE4.2 instruction where the CPU has it, a table
// otherwise. Used for every image's checksum and every page chunk.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ckpt::image {

// crc32c(data) when called with crc = 0; chain calls to checksum pieces.
uint32_t crc32c(const void* data, size_t len, uint32_t crc = 0);

}  // namespace ckpt::image
