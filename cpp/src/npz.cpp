#include "npz.hpp"

#include <array>
#include <cstring>
#include <fstream>

#include "probexec/probexec.hpp"

namespace probexec::detail {

std::uint32_t crc32(const std::uint8_t* data, std::size_t n) {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

namespace {

void put16(std::vector<std::uint8_t>& out, std::uint16_t v) {
  out.push_back(static_cast<std::uint8_t>(v));
  out.push_back(static_cast<std::uint8_t>(v >> 8));
}

void put32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

}  // namespace

void NpzWriter::add(const std::string& name, const std::vector<std::size_t>& shape, const std::vector<double>& data) {
  std::size_t n = 1;
  for (auto s : shape) n *= s;
  if (n != data.size()) throw error("NpzWriter: array '" + name + "' has " + std::to_string(data.size()) + " values for its shape");
  std::string header = "{'descr': '<f8', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < shape.size(); ++i) header += std::to_string(shape[i]) + (shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
  header += "), }";
  // magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of 64, ending in \n
  std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string npy("\x93NUMPY\x01\x00", 8);
  npy += static_cast<char>(header.size() & 0xFF);
  npy += static_cast<char>(header.size() >> 8);
  npy += header;
  Entry e{name + ".npy", std::vector<std::uint8_t>(npy.size() + data.size() * sizeof(double))};
  std::memcpy(e.bytes.data(), npy.data(), npy.size());
  // little-endian hosts (x86-64, aarch64), as '<f8' says
  if (!data.empty()) std::memcpy(e.bytes.data() + npy.size(), data.data(), data.size() * sizeof(double));
  entries_.push_back(std::move(e));
}

void NpzWriter::write(const std::string& path) const {
  std::vector<std::uint8_t> out, central;
  for (const auto& e : entries_) {
    if (e.bytes.size() >= 0xFFFFFFFFu || out.size() >= 0xFFFFFFFFu) throw error("NpzWriter: " + path + " would exceed 4 GiB");
    std::uint32_t crc = crc32(e.bytes.data(), e.bytes.size());
    auto size = static_cast<std::uint32_t>(e.bytes.size());
    auto offset = static_cast<std::uint32_t>(out.size());
    auto name_len = static_cast<std::uint16_t>(e.name.size());
    // local file header: stored (method 0), no data descriptor
    put32(out, 0x04034b50);
    put16(out, 20);
    put16(out, 0);
    put16(out, 0);
    put16(out, 0);
    put16(out, 0x21);  // time/date: any valid value
    put32(out, crc);
    put32(out, size);
    put32(out, size);
    put16(out, name_len);
    put16(out, 0);
    out.insert(out.end(), e.name.begin(), e.name.end());
    out.insert(out.end(), e.bytes.begin(), e.bytes.end());
    // central directory record
    put32(central, 0x02014b50);
    put16(central, 20);
    put16(central, 20);
    put16(central, 0);
    put16(central, 0);
    put16(central, 0);
    put16(central, 0x21);
    put32(central, crc);
    put32(central, size);
    put32(central, size);
    put16(central, name_len);
    put16(central, 0);
    put16(central, 0);
    put16(central, 0);
    put16(central, 0);
    put32(central, 0);
    put32(central, offset);
    central.insert(central.end(), e.name.begin(), e.name.end());
  }
  auto cd_offset = static_cast<std::uint32_t>(out.size());
  out.insert(out.end(), central.begin(), central.end());
  put32(out, 0x06054b50);
  put16(out, 0);
  put16(out, 0);
  put16(out, static_cast<std::uint16_t>(entries_.size()));
  put16(out, static_cast<std::uint16_t>(entries_.size()));
  put32(out, static_cast<std::uint32_t>(central.size()));
  put32(out, cd_offset);
  put16(out, 0);
  // Written under a temporary name and renamed: a crash never leaves half a file.
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) throw error("cannot write " + tmp);
    f.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size()));
    if (!f) throw error("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw error("cannot rename " + tmp + " to " + path);
}

}  // namespace probexec::detail
