// A minimal NumPy .npz writer (an uncompressed ZIP of .npy float64 arrays), so standalone runs
// can write events that `numpy.load` reads, with no dependency beyond the standard library.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace probexec::detail {

class NpzWriter {
 public:
  // Adds a float64 array of `shape` (C order); `data` must hold the product of `shape` values.
  void add(const std::string& name, const std::vector<std::size_t>& shape, const std::vector<double>& data);
  // Writes the archive; throws probexec::error when the file cannot be written or is over 4 GiB.
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    std::vector<std::uint8_t> bytes;  // the whole .npy file
  };
  std::vector<Entry> entries_;
};

std::uint32_t crc32(const std::uint8_t* data, std::size_t n);

}  // namespace probexec::detail
