// `probexec::serve`: the simulator side of the protocol.
//
// The simulator binds a REP socket and answers the engine's requests: Handshake, Run (one trace
// driven draw by draw, many traces streamed as records, or one trace replaying the engine's values
// and answered as a record), Shutdown. Inside a per-draw trace the model's own calls to
// sample/observe/tag become requests of the simulator's, each waited for with a timeout so a
// vanished engine cannot hang the simulator forever.
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <map>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <random>
#include <unordered_set>

#include "address.hpp"
#include "context.hpp"
#include "transport.hpp"
#include "npz.hpp"
#include "replay.hpp"
#include "wire.hpp"

namespace probexec {
namespace detail {

namespace {

const char* const kCapabilities[] = {"stream",  "local_draws", "address_ids", "errors",
                                     "draw_locally", "replace", "shutdown",  "local_tags", "replay"};

struct Options {
  std::string address;
  bool standalone = false;
  std::uint64_t seed = 0;
  bool has_seed = false;
  long traces = 1;
  std::string output;  // standalone: events to this .npz
  double timeout_s = 300.0;
  double idle_timeout_s = 0.0;     // > 0: exit after this long with no request between traces
  bool exit_on_stdin_eof = false;  // exit when stdin ends: the engine that started us is gone
  bool quiet = false;
};

[[noreturn]] void usage_error(const std::string& prog, const std::string& what) {
  throw error(what + "\nusage: " + prog +
              " (--address ipc://PATH|tcp://HOST:PORT | --standalone [--seed N] [--traces K] [--output EVENTS.npz]) [--timeout S] [--idle-timeout S] [--exit-on-stdin-eof] [--quiet]");
}

Options parse_args(int argc, char** argv) {
  Options o;
  std::string prog = argc > 0 ? argv[0] : "simulator";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(prog, "missing value after " + a);
      return argv[++i];
    };
    try {
      if (a == "--address" || a == "-a") o.address = value();
      else if (a == "--standalone") o.standalone = true;
      else if (a == "--seed") { o.seed = std::stoull(value()); o.has_seed = true; }
      else if (a == "--traces") o.traces = std::stol(value());
      else if (a == "--output" || a == "-o") o.output = value();
      else if (a == "--timeout") o.timeout_s = std::stod(value());
      else if (a == "--idle-timeout") o.idle_timeout_s = std::stod(value());
      else if (a == "--exit-on-stdin-eof") o.exit_on_stdin_eof = true;
      else if (a == "--quiet") o.quiet = true;
      else if (a.rfind("ipc://", 0) == 0 || a.rfind("tcp://", 0) == 0) o.address = a;
      else usage_error(prog, "unknown argument " + a);
    } catch (const std::logic_error&) {
      usage_error(prog, "bad number for " + a);
    }
  }
  if (!o.standalone && o.address.empty()) usage_error(prog, "give --address or --standalone");
  if (o.traces < 0) usage_error(prog, "--traces must be >= 0");
  if (!(o.idle_timeout_s >= 0)) usage_error(prog, "--idle-timeout must be >= 0 seconds (0: wait for ever)");
  return o;
}

std::string describe_current_exception() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "a non-standard exception";
  }
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string seconds_text(double s) {
  std::ostringstream o;
  o << s << " s";
  return o.str();
}

// Seconds as ZeroMQ's milliseconds; <= 0 or beyond ~24 days (int milliseconds) is -1: for ever.
int timeout_ms(double seconds) {
  return (seconds <= 0 || seconds > 2.0e6) ? -1 : static_cast<int>(seconds * 1000);
}

// True when stdin has ended: the engine that started this server holds the pipe's only write end,
// so the kernel closes it however the engine ends (SIGKILL and the OOM killer included). Bytes
// written there are read and ignored.
bool stdin_ended() {
  pollfd p{STDIN_FILENO, POLLIN, 0};
  int r = ::poll(&p, 1, 0);
  if (r <= 0) return false;
  if (p.revents & POLLNVAL) return true;  // stdin was closed before we started
  char buf[256];
  ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
}

