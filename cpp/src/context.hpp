// The engine context: what `sample`, `observe` and `tag` talk to on this thread.
//
// Exactly one context is active per thread (the only global of the front end). LocalContext draws
// from a seeded RNG (standalone runs, streaming traces); the server's RemoteContext asks the engine.
#pragma once

#include <cstdint>
#include <unordered_map>

#include "address.hpp"
#include "local_rng.hpp"
#include "probexec/probexec.hpp"

namespace probexec::detail {

class DrawRecorder;

class Context {
 public:
  virtual ~Context() = default;
  virtual Tensor on_sample(const Distribution& d, const SampleOptions& o, std::uint64_t id, std::uint32_t instance) = 0;
  virtual void on_observe(const Distribution& d, const Tensor* value, const std::string& name, std::uint64_t id,
                          std::uint32_t instance) = 0;
  virtual void on_tag(const Tensor& value, const std::string& name, std::uint64_t id, std::uint32_t instance) = 0;

  // Per-trace instance counter of an address id (1-based). Counters of earlier traces are reset
  // lazily by trace number, so a new trace frees and allocates nothing.
  std::uint32_t next_instance(std::uint64_t id) {
    auto& c = instances_[id];
    if (c.trace != trace_) c = {trace_, 0};
    return ++c.count;
  }
  void begin_trace() { ++trace_; }

 private:
  struct Counter {
    std::uint64_t trace = 0;
    std::uint32_t count = 0;
  };
  std::unordered_map<std::uint64_t, Counter> instances_;
  std::uint64_t trace_ = 1;
};

// Draws locally; optionally records every draw (streaming, standalone output).
class LocalContext : public Context {
 public:
  explicit LocalContext(std::uint64_t seed) : rng_(seed) {}
  Tensor on_sample(const Distribution& d, const SampleOptions& o, std::uint64_t id, std::uint32_t instance) override;
  void on_observe(const Distribution& d, const Tensor* value, const std::string& name, std::uint64_t id,
                  std::uint32_t instance) override;
  void on_tag(const Tensor& value, const std::string& name, std::uint64_t id, std::uint32_t instance) override;

  void set_recorder(DrawRecorder* r, bool record_uncontrolled_values) {
    recorder_ = r;
    record_uncontrolled_values_ = record_uncontrolled_values;
  }
  Rng& rng() { return rng_; }
  void reseed(std::uint64_t seed) { rng_.seed(seed); }

 private:
  Rng rng_;
  DrawRecorder* recorder_ = nullptr;
  bool record_uncontrolled_values_ = true;
};

Context& current_context();
// Makes `ctx` current for its lifetime on this thread, restoring the previous one after.
class ContextGuard {
 public:
  explicit ContextGuard(Context& ctx);
  ~ContextGuard();
  ContextGuard(const ContextGuard&) = delete;
  ContextGuard& operator=(const ContextGuard&) = delete;

 private:
  Context* previous_;
};

// Raised inside a model to abandon the trace (engine gone, engine restarted); never caught by
// `serve` as a model error.
struct TraceAborted {
  std::string reason;
};

}  // namespace probexec::detail
