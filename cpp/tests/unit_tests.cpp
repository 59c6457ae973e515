// Unit tests of the C++ front end: tensors, distributions, local sampling, address capture, the wire
// codec, message verification and the columnar draw recorder.
//
// No test framework: CHECK* macros count passes and failures, print every failure as file:line,
// and main() ends with one "N passed, M failed" line (exit status 1 when anything failed).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <execinfo.h>
#include <link.h>
#include <unistd.h>
#include <exception>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <unordered_set>
#include <vector>

#include "address.hpp"
#include "context.hpp"
#include "line_resolver.hpp"
#include "local_rng.hpp"
#include "probexec/probexec.hpp"
#include "npz.hpp"
#include "wire.hpp"

using namespace probexec;
using detail::Builder;
using detail::DrawKind;
using detail::Rng;

// --- harness ---------------------------------------------------------------------------------------

namespace {

int g_passed = 0;
int g_failed = 0;

void report(bool ok, const char* file, int line, const std::string& what) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    std::fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what.c_str());
  }
}

std::string fmt(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

bool contains(const std::string& haystack, const std::string& needle) { return haystack.find(needle) != std::string::npos; }

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string part;
  std::istringstream in(s);
  while (std::getline(in, part, sep)) out.push_back(part);
  if (!s.empty() && s.back() == sep) out.emplace_back();
  return out;
}

}  // namespace

#define CHECK(cond) report(static_cast<bool>(cond), __FILE__, __LINE__, #cond)

