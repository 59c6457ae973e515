#include "testmodels.hpp"

#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>

namespace probexec::testmodels {

namespace {

const double kSqrt2 = std::sqrt(2.0);
const double kSqrt5 = std::sqrt(5.0);

// Marsaglia's polar method: a rejection loop, so the trace length varies. Both draws of an
// iteration are `replace`: one proposal serves every iteration of the loop.
double marsaglia_normal(double mean, double stddev) {
  SampleOptions o;
  o.replace = true;
  for (;;) {
    double x = sample(Uniform(-1.0, 1.0), o);
    double y = sample(Uniform(-1.0, 1.0), o);
    double s = x * x + y * y;
    if (s > 0.0 && s < 1.0) return mean + stddev * x * std::sqrt(-2.0 * std::log(s) / s);
  }
}

long fib(long n) {
  long a = 0, b = 1;
  for (long i = 0; i < n; ++i) {
    long t = a + b;
    a = b;
    b = t;
  }
  return a;
}

}  // namespace

Tensor gum() {
  double mu = sample(Normal(1.0, kSqrt5), "mu");
  observe(Normal({mu, mu}, kSqrt2), "obs");
  return mu;
}

Tensor gum_marsaglia() {
  double mu = marsaglia_normal(1.0, kSqrt5);
  tag(mu, "mu");
  observe(Normal({mu, mu}, kSqrt2), "obs");
  return mu;
}

Tensor hmm() {
  static const double transition[3][3] = {{0.1, 0.5, 0.4}, {0.2, 0.2, 0.6}, {0.15, 0.15, 0.7}};
  static const double emission_mean[3] = {-1.0, 1.0, 0.0};
  std::vector<double> states;
  int state = static_cast<int>(sample(Categorical({1.0 / 3, 1.0 / 3, 1.0 / 3}), "state_0").item());
  states.push_back(state);
  for (int t = 1; t <= 16; ++t) {
    const double* row = transition[state];
    state = static_cast<int>(sample(Categorical({row[0], row[1], row[2]}), "state_" + std::to_string(t)).item());
    states.push_back(state);
    observe(Normal(emission_mean[state], 1.0), "obs_" + std::to_string(t));
  }
  return Tensor(states);
}

Tensor branching() {
  double r = sample(Poisson(4.0), "r");
  double lambda;
  if (r > 4) {
    lambda = 6.0;
  } else {
    double s = sample(Poisson(4.0), "s");
    lambda = 1.0 + static_cast<double>(fib(3 * static_cast<long>(r))) + s;
  }
  observe(Poisson(lambda), "obs");
  return r;
}

Tensor many_draws() {
  double total = 0;
  for (int i = 0; i < 100; ++i) total += sample(Normal(0.0, 1.0)).item();
  return total;
}

Tensor kitchen_sink() {
  double a = sample(Normal(0.0, 1.0), "normal");
  double b = sample(Uniform(-2.0, 3.0), "uniform");
  double c = sample(Categorical({0.2, 0.3, 0.5}), "categorical");
  double d = sample(Poisson(3.5), "poisson");
  double e = sample(Bernoulli(0.3), "bernoulli");
  double f = sample(Beta(2.0, 5.0), "beta");
  double g = sample(Exponential(1.5), "exponential");
  double h = sample(Gamma(2.0, 3.0), "gamma");
  double i = sample(LogNormal(0.5, 0.25), "lognormal");
  double j = sample(Binomial(10.0, 0.4), "binomial");
  double k = sample(Weibull(2.0, 1.5), "weibull");
  Tensor vec = sample(Normal({0.0, 1.0, 2.0}, 0.5), "vector");
  // Uncontrolled draws: made locally, reported in batches, never a round trip each.
  double noise = 0;
  for (int n = 0; n < 10; ++n) noise += sample(Normal(0.0, 0.1), "noise", false).item();
  tag(noise, "noise_sum");
  double total = a + b + c + d + e + f + g + h + i + j + k + vec[0] + vec[1] + vec[2];
  observe(Normal(total, 1.0), "obs");
  return Tensor({total, noise});
}

Tensor faulty() {
  double x = sample(Uniform(0.0, 1.0), "x");
  if (x > 0.9) throw std::runtime_error("x = " + std::to_string(x) + " is beyond the detector acceptance");
  observe(Normal(x, 1.0), "obs");
  return x;
}

Tensor slow() {
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1);
  volatile double sink = 0;
  while (std::chrono::steady_clock::now() < until) sink = sink + 1.0;
  return gum();
}

}  // namespace probexec::testmodels
