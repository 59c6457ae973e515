// FlatBuffers encode/decode shared by the simulator side (server) and the engine's codec module.
// The only place that knows the generated schema types.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "address.hpp"
#include "ppx_generated.h"
#include "probexec/probexec.hpp"

namespace probexec::detail {

using Builder = flatbuffers::FlatBufferBuilder;

// Verifies a buffer (with or without the "PPXF" identifier) and returns its root, or throws
// probexec::error saying why it was refused.
const ppx::Message* parse_message(const std::uint8_t* data, std::size_t size);

const char* body_name(ppx::MessageBody type);

flatbuffers::Offset<ppx::Tensor> write_tensor(Builder& b, const double* data, std::size_t n, const int* shape, std::size_t ndim);
flatbuffers::Offset<ppx::Tensor> write_tensor(Builder& b, const Tensor& t);
Tensor read_tensor(const ppx::Tensor* t);
flatbuffers::Offset<void> write_distribution(Builder& b, const Distribution& d);
// Decodes a wire distribution union into (type, parameter tensors); throws on unknown types.
Distribution read_distribution(ppx::Distribution type, const void* table);

// Finishes `body` as a Message and returns the buffer (valid until the builder is reused).
template <typename T>
void finish(Builder& b, flatbuffers::Offset<T> body, ppx::MessageBody type) {
  auto msg = ppx::CreateMessage(b, type, body.Union());
  ppx::FinishMessageBuffer(b, msg);
}

// Columnar accumulator of draws (one row per draw), flushed into a DrawBatch table.
class DrawRecorder {
 public:
  void add(std::uint64_t id, std::uint32_t instance, DrawKind kind, std::uint8_t flags, const Distribution* dist,
           const Tensor& value, bool keep_value);
  void begin_trace() {
    trace_offsets_.push_back(static_cast<std::uint32_t>(rows()));
    counted_.clear();
  }
  void end_trace(const Tensor& result, double seconds);
  void drop_trace();  // forget the rows of the trace begun last (it failed)
  std::size_t rows() const { return ids_.size(); }
  // Read access to the columns (standalone output).
  const std::vector<std::uint64_t>& ids() const { return ids_; }
  const std::vector<std::uint32_t>& instances() const { return instances_; }
  const std::vector<std::uint8_t>& kinds() const { return kinds_; }
  const std::vector<std::uint8_t>& flags() const { return flags_; }
  const std::vector<std::uint32_t>& param_offsets() const { return param_offsets_; }
  const std::vector<double>& params() const { return params_; }
  const std::vector<std::uint32_t>& value_offsets() const { return value_offsets_; }
  const std::vector<double>& values() const { return values_; }
  const std::vector<std::uint32_t>& trace_offsets() const { return trace_offsets_; }
  bool empty() const { return ids_.empty() && trace_results_.empty(); }
  void clear();
  // Writes the batch. Ids in `sent` are already known to the peer; the others get an AddressInfo
  // and are added to `sent`.
  flatbuffers::Offset<ppx::DrawBatch> write(Builder& b, std::unordered_set<std::uint64_t>& sent, bool streaming,
                                            const std::uint64_t* also_id = nullptr);

 private:
  std::vector<std::uint64_t> ids_;
  std::vector<std::uint32_t> instances_;
  std::vector<std::uint8_t> kinds_, flags_, dist_types_;
  std::vector<std::uint32_t> param_offsets_{0}, value_offsets_{0}, shape_offsets_{0};
  std::vector<double> params_, values_;
  std::vector<int> shapes_;
  std::vector<std::uint32_t> trace_offsets_;
  std::vector<Tensor> trace_results_;
  std::vector<double> wall_times_;
  // Uncontrolled draws whose values are not kept become one row per address with a count: a
  // shower's thousands of spot draws cost a few rows, not thousands.
  std::vector<std::uint32_t> counts_;
  std::unordered_map<std::uint64_t, std::size_t> counted_;  // address id -> its row, this trace
};

// kSimulated: an observation with no data (the model gave no value, nor did the engine), its value
// drawn here: the engine leaves it out of the likelihood.
enum DrawFlags : std::uint8_t { kControlled = 1, kReplace = 2, kValueOmitted = 4, kObserved = 8, kSimulated = 16 };

}  // namespace probexec::detail
