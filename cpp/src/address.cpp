#include "address.hpp"

#include "line_resolver.hpp"

#include <cxxabi.h>
#include <dlfcn.h>
#include <link.h>  // ElfW, ET_EXEC
#include <execinfo.h>
#include <sys/auxv.h>
#include <unwind.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <vector>

namespace probexec::detail {

std::uint64_t hash_bytes(const void* data, std::size_t n, std::uint64_t seed) {
  // FNV-1a over the bytes, then a splitmix finaliser so nearby inputs spread over all 64 bits.
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint64_t h = 0xcbf29ce484222325ULL ^ seed;
  for (std::size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

std::uint64_t hash_string(const std::string& s, std::uint64_t seed) { return hash_bytes(s.data(), s.size(), seed); }

namespace {

std::uint64_t mix(std::uint64_t h, std::uint64_t v) { return hash_bytes(&v, sizeof v, h); }

const char* basename_of(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}

std::string demangle(const char* sym) {
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> out(abi::__cxa_demangle(sym, nullptr, nullptr, &status), &std::free);
  return status == 0 && out ? std::string(out.get()) : std::string(sym);
}

std::string hex(std::uintptr_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%lx", static_cast<unsigned long>(v));
  return buf;
}

bool addr2line_disabled() {
  const char* off = std::getenv("PROBEXEC_NO_ADDR2LINE");
  return off && *off && *off != '0';
}

}  // namespace

namespace {
// Index of `pc` in the first n frames, or -1.
int find_frame(void* const* pcs, int n, const void* pc) {
  for (int i = 0; i < n; ++i) {
    if (pcs[i] == pc) return i;
  }
  return -1;
}
}  // namespace

namespace {
struct UnwindState {
  void** pcs;
  int n;
  int max;
  const void* stop;
};

_Unwind_Reason_Code collect_frame(struct _Unwind_Context* ctx, void* arg) {
  auto* st = static_cast<UnwindState*>(arg);
  void* pc = reinterpret_cast<void*>(_Unwind_GetIP(ctx));
  if (!pc || pc == st->stop || st->n >= st->max) return _URC_END_OF_STACK;
  st->pcs[st->n++] = pc;
  return _URC_NO_REASON;
}

}  // namespace

void AddressBook::set_model_entry(const void* entry_return_pc) {
  // Same runner call site as last time: same depth (the serve loop does not recurse).
  if (entry_return_pc == entry_pc_ && entry_depth_ > 0) return;
  entry_pc_ = entry_return_pc;
  stop_pc_ = nullptr;
  void* pcs[256];
  int n = backtrace(pcs, 256);
  int i = find_frame(pcs, n, entry_return_pc);
  // Frames from the model runner's caller to the bottom; +1 leaves out the runner itself.
  entry_depth_ = (i < 0 || n == 256) ? 0 : n - i + 1;
}

std::uint64_t AddressBook::frame_key(void* pc) {
  auto raw = reinterpret_cast<std::uintptr_t>(pc);
  auto it = frame_keys_.find(raw);
  if (it != frame_keys_.end()) return it->second;
  Dl_info dl{};
  std::uint64_t key;
  if (dladdr(pc, &dl) && dl.dli_fname) {
    const char* mod = basename_of(dl.dli_fname);
    std::uintptr_t offset = raw - reinterpret_cast<std::uintptr_t>(dl.dli_fbase);
    // A non-PIE executable's symbols hold absolute addresses, a PIE's or a library's offsets.
    const auto* ehdr = static_cast<const ElfW(Ehdr)*>(dl.dli_fbase);
    const std::uintptr_t at = ehdr && ehdr->e_type == ET_EXEC ? raw : offset;
    // The return address follows the call; the call itself (one byte back) is in the function
    // even when it is the function's last instruction.
    const FunctionSymbol* fn = at > 0 ? functions(dl).find(at - 1) : nullptr;
    if (fn) {
      key = mix(mix(hash_bytes(mod, std::strlen(mod), 0), fn->name_hash), at - fn->start);
    } else {
      key = mix(hash_bytes(mod, std::strlen(mod), 0), offset);  // no symbol: the module offset
    }
  } else {
    key = mix(0, raw);
  }
  frame_keys_.emplace(raw, key);
  return key;
}

const FunctionTable& AddressBook::functions(const Dl_info& module) {
  auto it = function_tables_.find(module.dli_fbase);
  if (it == function_tables_.end()) {
    // The main program is named as it was started (perhaps a relative path, since left behind):
    // read it through /proc. It is the module holding the program headers the kernel mapped.
    Dl_info main{};
    const bool is_main = dladdr(reinterpret_cast<void*>(getauxval(AT_PHDR)), &main) && main.dli_fbase == module.dli_fbase;
    auto table = std::make_unique<FunctionTable>(is_main ? std::string("/proc/self/exe") : std::string(module.dli_fname));
    it = function_tables_.emplace(module.dli_fbase, std::move(table)).first;
  }
  return *it->second;
}

std::uint64_t AddressBook::capture(const void* caller_pc, DrawKind kind, std::uint8_t dist_type, const std::string& name,
                                   const std::string& explicit_address) {
  std::uint64_t id = mix(mix(hash_string(name), static_cast<std::uint64_t>(kind)), dist_type);
  if (!explicit_address.empty()) {
    id = mix(id, hash_string(explicit_address));
    if (!infos_.count(id)) {
      AddressInfo info{id, explicit_address, name, dist_type, kind, ""};
      infos_.emplace(id, std::move(info));
    }
    return id;
  }
  void* pcs[kMaxFrames];
  int n, end;
  if (stop_pc_) {
    // Unwinding costs thousands of instructions a frame: stop at the model runner.
    UnwindState st{pcs, 0, kMaxFrames, stop_pc_};
    _Unwind_Backtrace(collect_frame, &st);
    n = end = st.n;
  } else {
    n = backtrace(pcs, kMaxFrames);
    // Frames below the model entry (the serve loop, main, libc) are the same for every draw.
    end = n;
    if (entry_depth_ > 0 && n < kMaxFrames) {
      end = n - entry_depth_;
      if (end > 0) stop_pc_ = pcs[end];  // the model runner's frame: unwind no further next time
    }
  }
  int begin = find_frame(pcs, n, caller_pc);
  if (begin < 0) begin = 0;
  if (end <= begin) end = n;
  for (int i = begin; i < end; ++i) id = mix(id, frame_key(pcs[i]));
  if (!infos_.count(id)) infos_.emplace(id, describe(id, pcs + begin, end - begin, kind, dist_type, name));
  return id;
}

std::vector<std::pair<std::string, std::string>> AddressBook::source_lines(const std::string& module,
                                                                        const std::vector<std::uintptr_t>& offsets) {
  if (addr2line_disabled() || offsets.empty()) return std::vector<std::pair<std::string, std::string>>(offsets.size());
  traces_without_lookup_ = 0;
  auto& resolver = resolvers_[module];
  if (!resolver) resolver = std::make_unique<LineResolver>(module);
  return resolver->resolve(offsets);
}

void AddressBook::end_trace() {
  // New addresses come thick in a simulator's first traces and rarely after: the co-processes
  // (about 20 MB each) are let go once a while has passed without one, and started again if one
  // comes.
  if (!resolvers_.empty() && ++traces_without_lookup_ >= kResolverIdleTraces) resolvers_.clear();
}

AddressInfo AddressBook::describe(std::uint64_t id, void* const* pcs, int n, DrawKind kind, std::uint8_t dist_type,
                                  const std::string& name) {
  struct Frame {
    std::string module_path;
    std::uintptr_t offset = 0;
    std::uintptr_t lookup = 0;  // what addr2line is given
    std::string symbol;
  };
  std::vector<Frame> frames(static_cast<std::size_t>(n));
  std::map<std::string, std::vector<std::size_t>> by_module;
  for (int i = 0; i < n; ++i) {
    Dl_info dl{};
    auto raw = reinterpret_cast<std::uintptr_t>(pcs[i]);
    auto& f = frames[static_cast<std::size_t>(i)];
    if (dladdr(pcs[i], &dl) && dl.dli_fname) {
      f.module_path = dl.dli_fname;
      f.offset = raw - reinterpret_cast<std::uintptr_t>(dl.dli_fbase);
      // A non-PIE executable is linked at its load address: addr2line wants absolute addresses.
      const auto* ehdr = static_cast<const ElfW(Ehdr)*>(dl.dli_fbase);
      if (ehdr && ehdr->e_type == ET_EXEC) f.lookup = raw;
      else f.lookup = f.offset;
      if (dl.dli_sname && dl.dli_saddr) {
        f.symbol = demangle(dl.dli_sname) + "+" + hex(raw - reinterpret_cast<std::uintptr_t>(dl.dli_saddr));
      }
      by_module[f.module_path].push_back(static_cast<std::size_t>(i));
    } else {
      f.offset = raw;
    }
  }
  std::vector<std::string> sources(frames.size());
  for (const auto& [module, idx] : by_module) {
    std::vector<std::uintptr_t> offs;
    // A return address points after the call; the call itself is one byte earlier.
    for (auto i : idx) offs.push_back(frames[i].lookup - 1);
    auto resolved = source_lines(module, offs);
    for (std::size_t k = 0; k < idx.size(); ++k) {
      auto& f = frames[idx[k]];
      if (f.symbol.empty() && !resolved[k].first.empty()) f.symbol = resolved[k].first + "@" + hex(f.offset);
      sources[idx[k]] = resolved[k].second;
    }
  }
  AddressInfo info;
  info.id = id;
  info.name = name;
  info.dist_type = dist_type;
  info.kind = kind;
  bool first = true;
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const auto& f = frames[i];
    // std::function's call operator sits between serve() and the model: noise in the readable
    // form (it still counts in the id, where it is the same for every draw).
    if (f.symbol.rfind("std::_Function_handler<", 0) == 0 || f.symbol.rfind("std::__invoke", 0) == 0) continue;
    if (!first) {
      info.address += "|";
      info.source += "|";
    }
    info.address += f.symbol.empty() ? std::string(basename_of(f.module_path.c_str())) + "+" + hex(f.offset) : f.symbol;
    info.source += sources[i];
    first = false;
  }
  return info;
}

AddressBook& address_book() {
  thread_local AddressBook book;
  return book;
}

}  // namespace probexec::detail
