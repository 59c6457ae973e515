#include "local_rng.hpp"

#include <cmath>

namespace probexec::detail {

namespace {

// Parameter k of a broadcast elementwise family at element i.
double at(const Tensor& p, std::size_t i) { return p.numel() == 1 ? p.data()[0] : p.data()[i]; }

double draw_one(DistType type, const std::vector<Tensor>& ps, std::size_t i, Rng& rng) {
  switch (type) {
    case DistType::Normal: return std::normal_distribution<double>(at(ps[0], i), at(ps[1], i))(rng);
    case DistType::Uniform: return std::uniform_real_distribution<double>(at(ps[0], i), at(ps[1], i))(rng);
    case DistType::Poisson: return static_cast<double>(std::poisson_distribution<long long>(at(ps[0], i))(rng));
    case DistType::Bernoulli: return std::bernoulli_distribution(at(ps[0], i))(rng) ? 1.0 : 0.0;
    case DistType::Beta: {
      double x = std::gamma_distribution<double>(at(ps[0], i), 1.0)(rng);
      double y = std::gamma_distribution<double>(at(ps[1], i), 1.0)(rng);
      return x / (x + y);
    }
    case DistType::Exponential: return std::exponential_distribution<double>(at(ps[0], i))(rng);
    case DistType::Gamma: return std::gamma_distribution<double>(at(ps[0], i), 1.0 / at(ps[1], i))(rng);
    case DistType::LogNormal: return std::lognormal_distribution<double>(at(ps[0], i), at(ps[1], i))(rng);
    case DistType::Binomial:
      return static_cast<double>(
          std::binomial_distribution<long long>(static_cast<long long>(std::llround(at(ps[0], i))), at(ps[1], i))(rng));
    case DistType::Weibull:
      // <random> takes (shape a, scale b); the wire order is (scale, concentration).
      return std::weibull_distribution<double>(at(ps[1], i), at(ps[0], i))(rng);
    case DistType::Categorical: break;
  }
  throw error("probexec: cannot sample distribution type " + std::to_string(static_cast<int>(type)));
}

}  // namespace

Tensor draw_local(const Distribution& dist, Rng& rng) {
  const auto& ps = dist.params();
  std::size_t n = dist.value_numel();
  std::vector<double> out(n);
  if (dist.type() == DistType::Categorical) {
    const auto& probs = ps[0].data();
    std::size_t k = probs.size() / n;
    for (std::size_t i = 0; i < n; ++i) {
      std::discrete_distribution<int> d(probs.begin() + static_cast<long>(i * k), probs.begin() + static_cast<long>((i + 1) * k));
      out[i] = d(rng);
    }
  } else {
    for (std::size_t i = 0; i < n; ++i) out[i] = draw_one(dist.type(), ps, i, rng);
  }
  return Tensor(std::move(out), dist.value_shape());
}

}  // namespace probexec::detail
