// probexec C++ front end: the whole public API a simulator needs.
//
// A simulator calls `sample`, `observe` and `tag` where it draws random numbers, and hands its
// model function to `serve`. With an engine attached (over ZeroMQ) the engine records or chooses
// every controlled draw; with none attached the draws come from a seeded local RNG, so the
// instrumented program still behaves as the simulator it was.
//
// This header deliberately includes no ZeroMQ or FlatBuffers headers.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

namespace probexec {

// Every error the front end raises: protocol violations, bad parameters, transport failures.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Float64 values in row-major order plus their shape; a scalar has an empty shape.
class Tensor {
 public:
  Tensor() = default;
  Tensor(double value) : data_{value} {}  // NOLINT: implicit on purpose, scalars read naturally
  Tensor(std::initializer_list<double> values) : data_(values), shape_{static_cast<int>(values.size())} {}
  explicit Tensor(std::vector<double> values);
  Tensor(std::vector<double> values, std::vector<int> shape);

  const std::vector<double>& data() const { return data_; }
  std::vector<double>& data() { return data_; }
  const std::vector<int>& shape() const { return shape_; }
  std::size_t numel() const { return data_.size(); }
  bool is_scalar() const { return data_.size() == 1 && (shape_.empty() || (shape_.size() == 1 && shape_[0] == 1)); }
  // The single value of a scalar tensor; throws probexec::error otherwise.
  double item() const;
  operator double() const { return item(); }  // NOLINT: `double x = sample(...)` for scalars
  double operator[](std::size_t i) const { return data_.at(i); }

 private:
  std::vector<double> data_;
  std::vector<int> shape_;
};

// Distribution types, numbered as in the PPX wire union.
enum class DistType : std::uint8_t {
  Normal = 1,
  Uniform = 2,
  Categorical = 3,
  Poisson = 4,
  Bernoulli = 5,
  Beta = 6,
  Exponential = 7,
  Gamma = 8,
  LogNormal = 9,
  Binomial = 10,
  Weibull = 11,
};

const char* dist_type_name(DistType type);

// A distribution is its type plus its parameter tensors in wire field order. Parameters of equal
// length broadcast against scalars; a vector parameter makes a vector-valued draw.
class Distribution {
 public:
  Distribution(DistType type, std::vector<Tensor> params);
  DistType type() const { return type_; }
  const std::vector<Tensor>& params() const { return params_; }
  // Shape of one draw (Categorical: its probs shape without the last axis).
  const std::vector<int>& value_shape() const { return value_shape_; }
  std::size_t value_numel() const;

 private:
  DistType type_;
  std::vector<Tensor> params_;
  std::vector<int> value_shape_;
};

Distribution Normal(Tensor mean, Tensor stddev);
Distribution Uniform(Tensor low, Tensor high);
Distribution Categorical(Tensor probs);
Distribution Poisson(Tensor rate);
Distribution Bernoulli(Tensor probs);
Distribution Beta(Tensor concentration1, Tensor concentration0);
Distribution Exponential(Tensor rate);
Distribution Gamma(Tensor concentration, Tensor rate);
Distribution LogNormal(Tensor loc, Tensor scale);
Distribution Binomial(Tensor total_count, Tensor probs);
Distribution Weibull(Tensor scale, Tensor concentration);

// Options for one draw. `address`, when given, replaces the call-stack address entirely.
struct SampleOptions {
  std::string name;
  bool control = true;   // false: the engine does not choose it; it is drawn locally and reported
  bool replace = false;  // one proposal shared by every iteration of a rejection loop
  std::string address;
};

Tensor sample(const Distribution& dist, const std::string& name = "", bool control = true);
Tensor sample(const Distribution& dist, const SampleOptions& options);
// Condition on `value`. When the engine holds an observation under the same name, that one wins.
void observe(const Distribution& dist, const Tensor& value, const std::string& name = "");
// Observation whose value the engine supplies by name; standalone and streaming runs simulate it
// from `dist`, so the program generates data when no engine conditions it.
void observe(const Distribution& dist, const std::string& name);
void tag(const Tensor& value, const std::string& name);

// A model runs one trace and returns its result (any tensor; empty is fine).
using Model = std::function<Tensor()>;

// Runs `model` as a server or standalone, as the command line says:
//   PROG --address ipc:///tmp/sim.sock | tcp://*:5555   serve an engine (REP socket)
//   PROG --standalone [--seed N] [--traces K]            run K traces on the local RNG
// Other options: --timeout SECONDS (wait for the engine inside a trace), --quiet.
// Returns a process exit code.
int serve(const Model& model, int argc, char** argv, const std::string& model_name = "");

// Seeds the local RNG of this thread (used with no engine attached).
void seed(std::uint64_t value);

// Protocol version this front end speaks (PPX v1 peers are served in v1 mode).
constexpr std::uint32_t protocol_version = 2;

}  // namespace probexec
