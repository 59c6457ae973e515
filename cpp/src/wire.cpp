#include "wire.hpp"

#include <algorithm>

namespace probexec::detail {

const ppx::Message* parse_message(const std::uint8_t* data, std::size_t size) {
  if (size < 8) throw error("malformed message: " + std::to_string(size) + " bytes is too short for a FlatBuffers buffer");
  flatbuffers::Verifier verifier(data, size);
  // nullptr identifier: PPX v1 peers finish their buffers without "PPXF"; accept both.
  if (!verifier.VerifyBuffer<ppx::Message>(nullptr)) {
    throw error("malformed message: " + std::to_string(size) + " bytes failed FlatBuffers verification");
  }
  const auto* msg = ppx::GetMessage(data);
  auto type = msg->body_type();
  if (type == ppx::MessageBody::NONE || type > ppx::MessageBody::MAX) {
    throw error("unknown message type " + std::to_string(static_cast<int>(type)) + " (this peer knows 1.." +
                std::to_string(static_cast<int>(ppx::MessageBody::MAX)) + ")");
  }
  if (!msg->body()) throw error(std::string("malformed message: ") + body_name(type) + " has no body table");
  return msg;
}

const char* body_name(ppx::MessageBody type) {
  auto i = static_cast<int>(type);
  if (i < 0 || i > static_cast<int>(ppx::MessageBody::MAX)) return "Unknown";
  return ppx::EnumNamesMessageBody()[i];
}

flatbuffers::Offset<ppx::Tensor> write_tensor(Builder& b, const double* data, std::size_t n, const int* shape, std::size_t ndim) {
  auto d = b.CreateVector(data, n);
  auto s = b.CreateVector(shape, ndim);
  return ppx::CreateTensor(b, d, s);
}

flatbuffers::Offset<ppx::Tensor> write_tensor(Builder& b, const Tensor& t) {
  return write_tensor(b, t.data().data(), t.numel(), t.shape().data(), t.shape().size());
}

Tensor read_tensor(const ppx::Tensor* t) {
  if (!t || !t->data()) return Tensor();
  std::vector<double> data(t->data()->begin(), t->data()->end());
  std::vector<int> shape;
  if (t->shape()) shape.assign(t->shape()->begin(), t->shape()->end());
  std::size_t n = 1;
  for (int s : shape) n *= static_cast<std::size_t>(s < 0 ? 0 : s);
  if (shape.empty() || n != data.size()) {
    // A scalar may come with shape [] or [1]; anything inconsistent is treated as flat.
    if (data.size() == 1) shape.clear();
    else if (n != data.size()) shape = {static_cast<int>(data.size())};
  }
  return Tensor(std::move(data), std::move(shape));
}

flatbuffers::Offset<void> write_distribution(Builder& b, const Distribution& d) {
  const auto& p = d.params();
  auto t = [&](std::size_t i) { return write_tensor(b, p[i]); };
  switch (d.type()) {
    case DistType::Normal: { auto a = t(0), c = t(1); return ppx::CreateNormal(b, a, c).Union(); }
    case DistType::Uniform: { auto a = t(0), c = t(1); return ppx::CreateUniform(b, a, c).Union(); }
    case DistType::Categorical: { auto a = t(0); return ppx::CreateCategorical(b, a).Union(); }
    case DistType::Poisson: { auto a = t(0); return ppx::CreatePoisson(b, a).Union(); }
    case DistType::Bernoulli: { auto a = t(0); return ppx::CreateBernoulli(b, a).Union(); }
    case DistType::Beta: { auto a = t(0), c = t(1); return ppx::CreateBeta(b, a, c).Union(); }
    case DistType::Exponential: { auto a = t(0); return ppx::CreateExponential(b, a).Union(); }
    case DistType::Gamma: { auto a = t(0), c = t(1); return ppx::CreateGamma(b, a, c).Union(); }
    case DistType::LogNormal: { auto a = t(0), c = t(1); return ppx::CreateLogNormal(b, a, c).Union(); }
    case DistType::Binomial: { auto a = t(0), c = t(1); return ppx::CreateBinomial(b, a, c).Union(); }
    case DistType::Weibull: { auto a = t(0), c = t(1); return ppx::CreateWeibull(b, a, c).Union(); }
  }
  throw error("cannot encode distribution type " + std::to_string(static_cast<int>(d.type())));
}

Distribution read_distribution(ppx::Distribution type, const void* table) {
  if (!table) throw error("malformed message: distribution union without a table");
  auto need = [](const ppx::Tensor* t, const char* what) {
    if (!t || !t->data() || t->data()->size() == 0) throw error(std::string("malformed distribution: missing parameter ") + what);
    return read_tensor(t);
  };
  switch (type) {
    case ppx::Distribution::Normal: { auto* d = static_cast<const ppx::Normal*>(table); return Normal(need(d->mean(), "Normal.mean"), need(d->stddev(), "Normal.stddev")); }
    case ppx::Distribution::Uniform: { auto* d = static_cast<const ppx::Uniform*>(table); return Uniform(need(d->low(), "Uniform.low"), need(d->high(), "Uniform.high")); }
    case ppx::Distribution::Categorical: { auto* d = static_cast<const ppx::Categorical*>(table); return Categorical(need(d->probs(), "Categorical.probs")); }
    case ppx::Distribution::Poisson: { auto* d = static_cast<const ppx::Poisson*>(table); return Poisson(need(d->rate(), "Poisson.rate")); }
    case ppx::Distribution::Bernoulli: { auto* d = static_cast<const ppx::Bernoulli*>(table); return Bernoulli(need(d->probs(), "Bernoulli.probs")); }
    case ppx::Distribution::Beta: { auto* d = static_cast<const ppx::Beta*>(table); return Beta(need(d->concentration1(), "Beta.concentration1"), need(d->concentration0(), "Beta.concentration0")); }
    case ppx::Distribution::Exponential: { auto* d = static_cast<const ppx::Exponential*>(table); return Exponential(need(d->rate(), "Exponential.rate")); }
    case ppx::Distribution::Gamma: { auto* d = static_cast<const ppx::Gamma*>(table); return Gamma(need(d->concentration(), "Gamma.concentration"), need(d->rate(), "Gamma.rate")); }
    case ppx::Distribution::LogNormal: { auto* d = static_cast<const ppx::LogNormal*>(table); return LogNormal(need(d->loc(), "LogNormal.loc"), need(d->scale(), "LogNormal.scale")); }
    case ppx::Distribution::Binomial: { auto* d = static_cast<const ppx::Binomial*>(table); return Binomial(need(d->total_count(), "Binomial.total_count"), need(d->probs(), "Binomial.probs")); }
    case ppx::Distribution::Weibull: { auto* d = static_cast<const ppx::Weibull*>(table); return Weibull(need(d->scale(), "Weibull.scale"), need(d->concentration(), "Weibull.concentration")); }
    default: break;
  }
  throw error("unknown distribution type " + std::to_string(static_cast<int>(type)));
}

void DrawRecorder::add(std::uint64_t id, std::uint32_t instance, DrawKind kind, std::uint8_t flags, const Distribution* dist,
                       const Tensor& value, bool keep_value) {
  if (!keep_value && kind == DrawKind::Sample && !(flags & kControlled)) {
    auto it = counted_.find(id);
    if (it != counted_.end()) {
      ++counts_[it->second];
      return;
    }
    counted_.emplace(id, ids_.size());
  }
  counts_.push_back(1);
  ids_.push_back(id);
  instances_.push_back(instance);
  kinds_.push_back(static_cast<std::uint8_t>(kind));
  dist_types_.push_back(dist ? static_cast<std::uint8_t>(dist->type()) : 0);
  if (dist) {
    // Broadcast scalar parameters to the value's size so every parameter has the same length
    // (Categorical keeps its probs as they are).
    std::size_t n = dist->type() == DistType::Categorical ? 0 : dist->value_numel();
    for (const auto& p : dist->params()) {
      if (n > 1 && p.numel() == 1) params_.insert(params_.end(), n, p.data()[0]);
      else params_.insert(params_.end(), p.data().begin(), p.data().end());
    }
  }
  param_offsets_.push_back(static_cast<std::uint32_t>(params_.size()));
  if (keep_value) {
    values_.insert(values_.end(), value.data().begin(), value.data().end());
    shapes_.insert(shapes_.end(), value.shape().begin(), value.shape().end());
  } else {
    flags |= kValueOmitted;
  }
  flags_.push_back(flags);
  value_offsets_.push_back(static_cast<std::uint32_t>(values_.size()));
  shape_offsets_.push_back(static_cast<std::uint32_t>(shapes_.size()));
}

void DrawRecorder::end_trace(const Tensor& result, double seconds) {
  trace_results_.push_back(result);
  wall_times_.push_back(seconds);
}

void DrawRecorder::drop_trace() {
  if (trace_offsets_.empty()) return;
  std::size_t start = trace_offsets_.back();
  trace_offsets_.pop_back();
  counted_.clear();
  counts_.resize(start);
  ids_.resize(start);
  instances_.resize(start);
  kinds_.resize(start);
  flags_.resize(start);
  dist_types_.resize(start);
  param_offsets_.resize(start + 1);
  value_offsets_.resize(start + 1);
  shape_offsets_.resize(start + 1);
  params_.resize(param_offsets_.back());
  values_.resize(value_offsets_.back());
  shapes_.resize(shape_offsets_.back());
}

void DrawRecorder::clear() {
  counts_.clear();
  counted_.clear();
  ids_.clear();
  instances_.clear();
  kinds_.clear();
  flags_.clear();
  dist_types_.clear();
  param_offsets_.assign(1, 0);
  value_offsets_.assign(1, 0);
  shape_offsets_.assign(1, 0);
  params_.clear();
  values_.clear();
  shapes_.clear();
  trace_offsets_.clear();
  trace_results_.clear();
  wall_times_.clear();
}

flatbuffers::Offset<ppx::DrawBatch> DrawRecorder::write(Builder& b, std::unordered_set<std::uint64_t>& sent, bool streaming,
                                                       const std::uint64_t* also_id) {
  std::vector<flatbuffers::Offset<ppx::AddressInfo>> infos;
  const auto& book = address_book();
  auto describe = [&](std::uint64_t id) {
    if (!sent.insert(id).second) return;
    const auto& a = book.info(id);
    infos.push_back(ppx::CreateAddressInfoDirect(b, a.id, a.address.c_str(), a.name.c_str(), a.dist_type,
                                                 static_cast<std::uint8_t>(a.kind), a.source.c_str()));
  };
  for (auto id : ids_) describe(id);
  if (also_id) describe(*also_id);
  auto v_ids = b.CreateVector(ids_);
  auto v_inst = b.CreateVector(instances_);
  auto v_kind = b.CreateVector(kinds_);
  auto v_flags = b.CreateVector(flags_);
  auto v_dt = b.CreateVector(dist_types_);
  auto v_po = b.CreateVector(param_offsets_);
  auto v_p = b.CreateVector(params_);
  auto v_vo = b.CreateVector(value_offsets_);
  auto v_v = b.CreateVector(values_);
  auto v_so = b.CreateVector(shape_offsets_);
  auto v_s = b.CreateVector(shapes_);
  flatbuffers::Offset<flatbuffers::Vector<std::uint32_t>> v_to;
  flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<ppx::Tensor>>> v_res;
  flatbuffers::Offset<flatbuffers::Vector<double>> v_wall;
  if (streaming) {
    auto offsets = trace_offsets_;
    offsets.push_back(static_cast<std::uint32_t>(rows()));
    v_to = b.CreateVector(offsets);
    std::vector<flatbuffers::Offset<ppx::Tensor>> res;
    for (const auto& r : trace_results_) res.push_back(write_tensor(b, r));
    v_res = b.CreateVector(res);
    v_wall = b.CreateVector(wall_times_);
  }
  auto v_addr = b.CreateVector(infos);
  bool all_single = std::all_of(counts_.begin(), counts_.end(), [](std::uint32_t c) { return c == 1; });
  flatbuffers::Offset<flatbuffers::Vector<std::uint32_t>> v_count = all_single ? 0 : b.CreateVector(counts_);
  return ppx::CreateDrawBatch(b, v_ids, v_inst, v_kind, v_flags, v_dt, v_po, v_p, v_vo, v_v, v_so, v_s, v_to, v_res, v_wall, v_addr,
                              v_count);
}

}  // namespace probexec::detail