// Calls the model from a frame whose stack depth is recorded, so addresses leave out everything
// below the model (this loop, main, libc) and stay the same however the model is run.
__attribute__((noinline)) Tensor run_model(const Model& model) {
  address_book().set_model_entry(__builtin_return_address(0));
  struct TraceEnd {
    ~TraceEnd() { address_book().end_trace(); }
  } trace_end;
  // A plain function is called directly: one frame less to unwind on every draw than through
  // std::function's invoker.
  auto* const* fn = model.target<Tensor (*)()>();
  Tensor r = fn ? (*fn)() : model();
  asm volatile("" ::: "memory");  // keep this frame (no tail call into the model)
  return r;
}

class Server;

// Per-draw trace: every controlled draw is a request to the engine.
class RemoteContext : public Context {
 public:
  RemoteContext(Server& server, LocalContext& local) : server_(server), local_(local) {}
  Tensor on_sample(const Distribution& d, const SampleOptions& o, std::uint64_t id, std::uint32_t instance) override;
  void on_observe(const Distribution& d, const Tensor* value, const std::string& name, std::uint64_t id,
                  std::uint32_t instance) override;
  void on_tag(const Tensor& value, const std::string& name, std::uint64_t id, std::uint32_t instance) override;

 private:
  Server& server_;
  LocalContext& local_;
};

class Server {
 public:
  Server(Model model, std::string model_name, Options opts)
      : model_(std::move(model)), model_name_(std::move(model_name)), opts_(std::move(opts)), local_(0) {
    open_socket();
  }

  int loop();

  enum class Wait { Message, Timeout, EngineGone };
  // Waits up to `limit_ms` (-1: for ever) for the engine's next message. With
  // --exit-on-stdin-eof it waits in slices of a second and looks at stdin between them: the
  // blocking receive stays the hot path (no zmq_poll per message), and a dead engine is noticed
  // within a second.
  Wait wait_message(ZmqMessage& m, int limit_ms) {
    if (!opts_.exit_on_stdin_eof) return socket_->recv(m, limit_ms) ? Wait::Message : Wait::Timeout;
    constexpr int kSliceMs = 1000;
    auto t0 = std::chrono::steady_clock::now();
    for (;;) {
      int slice = kSliceMs;
      if (limit_ms >= 0) {
        int left = limit_ms - static_cast<int>(seconds_since(t0) * 1000);
        if (left <= 0) return Wait::Timeout;
        slice = std::min(slice, left);
      }
      if (socket_->recv(m, slice)) return Wait::Message;
      if (stdin_ended()) return Wait::EngineGone;
    }
  }

  // --- used by RemoteContext -------------------------------------------------------------------
  bool v2() const { return version_ >= 2; }
  Builder& builder() { return fbb_; }
  DrawRecorder& pending() { return pending_; }
  std::unordered_set<std::uint64_t>& sent() { return sent_; }
  bool record_uncontrolled_values() const { return record_uncontrolled_values_; }
  // The engine announced "local_tags": tags travel with the next message instead of each being a
  // round trip of its own (a tau trace has 9 of its 24 messages as tags).
  bool local_tags() const { return local_tags_; }
  // Sends the finished buffer and waits for the engine's reply of type `expected`.
  const ppx::Message* request(ppx::MessageBody expected);
  // Starts a Sample/Observe/Tag message: the address string (v1 peers get it every time, v2
  // peers the first time the id travels) and the name.
  std::pair<flatbuffers::Offset<flatbuffers::String>, flatbuffers::Offset<flatbuffers::String>> begin_draw_message(
      std::uint64_t id) {
    clear_builder();
    const auto& info = address_book().info(id);
    bool with_address = !v2() || !sent_.count(id);
    auto addr = fbb_.CreateString(with_address ? info.address : std::string());
    auto name = fbb_.CreateString(info.name);
    return {addr, name};
  }
  // Draws made locally since the last message, plus the AddressInfo of `also_id` (the draw this
  // message is about) the first time that id travels.
  flatbuffers::Offset<ppx::DrawBatch> flush_pending(std::uint64_t also_id) {
    if (!v2() || (pending_.empty() && sent_.count(also_id))) return 0;
    auto off = pending_.write(fbb_, sent_, false, &also_id);
    pending_.clear();
    return off;
  }

