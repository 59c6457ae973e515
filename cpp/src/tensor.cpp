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

Distribution::Distribution(DistType type, std::vector<Tensor> params) : type_(type), params_(std::move(params)) {
  const char* dname = dist_type_name(type_);
  for (std::size_t i = 0; i < params_.size(); ++i) {
    if (params_[i].numel() == 0) throw error(std::string("probexec::") + dname + ": parameter " + std::to_string(i) + " is empty");
    for (double v : params_[i].data()) {
      if (std::isnan(v)) throw error(std::string("probexec::") + dname + ": parameter " + std::to_string(i) + " is NaN");
    }
  }
  if (type_ == DistType::Categorical) {
    const auto& p = params_.at(0);
    auto shape = p.shape().empty() ? std::vector<int>{static_cast<int>(p.numel())} : p.shape();
    value_shape_.assign(shape.begin(), shape.end() - 1);
    double total = 0;
    for (double v : p.data()) {
      if (v < 0) throw error("probexec::Categorical: negative probability");
      total += v;
    }
    if (!(total > 0)) throw error("probexec::Categorical: probabilities sum to zero");
    return;
  }
  // Elementwise families: every non-scalar parameter must share one shape; scalars broadcast.
  for (const auto& p : params_) {
    auto s = effective_shape(p);
    if (s.empty()) continue;
    if (value_shape_.empty()) {
      value_shape_ = s;
    } else if (s != value_shape_) {
      throw error(std::string("probexec::") + dname + ": parameters have different shapes");
    }
  }
}

std::size_t Distribution::value_numel() const {
  std::size_t n = 1;
  for (int s : value_shape_) n *= static_cast<std::size_t>(s);
  return n;
}

Distribution Normal(Tensor mean, Tensor stddev) { return Distribution(DistType::Normal, {std::move(mean), std::move(stddev)}); }
Distribution Uniform(Tensor low, Tensor high) { return Distribution(DistType::Uniform, {std::move(low), std::move(high)}); }
Distribution Categorical(Tensor probs) { return Distribution(DistType::Categorical, {std::move(probs)}); }
Distribution Poisson(Tensor rate) { return Distribution(DistType::Poisson, {std::move(rate)}); }
Distribution Bernoulli(Tensor probs) { return Distribution(DistType::Bernoulli, {std::move(probs)}); }
Distribution Beta(Tensor c1, Tensor c0) { return Distribution(DistType::Beta, {std::move(c1), std::move(c0)}); }
Distribution Exponential(Tensor rate) { return Distribution(DistType::Exponential, {std::move(rate)}); }
Distribution Gamma(Tensor concentration, Tensor rate) { return Distribution(DistType::Gamma, {std::move(concentration), std::move(rate)}); }
Distribution LogNormal(Tensor loc, Tensor scale) { return Distribution(DistType::LogNormal, {std::move(loc), std::move(scale)}); }
Distribution Binomial(Tensor total_count, Tensor probs) { return Distribution(DistType::Binomial, {std::move(total_count), std::move(probs)}); }
Distribution Weibull(Tensor scale, Tensor concentration) { return Distribution(DistType::Weibull, {std::move(scale), std::move(concentration)}); }

}  // namespace probexec
