// Addresses of draws: where in the simulator's code (which call stack) a draw happened.
//
// Capturing must be cheap because it happens on every draw: we take raw return addresses with
// backtrace(), map each to (module, function, offset in the function) through a per-thread
// cache, and hash those into a 64-bit id. It is the same in every process running the same
// binary (ASLR moves modules, not offsets), and in a rebuild where the functions on the stack did
// not change (see symbols.hpp). A frame in a module without a symbol table (fully stripped) is
// keyed by its module offset instead. The readable form (demangled function+offset, file:line) costs milliseconds, so it is
// made once per id, the first time the id is seen, through one addr2line co-process per module
// (line_resolver.hpp).
#pragma once

#include <dlfcn.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "probexec/probexec.hpp"
#include "line_resolver.hpp"
#include "symbols.hpp"

namespace probexec::detail {

enum class DrawKind : std::uint8_t { Sample = 0, Observe = 1, Tag = 2 };

struct AddressInfo {
  std::uint64_t id = 0;
  std::string address;  // "fn+0x1c|caller+0x40|..." innermost first, or the author's address
  std::string name;
  std::uint8_t dist_type = 0;
  DrawKind kind = DrawKind::Sample;
  std::string source;   // "file.cpp:42|file.cpp:90|..." where debug info exists
};

class AddressBook {
 public:
  // Id of the draw being made now. `caller_pc` is the return address into the user's code (taken
  // with __builtin_return_address in the public API function): frames before it belong to
  // probexec (or to a sanitizer's interceptor), so they are found by value, not counted. Frames
  // at and below the model's entry (see set_model_entry) are left out, so the address is the same
  // whoever runs the model.
  std::uint64_t capture(const void* caller_pc, DrawKind kind, std::uint8_t dist_type, const std::string& name,
                        const std::string& explicit_address);
  const AddressInfo& info(std::uint64_t id) const { return infos_.at(id); }

  // Called by the function that runs the model, with its own return address: frames from there to
  // the bottom of the stack are not part of any address.
  void set_model_entry(const void* entry_return_pc);
  // Called after each trace: lets the addr2line co-processes go once no new address has come
  // for a while.
  void end_trace();
  void clear_model_entry() {
    entry_depth_ = 0;
    entry_pc_ = stop_pc_ = nullptr;
  }

 private:
  static constexpr int kMaxFrames = 64;
  static constexpr int kResolverIdleTraces = 64;
  std::uint64_t frame_key(void* pc);
  const FunctionTable& functions(const Dl_info& module);
  AddressInfo describe(std::uint64_t id, void* const* pcs, int n, DrawKind kind, std::uint8_t dist_type,
                       const std::string& name);
  std::vector<std::pair<std::string, std::string>> source_lines(const std::string& module,
                                                                const std::vector<std::uintptr_t>& offsets);

  std::unordered_map<std::uintptr_t, std::uint64_t> frame_keys_;
  std::unordered_map<const void*, std::unique_ptr<FunctionTable>> function_tables_;  // by module base
  std::unordered_map<std::uint64_t, AddressInfo> infos_;
  std::unordered_map<std::string, std::unique_ptr<LineResolver>> resolvers_;  // by module path
  int traces_without_lookup_ = 0;
  int entry_depth_ = 0;
  const void* entry_pc_ = nullptr;  // the model runner's return address the depth was computed for
  // Return address inside the model runner (its call of the model): once known, unwinding stops
  // there, so a draw costs the user's stack depth, not the whole stack down to main().
  const void* stop_pc_ = nullptr;
};

// The calling thread's address book (addresses are a property of the code, not of a connection).
AddressBook& address_book();

std::uint64_t hash_bytes(const void* data, std::size_t n, std::uint64_t seed);
std::uint64_t hash_string(const std::string& s, std::uint64_t seed = 0x9e3779b97f4a7c15ULL);

}  // namespace probexec::detail