 private:
  void open_socket() {
    socket_ = std::make_unique<Socket>(ZMQ_REP);
    socket_->bind(opts_.address);
  }
  void log(const std::string& what) const {
    if (!opts_.quiet) std::cerr << "[probexec " << model_name_ << "] " << what << std::endl;
  }
  // Messages this large are lent to ZeroMQ rather than copied: an Observe of an image, a TraceBatch.
  static constexpr std::size_t kLendFrom = 64 * 1024;
  void send_built() {
    if (fbb_.GetSize() >= kLendFrom) {
      socket_->send_lent(fbb_.GetBufferPointer(), fbb_.GetSize(), out_released_);
    } else {
      socket_->send(fbb_.GetBufferPointer(), fbb_.GetSize());
    }
  }
  // Every message is built after this: the last one's bytes may still be lent to ZeroMQ.
  void clear_builder() {
    wait_released(out_released_);
    fbb_.Clear();
  }
  void reply_error(const std::string& message, const std::string& kind);
  void reply_empty(ppx::MessageBody type);
  void handle(const ppx::Message* msg);
  void handshake(const ppx::Handshake* h);
  void run_per_draw(const ppx::Run* run);
  void run_stream(const ppx::Run* run);
  void run_replay(const ppx::Run* run);
  // Answers with the traces recorded in `rec` (a TraceBatch message).
  void send_traces(DrawRecorder& rec, const std::vector<std::string>& errors);
  std::uint64_t run_seed(const ppx::Run* run) {
    if (run && run->has_seed()) return run->seed();
    return std::random_device{}() ^ (static_cast<std::uint64_t>(std::random_device{}()) << 32);
  }

  Model model_;
  std::string model_name_;
  Options opts_;
  // Declared before the socket, so they outlive it: ZeroMQ may read a lent message and set
  // `out_released_` until the socket is closed.
  Builder fbb_{1024};
  std::atomic<bool> out_released_{true};
  std::unique_ptr<Socket> socket_;
  LocalContext local_;
  DrawRecorder pending_;
  std::unordered_set<std::uint64_t> sent_;
  std::uint32_t version_ = 0;
  bool handshaken_ = false;
  bool record_uncontrolled_values_ = true;
  bool local_tags_ = false;
  // A request that arrived mid-trace and must be handled at the top of the loop.
  std::optional<std::vector<std::uint8_t>> deferred_;
  ZmqMessage in_;
  bool stop_ = false;
};

const ppx::Message* Server::request(ppx::MessageBody expected) {
  send_built();
  Wait w = wait_message(in_, timeout_ms(opts_.timeout_s));
  if (w == Wait::EngineGone) {
    log("stdin closed mid-trace: the engine that started this server is gone; trace abandoned, exiting");
    stop_ = true;
    throw TraceAborted{"engine gone"};
  }
  if (w == Wait::Timeout) {
    log("engine did not answer within " + seconds_text(opts_.timeout_s) + "; trace abandoned, socket reopened");
    socket_.reset();
    open_socket();
    throw TraceAborted{"engine timeout"};
  }
  const ppx::Message* msg = nullptr;
  try {
    msg = parse_message(in_.data(), in_.size());
  } catch (const error& e) {
    log(std::string("bad reply from engine: ") + e.what());
    reply_error(e.what(), "protocol");
    throw TraceAborted{e.what()};
  }
  auto type = msg->body_type();
  if (type == expected) return msg;
  if (type == ppx::MessageBody::Handshake || type == ppx::MessageBody::Run || type == ppx::MessageBody::Shutdown) {
    // A (new) engine started over: drop this trace and serve its request.
    log(std::string("engine sent ") + body_name(type) + " mid-trace; trace abandoned");
    deferred_.emplace(in_.data(), in_.data() + in_.size());
    throw TraceAborted{"engine restarted"};
  }
  std::string what = std::string("expected ") + body_name(expected) + " but the engine sent " + body_name(type);
  log(what);
  reply_error(what, "protocol");
  throw TraceAborted{what};
}

