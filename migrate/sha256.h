// SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), for the migration
// handshake's mutual authentication. Written here rather than taken from
// OpenSSL: ckpt links no crypto library and needs nothing else from one.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ckpt::migrate {

using Digest = std::array<uint8_t, 32>;

// Incremental hashing: update() any number of times, then finish() once.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t len);
  void update(std::string_view s) { update(s.data(), s.size()); }
  Digest finish();

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

Digest sha256(std::string_view data);
Digest hmac_sha256(std::string_view key, std::string_view msg);

// Compares in time independent of where the bytes differ (a MAC check must
// not tell an attacker how many leading bytes were right).
bool equal_constant_time(std::string_view a, std::string_view b);

// Lower-case hex, for tests and logs.
std::string to_hex(const Digest& d);

}  // namespace ckpt::migrate
