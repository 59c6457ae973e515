// Function symbols of a loaded module, read once from its ELF file.
//
// An address id hashes every frame of the call stack. Keyed by the frame's offset in its module,
// an id changes whenever any code before it in the binary changes size: rebuilding the simulator
// after an unrelated edit (or against a newer probexec) would orphan every trained network and
// dataset. Keyed by (function name, offset in the function), an id changes only when the function
// that makes the call changes. This table answers "which function holds this address".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace probexec::detail {

struct FunctionSymbol {
  std::uintptr_t start = 0;  // in the file's own address space (st_value)
  std::uintptr_t size = 0;
  std::uint64_t name_hash = 0;
};

class FunctionTable {
 public:
  // Reads `path`'s .symtab (else .dynsym). A file that cannot be read, or is no 64-bit
  // little-endian ELF, gives an empty table: its frames keep their module offsets.
  explicit FunctionTable(const std::string& path);
  // The function whose code holds `addr` (st_value space), or nullptr.
  const FunctionSymbol* find(std::uintptr_t addr) const;
  bool empty() const { return syms_.empty(); }
  std::size_t size() const { return syms_.size(); }

 private:
  std::vector<FunctionSymbol> syms_;  // sorted by start
};

}  // namespace probexec::detail