void Server::reply_error(const std::string& message, const std::string& kind) {
  clear_builder();
  if (v2()) {
    finish(fbb_, ppx::CreateErrorDirect(fbb_, message.c_str(), kind.c_str()), ppx::MessageBody::Error);
  } else {
    // PPX v1 has no error message; a v1 engine reads Reset as "out of sync".
    finish(fbb_, ppx::CreateReset(fbb_), ppx::MessageBody::Reset);
  }
  send_built();
}

void Server::reply_empty(ppx::MessageBody type) {
  clear_builder();
  flatbuffers::Offset<void> body;
  switch (type) {
    case ppx::MessageBody::Reset: body = ppx::CreateReset(fbb_).Union(); break;
    case ppx::MessageBody::ShutdownResult: body = ppx::CreateShutdownResult(fbb_).Union(); break;
    default: throw error("reply_empty: unsupported type");
  }
  ppx::FinishMessageBuffer(fbb_, ppx::CreateMessage(fbb_, type, body));
  send_built();
}

void Server::handshake(const ppx::Handshake* h) {
  std::uint32_t peer = h->protocol_version();
  clear_builder();
  std::vector<std::string> caps(std::begin(kCapabilities), std::end(kCapabilities));
  if (peer != 0 && peer != protocol_version) {
    std::string what = "incompatible protocol version: engine speaks " + std::to_string(peer) + ", simulator '" + model_name_ +
                       "' speaks " + std::to_string(protocol_version) + " (and PPX v1)";
    log(what);
    finish(fbb_, ppx::CreateHandshakeResultDirect(fbb_, "probexec C++ front end", model_name_.c_str(), protocol_version, nullptr, what.c_str()),
           ppx::MessageBody::HandshakeResult);
    send_built();
    return;
  }
  version_ = peer;
  handshaken_ = true;
  local_tags_ = false;
  if (peer != 0 && h->capabilities()) {
    for (const auto* c : *h->capabilities()) {
      if (c && c->str() == "local_tags") local_tags_ = true;
    }
  }
  sent_.clear();
  pending_.clear();
  if (peer == 0) {
    finish(fbb_, ppx::CreateHandshakeResultDirect(fbb_, "probexec C++ front end", model_name_.c_str()), ppx::MessageBody::HandshakeResult);
  } else {
    auto v_caps = fbb_.CreateVectorOfStrings(caps);
    auto sys = fbb_.CreateString("probexec C++ front end");
    auto name = fbb_.CreateString(model_name_);
    finish(fbb_, ppx::CreateHandshakeResult(fbb_, sys, name, protocol_version, v_caps), ppx::MessageBody::HandshakeResult);
  }
  send_built();
  log(std::string("handshake with '") + (h->system_name() ? h->system_name()->str() : "") + "' (protocol " +
      (peer ? std::to_string(peer) : std::string("v1")) + ")");
}

void Server::run_per_draw(const ppx::Run* run) {
  local_.reseed(run_seed(run));
  record_uncontrolled_values_ = run ? run->record_uncontrolled_values() : true;
  pending_.clear();
  RemoteContext ctx(*this, local_);
  ctx.begin_trace();
  Tensor result;
  try {
    ContextGuard guard(ctx);
    result = run_model(model_);
  } catch (const TraceAborted& a) {
    return;  // the reply (if any) was sent where the trace was abandoned
  } catch (const std::exception& e) {
    log(std::string("model threw: ") + e.what());
    reply_error(std::string("model '") + model_name_ + "' threw: " + e.what(), "model");
    return;
  } catch (...) {
    log("model threw a non-standard exception");
    reply_error("model '" + model_name_ + "' threw a non-standard exception", "model");
    return;
  }
  clear_builder();
  auto res = write_tensor(fbb_, result);
  flatbuffers::Offset<ppx::DrawBatch> local = v2() && !pending_.empty() ? pending_.write(fbb_, sent_, false) : 0;
  pending_.clear();
  finish(fbb_, ppx::CreateRunResult(fbb_, res, local), ppx::MessageBody::RunResult);
  send_built();
}

