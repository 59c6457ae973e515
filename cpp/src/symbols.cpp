#include "symbols.hpp"

#include <elf.h>

#include <algorithm>
#include <cstring>
#include <fstream>

#include "address.hpp"

namespace probexec::detail {

namespace {

template <class T>
bool read_at(std::ifstream& f, std::uint64_t offset, T* out, std::size_t count = 1) {
  f.seekg(static_cast<std::streamoff>(offset));
  f.read(reinterpret_cast<char*>(out), static_cast<std::streamsize>(sizeof(T) * count));
  return static_cast<bool>(f);
}

// Symbols of one section (SHT_SYMTAB or SHT_DYNSYM) that are defined functions with a size.
std::vector<FunctionSymbol> functions_of(std::ifstream& f, const std::vector<Elf64_Shdr>& sections, std::uint32_t type) {
  std::vector<FunctionSymbol> out;
  for (const auto& s : sections) {
    if (s.sh_type != type || s.sh_entsize != sizeof(Elf64_Sym) || s.sh_link >= sections.size()) continue;
    const auto& strtab = sections[s.sh_link];
    std::vector<Elf64_Sym> syms(s.sh_size / sizeof(Elf64_Sym));
    std::vector<char> names(strtab.sh_size + 1, '\0');
    if (syms.empty() || !read_at(f, s.sh_offset, syms.data(), syms.size()) ||
        !read_at(f, strtab.sh_offset, names.data(), strtab.sh_size)) {
      continue;
    }
    for (const auto& sym : syms) {
      const auto kind = ELF64_ST_TYPE(sym.st_info);
      if ((kind != STT_FUNC && kind != STT_GNU_IFUNC) || sym.st_shndx == SHN_UNDEF || sym.st_size == 0 ||
          sym.st_name >= strtab.sh_size) {
        continue;
      }
      const char* name = names.data() + sym.st_name;
      out.push_back({static_cast<std::uintptr_t>(sym.st_value), static_cast<std::uintptr_t>(sym.st_size),
                     hash_bytes(name, std::strlen(name), 0x243f6a8885a308d3ULL)});
    }
  }
  return out;
}

}  // namespace

FunctionTable::FunctionTable(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  Elf64_Ehdr eh{};
  if (!f || !read_at(f, 0, &eh) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
      eh.e_ident[EI_DATA] != ELFDATA2LSB || eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shnum == 0) {
    return;
  }
  std::vector<Elf64_Shdr> sections(eh.e_shnum);
  if (!read_at(f, eh.e_shoff, sections.data(), sections.size())) return;
  syms_ = functions_of(f, sections, SHT_SYMTAB);
  if (syms_.empty()) syms_ = functions_of(f, sections, SHT_DYNSYM);
  // Aliases (one body, several names) resolve to the same one in every build: the smallest hash.
  std::sort(syms_.begin(), syms_.end(), [](const FunctionSymbol& a, const FunctionSymbol& b) {
    return a.start != b.start ? a.start < b.start : a.name_hash < b.name_hash;
  });
  syms_.erase(std::unique(syms_.begin(), syms_.end(),
                          [](const FunctionSymbol& a, const FunctionSymbol& b) { return a.start == b.start; }),
              syms_.end());
}

const FunctionSymbol* FunctionTable::find(std::uintptr_t addr) const {
  auto it = std::upper_bound(syms_.begin(), syms_.end(), addr,
                             [](std::uintptr_t a, const FunctionSymbol& s) { return a < s.start; });
  if (it == syms_.begin()) return nullptr;
  --it;
  return addr < it->start + it->size ? &*it : nullptr;
}

}  // namespace probexec::detail
