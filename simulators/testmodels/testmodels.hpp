// Small models with exact posteriors (shared/physics.md), plus a few models that exercise the
// protocol (every distribution type, uncontrolled and replaced draws, failures, slowness).
#pragma once

#include <probexec/probexec.hpp>

namespace probexec::testmodels {

// mu ~ N(1, sqrt 5); obs (2 values) ~ N(mu, sqrt 2). Posterior given [8, 9]: N(7.25, 0.9129).
Tensor gum();
// Same model with mu drawn by the Marsaglia polar rejection loop (replace=true draws); mu is tagged.
Tensor gum_marsaglia();
// 3-state HMM: state_0 .. state_16 (Categorical), obs_1 .. obs_16 ~ N(mean[state_t], 1).
Tensor hmm();
// r ~ Poisson(4); r > 4: lambda = 6, else s ~ Poisson(4), lambda = 1 + fib(3 r) + s; obs ~ Poisson(lambda).
Tensor branching();
// 100 controlled Normal draws: the per-draw protocol benchmark.
Tensor many_draws();
// Every distribution type, scalar and vector draws, an uncontrolled block, a tag.
Tensor kitchen_sink();
// Throws mid-trace when its first draw x ~ U(0, 1) exceeds 0.9.
Tensor faulty();
// GUM plus a 1 ms busy loop per trace: shows what a pool of workers buys.
Tensor slow();

}  // namespace probexec::testmodels