// One trace of `model` in `ctx`, its draws into `rec`. Returns "" or the model's error; a failed
// trace stays as an empty record with that error, so the engine counts it.
static std::string record_trace(const Model& model, const std::string& model_name, Context& ctx, DrawRecorder& rec) {
  ctx.begin_trace();
  rec.begin_trace();
  auto t0 = std::chrono::steady_clock::now();
  try {
    ContextGuard guard(ctx);
    Tensor r = run_model(model);
    rec.end_trace(r, seconds_since(t0));
    return {};
  } catch (...) {
    rec.drop_trace();
    rec.begin_trace();
    rec.end_trace(Tensor(), seconds_since(t0));
    return "model '" + model_name + "' threw: " + describe_current_exception();
  }
}

void Server::run_stream(const ppx::Run* run) {
  local_.reseed(run_seed(run));
  DrawRecorder rec;
  local_.set_recorder(&rec, run->record_uncontrolled_values());
  std::vector<std::string> errors;
  std::uint32_t n = run->num_traces();
  for (std::uint32_t k = 0; k < n; ++k) errors.push_back(record_trace(model_, model_name_, local_, rec));
  local_.set_recorder(nullptr, true);
  send_traces(rec, errors);
}

void Server::send_traces(DrawRecorder& rec, const std::vector<std::string>& errors) {
  clear_builder();
  auto batch = rec.write(fbb_, sent_, true);
  auto errs = fbb_.CreateVectorOfStrings(errors);
  finish(fbb_, ppx::CreateTraceBatch(fbb_, batch, errs), ppx::MessageBody::TraceBatch);
  send_built();
}

void Server::run_replay(const ppx::Run* run) {
  local_.reseed(run_seed(run));
  DrawRecorder rec;
  std::optional<ReplayContext> ctx;
  try {
    ctx.emplace(local_.rng(), rec, run->record_uncontrolled_values(), *run);
  } catch (const error& e) {
    log(std::string("refused replay run: ") + e.what());
    reply_error(e.what(), "protocol");
    return;
  }
  send_traces(rec, {record_trace(model_, model_name_, *ctx, rec)});
}

void Server::handle(const ppx::Message* msg) {
  switch (msg->body_type()) {
    case ppx::MessageBody::Handshake: handshake(msg->body_as_Handshake()); return;
    case ppx::MessageBody::Run: {
      const auto* run = msg->body_as_Run();
      if (v2() && run->mode() == ppx::RunMode::Stream) run_stream(run);
      else if (v2() && run->mode() == ppx::RunMode::Replay) run_replay(run);
      else run_per_draw(run);
      return;
    }
    case ppx::MessageBody::Shutdown:
      reply_empty(ppx::MessageBody::ShutdownResult);
      log("shutdown requested");
      stop_ = true;
      return;
    default: {
      std::string what = std::string("unexpected ") + body_name(msg->body_type()) + " outside a trace";
      log(what);
      if (v2()) reply_error(what, "protocol");
      else reply_empty(ppx::MessageBody::Reset);
    }
  }
}

int Server::loop() {
  log("serving on " + socket_->endpoint());
  while (!stop_) {
    std::vector<std::uint8_t> buf;
    if (deferred_) {
      buf = std::move(*deferred_);
      deferred_.reset();
    } else {
      ZmqMessage m;
      Wait w = wait_message(m, timeout_ms(opts_.idle_timeout_s));
      if (w == Wait::EngineGone) {
        log("stdin closed: the engine that started this server is gone; exiting");
        break;
      }
      if (w == Wait::Timeout) {
        log("no request for " + seconds_text(opts_.idle_timeout_s) + " (--idle-timeout); exiting");
        break;
      }
      buf.assign(m.data(), m.data() + m.size());
    }
    const ppx::Message* msg = nullptr;
    try {
      msg = parse_message(buf.data(), buf.size());
    } catch (const error& e) {
      log(std::string("refused request: ") + e.what());
      if (handshaken_ && !v2()) {
        reply_empty(ppx::MessageBody::Reset);  // all a v1 engine understands
      } else {
        // Before any handshake the peer's version is unknown: an Error table is harmless to a
        // v1 peer too (an unknown union member, which it reports as out of sync).
        clear_builder();
        finish(fbb_, ppx::CreateErrorDirect(fbb_, e.what(), "protocol"), ppx::MessageBody::Error);
        send_built();
      }
      continue;
    }
    handle(msg);
  }
  return 0;
}

