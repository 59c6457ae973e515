// probexec._core: the engine's codec, compiled from the same generated schema code as the C++
// front end. Per-draw decoding is on the engine's hot path; doing it here keeps it to about a
// microsecond and gives the engine the same FlatBuffers verification as the simulator.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "wire.hpp"

namespace py = pybind11;
using namespace probexec::detail;

namespace {

template <typename T>
py::array_t<T> vec_array(const flatbuffers::Vector<T>* v) {
  if (!v) return py::array_t<T>(0);
  return py::array_t<T>(static_cast<py::ssize_t>(v->size()), v->data());
}

py::object tensor_array(const ppx::Tensor* t) {
  if (!t || !t->data()) return py::none();
  const auto* d = t->data();
  std::vector<py::ssize_t> shape;
  py::ssize_t n = 1;
  if (t->shape()) {
    for (int s : *t->shape()) {
      shape.push_back(s);
      n *= s;
    }
  }
  // A scalar may arrive as shape [] or [1]: both become a 0-d array. Inconsistent shapes are an error.
  if (d->size() == 1 && (shape.empty() || (shape.size() == 1 && shape[0] == 1))) shape.clear();
  else if (shape.empty()) shape.push_back(static_cast<py::ssize_t>(d->size()));
  else if (n != static_cast<py::ssize_t>(d->size())) {
    throw probexec::error("malformed tensor: shape holds " + std::to_string(n) + " values but data has " + std::to_string(d->size()));
  }
  return py::array_t<double>(shape, d->data());
}

py::object str_or_empty(const flatbuffers::String* s) { return s ? py::str(s->c_str(), s->size()) : py::str(""); }

py::tuple dist_params(ppx::Distribution type, const void* table) {
  if (!table) throw probexec::error("malformed message: distribution union without a table");
  // Scalar parameters (the common case) become Python floats: cheaper to make than 0-d arrays,
  // and they let the engine's prior draw take NumPy's scalar fast path.
  auto p = [](const ppx::Tensor* t, const char* what) -> py::object {
    if (!t || !t->data() || t->data()->size() == 0) throw probexec::error(std::string("malformed distribution: missing parameter ") + what);
    if (t->data()->size() == 1 && (!t->shape() || t->shape()->size() == 0 || (t->shape()->size() == 1 && t->shape()->Get(0) == 1))) {
      return py::float_(t->data()->Get(0));
    }
    return tensor_array(t);
  };
  switch (type) {
    case ppx::Distribution::Normal: { auto* d = static_cast<const ppx::Normal*>(table); return py::make_tuple(p(d->mean(), "Normal.mean"), p(d->stddev(), "Normal.stddev")); }
    case ppx::Distribution::Uniform: { auto* d = static_cast<const ppx::Uniform*>(table); return py::make_tuple(p(d->low(), "Uniform.low"), p(d->high(), "Uniform.high")); }
    case ppx::Distribution::Categorical: { auto* d = static_cast<const ppx::Categorical*>(table); return py::make_tuple(p(d->probs(), "Categorical.probs")); }
    case ppx::Distribution::Poisson: { auto* d = static_cast<const ppx::Poisson*>(table); return py::make_tuple(p(d->rate(), "Poisson.rate")); }
    case ppx::Distribution::Bernoulli: { auto* d = static_cast<const ppx::Bernoulli*>(table); return py::make_tuple(p(d->probs(), "Bernoulli.probs")); }
    case ppx::Distribution::Beta: { auto* d = static_cast<const ppx::Beta*>(table); return py::make_tuple(p(d->concentration1(), "Beta.concentration1"), p(d->concentration0(), "Beta.concentration0")); }
    case ppx::Distribution::Exponential: { auto* d = static_cast<const ppx::Exponential*>(table); return py::make_tuple(p(d->rate(), "Exponential.rate")); }
    case ppx::Distribution::Gamma: { auto* d = static_cast<const ppx::Gamma*>(table); return py::make_tuple(p(d->concentration(), "Gamma.concentration"), p(d->rate(), "Gamma.rate")); }
    case ppx::Distribution::LogNormal: { auto* d = static_cast<const ppx::LogNormal*>(table); return py::make_tuple(p(d->loc(), "LogNormal.loc"), p(d->scale(), "LogNormal.scale")); }
    case ppx::Distribution::Binomial: { auto* d = static_cast<const ppx::Binomial*>(table); return py::make_tuple(p(d->total_count(), "Binomial.total_count"), p(d->probs(), "Binomial.probs")); }
    case ppx::Distribution::Weibull: { auto* d = static_cast<const ppx::Weibull*>(table); return py::make_tuple(p(d->scale(), "Weibull.scale"), p(d->concentration(), "Weibull.concentration")); }
    default: break;
  }
  throw probexec::error("unknown distribution type " + std::to_string(static_cast<int>(type)) + " (this engine knows 1..11)");
}

py::object draw_batch(const ppx::DrawBatch* b) {
  if (!b) return py::none();
  py::dict out;
  out["address_id"] = vec_array(b->address_id());
  out["instance"] = vec_array(b->instance());
  out["kind"] = vec_array(b->kind());
  out["flags"] = vec_array(b->flags());
  out["dist_type"] = vec_array(b->dist_type());
  out["param_offsets"] = vec_array(b->param_offsets());
  out["params"] = vec_array(b->params());
  out["value_offsets"] = vec_array(b->value_offsets());
  out["values"] = vec_array(b->values());
  out["shape_offsets"] = vec_array(b->shape_offsets());
  out["shapes"] = vec_array(b->shapes());
  out["trace_offsets"] = b->trace_offsets() ? py::object(vec_array(b->trace_offsets())) : py::none();
  py::list results;
  if (b->results()) for (const auto* t : *b->results()) results.append(tensor_array(t));
  out["results"] = results;
  out["wall_time"] = vec_array(b->wall_time());
  py::list addrs;
  if (b->addresses()) {
    for (const auto* a : *b->addresses()) {
      addrs.append(py::make_tuple(a->id(), str_or_empty(a->address()), str_or_empty(a->name()), a->dist_type(), a->kind(),
                                  str_or_empty(a->source())));
    }
  }
  out["addresses"] = addrs;
  out["count"] = b->count() ? py::object(vec_array(b->count())) : py::none();
  // Row-count consistency, so a malformed batch fails here and not deep inside the engine.
  std::size_t rows = b->address_id() ? b->address_id()->size() : 0;
  auto check = [&](std::size_t n, const char* what) {
    if (n != rows) throw probexec::error(std::string("malformed DrawBatch: ") + what + " has " + std::to_string(n) + " rows, expected " + std::to_string(rows));
  };
  check(b->instance() ? b->instance()->size() : 0, "instance");
  check(b->kind() ? b->kind()->size() : 0, "kind");
  check(b->flags() ? b->flags()->size() : 0, "flags");
  check(b->dist_type() ? b->dist_type()->size() : 0, "dist_type");
  check(b->param_offsets() ? b->param_offsets()->size() - 1 : 0, "param_offsets");
  check(b->value_offsets() ? b->value_offsets()->size() - 1 : 0, "value_offsets");
  check(b->shape_offsets() ? b->shape_offsets()->size() - 1 : 0, "shape_offsets");
  if (b->count()) check(b->count()->size(), "count");
  auto last = [](const flatbuffers::Vector<std::uint32_t>* o) -> std::size_t { return o && o->size() ? o->Get(o->size() - 1) : 0; };
  auto size = [](const auto* v) -> std::size_t { return v ? v->size() : 0; };
  if (last(b->param_offsets()) != size(b->params()) || last(b->value_offsets()) != size(b->values()) ||
      last(b->shape_offsets()) != size(b->shapes()) || (b->trace_offsets() && last(b->trace_offsets()) != rows)) {
    throw probexec::error("malformed DrawBatch: offsets do not match data lengths");
  }
  return out;
}

py::tuple decode(py::buffer buf) {
  py::buffer_info info = buf.request();
  const auto* data = static_cast<const std::uint8_t*>(info.ptr);
  auto size = static_cast<std::size_t>(info.size * info.itemsize);
  const ppx::Message* msg = parse_message(data, size);
  auto kind = static_cast<int>(msg->body_type());
  switch (msg->body_type()) {
    case ppx::MessageBody::Handshake: {
      auto* m = msg->body_as_Handshake();
      std::vector<std::string> caps;
      if (m->capabilities()) for (const auto* c : *m->capabilities()) caps.push_back(c->str());
      return py::make_tuple(kind, str_or_empty(m->system_name()), m->protocol_version(), caps);
    }
    case ppx::MessageBody::HandshakeResult: {
      auto* m = msg->body_as_HandshakeResult();
      std::vector<std::string> caps;
      if (m->capabilities()) for (const auto* c : *m->capabilities()) caps.push_back(c->str());
      return py::make_tuple(kind, str_or_empty(m->system_name()), str_or_empty(m->model_name()), m->protocol_version(), caps,
                            str_or_empty(m->error()));
    }
    case ppx::MessageBody::Run: {
      auto* m = msg->body_as_Run();
      return py::make_tuple(kind, static_cast<int>(m->mode()), m->num_traces(), m->seed(), m->has_seed(), m->record_uncontrolled_values());
    }
    case ppx::MessageBody::RunResult: {
      auto* m = msg->body_as_RunResult();
      return py::make_tuple(kind, tensor_array(m->result()), draw_batch(m->local_draws()));
    }
    case ppx::MessageBody::Sample: {
      auto* m = msg->body_as_Sample();
      return py::make_tuple(kind, str_or_empty(m->address()), str_or_empty(m->name()), static_cast<int>(m->distribution_type()),
                            dist_params(m->distribution_type(), m->distribution()), m->control(), m->replace(), m->address_id(),
                            m->instance(), draw_batch(m->local_draws()));
    }
    case ppx::MessageBody::SampleResult: {
      auto* m = msg->body_as_SampleResult();
      return py::make_tuple(kind, tensor_array(m->result()), m->draw_locally());
    }
    case ppx::MessageBody::Observe: {
      auto* m = msg->body_as_Observe();
      return py::make_tuple(kind, str_or_empty(m->address()), str_or_empty(m->name()), static_cast<int>(m->distribution_type()),
                            dist_params(m->distribution_type(), m->distribution()), tensor_array(m->value()), m->address_id(),
                            m->instance(), draw_batch(m->local_draws()));
    }
    case ppx::MessageBody::Tag: {
      auto* m = msg->body_as_Tag();
      return py::make_tuple(kind, str_or_empty(m->address()), str_or_empty(m->name()), tensor_array(m->value()), m->address_id(),
                            m->instance(), draw_batch(m->local_draws()));
    }
    case ppx::MessageBody::Error: {
      auto* m = msg->body_as_Error();
      return py::make_tuple(kind, str_or_empty(m->message()), str_or_empty(m->kind()));
    }
    case ppx::MessageBody::TraceBatch: {
      auto* m = msg->body_as_TraceBatch();
      std::vector<std::string> errors;
      if (m->errors()) for (const auto* e : *m->errors()) errors.push_back(e->str());
      return py::make_tuple(kind, draw_batch(m->draws()), errors);
    }
    default: return py::make_tuple(kind);
  }
}

thread_local Builder builder(1024);

py::bytes finished() { return py::bytes(reinterpret_cast<const char*>(builder.GetBufferPointer()), builder.GetSize()); }

py::bytes encode_handshake(const std::string& system_name, std::uint32_t version, const std::vector<std::string>& caps) {
  builder.Clear();
  auto name = builder.CreateString(system_name);
  if (version == 0) {
    finish(builder, ppx::CreateHandshake(builder, name), ppx::MessageBody::Handshake);
  } else {
    auto c = builder.CreateVectorOfStrings(caps);
    finish(builder, ppx::CreateHandshake(builder, name, version, c), ppx::MessageBody::Handshake);
  }
  return finished();
}

py::bytes encode_run(int mode, std::uint32_t num_traces, py::object seed, bool record_uncontrolled_values) {
  builder.Clear();
  std::uint64_t s = seed.is_none() ? 0 : seed.cast<std::uint64_t>();
  finish(builder, ppx::CreateRun(builder, static_cast<ppx::RunMode>(mode), num_traces, s, !seed.is_none(), record_uncontrolled_values),
         ppx::MessageBody::Run);
  return finished();
}

using U64s = py::array_t<std::uint64_t, py::array::c_style | py::array::forcecast>;
using U32s = py::array_t<std::uint32_t, py::array::c_style | py::array::forcecast>;
using F64s = py::array_t<double, py::array::c_style | py::array::forcecast>;

// Run{mode: Replay}: the controlled values to reuse as rows (address id, instance, offsets into
// `values`), the names the engine conditions on, and their values where sent (None: not sent).
py::bytes encode_replay_run(py::object seed, bool record_uncontrolled_values, U64s address_id, U32s instance, U32s value_offsets,
                            F64s values, const std::vector<std::string>& observed, const py::list& observed_values) {
  auto n = static_cast<std::size_t>(address_id.size());
  if (static_cast<std::size_t>(instance.size()) != n || static_cast<std::size_t>(value_offsets.size()) != n + 1) {
    throw probexec::error("encode_replay_run: need one instance per address id and one more value offset than rows");
  }
  builder.Clear();
  auto ids = builder.CreateVector(address_id.data(), n);
  auto inst = builder.CreateVector(instance.data(), n);
  auto off = builder.CreateVector(value_offsets.data(), n + 1);
  auto vals = builder.CreateVector(values.data(), static_cast<std::size_t>(values.size()));
  ppx::DrawBatchBuilder rows(builder);
  rows.add_address_id(ids);
  rows.add_instance(inst);
  rows.add_value_offsets(off);
  rows.add_values(vals);
  auto replay = rows.Finish();
  if (static_cast<std::size_t>(observed_values.size()) != observed.size()) {
    throw probexec::error("encode_replay_run: need one observed value (or None) per observed name");
  }
  std::vector<flatbuffers::Offset<ppx::Tensor>> given;
  for (const auto& item : observed_values) {
    if (item.is_none()) {
      given.push_back(ppx::CreateTensor(builder));
      continue;
    }
    auto v = item.cast<F64s>();
    std::vector<int> shape(v.shape(), v.shape() + v.ndim());
    given.push_back(write_tensor(builder, v.data(), static_cast<std::size_t>(v.size()), shape.data(), shape.size()));
  }
  auto given_values = builder.CreateVector(given);
  auto names = builder.CreateVectorOfStrings(observed);
  std::uint64_t s = seed.is_none() ? 0 : seed.cast<std::uint64_t>();
  finish(builder,
         ppx::CreateRun(builder, ppx::RunMode::Replay, 1, s, !seed.is_none(), record_uncontrolled_values, replay, names, given_values),
         ppx::MessageBody::Run);
  return finished();
}

py::bytes encode_sample_result(py::array_t<double, py::array::c_style | py::array::forcecast> value, bool draw_locally) {
  builder.Clear();
  flatbuffers::Offset<ppx::Tensor> t = 0;
  if (!draw_locally) {
    std::vector<int> shape(value.shape(), value.shape() + value.ndim());
    t = write_tensor(builder, value.data(), static_cast<std::size_t>(value.size()), shape.data(), shape.size());
  }
  finish(builder, ppx::CreateSampleResult(builder, t, draw_locally), ppx::MessageBody::SampleResult);
  return finished();
}

py::bytes encode_sample_scalar(double value) {
  builder.Clear();
  auto t = write_tensor(builder, &value, 1, nullptr, 0);
  finish(builder, ppx::CreateSampleResult(builder, t, false), ppx::MessageBody::SampleResult);
  return finished();
}

py::bytes encode_empty(int kind) {
  builder.Clear();
  flatbuffers::Offset<void> body;
  switch (static_cast<ppx::MessageBody>(kind)) {
    case ppx::MessageBody::Run: body = ppx::CreateRun(builder).Union(); break;
    case ppx::MessageBody::ObserveResult: body = ppx::CreateObserveResult(builder).Union(); break;
    case ppx::MessageBody::TagResult: body = ppx::CreateTagResult(builder).Union(); break;
    case ppx::MessageBody::Reset: body = ppx::CreateReset(builder).Union(); break;
    case ppx::MessageBody::Shutdown: body = ppx::CreateShutdown(builder).Union(); break;
    default: throw std::invalid_argument("encode_empty: message type " + std::to_string(kind) + " has fields");
  }
  ppx::FinishMessageBuffer(builder, ppx::CreateMessage(builder, static_cast<ppx::MessageBody>(kind), body));
  return finished();
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "probexec wire codec (FlatBuffers, generated from protocol/ppx.fbs)";
  // Leaked on purpose: a static py::object would be destroyed after the interpreter.
  static py::handle protocol_error = py::object(py::module_::import("probexec.errors").attr("ProtocolError")).release();
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const probexec::error& e) {
      PyErr_SetString(protocol_error.ptr(), e.what());
    }
  });
  m.def("decode", &decode, "Verify and decode one message into a tuple whose first item is the MessageBody type.");
  m.def("encode_handshake", &encode_handshake, py::arg("system_name"), py::arg("version"), py::arg("capabilities"));
  m.def("encode_run", &encode_run, py::arg("mode"), py::arg("num_traces"), py::arg("seed"), py::arg("record_uncontrolled_values") = true);
  m.def("encode_replay_run", &encode_replay_run, py::arg("seed"), py::arg("record_uncontrolled_values"), py::arg("address_id"),
        py::arg("instance"), py::arg("value_offsets"), py::arg("values"), py::arg("observed"), py::arg("observed_values"),
        "Run{mode: Replay}: one trace reusing these controlled values, answered as a TraceBatch.");
  m.def("encode_sample_result", &encode_sample_result, py::arg("value"), py::arg("draw_locally") = false);
  m.def("encode_sample_scalar", &encode_sample_scalar, py::arg("value"), "SampleResult for a scalar value (hot path).");
  m.def("encode_empty", &encode_empty, py::arg("kind"));
  m.attr("PROTOCOL_VERSION") = probexec::protocol_version;
  py::list names;
  for (int i = 0; i <= static_cast<int>(ppx::MessageBody::MAX); ++i) names.append(ppx::EnumNamesMessageBody()[i]);
  m.attr("MESSAGE_NAMES") = names;
}
