// Tensor and Distribution value types: shape bookkeeping and parameter checks at construction,
// so a malformed distribution is reported where the simulator author wrote it.
#include <cmath>
#include <sstream>

#include "probexec/probexec.hpp"

namespace probexec {

Tensor::Tensor(std::vector<double> values) : data_(std::move(values)), shape_{static_cast<int>(data_.size())} {}

Tensor::Tensor(std::vector<double> values, std::vector<int> shape) : data_(std::move(values)), shape_(std::move(shape)) {
  std::size_t n = 1;
  for (int s : shape_) {
    if (s < 0) throw error("probexec::Tensor: negative dimension in shape");
    n *= static_cast<std::size_t>(s);
  }
  if (n != data_.size()) {
    throw error("probexec::Tensor: shape holds " + std::to_string(n) + " values but data has " +
                std::to_string(data_.size()));
  }
}

double Tensor::item() const {
  if (data_.size() != 1) {
    throw error("probexec::Tensor::item: tensor has " + std::to_string(data_.size()) + " values, not 1");
  }
  return data_[0];
}

const char* dist_type_name(DistType type) {
  switch (type) {
    case DistType::Normal: return "Normal";
    case DistType::Uniform: return "Uniform";
    case DistType::Categorical: return "Categorical";
    case DistType::Poisson: return "Poisson";
    case DistType::Bernoulli: return "Bernoulli";
    case DistType::Beta: return "Beta";
    case DistType::Exponential: return "Exponential";
    case DistType::Gamma: return "Gamma";
    case DistType::LogNormal: return "LogNormal";
    case DistType::Binomial: return "Binomial";
    case DistType::Weibull: return "Weibull";
  }
  return "Unknown";
}

namespace {

std::vector<int> effective_shape(const Tensor& t) {
  if (t.is_scalar()) return {};
  return t.shape();
}

}  // namespace

namespace {

struct ParamRule {
  const char* name;
  bool (*ok)(double);
  const char* requirement;
};

bool any_finite(double v) { return std::isfinite(v); }
bool positive(double v) { return std::isfinite(v) && v > 0; }
bool non_negative(double v) { return std::isfinite(v) && v >= 0; }
bool probability(double v) { return v >= 0 && v <= 1; }
bool count(double v) { return std::isfinite(v) && v >= 0 && v == std::floor(v); }

// Parameter names (wire field order) and what each must satisfy, per type.
std::vector<ParamRule> rules(DistType type) {
  switch (type) {
    case DistType::Normal: return {{"mean", any_finite, "finite"}, {"stddev", positive, "> 0"}};
    case DistType::Uniform: return {{"low", any_finite, "finite"}, {"high", any_finite, "finite"}};
    case DistType::Categorical: return {{"probs", non_negative, ">= 0"}};
    case DistType::Poisson: return {{"rate", non_negative, ">= 0"}};
    case DistType::Bernoulli: return {{"probs", probability, "in [0, 1]"}};
    case DistType::Beta: return {{"concentration1", positive, "> 0"}, {"concentration0", positive, "> 0"}};
    case DistType::Exponential: return {{"rate", positive, "> 0"}};
    case DistType::Gamma: return {{"concentration", positive, "> 0"}, {"rate", positive, "> 0"}};
    case DistType::LogNormal: return {{"loc", any_finite, "finite"}, {"scale", positive, "> 0"}};
    case DistType::Binomial: return {{"total_count", count, "a whole number >= 0"}, {"probs", probability, "in [0, 1]"}};
    case DistType::Weibull: return {{"scale", positive, "> 0"}, {"concentration", positive, "> 0"}};
  }
  throw error("probexec: unknown distribution type " + std::to_string(static_cast<int>(type)));
}

std::string fmt(double v) {
  std::ostringstream o;
  o << v;
  return o.str();
}

}  // namespace

Distribution::Distribution(DistType type, std::vector<Tensor> params) : type_(type), params_(std::move(params)) {
  const std::string where = std::string("probexec::") + dist_type_name(type_);
  auto rule = rules(type_);
  if (params_.size() != rule.size()) {
    throw error(where + ": takes " + std::to_string(rule.size()) + " parameter(s), got " + std::to_string(params_.size()));
  }
  for (std::size_t i = 0; i < params_.size(); ++i) {
    if (params_[i].numel() == 0) throw error(where + ": parameter " + rule[i].name + " is empty");
    for (double v : params_[i].data()) {
      if (!rule[i].ok(v)) throw error(where + ": parameter " + rule[i].name + " must be " + rule[i].requirement + ", got " + fmt(v));
    }
  }
  if (type_ == DistType::Categorical) {
    const auto& p = params_[0];
    auto shape = p.shape().empty() ? std::vector<int>{static_cast<int>(p.numel())} : p.shape();
    value_shape_.assign(shape.begin(), shape.end() - 1);
    std::size_t k = static_cast<std::size_t>(shape.back());
    for (std::size_t row = 0; row * k < p.numel(); ++row) {
      double total = 0;
      for (std::size_t j = 0; j < k; ++j) total += p.data()[row * k + j];
      if (!(total > 0)) throw error(where + ": probabilities of row " + std::to_string(row) + " sum to zero");
    }
    return;
  }
  // Elementwise families: every non-scalar parameter must share one shape; scalars broadcast.
  for (const auto& p : params_) {
    auto s = effective_shape(p);
    if (s.empty()) continue;
    if (value_shape_.empty()) {
      value_shape_ = s;
    } else if (s != value_shape_) {
      throw error(where + ": parameters have different shapes");
    }
  }
  if (type_ == DistType::Uniform) {
    std::size_t n = value_numel();
    for (std::size_t i = 0; i < n; ++i) {
      double lo = params_[0].numel() == 1 ? params_[0].data()[0] : params_[0].data()[i];
      double hi = params_[1].numel() == 1 ? params_[1].data()[0] : params_[1].data()[i];
      if (!(lo < hi)) throw error(where + ": low must be < high, got low " + fmt(lo) + ", high " + fmt(hi));
    }
  }
}

std::size_t Distribution::value_numel() const {
  std::size_t n = 1;
  for (int s : value_shape_) n *= static_cast<std::size_t>(s);
  return n;
}

namespace {

// The parameters are moved into the distribution. A braced list would copy them (its elements
// are const), and a calorimeter image's mean and stddev are 24 500 values each.
Distribution make(DistType type, Tensor a) {
  std::vector<Tensor> params;
  params.push_back(std::move(a));
  return Distribution(type, std::move(params));
}

Distribution make(DistType type, Tensor a, Tensor b) {
  std::vector<Tensor> params;
  params.reserve(2);
  params.push_back(std::move(a));
  params.push_back(std::move(b));
  return Distribution(type, std::move(params));
}

}  // namespace

Distribution Normal(Tensor mean, Tensor stddev) { return make(DistType::Normal, std::move(mean), std::move(stddev)); }
Distribution Uniform(Tensor low, Tensor high) { return make(DistType::Uniform, std::move(low), std::move(high)); }
Distribution Categorical(Tensor probs) { return make(DistType::Categorical, std::move(probs)); }
Distribution Poisson(Tensor rate) { return make(DistType::Poisson, std::move(rate)); }
Distribution Bernoulli(Tensor probs) { return make(DistType::Bernoulli, std::move(probs)); }
Distribution Beta(Tensor c1, Tensor c0) { return make(DistType::Beta, std::move(c1), std::move(c0)); }
Distribution Exponential(Tensor rate) { return make(DistType::Exponential, std::move(rate)); }
Distribution Gamma(Tensor concentration, Tensor rate) { return make(DistType::Gamma, std::move(concentration), std::move(rate)); }
Distribution LogNormal(Tensor loc, Tensor scale) { return make(DistType::LogNormal, std::move(loc), std::move(scale)); }
Distribution Binomial(Tensor total_count, Tensor probs) { return make(DistType::Binomial, std::move(total_count), std::move(probs)); }
Distribution Weibull(Tensor scale, Tensor concentration) { return make(DistType::Weibull, std::move(scale), std::move(concentration)); }

}  // namespace probexec