Tensor RemoteContext::on_sample(const Distribution& d, const SampleOptions& o, std::uint64_t id, std::uint32_t instance) {
  auto& s = server_;
  if (s.v2() && !o.control) {
    // Uncontrolled: drawn here, reported with the next message, no round trip.
    Tensor v = draw_local(d, local_.rng());
    s.pending().add(id, instance, DrawKind::Sample, o.replace ? kReplace : 0, &d, v, s.record_uncontrolled_values());
    return v;
  }
  auto& b = s.builder();
  auto [addr, name] = s.begin_draw_message(id);
  const auto& info = address_book().info(id);
  auto dist = write_distribution(b, d);
  auto local = s.flush_pending(id);
  finish(b, ppx::CreateSample(b, addr, name, static_cast<ppx::Distribution>(d.type()), dist, o.control, o.replace, id, instance, local),
         ppx::MessageBody::Sample);
  const auto* reply = s.request(ppx::MessageBody::SampleResult)->body_as_SampleResult();
  if (reply->draw_locally()) {
    Tensor v = draw_local(d, local_.rng());
    s.pending().add(id, instance, DrawKind::Sample, kControlled | (o.replace ? kReplace : 0), &d, v, true);
    return v;
  }
  Tensor v = read_tensor(reply->result());
  if (v.numel() != d.value_numel()) {
    std::string what = "engine sent " + std::to_string(v.numel()) + " values for a draw of " + std::to_string(d.value_numel()) +
                       " at address '" + info.address + "'";
    throw error(what);
  }
  if (v.shape() != d.value_shape()) v = Tensor(std::move(v.data()), d.value_shape());
  return v;
}

void RemoteContext::on_observe(const Distribution& d, const Tensor* value, const std::string&, std::uint64_t id,
                               std::uint32_t instance) {
  auto& s = server_;
  auto& b = s.builder();
  auto [addr, name] = s.begin_draw_message(id);
  auto dist = write_distribution(b, d);
  flatbuffers::Offset<ppx::Tensor> val = value ? write_tensor(b, *value) : 0;
  auto local = s.flush_pending(id);
  finish(b, ppx::CreateObserve(b, addr, name, static_cast<ppx::Distribution>(d.type()), dist, val, id, instance, local),
         ppx::MessageBody::Observe);
  s.request(ppx::MessageBody::ObserveResult);
}

void RemoteContext::on_tag(const Tensor& value, const std::string&, std::uint64_t id, std::uint32_t instance) {
  auto& s = server_;
  if (s.v2() && s.local_tags()) {
    s.pending().add(id, instance, DrawKind::Tag, 0, nullptr, value, true);
    return;
  }
  auto& b = s.builder();
  auto [addr, name] = s.begin_draw_message(id);
  auto val = write_tensor(b, value);
  auto local = s.flush_pending(id);
  finish(b, ppx::CreateTag(b, addr, name, val, id, instance, local), ppx::MessageBody::Tag);
  s.request(ppx::MessageBody::TagResult);
}

