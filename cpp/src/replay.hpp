// Replay runs: one trace whose controlled draws reuse values the engine sent in the Run message,
// recorded whole and answered in one reply. An MCMC step changes one draw of the current trace and
// reruns the rest as it was; draw by draw that is a round trip per controlled draw (29 for a tau
// trace), here it is one.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>

#include "context.hpp"
#include "ppx_generated.h"
#include "wire.hpp"

namespace probexec::detail {

class ReplayContext : public Context {
 public:
  // Reads the values from `run`, whose buffer must outlive the trace.
  ReplayContext(Rng& rng, DrawRecorder& recorder, bool record_uncontrolled_values, const ppx::Run& run);

  Tensor on_sample(const Distribution& d, const SampleOptions& o, std::uint64_t id, std::uint32_t instance) override;
  void on_observe(const Distribution& d, const Tensor* value, const std::string& name, std::uint64_t id,
                  std::uint32_t instance) override;
  void on_tag(const Tensor& value, const std::string& name, std::uint64_t id, std::uint32_t instance) override;

 private:
  struct Key {
    std::uint64_t id;
    std::uint32_t instance;
    bool operator==(const Key& o) const { return id == o.id && instance == o.instance; }
  };
  struct KeyHash {
    std::size_t operator()(const Key& k) const { return std::hash<std::uint64_t>{}(k.id ^ (0x9e3779b97f4a7c15ULL * k.instance)); }
  };
  struct Span {
    const double* data;
    std::size_t size;
  };

  Rng& rng_;
  DrawRecorder& recorder_;
  bool record_uncontrolled_values_;
  std::unordered_map<Key, Span, KeyHash> values_;
  // Names the engine conditions on, with the value it sent for them (size 0: none sent).
  std::unordered_map<std::string, Span> observed_;
};

}  // namespace probexec::detail
