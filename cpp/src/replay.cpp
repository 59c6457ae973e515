#include "replay.hpp"

#include <limits>

namespace probexec::detail {

ReplayContext::ReplayContext(Rng& rng, DrawRecorder& recorder, bool record_uncontrolled_values, const ppx::Run& run)
    : rng_(rng), recorder_(recorder), record_uncontrolled_values_(record_uncontrolled_values) {
  const auto* replay = run.replay();
  if (replay && replay->address_id() && replay->address_id()->size()) {
    const auto* ids = replay->address_id();
    const auto* inst = replay->instance();
    const auto* off = replay->value_offsets();
    const auto* vals = replay->values();
    std::size_t n = ids->size();
    if (!inst || inst->size() != n || !off || off->size() != n + 1 || !vals) {
      throw error("malformed Run: its replay rows need an instance per address id and address ids + 1 value offsets");
    }
    values_.reserve(n);
    for (std::size_t r = 0; r < n; ++r) {
      std::uint32_t a = off->Get(r), b = off->Get(r + 1);
      if (a > b || b > vals->size()) throw error("malformed Run: replay value offsets out of range");
      values_[Key{ids->Get(r), inst->Get(r)}] = Span{vals->data() + a, b - a};
    }
  }
  if (const auto* names = run.observed()) {
    const auto* given = run.observed_values();
    for (flatbuffers::uoffset_t i = 0; i < names->size(); ++i) {
      Span v{nullptr, 0};
      const ppx::Tensor* t = given && i < given->size() ? given->Get(i) : nullptr;
      if (t && t->data()) v = Span{t->data()->data(), t->data()->size()};
      observed_[names->Get(i)->str()] = v;
    }
  }
}

Tensor ReplayContext::on_sample(const Distribution& d, const SampleOptions& o, std::uint64_t id, std::uint32_t instance) {
  std::uint8_t flags = (o.control ? kControlled : 0) | (o.replace ? kReplace : 0);
  if (o.control) {
    const Span* given = nullptr;
    if (!observed_.empty()) {
      // A sample the engine observes by name: fixed to its data. One it sent no value for, or a
      // value of another size, is left unflagged; the engine then reruns the trace draw by draw.
      auto it = observed_.find(address_book().info(id).name);
      if (it != observed_.end() && it->second.size == d.value_numel()) {
        given = &it->second;
        flags |= kObserved;
      }
    }
    if (!given) {
      auto it = values_.find(Key{id, instance});
      if (it != values_.end()) {
        given = &it->second;
        if (given->size != d.value_numel()) {
          throw error("engine sent " + std::to_string(given->size) + " values for a draw of " + std::to_string(d.value_numel()) +
                      " at address '" + address_book().info(id).address + "'");
        }
      }
    }
    if (given) {
      Tensor v(std::vector<double>(given->data, given->data + given->size), d.value_shape());
      recorder_.add(id, instance, DrawKind::Sample, flags, &d, v, true);
      return v;
    }
  }
  Tensor v = draw_local(d, rng_);
  recorder_.add(id, instance, DrawKind::Sample, flags, &d, v, o.control || record_uncontrolled_values_);
  return v;
}

void ReplayContext::on_observe(const Distribution& d, const Tensor* value, const std::string& name, std::uint64_t id,
                               std::uint32_t instance) {
  if (value) {
    recorder_.add(id, instance, DrawKind::Observe, 0, &d, *value, true);
  } else if (!name.empty() && observed_.count(name)) {
    // The engine puts its data here; simulating it would be thrown away.
    Tensor placeholder(std::vector<double>(d.value_numel(), std::numeric_limits<double>::quiet_NaN()), d.value_shape());
    recorder_.add(id, instance, DrawKind::Observe, 0, &d, placeholder, true);
  } else {
    recorder_.add(id, instance, DrawKind::Observe, kSimulated, &d, draw_local(d, rng_), true);
  }
}

void ReplayContext::on_tag(const Tensor& value, const std::string&, std::uint64_t id, std::uint32_t instance) {
  recorder_.add(id, instance, DrawKind::Tag, 0, nullptr, value, true);
}

}  // namespace probexec::detail