#define CHECK_EQ(a, b)                                                                                       \
  do {                                                                                                       \
    const auto& check_a_ = (a);                                                                              \
    const auto& check_b_ = (b);                                                                              \
    std::ostringstream check_os_;                                                                            \
    check_os_ << #a " == " #b " (" << check_a_ << " vs " << check_b_ << ")";                              \
    report(check_a_ == check_b_, __FILE__, __LINE__, check_os_.str());                                       \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                                                \
  do {                                                                                                       \
    const double check_a_ = (a), check_b_ = (b), check_t_ = (tol);                                           \
    report(std::fabs(check_a_ - check_b_) <= check_t_, __FILE__, __LINE__,                                   \
           std::string(#a " ~ " #b ": ") + fmt(check_a_) + " vs " + fmt(check_b_) + ", tolerance " + fmt(check_t_)); \
  } while (0)

// `expr` must throw probexec::error whose message contains `substr` ("" accepts any non-empty one).
#define CHECK_THROWS(expr, substr)                                                                           \
  do {                                                                                                       \
    std::string check_msg_;                                                                                  \
    bool check_ok_ = false;                                                                                  \
    try {                                                                                                    \
      (void)(expr);                                                                                          \
      check_msg_ = "no exception";                                                                           \
    } catch (const probexec::error& e) {                                                                     \
      check_msg_ = e.what();                                                                                 \
      check_ok_ = !check_msg_.empty() && contains(check_msg_, substr);                                       \
    } catch (const std::exception& e) {                                                                      \
      check_msg_ = std::string("wrong exception type: ") + e.what();                                        \
    } catch (...) {                                                                                          \
      check_msg_ = "non-standard exception";                                                                 \
    }                                                                                                        \
    report(check_ok_, __FILE__, __LINE__,                                                                    \
           std::string(#expr " throws probexec::error containing \"") + (substr) + "\" (got: " + check_msg_ + ")"); \
  } while (0)

#define CHECK_NOTHROW(expr)                                                                                  \
  do {                                                                                                       \
    std::string check_msg_;                                                                                  \
    try {                                                                                                    \
      (void)(expr);                                                                                          \
    } catch (const std::exception& e) {                                                                      \
      check_msg_ = e.what();                                                                                 \
    } catch (...) {                                                                                          \
      check_msg_ = "non-standard exception";                                                                 \
    }                                                                                                        \
    report(check_msg_.empty(), __FILE__, __LINE__, std::string(#expr " does not throw (got: ") + check_msg_ + ")"); \
  } while (0)

// --- helpers ---------------------------------------------------------------------------------------

namespace {

std::vector<std::uint8_t> buffer_of(const Builder& b) { return {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()}; }

bool same_tensor(const Tensor& a, const Tensor& b) { return a.data() == b.data() && a.shape() == b.shape(); }

std::string shape_str(const std::vector<int>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

// A LocalContext that also remembers the (id, instance) of every draw made through it.
class RecordingContext : public detail::LocalContext {
 public:
  struct Row {
    std::uint64_t id;
    std::uint32_t instance;
    DrawKind kind;
  };
  explicit RecordingContext(std::uint64_t seed) : LocalContext(seed) {}
  Tensor on_sample(const Distribution& d, const SampleOptions& o, std::uint64_t id, std::uint32_t instance) override {
    rows.push_back({id, instance, DrawKind::Sample});
    return LocalContext::on_sample(d, o, id, instance);
  }
  void on_observe(const Distribution& d, const Tensor* value, const std::string& name, std::uint64_t id,
                  std::uint32_t instance) override {
    rows.push_back({id, instance, DrawKind::Observe});
    LocalContext::on_observe(d, value, name, id, instance);
  }
  void on_tag(const Tensor& value, const std::string& name, std::uint64_t id, std::uint32_t instance) override {
    rows.push_back({id, instance, DrawKind::Tag});
    LocalContext::on_tag(value, name, id, instance);
  }
  std::vector<Row> rows;
};

}  // namespace

// Frames backtrace() reports between its caller and itself: 0 normally, 1 under ASan, whose
// runtime intercepts backtrace() and calls the real one from the interceptor.
__attribute__((noinline)) int backtrace_extra_frames() {
  void* pcs[8];
  int n = backtrace(pcs, 8);
  void* ra = __builtin_return_address(0);
  for (int i = 1; i < n; ++i) {
    if (pcs[i] == ra) return i - 1;
  }
  return -1;
}

int g_backtrace_extra_frames = 0;

// Draw sites. Not static, not inlined: each is a distinct frame with a findable name.
__attribute__((noinline)) void probe_loop_site(int k) {
  for (int i = 0; i < k; ++i) sample(Normal(0.0, 1.0), "loop");
}

// One caller of probe_loop_site, so every call through it has the same call stack.
__attribute__((noinline)) void probe_loop_from_one_place(int k) { probe_loop_site(k); }

// What serve() does around the model: record the entry depth, so addresses stop at this frame.
__attribute__((noinline)) void run_as_model(void (*model)()) {
  detail::address_book().set_model_entry(__builtin_return_address(0));
  model();
  detail::address_book().clear_model_entry();
  asm volatile("" ::: "memory");  // keep this frame (no tail call)
}

__attribute__((noinline)) void probe_two_sites() {
  sample(Normal(0.0, 1.0), "twin");
  sample(Normal(0.0, 1.0), "twin");
}

__attribute__((noinline)) void probe_names_at_one_site() {
  for (const char* n : {"first", "second", "first"}) sample(Normal(0.0, 1.0), n);
}

__attribute__((noinline)) void probe_explicit_one() {
  SampleOptions o;
  o.name = "energy";
  o.address = "detector/calorimeter/energy";
  sample(Normal(0.0, 1.0), o);
}

__attribute__((noinline)) void probe_explicit_two() {
  SampleOptions o;
  o.name = "energy";
  o.address = "detector/calorimeter/energy";
  (void)sample(Normal(5.0, 1.0), o);
  o.address = "detector/calorimeter/other";
  (void)sample(Normal(5.0, 1.0), o);
}

__attribute__((noinline)) void probexec_readable_probe_fn() { sample(Uniform(0.0, 1.0), "readable"); }

__attribute__((noinline)) void probe_mixed_trace() {
  for (int i = 0; i < 3; ++i) sample(Normal(0.0, 1.0), "x");
  sample(Normal(0.0, 1.0), "y");
  observe(Normal(0.0, 1.0), 0.5, "obs");
  tag(1.0, "t");
}

// --- tests -----------------------------------------------------------------------------------------

namespace {

void test_tensor() {
  Tensor s(2.5);
  CHECK(s.shape().empty());
  CHECK(s.is_scalar());
  CHECK_EQ(s.item(), 2.5);
  double implicit = s;
  CHECK_EQ(implicit, 2.5);

  Tensor v{1.0, 2.0, 3.0};
  CHECK_EQ(shape_str(v.shape()), "[3]");
  CHECK_EQ(v.numel(), 3u);
  CHECK(!v.is_scalar());
  CHECK_EQ(v[2], 3.0);
  CHECK_THROWS(v.item(), "3 values");
  CHECK_THROWS(static_cast<double>(v), "not 1");

  Tensor one{7.0};
  CHECK(one.is_scalar());
  CHECK_EQ(one.item(), 7.0);

  Tensor m({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK_EQ(shape_str(m.shape()), "[2,3]");
  CHECK_EQ(m.numel(), 6u);
  CHECK_THROWS(m.item(), "6 values");
  CHECK(!Tensor({1.0}, {1, 1}).is_scalar());

  CHECK_THROWS(Tensor({1, 2, 3}, {2, 2}), "shape holds 4 values but data has 3");
  CHECK_THROWS(Tensor({1, 2}, {-1, -2}), "negative dimension");
  CHECK_THROWS(Tensor(std::vector<double>{}, {}), "shape holds 1 values");
  CHECK_NOTHROW(Tensor(std::vector<double>{}, {0}));
  CHECK_NOTHROW(Tensor({4.0}, {}));
  CHECK_THROWS(Tensor().item(), "0 values");

  Tensor flat(std::vector<double>{1, 2, 3, 4});
  CHECK_EQ(shape_str(flat.shape()), "[4]");
}

void test_distribution_construction() {
  const double nan = std::nan("");
  CHECK_THROWS(Normal(nan, 1.0), "Normal: parameter mean must be finite, got nan");
  CHECK_THROWS(Normal(0.0, Tensor{1.0, nan}), "Normal: parameter stddev must be > 0, got nan");
  CHECK_THROWS(Gamma(2.0, nan), "Gamma: parameter rate");
  CHECK_THROWS(Categorical(Tensor{0.5, nan}), "probs must be >= 0, got nan");
  // Out-of-range parameters are refused where the simulator author wrote them.
  CHECK_THROWS(Normal(0.0, -1.0), "Normal: parameter stddev must be > 0, got -1");
  CHECK_THROWS(Bernoulli(1.5), "Bernoulli: parameter probs must be in [0, 1], got 1.5");
  CHECK_THROWS(Poisson(-2.0), "Poisson: parameter rate must be >= 0, got -2");
  CHECK_THROWS(Binomial(2.5, 0.5), "total_count must be a whole number");
  CHECK_THROWS(Uniform(1.0, 1.0), "low must be < high");
  CHECK_THROWS(Uniform(Tensor{0.0, 2.0}, 1.0), "low must be < high, got low 2, high 1");
  CHECK_THROWS(Categorical(Tensor({0.5, 0.5, 0.0, 0.0}, {2, 2})), "row 1 sum to zero");
  CHECK_THROWS(Distribution(DistType::Normal, {Tensor(0.0)}), "takes 2 parameter(s), got 1");
  CHECK_THROWS(Distribution(DistType::Poisson, {Tensor(1.0), Tensor(1.0)}), "takes 1 parameter(s), got 2");
  CHECK_THROWS(Normal(Tensor{0.0, 1.0}, Tensor{1.0, 2.0, 3.0}), "different shapes");
  CHECK_THROWS(Uniform(Tensor({0, 0, 0, 0}, {2, 2}), Tensor{1.0, 1.0, 1.0, 1.0}), "different shapes");
  CHECK_THROWS(Categorical(Tensor{0.5, -0.1, 0.6}), "probs must be >= 0, got -0.1");
  CHECK_THROWS(Categorical(Tensor{0.0, 0.0}), "sum to zero");
  CHECK_THROWS(Normal(Tensor(std::vector<double>{}), 1.0), "empty");
  CHECK_NOTHROW(Normal(Tensor{0.0, 1.0}, Tensor{1.0, 2.0}));

  CHECK_EQ(std::string(dist_type_name(DistType::Weibull)), "Weibull");
  CHECK_EQ(std::string(dist_type_name(DistType::Normal)), "Normal");

  // Shapes of one draw.
  CHECK_EQ(shape_str(Normal(0.0, 1.0).value_shape()), "[]");
  CHECK_EQ(Normal(0.0, 1.0).value_numel(), 1u);
  CHECK_EQ(shape_str(Normal(Tensor{0.0, 1.0, 2.0}, 0.5).value_shape()), "[3]");
  CHECK_EQ(shape_str(Normal(0.5, Tensor{1.0, 2.0, 3.0}).value_shape()), "[3]");
  CHECK_EQ(shape_str(Beta(Tensor({1, 2, 3, 4}, {2, 2}), 2.0).value_shape()), "[2,2]");
  CHECK_EQ(Beta(Tensor({1, 2, 3, 4}, {2, 2}), 2.0).value_numel(), 4u);
  CHECK_EQ(shape_str(Normal(Tensor{1.0}, 1.0).value_shape()), "[]");  // [1] counts as a scalar
  CHECK_EQ(shape_str(Categorical(Tensor{0.2, 0.3, 0.5}).value_shape()), "[]");
  CHECK_EQ(Categorical(Tensor{0.2, 0.3, 0.5}).value_numel(), 1u);
  CHECK_EQ(shape_str(Categorical(Tensor({0.2, 0.3, 0.5, 0.1, 0.1, 0.8}, {2, 3})).value_shape()), "[2]");
  CHECK_EQ(Categorical(Tensor({0.2, 0.3, 0.5, 0.1, 0.1, 0.8}, {2, 3})).value_numel(), 2u);
  CHECK(Weibull(2.0, 3.0).type() == DistType::Weibull);
  CHECK_EQ(Weibull(2.0, 3.0).params()[0].item(), 2.0);  // wire order: scale, concentration
  CHECK_EQ(Weibull(2.0, 3.0).params()[1].item(), 3.0);
}

struct Moments {
  double mean = 0, var = 0, se_var = 0;
  std::size_t n = 0;
};

Moments moments(const Distribution& d, std::size_t n, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<double> xs(n);
  for (auto& x : xs) x = detail::draw_local(d, rng).item();
  Moments m;
  m.n = n;
  for (double x : xs) m.mean += x;
  m.mean /= static_cast<double>(n);
  double m2 = 0, m4 = 0;
  for (double x : xs) {
    double c = (x - m.mean) * (x - m.mean);
    m2 += c;
    m4 += c * c;
  }
  m.var = m2 / static_cast<double>(n - 1);
  m4 /= static_cast<double>(n);
  m.se_var = std::sqrt(std::max(m4 - m.var * m.var, 0.0) / static_cast<double>(n));
  return m;
}

// Sample mean and variance within 5 standard errors of the exact values.
#define CHECK_MOMENTS(dist, true_mean, true_var)                                                            \
  do {                                                                                                      \
    const double mean_ = (true_mean), var_ = (true_var);                                                    \
    Moments mm_ = moments(dist, 200000, 17);                                                                \
    CHECK_NEAR(mm_.mean, mean_, 5.0 * std::sqrt(var_ / static_cast<double>(mm_.n)));                        \
    CHECK_NEAR(mm_.var, var_, 5.0 * mm_.se_var);                                                            \
  } while (0)

void test_local_sampling() {
  CHECK_MOMENTS(Normal(1.5, 2.0), 1.5, 4.0);
  CHECK_MOMENTS(Uniform(-1.0, 3.0), 1.0, 16.0 / 12.0);
  CHECK_MOMENTS(Poisson(3.5), 3.5, 3.5);
  CHECK_MOMENTS(Gamma(3.0, 2.0), 1.5, 0.75);  // concentration 3, rate 2
  {
    const double a = 2.0, b = 5.0;
    CHECK_MOMENTS(Beta(a, b), a / (a + b), a * b / ((a + b) * (a + b) * (a + b + 1)));
  }
  {
    // Weibull(scale 2, concentration 3): swapping the two would give mean 3 Γ(1.5) = 2.66, not 1.79.
    const double scale = 2.0, k = 3.0;
    const double g1 = std::tgamma(1 + 1 / k), g2 = std::tgamma(1 + 2 / k);
    CHECK_MOMENTS(Weibull(scale, k), scale * g1, scale * scale * (g2 - g1 * g1));
  }
  CHECK_MOMENTS(Exponential(2.5), 0.4, 0.16);
  CHECK_MOMENTS(Binomial(10.0, 0.4), 4.0, 2.4);

  // Categorical frequencies.
  {
    const std::vector<double> p = {0.2, 0.3, 0.5};
    const std::size_t n = 200000;
    Rng rng(5);
    std::vector<double> count(3, 0.0);
    bool in_range = true;
    Distribution d = Categorical(Tensor{p[0], p[1], p[2]});
    for (std::size_t i = 0; i < n; ++i) {
      double k = detail::draw_local(d, rng).item();
      if (k != 0 && k != 1 && k != 2) in_range = false;
      else count[static_cast<std::size_t>(k)] += 1;
    }
    CHECK(in_range);
    for (std::size_t k = 0; k < 3; ++k) {
      CHECK_NEAR(count[k] / static_cast<double>(n), p[k], 5.0 * std::sqrt(p[k] * (1 - p[k]) / static_cast<double>(n)));
    }
  }
  // Unnormalised Categorical weights are probabilities up to a constant.
  {
    Rng rng(6);
    Distribution d = Categorical(Tensor{1.0, 3.0});
    double ones = 0;
    const std::size_t n = 100000;
    for (std::size_t i = 0; i < n; ++i) ones += detail::draw_local(d, rng).item();
    CHECK_NEAR(ones / static_cast<double>(n), 0.75, 5.0 * std::sqrt(0.75 * 0.25 / static_cast<double>(n)));
  }

  // Vector-valued draws keep their shape, and batched Categorical draws one index per row.
  {
    Rng rng(7);
    Tensor v = detail::draw_local(Normal(Tensor{0.0, 100.0, 200.0}, 0.001), rng);
    CHECK_EQ(shape_str(v.shape()), "[3]");
    CHECK_NEAR(v[0], 0.0, 0.1);
    CHECK_NEAR(v[1], 100.0, 0.1);
    CHECK_NEAR(v[2], 200.0, 0.1);
    Tensor c = detail::draw_local(Categorical(Tensor({0, 0, 1, 1, 0, 0}, {2, 3})), rng);
    CHECK_EQ(shape_str(c.shape()), "[2]");
    CHECK_EQ(c[0], 2.0);
    CHECK_EQ(c[1], 0.0);
    Tensor s = detail::draw_local(Normal(0.0, 1.0), rng);
    CHECK(s.shape().empty());
    CHECK_EQ(s.numel(), 1u);
  }

  // Same seed, same values.
  {
    Rng a(42), b(42);
    Distribution d = Gamma(2.0, 1.0);
    bool same = true;
    for (int i = 0; i < 100; ++i) same = same && detail::draw_local(d, a).item() == detail::draw_local(d, b).item();
    CHECK(same);
  }
}

void test_address_capture() {
  RecordingContext ctx(123);
  detail::ContextGuard guard(ctx);
  ctx.begin_trace();

  // One call site reached repeatedly: one id, instances 1, 2, 3. Two traces through the same
  // call stack: the same id, and the instance counter starts again at begin_trace.
  std::vector<RecordingContext::Row> traces[2];
  volatile int two = 2;  // keeps the loop a loop (one call site) at any optimisation level
  for (int t = 0; t < two; ++t) {
    ctx.begin_trace();
    ctx.rows.clear();
    probe_loop_from_one_place(t == 0 ? 3 : 2);
    traces[t] = ctx.rows;
  }
  CHECK_EQ(traces[1].size(), 2u);
  if (traces[0].size() == 3 && traces[1].size() == 2) {
    CHECK_EQ(traces[1][0].id, traces[0][0].id);
    CHECK_EQ(traces[1][1].id, traces[0][0].id);
    CHECK_EQ(traces[1][0].instance, 1u);
    CHECK_EQ(traces[1][1].instance, 2u);
  }
  ctx.rows = traces[0];
  CHECK_EQ(ctx.rows.size(), 3u);
  if (ctx.rows.size() == 3) {
    CHECK_EQ(ctx.rows[0].id, ctx.rows[1].id);
    CHECK_EQ(ctx.rows[1].id, ctx.rows[2].id);
    CHECK_EQ(ctx.rows[0].instance, 1u);
    CHECK_EQ(ctx.rows[1].instance, 2u);
    CHECK_EQ(ctx.rows[2].instance, 3u);
  }
  const std::uint64_t loop_id = ctx.rows.empty() ? 0 : ctx.rows[0].id;

  // The same function called again from the same place (a loop here) keeps the id and counts on.
  ctx.rows.clear();
  for (int i = 0; i < two; ++i) probe_loop_site(1);
  CHECK_EQ(ctx.rows.size(), 2u);
  if (ctx.rows.size() == 2) {
    CHECK_EQ(ctx.rows[0].id, ctx.rows[1].id);
    CHECK_EQ(ctx.rows[0].instance, 1u);  // a different caller frame than above: a new address
    CHECK_EQ(ctx.rows[1].instance, 2u);
    CHECK(ctx.rows[0].id != loop_id);
  }

  // Two call sites in one function: two ids, each with instance 1.
  ctx.rows.clear();
  probe_two_sites();
  CHECK_EQ(ctx.rows.size(), 2u);
  if (ctx.rows.size() == 2) {
    CHECK(ctx.rows[0].id != ctx.rows[1].id);
    CHECK_EQ(ctx.rows[0].instance, 1u);
    CHECK_EQ(ctx.rows[1].instance, 1u);
  }

  // A different name at the same site: a different id; the same name again: the first id.
  ctx.rows.clear();
  probe_names_at_one_site();
  CHECK_EQ(ctx.rows.size(), 3u);
  if (ctx.rows.size() == 3) {
    CHECK(ctx.rows[0].id != ctx.rows[1].id);
    CHECK_EQ(ctx.rows[0].id, ctx.rows[2].id);
    CHECK_EQ(ctx.rows[2].instance, 2u);
    CHECK_EQ(detail::address_book().info(ctx.rows[0].id).name, "first");
    CHECK_EQ(detail::address_book().info(ctx.rows[1].id).name, "second");
  }

  // An explicit address replaces the call stack: same id from different sites, different id for
  // a different address.
  ctx.rows.clear();
  probe_explicit_one();
  probe_explicit_two();
  CHECK_EQ(ctx.rows.size(), 3u);
  if (ctx.rows.size() == 3) {
    CHECK_EQ(ctx.rows[0].id, ctx.rows[1].id);
    CHECK(ctx.rows[0].id != ctx.rows[2].id);
    CHECK_EQ(ctx.rows[0].instance, 1u);
    CHECK_EQ(ctx.rows[1].instance, 2u);
    const auto& info = detail::address_book().info(ctx.rows[0].id);
    CHECK_EQ(info.address, "detector/calorimeter/energy");
    CHECK_EQ(info.name, "energy");
    CHECK_EQ(static_cast<int>(info.dist_type), static_cast<int>(DistType::Normal));
    CHECK(info.kind == DrawKind::Sample);
    CHECK_EQ(detail::address_book().info(ctx.rows[2].id).address, "detector/calorimeter/other");
    CHECK(ctx.rows[0].id == detail::address_book().capture(0, DrawKind::Sample, static_cast<std::uint8_t>(DistType::Normal),
                                                           "energy", "detector/calorimeter/energy"));
  }

  // With a model entry depth set (as serve() does), frames below the model's entry are left out:
  // the same model run from two different places gives the same ids.
  ctx.begin_trace();
  ctx.rows.clear();
  run_as_model(probe_two_sites);
  auto first_run = ctx.rows;
  ctx.begin_trace();
  ctx.rows.clear();
  run_as_model(probe_two_sites);
  CHECK_EQ(first_run.size(), 2u);
  CHECK_EQ(ctx.rows.size(), 2u);
  if (first_run.size() == 2 && ctx.rows.size() == 2) {
    CHECK_EQ(ctx.rows[0].id, first_run[0].id);
    CHECK_EQ(ctx.rows[1].id, first_run[1].id);
    // The model's own frames still count: its two call sites are two addresses.
    CHECK(ctx.rows[0].id != ctx.rows[1].id);
    const auto& info = detail::address_book().info(ctx.rows[0].id);
    CHECK(contains(info.address, "probe_two_sites"));
  }

  // Observe and tag: own kinds and ids, counted per address.
  ctx.rows.clear();
  probe_mixed_trace();
  CHECK_EQ(ctx.rows.size(), 6u);
  if (ctx.rows.size() == 6) {
    CHECK(ctx.rows[4].kind == DrawKind::Observe);
    CHECK(ctx.rows[5].kind == DrawKind::Tag);
    std::set<std::uint64_t> distinct;
    for (const auto& r : ctx.rows) distinct.insert(r.id);
    CHECK_EQ(distinct.size(), 4u);
    CHECK(detail::address_book().info(ctx.rows[4].id).kind == DrawKind::Observe);
    CHECK_EQ(static_cast<int>(detail::address_book().info(ctx.rows[5].id).dist_type), 0);
  }

  // Readable form of an address. The unit test executable is not linked with -rdynamic, so dladdr
  // finds no symbol for its own functions; the name comes from addr2line and the debug info, as
  // "function@offset", with "file:line" (absolute path) in `source`, innermost frame first.
  // Under ASan the sanitizer's backtrace() interceptor adds a frame; capture must not care.
  ::unsetenv("PROBEXEC_NO_ADDR2LINE");
  ctx.rows.clear();
  probexec_readable_probe_fn();
  CHECK_EQ(ctx.rows.size(), 1u);
  if (ctx.rows.size() == 1) {
    const auto& info = detail::address_book().info(ctx.rows[0].id);
    CHECK(contains(info.address, "probexec_readable_probe_fn"));
    CHECK(contains(info.source, "unit_tests.cpp:"));
    const auto frames = split(info.address, '|');
    const auto sources = split(info.source, '|');
    CHECK_EQ(frames.size(), sources.size());
    std::size_t user = 0;
    while (user < frames.size() && frames[user].rfind("probexec::", 0) == 0) ++user;
    CHECK(user == 0);
    CHECK(user < frames.size() && frames[user].rfind("probexec_readable_probe_fn()", 0) == 0);
    CHECK(user < sources.size() && contains(sources[user], "unit_tests.cpp:"));
    CHECK(user + 1 < frames.size() && contains(frames[user + 1], "test_address_capture"));
    CHECK(!contains(info.address, "draw_sample"));
    CHECK(!contains(info.address, "AddressBook::capture"));
    CHECK_EQ(info.name, "readable");
    CHECK_EQ(static_cast<int>(info.dist_type), static_cast<int>(DistType::Uniform));
    if (!contains(info.address, "probexec_readable_probe_fn") || !contains(info.source, "unit_tests.cpp:")) {
      std::fprintf(stderr, "  address: %s\n  source: %s\n", info.address.c_str(), info.source.c_str());
    }
  }
}

// --- line resolver ---------------------------------------------------------------------------------

__attribute__((noinline)) void probexec_line_probe_fn() { asm volatile(""); }

void test_line_resolver() {
  // One addr2line co-process answers many lookups; a second lookup of the same offset gives the
  // same answer (it is not re-spawned per lookup, which cost tens of ms a new address).
  Dl_info dl{};
  CHECK(dladdr(reinterpret_cast<void*>(&probexec_line_probe_fn), &dl) != 0 && dl.dli_fname != nullptr);
  if (!dl.dli_fname) return;
  auto raw = reinterpret_cast<std::uintptr_t>(&probexec_line_probe_fn);
  const auto* ehdr = static_cast<const ElfW(Ehdr)*>(dl.dli_fbase);
  std::uintptr_t at = ehdr->e_type == ET_EXEC ? raw : raw - reinterpret_cast<std::uintptr_t>(dl.dli_fbase);
  // The executable's real path: it may have been started by a relative one (and /proc/self/exe
  // would be addr2line's own once opened there).
  char exe[4096] = {};
  CHECK(::readlink("/proc/self/exe", exe, sizeof exe - 1) > 0);
  detail::LineResolver r(exe);
  CHECK(r.ok());
  auto first = r.resolve({at, at + 1, 0x1});
  CHECK_EQ(first.size(), 3u);
  CHECK(contains(first[0].first, "probexec_line_probe_fn"));
  CHECK(contains(first[0].second, "unit_tests.cpp:"));
  CHECK(first[2].first.empty() && first[2].second.empty());  // no function there: empty, not "??"
  auto again = r.resolve({at});
  CHECK(again.size() == 1 && again[0] == first[0]);
  if (!contains(first[0].second, "unit_tests.cpp:")) {
    std::fprintf(stderr, "  resolved: %s / %s\n", first[0].first.c_str(), first[0].second.c_str());
  }
  // A module addr2line cannot read: empty answers, and the process goes on.
  detail::LineResolver missing("/nonexistent/module.so");
  auto none = missing.resolve({at});
  CHECK(none.size() == 1 && none[0].first.empty() && none[0].second.empty());
  CHECK(!missing.ok());  // it exited; the lookup noticed
  CHECK(missing.resolve({at})[0].second.empty());  // and later ones return at once
}

// --- wire ------------------------------------------------------------------------------------------

// Encodes `d` in a Sample message and decodes it again.
Distribution round_trip(const Distribution& d) {
  Builder b;
  auto dist = detail::write_distribution(b, d);
  auto name = b.CreateString("x");
  detail::finish(b, ppx::CreateSample(b, 0, name, static_cast<ppx::Distribution>(d.type()), dist), ppx::MessageBody::Sample);
  const auto* msg = detail::parse_message(b.GetBufferPointer(), b.GetSize());
  const auto* s = msg->body_as_Sample();
  if (!s) throw error("not a Sample");
  return detail::read_distribution(s->distribution_type(), s->distribution());
}

bool same_distribution(const Distribution& a, const Distribution& b) {
  if (a.type() != b.type() || a.params().size() != b.params().size() || a.value_shape() != b.value_shape()) return false;
  for (std::size_t i = 0; i < a.params().size(); ++i) {
    if (!same_tensor(a.params()[i], b.params()[i])) return false;
  }
  return true;
}

void test_wire_distributions() {
  const std::vector<Distribution> all = {
      Normal(Tensor{1.5, -2.0}, 2.0),
      Uniform(-1.0, 3.25),
      Categorical(Tensor({0.2, 0.3, 0.5, 0.6, 0.3, 0.1}, {2, 3})),
      Poisson(3.5),
      Bernoulli(Tensor{0.1, 0.9, 0.5}),
      Beta(2.5, 1.5),
      Exponential(2.5),
      Gamma(3.0, Tensor({1.0, 2.0, 3.0, 4.0}, {2, 2})),
      LogNormal(0.3, 0.7),
      Binomial(7.0, 0.3),
      Weibull(2.0, 3.0),
  };
  std::set<int> types;
  for (const auto& d : all) {
    types.insert(static_cast<int>(d.type()));
    try {
      Distribution r = round_trip(d);
      report(same_distribution(d, r), __FILE__, __LINE__, std::string("round trip of ") + dist_type_name(d.type()));
    } catch (const std::exception& e) {
      report(false, __FILE__, __LINE__, std::string("round trip of ") + dist_type_name(d.type()) + " threw " + e.what());
    }
  }
  CHECK_EQ(types.size(), 11u);
  // The wire order of Weibull is (scale, concentration).
  {
    Builder b;
    auto dist = detail::write_distribution(b, Weibull(2.0, 3.0));
    detail::finish(b, ppx::CreateSample(b, 0, 0, ppx::Distribution::Weibull, dist), ppx::MessageBody::Sample);
    const auto* w = detail::parse_message(b.GetBufferPointer(), b.GetSize())->body_as_Sample()->distribution_as_Weibull();
    CHECK(w != nullptr);
    if (w) {
      CHECK_EQ(w->scale()->data()->Get(0), 2.0);
      CHECK_EQ(w->concentration()->data()->Get(0), 3.0);
    }
  }
  // Decoding errors.
  CHECK_THROWS(detail::read_distribution(ppx::Distribution::Normal, nullptr), "without a table");
  {
    Builder b;
    auto mean = detail::write_tensor(b, Tensor(1.0));
    auto normal = ppx::CreateNormal(b, mean);  // no stddev
    detail::finish(b, ppx::CreateSample(b, 0, 0, ppx::Distribution::Normal, normal.Union()), ppx::MessageBody::Sample);
    const auto* s = detail::parse_message(b.GetBufferPointer(), b.GetSize())->body_as_Sample();
    CHECK_THROWS(detail::read_distribution(s->distribution_type(), s->distribution()), "missing parameter Normal.stddev");
    CHECK_THROWS(detail::read_distribution(static_cast<ppx::Distribution>(42), s->distribution()), "unknown distribution type 42");
  }
}

Tensor tensor_round_trip(Builder& b, const Tensor& t) {
  b.Clear();
  auto off = detail::write_tensor(b, t);
  detail::finish(b, ppx::CreateSampleResult(b, off), ppx::MessageBody::SampleResult);
  return detail::read_tensor(detail::parse_message(b.GetBufferPointer(), b.GetSize())->body_as_SampleResult()->result());
}

void test_wire_tensors() {
  Builder b;
  for (const Tensor& t : {Tensor(3.25), Tensor{1.0, 2.0, 3.0}, Tensor({1, 2, 3, 4, 5, 6}, {2, 3}),
                          Tensor({1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2}), Tensor(std::vector<double>{}, {0})}) {
    Tensor r = tensor_round_trip(b, t);
    report(same_tensor(t, r), __FILE__, __LINE__,
           "tensor round trip " + shape_str(t.shape()) + " -> " + shape_str(r.shape()));
  }
  CHECK(tensor_round_trip(b, Tensor(-0.0)).shape().empty());
  CHECK(std::isinf(tensor_round_trip(b, Tensor(HUGE_VAL)).item()));

  // What other peers may send: a scalar as [1], a shape that does not match the data, no tensor.
  auto raw = [&](std::vector<double> data, std::vector<int> shape) {
    b.Clear();
    auto off = detail::write_tensor(b, data.data(), data.size(), shape.data(), shape.size());
    detail::finish(b, ppx::CreateSampleResult(b, off), ppx::MessageBody::SampleResult);
    return detail::read_tensor(detail::parse_message(b.GetBufferPointer(), b.GetSize())->body_as_SampleResult()->result());
  };
  CHECK_EQ(shape_str(raw({4.0}, {1}).shape()), "[1]");  // kept: [1] is a scalar shape too
  CHECK(raw({4.0}, {1}).is_scalar());
  CHECK_EQ(raw({4.0}, {1}).item(), 4.0);
  CHECK_EQ(shape_str(raw({4.0}, {}).shape()), "[]");
  CHECK_EQ(shape_str(raw({4.0}, {3}).shape()), "[]");  // inconsistent one-value shape: a scalar
  CHECK_EQ(shape_str(raw({1, 2, 3, 4, 5, 6}, {4}).shape()), "[6]");
  CHECK_EQ(shape_str(raw({1, 2, 3}, {}).shape()), "[3]");
  CHECK_EQ(shape_str(raw({1, 2, 3, 4}, {2, -2}).shape()), "[4]");
  CHECK_EQ(detail::read_tensor(nullptr).numel(), 0u);
}

std::vector<std::uint8_t> valid_message(bool with_identifier) {
  Builder b;
  auto t = detail::write_tensor(b, Tensor{1.0, 2.0, 3.0});
  auto body = ppx::CreateSampleResult(b, t);
  auto msg = ppx::CreateMessage(b, ppx::MessageBody::SampleResult, body.Union());
  if (with_identifier) ppx::FinishMessageBuffer(b, msg);
  else b.Finish(msg);
  return buffer_of(b);
}

void test_parse_message() {
  // Accepted: with and without the "PPXF" identifier.
  {
    auto with = valid_message(true);
    auto without = valid_message(false);
    CHECK(ppx::MessageBufferHasIdentifier(with.data()));
    CHECK(!ppx::MessageBufferHasIdentifier(without.data()));
    const ppx::Message* m = nullptr;
    CHECK_NOTHROW(m = detail::parse_message(with.data(), with.size()));
    CHECK(m && m->body_type() == ppx::MessageBody::SampleResult);
    m = nullptr;
    CHECK_NOTHROW(m = detail::parse_message(without.data(), without.size()));
    CHECK(m && m->body_type() == ppx::MessageBody::SampleResult);
    if (m) CHECK_EQ(detail::read_tensor(m->body_as_SampleResult()->result()).numel(), 3u);
  }
  // Empty and too short.
  {
    std::uint8_t byte = 0;
    CHECK_THROWS(detail::parse_message(&byte, 0), "too short");
    CHECK_THROWS(detail::parse_message(nullptr, 0), "too short");
    std::vector<std::uint8_t> tiny(7, 0);
    CHECK_THROWS(detail::parse_message(tiny.data(), tiny.size()), "too short");
  }
  // Truncated: every prefix that cuts into the encoded tables is refused. The builder may pad the
  // end of a buffer, so only prefixes up to the last non-zero byte are required to fail.
  {
    auto full = valid_message(true);
    std::size_t last_data = full.size();
    while (last_data > 0 && full[last_data - 1] == 0) --last_data;
    int accepted = 0;
    for (std::size_t n = 0; n < last_data; ++n) {
      std::vector<std::uint8_t> cut(full.begin(), full.begin() + static_cast<long>(n));
      try {
        detail::parse_message(cut.data(), cut.size());
        ++accepted;
      } catch (const error& e) {
        if (std::strlen(e.what()) == 0) ++accepted;
      }
    }
    CHECK_EQ(accepted, 0);
    std::vector<std::uint8_t> half(full.begin(), full.begin() + static_cast<long>(full.size() / 2));
    CHECK_THROWS(detail::parse_message(half.data(), half.size()), "failed FlatBuffers verification");
  }
  // Random bytes.
  {
    std::mt19937 gen(2024);
    int accepted = 0;
    std::string last;
    for (int trial = 0; trial < 200; ++trial) {
      std::vector<std::uint8_t> junk(8 + static_cast<std::size_t>(gen() % 512));
      for (auto& c : junk) c = static_cast<std::uint8_t>(gen());
      try {
        detail::parse_message(junk.data(), junk.size());
        ++accepted;
      } catch (const error& e) {
        last = e.what();
      }
    }
    CHECK_EQ(accepted, 0);
    CHECK(contains(last, "malformed message"));
    std::vector<std::uint8_t> text(64);
    const char* s = "this is not a flatbuffer, just some text of sixty-four bytes..";
    std::memcpy(text.data(), s, std::min(text.size(), std::strlen(s)));
    CHECK_THROWS(detail::parse_message(text.data(), text.size()), "malformed message");
  }
  // Union type beyond MessageBody::MAX, and NONE.
  {
    const int max = static_cast<int>(ppx::MessageBody::MAX);
    for (int type : {max + 1, 200, 255}) {
      Builder b;
      auto body = ppx::CreateShutdown(b);
      ppx::FinishMessageBuffer(b, ppx::CreateMessage(b, static_cast<ppx::MessageBody>(type), body.Union()));
      auto buf = buffer_of(b);
      CHECK_THROWS(detail::parse_message(buf.data(), buf.size()), "unknown message type " + std::to_string(type));
    }
    // Same by patching the type byte of a valid buffer.
    Builder b;
    auto body = ppx::CreateShutdown(b);
    ppx::FinishMessageBuffer(b, ppx::CreateMessage(b, ppx::MessageBody::Shutdown, body.Union()));
    auto buf = buffer_of(b);
    CHECK_NOTHROW(detail::parse_message(buf.data(), buf.size()));
    // Message derives privately from Table; read its field through a plain Table view.
    const auto* table = flatbuffers::GetRoot<flatbuffers::Table>(buf.data());
    const std::uint8_t* pos = table->GetAddressOf(ppx::Message::VT_BODY_TYPE);
    CHECK(pos != nullptr);
    if (pos) {
      auto off = static_cast<std::size_t>(pos - buf.data());
      CHECK_EQ(static_cast<int>(buf[off]), static_cast<int>(ppx::MessageBody::Shutdown));
      buf[off] = static_cast<std::uint8_t>(max + 1);
      CHECK_THROWS(detail::parse_message(buf.data(), buf.size()), "unknown message type");
    }
    Builder none;
    ppx::FinishMessageBuffer(none, ppx::CreateMessage(none));
    auto nbuf = buffer_of(none);
    CHECK_THROWS(detail::parse_message(nbuf.data(), nbuf.size()), "unknown message type 0");
  }
  // A known type with no body table.
  {
    Builder b;
    ppx::FinishMessageBuffer(b, ppx::CreateMessage(b, ppx::MessageBody::Run, 0));
    auto buf = buffer_of(b);
    CHECK_THROWS(detail::parse_message(buf.data(), buf.size()), "Run has no body table");
  }
  CHECK_EQ(std::string(detail::body_name(ppx::MessageBody::TraceBatch)), "TraceBatch");
  CHECK_EQ(std::string(detail::body_name(static_cast<ppx::MessageBody>(99))), "Unknown");
}

// --- DrawRecorder ----------------------------------------------------------------------------------

template <typename T>
std::vector<T> vec(const flatbuffers::Vector<T>* v) {
  return v ? std::vector<T>(v->begin(), v->end()) : std::vector<T>();
}

bool offsets_ok(const std::vector<std::uint32_t>& offsets, std::size_t rows, std::size_t total) {
  if (offsets.size() != rows + 1 || offsets.front() != 0 || offsets.back() != total) return false;
  for (std::size_t i = 1; i < offsets.size(); ++i) {
    if (offsets[i] < offsets[i - 1]) return false;
  }
  return true;
}

// Writes `rec` as a streamed TraceBatch and parses it back (the buffer lives in `b`).
const ppx::DrawBatch* write_batch(Builder& b, detail::DrawRecorder& rec, std::unordered_set<std::uint64_t>& sent,
                                  const std::uint64_t* also = nullptr) {
  b.Clear();
  auto batch = rec.write(b, sent, true, also);
  auto errs = b.CreateVectorOfStrings(std::vector<std::string>{});
  detail::finish(b, ppx::CreateTraceBatch(b, batch, errs), ppx::MessageBody::TraceBatch);
  return detail::parse_message(b.GetBufferPointer(), b.GetSize())->body_as_TraceBatch()->draws();
}

void test_draw_recorder() {
  detail::DrawRecorder rec;
  CHECK(rec.empty());
  detail::LocalContext ctx(99);
  ctx.set_recorder(&rec, false);
  {
    detail::ContextGuard guard(ctx);
    // Trace 1: 3 + 1 samples, an observe, a tag; one vector draw and one uncontrolled draw.
    ctx.begin_trace();
    rec.begin_trace();
    probe_mixed_trace();
    sample(Normal(Tensor{0.0, 1.0, 2.0}, 0.5), "vec");
    sample(Normal(0.0, 1.0), "noise", false);
    rec.end_trace(Tensor(1.0), 0.01);
    CHECK_EQ(rec.rows(), 8u);
    // Trace 2 fails: its rows go, trace 1's stay.
    ctx.begin_trace();
    rec.begin_trace();
    probe_loop_site(4);
    CHECK_EQ(rec.rows(), 12u);
    rec.drop_trace();
    CHECK_EQ(rec.rows(), 8u);
    rec.begin_trace();
    rec.end_trace(Tensor(), 0.02);
    // Trace 3: two draws.
    ctx.begin_trace();
    rec.begin_trace();
    probe_loop_site(2);
    rec.end_trace(Tensor{5.0, 6.0}, 0.03);
  }
  ctx.set_recorder(nullptr, true);
  CHECK_EQ(rec.rows(), 10u);

  std::unordered_set<std::uint64_t> sent;
  Builder b;
  const ppx::DrawBatch* d = nullptr;
  CHECK_NOTHROW(d = write_batch(b, rec, sent));
  CHECK(d != nullptr);
  if (!d) return;
  auto ids = vec(d->address_id());
  const std::size_t rows = ids.size();
  CHECK_EQ(rows, 10u);
  CHECK_EQ(vec(d->instance()).size(), rows);
  CHECK_EQ(vec(d->kind()).size(), rows);
  CHECK_EQ(vec(d->flags()).size(), rows);
  CHECK_EQ(vec(d->dist_type()).size(), rows);
  CHECK(offsets_ok(vec(d->param_offsets()), rows, vec(d->params()).size()));
  CHECK(offsets_ok(vec(d->value_offsets()), rows, vec(d->values()).size()));
  CHECK(offsets_ok(vec(d->shape_offsets()), rows, vec(d->shapes()).size()));
  auto traces = vec(d->trace_offsets());
  CHECK_EQ(shape_str(std::vector<int>(traces.begin(), traces.end())), "[0,8,8,10]");
  CHECK(d->results() && d->results()->size() == 3);
  CHECK_EQ(vec(d->wall_time()).size(), 3u);
  if (d->results() && d->results()->size() == 3) {
    CHECK_EQ(detail::read_tensor(d->results()->Get(0)).item(), 1.0);
    CHECK_EQ(detail::read_tensor(d->results()->Get(1)).numel(), 0u);
    CHECK_EQ(detail::read_tensor(d->results()->Get(2)).numel(), 2u);
  }
  if (rows == 10) {
    auto inst = vec(d->instance());
    auto kind = vec(d->kind());
    auto flags = vec(d->flags());
    auto dt = vec(d->dist_type());
    auto po = vec(d->param_offsets());
    auto vo = vec(d->value_offsets());
    auto so = vec(d->shape_offsets());
    CHECK_EQ(inst[0], 1u);
    CHECK_EQ(inst[2], 3u);
    CHECK_EQ(inst[3], 1u);
    CHECK_EQ(static_cast<int>(kind[4]), static_cast<int>(DrawKind::Observe));
    CHECK_EQ(static_cast<int>(kind[5]), static_cast<int>(DrawKind::Tag));
    CHECK_EQ(static_cast<int>(dt[5]), 0);
    CHECK_EQ(po[6] - po[5], 0u);                                // a tag has no parameters
    CHECK_EQ(po[7] - po[6], 6u);                                // vector Normal: scale broadcast to 3
    CHECK_EQ(vo[7] - vo[6], 3u);
    CHECK_EQ(so[7] - so[6], 1u);                                // shape [3]
    CHECK_EQ(static_cast<int>(flags[0]), static_cast<int>(detail::kControlled));
    CHECK_EQ(static_cast<int>(flags[7]), static_cast<int>(detail::kValueOmitted));  // uncontrolled, not kept
    CHECK_EQ(vo[8] - vo[7], 0u);
    CHECK_EQ(ids[8], ids[9]);
    CHECK_EQ(inst[8], 1u);
    CHECK_EQ(inst[9], 2u);
  }
  // AddressInfo once per id.
  std::set<std::uint64_t> unique(ids.begin(), ids.end());
  CHECK_EQ(unique.size(), 7u);
  CHECK(d->addresses() && d->addresses()->size() == unique.size());
  if (d->addresses()) {
    std::set<std::uint64_t> described;
    for (const auto* a : *d->addresses()) described.insert(a->id());
    CHECK(described == unique);
  }
  CHECK_EQ(sent.size(), unique.size());

  // The same rows again on the same connection: no AddressInfo at all.
  Builder b2;
  const ppx::DrawBatch* again = nullptr;
  CHECK_NOTHROW(again = write_batch(b2, rec, sent));
  CHECK(again && again->addresses() && again->addresses()->size() == 0);
  CHECK(again && vec(again->address_id()) == ids);

  // `also_id` is described once too.
  std::uint64_t extra = detail::address_book().capture(0, DrawKind::Tag, 0, "extra", "extra/address");
  const ppx::DrawBatch* third = nullptr;
  CHECK_NOTHROW(third = write_batch(b2, rec, sent, &extra));
  CHECK(third && third->addresses() && third->addresses()->size() == 1 && third->addresses()->Get(0)->id() == extra);
  if (third && third->addresses() && third->addresses()->size() == 1) {
    CHECK_EQ(third->addresses()->Get(0)->address()->str(), "extra/address");
  }
  CHECK_NOTHROW(third = write_batch(b2, rec, sent, &extra));
  CHECK(third && third->addresses() && third->addresses()->size() == 0);

  // clear() forgets everything; a cleared recorder writes an empty batch.
  rec.clear();
  CHECK(rec.empty());
  CHECK_NOTHROW(d = write_batch(b, rec, sent));
  CHECK(d && vec(d->address_id()).empty() && vec(d->trace_offsets()) == std::vector<std::uint32_t>{0});
  CHECK(d && vec(d->param_offsets()) == std::vector<std::uint32_t>{0});

  // drop_trace with no trace begun is harmless.
  rec.drop_trace();
  CHECK(rec.empty());
}

void test_public_api_local() {
  // With no engine the public functions draw from the thread's local RNG; seed() makes it repeatable.
  seed(11);
  double a = sample(Normal(0.0, 1.0));
  seed(11);
  double b = sample(Normal(0.0, 1.0));
  CHECK_EQ(a, b);
  CHECK_NOTHROW(observe(Normal(0.0, 1.0), 0.3, "o"));
  CHECK_NOTHROW(observe(Normal(0.0, 1.0), "o2"));
  CHECK_NOTHROW(tag(Tensor{1.0, 2.0}, "t"));
  Tensor v = sample(Categorical(Tensor({1, 0, 0, 0, 0, 1}, {2, 3})), "c");
  CHECK_EQ(shape_str(v.shape()), "[2]");
  CHECK_EQ(v[0], 0.0);
  CHECK_EQ(v[1], 2.0);
}

using TestFn = void (*)();

void run(const char* name, TestFn fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    report(false, __FILE__, __LINE__, std::string(name) + " threw " + e.what());
  } catch (...) {
    report(false, __FILE__, __LINE__, std::string(name) + " threw a non-standard exception");
  }
}

}  // namespace

int main() {
  {
    // CRC-32 of the npz writer: the standard check value.
    const char* check = "123456789";
    CHECK_EQ(probexec::detail::crc32(reinterpret_cast<const std::uint8_t*>(check), 9), 0xCBF43926u);
  }
  g_backtrace_extra_frames = backtrace_extra_frames();
  if (g_backtrace_extra_frames != 0) {
    std::fprintf(stderr, "note: backtrace() reports %d extra frame(s) in this build (sanitizer interceptor)\n",
                 g_backtrace_extra_frames);
  }
  run("tensor", test_tensor);
  run("distribution_construction", test_distribution_construction);
  run("local_sampling", test_local_sampling);
  run("address_capture", test_address_capture);
  run("line_resolver", test_line_resolver);
  run("wire_distributions", test_wire_distributions);
  run("wire_tensors", test_wire_tensors);
  run("parse_message", test_parse_message);
  run("draw_recorder", test_draw_recorder);
  run("public_api_local", test_public_api_local);
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed > 0 ? 1 : 0;
}