// Events of a standalone run as one array per named quantity: (traces, size) float64, NaN where a
// trace lacks it (first instance per trace); an observation's noiseless mean as NAME__mean.
void write_events(const DrawRecorder& rec, std::size_t traces, const std::string& path) {
  struct Column {
    std::size_t width;
    std::vector<double> data;
  };
  std::map<std::string, Column> columns;
  const auto& to = rec.trace_offsets();
  const auto& book = address_book();
  auto put = [&](const std::string& name, std::size_t trace, const double* v, std::size_t n) {
    auto it = columns.find(name);
    if (it == columns.end()) {
      it = columns.emplace(name, Column{n, std::vector<double>(traces * n, std::nan(""))}).first;
    }
    if (it->second.width != n) return;  // a different size in this trace: left NaN
    std::copy(v, v + n, it->second.data.begin() + static_cast<long>(trace * n));
  };
  for (std::size_t t = 0; t < traces; ++t) {
    std::size_t end = t + 1 < to.size() ? to[t + 1] : rec.rows();
    for (std::size_t r = to[t]; r < end; ++r) {
      const auto& info = book.info(rec.ids()[r]);
      if (info.name.empty() || rec.instances()[r] != 1 || (rec.flags()[r] & kValueOmitted)) continue;
      std::size_t v0 = rec.value_offsets()[r], v1 = rec.value_offsets()[r + 1];
      put(info.name, t, rec.values().data() + v0, v1 - v0);
      if (rec.kinds()[r] == static_cast<std::uint8_t>(DrawKind::Observe) &&
          rec.param_offsets()[r + 1] - rec.param_offsets()[r] >= v1 - v0) {
        put(info.name + "__mean", t, rec.params().data() + rec.param_offsets()[r], v1 - v0);
      }
    }
  }
  NpzWriter npz;
  for (auto& [name, col] : columns) {
    std::vector<std::size_t> shape{traces};
    if (col.width != 1) shape.push_back(col.width);
    npz.add(name, shape, col.data);
  }
  npz.write(path);
}

int run_standalone(const Model& model, const std::string& model_name, const Options& o) {
  std::uint64_t s = o.has_seed ? o.seed : 0;
  LocalContext ctx(s);
  DrawRecorder rec;
  ctx.set_recorder(&rec, false);
  auto t0 = std::chrono::steady_clock::now();
  std::size_t draws = 0;
  bool keep = !o.output.empty();  // keep every trace's rows for the output file
  std::size_t rows_before = 0;
  for (long k = 0; k < o.traces; ++k) {
    ctx.begin_trace();
    if (!keep) rec.clear();
    rows_before = rec.rows();
    rec.begin_trace();
    Tensor r;
    try {
      ContextGuard guard(ctx);
      r = run_model(model);
    } catch (...) {
      std::fprintf(stderr, "[probexec %s] trace %ld threw: %s\n", model_name.c_str(), k, describe_current_exception().c_str());
      return 1;
    }
    draws += rec.rows() - rows_before;
    if (!o.quiet) {
      std::printf("trace %ld: %zu draws, result", k, rec.rows() - rows_before);
      for (double v : r.data()) std::printf(" %.17g", v);
      std::printf("\n");
    }
  }
  double secs = seconds_since(t0);
  if (keep) {
    write_events(rec, static_cast<std::size_t>(o.traces), o.output);
    std::fprintf(stderr, "[probexec %s] wrote %ld events to %s\n", model_name.c_str(), o.traces, o.output.c_str());
  }
  std::fprintf(stderr, "[probexec %s] standalone: %ld traces, %.1f draws/trace, %.1f traces/s (seed %llu)\n", model_name.c_str(),
               o.traces, o.traces ? static_cast<double>(draws) / static_cast<double>(o.traces) : 0.0,
               secs > 0 ? static_cast<double>(o.traces) / secs : 0.0, static_cast<unsigned long long>(s));
  return 0;
}

}  // namespace
}  // namespace detail

int serve(const Model& model, int argc, char** argv, const std::string& model_name) {
  try {
    auto opts = detail::parse_args(argc, argv);
    std::string name = model_name.empty() ? (argc > 0 ? argv[0] : "model") : model_name;
    if (opts.standalone) return detail::run_standalone(model, name, opts);
    detail::Server server(model, name, opts);
    return server.loop();
  } catch (const std::exception& e) {
    std::cerr << "probexec: " << e.what() << std::endl;
    return 2;
  }
}

}  // namespace probexec
