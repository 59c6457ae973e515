// Local sampling with <random>: what `sample` does when no engine chooses the value.
#pragma once

#include <random>

#include "probexec/probexec.hpp"

namespace probexec::detail {

using Rng = std::mt19937_64;

// One draw from `dist` (vector-valued when its parameters are).
Tensor draw_local(const Distribution& dist, Rng& rng);

}  // namespace probexec::detail
