// The public draw functions. Each is a thin, non-inlined entry that hands its own return address
// (a pc in the user's code) to the address capture, which starts the address at that frame.
#include <memory>

#include "address.hpp"
#include "context.hpp"
#include "wire.hpp"

namespace probexec {
namespace detail {

namespace {
thread_local Context* current = nullptr;

LocalContext& default_context() {
  thread_local LocalContext ctx(0x5eed);
  return ctx;
}
}  // namespace

Context& current_context() { return current ? *current : default_context(); }
ContextGuard::ContextGuard(Context& ctx) : previous_(current) { current = &ctx; }
ContextGuard::~ContextGuard() { current = previous_; }

Tensor LocalContext::on_sample(const Distribution& d, const SampleOptions& o, std::uint64_t id, std::uint32_t instance) {
  Tensor v = draw_local(d, rng_);
  if (recorder_) {
    std::uint8_t flags = (o.control ? kControlled : 0) | (o.replace ? kReplace : 0);
    recorder_->add(id, instance, DrawKind::Sample, flags, &d, v, o.control || record_uncontrolled_values_);
  }
  return v;
}

void LocalContext::on_observe(const Distribution& d, const Tensor* value, const std::string&, std::uint64_t id,
                              std::uint32_t instance) {
  if (!recorder_) return;
  // No value given: simulate the observation, so a standalone run generates data.
  if (value) {
    recorder_->add(id, instance, DrawKind::Observe, 0, &d, *value, true);
  } else {
    recorder_->add(id, instance, DrawKind::Observe, kSimulated, &d, draw_local(d, rng_), true);
  }
}

void LocalContext::on_tag(const Tensor& value, const std::string&, std::uint64_t id, std::uint32_t instance) {
  if (recorder_) recorder_->add(id, instance, DrawKind::Tag, 0, nullptr, value, true);
}

}  // namespace detail

// Each public function captures the address itself (one probexec frame above the user's: every
// frame costs thousands of instructions to unwind), starting at its own return address.
__attribute__((noinline)) Tensor sample(const Distribution& dist, const SampleOptions& options) {
  auto& book = detail::address_book();
  auto id = book.capture(__builtin_return_address(0), detail::DrawKind::Sample, static_cast<std::uint8_t>(dist.type()),
                         options.name, options.address);
  auto& ctx = detail::current_context();
  return ctx.on_sample(dist, options, id, ctx.next_instance(id));
}

__attribute__((noinline)) Tensor sample(const Distribution& dist, const std::string& name, bool control) {
  SampleOptions o;
  o.name = name;
  o.control = control;
  auto id = detail::address_book().capture(__builtin_return_address(0), detail::DrawKind::Sample,
                                           static_cast<std::uint8_t>(dist.type()), name, "");
  auto& ctx = detail::current_context();
  return ctx.on_sample(dist, o, id, ctx.next_instance(id));
}

namespace {
void observe_at(const void* caller, const Distribution& dist, const Tensor* value, const std::string& name) {
  auto id = detail::address_book().capture(caller, detail::DrawKind::Observe, static_cast<std::uint8_t>(dist.type()), name, "");
  auto& ctx = detail::current_context();
  ctx.on_observe(dist, value, name, id, ctx.next_instance(id));
}
}  // namespace

__attribute__((noinline)) void observe(const Distribution& dist, const Tensor& value, const std::string& name) {
  observe_at(__builtin_return_address(0), dist, &value, name);
}

__attribute__((noinline)) void observe(const Distribution& dist, const std::string& name) {
  observe_at(__builtin_return_address(0), dist, nullptr, name);
}

__attribute__((noinline)) void tag(const Tensor& value, const std::string& name) {
  auto id = detail::address_book().capture(__builtin_return_address(0), detail::DrawKind::Tag, 0, name, "");
  auto& ctx = detail::current_context();
  ctx.on_tag(value, name, id, ctx.next_instance(id));
}

void seed(std::uint64_t value) {
  auto& ctx = detail::current_context();
  if (auto* local = dynamic_cast<detail::LocalContext*>(&ctx)) local->reseed(value);
}

}  // namespace probexec
