// The calorimeter library: voxel image, GFlash-style parametrised showers, the image likelihood.
//
// Shower model (shared/physics.md, constants in physics/constants.hpp):
//   * longitudinal: dE/dt = E (beta t)^(alpha-1) beta e^(-beta t) / Gamma(alpha), t in radiation
//     lengths; shower-to-shower fluctuations of (ln T, ln alpha), T = (alpha - 1)/beta the depth of
//     the maximum, from the GFlash correlated 2D normal. Two controlled draws per shower:
//     "lnT" ~ N(<ln T>, sigma(ln T)) and "lnAlpha_noise" ~ N(0, 1), combined as
//     ln alpha = <ln alpha> + sigma(ln alpha) (rho z_T + sqrt(1 - rho^2) z), z_T the standardised ln T.
//   * sampling: the visible energy is a cloud of spots, their number Poisson with mean E f / e_spot
//     (one controlled draw "num_spots"), each spot's energy Gamma with mean e_spot and relative
//     resolution spot_resolution. So the visible energy has mean exactly E f and relative spread
//     sqrt((1 + res^2) / (E f / e_spot)) (a compound Poisson sum); leakage out of the image comes on top.
//   * per spot (uncontrolled draws, drawn locally and only reported to the engine): depth
//     t ~ Gamma(alpha, beta); core-or-tail ~ Bernoulli(p(tau)), tau = t / T; radius by inverse CDF
//     r = R sqrt(u / (1 - u)), u ~ Uniform(0, 1), R = Rc(tau) or Rt(tau) (Moliere radii); azimuth
//     ~ Uniform(0, 2 pi); energy ~ Gamma.
//   * hadrons (pi, K, ...): a documented toy, not a hadronic shower model: the same EM form, with depths
//     times hadronic_length_scale, radii times hadronic_width_scale and the hadronic sampling fraction.
#include "calorimeter.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <limits>
#include <numeric>

namespace probexec::calo {

namespace {

constexpr double kTwoPi = 6.283185307179586;

// A counter-based generator (SplitMix64) for Response::fixed_spots: one short stream per spot, so
// the spots' numbers are the same in every trace, whatever the shower's parameters.
struct SpotStream {
  using result_type = std::uint64_t;
  std::uint64_t state;
  static constexpr result_type min() { return 0; }
  static constexpr result_type max() { return std::numeric_limits<result_type>::max(); }
  result_type operator()() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  double unit() { return (static_cast<double>((*this)() >> 11) + 0.5) * 0x1.0p-53; }  // in (0, 1)
  // Gamma(shape, rate) by the Wilson-Hilferty cube of a Box-Muller normal: a continuous function
  // of the stream's numbers and of the parameters (a rejection sampler would jump when a
  // parameter moves an accept/reject decision). Accurate for the shapes used here (> 1).
  double gamma(double shape, double rate) {
    const double z = std::sqrt(-2.0 * std::log(unit())) * std::cos(kTwoPi * unit());
    const double c = 1.0 / (9.0 * shape);
    const double w = 1.0 - c + z * std::sqrt(c);
    return w > 0 ? shape / rate * w * w * w : 0.0;
  }
};

struct Vec3 {
  double x, y, z;
};

Vec3 cross(const Vec3& a, const Vec3& b) { return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x}; }

// ln y with the GFlash validity floor.
double ln_y(double energy, const Response& r) {
  return std::max(std::log(energy / r.critical_energy), physics::kGFlashMinLnY);
}

// The shower-shape numbers that depend on energy only (GFlash radial fit uses E in GeV).
struct RadialFit {
  double rc_a, rc_tau;  // Rc = rc_a + rc_tau * tau
  double k1, k2, k3, k4;
  double p1, p2, p3;
};

RadialFit radial_fit(double energy, const Response& r) {
  using namespace physics;
  const double z = r.medium_z;
  const double ln_e = std::log(energy);
  RadialFit f{};
  f.rc_a = kRcA + kRcB * ln_e;
  f.rc_tau = kRcC + kRcD * z;
  f.k1 = kK1A + kK1Z * z;
  f.k2 = kK2;
  f.k3 = kK3;
  f.k4 = kK4A + kK4B * ln_e;
  f.p1 = kP1A + kP1Z * z;
  f.p2 = kP2A + kP2Z * z;
  f.p3 = kP3A + kP3B * ln_e;
  return f;
}

}  // namespace

// --- Image ------------------------------------------------------------------------------------------

bool Image::deposit(double x, double y, double z, double energy) {
  const double fx = (x - g_.xmin) / (g_.xmax - g_.xmin) * g_.nx;
  const double fy = (y - g_.ymin) / (g_.ymax - g_.ymin) * g_.ny;
  const double fz = (z - g_.zmin) / (g_.zmax - g_.zmin) * g_.nz;
  // The negated comparisons also reject NaN.
  if (!(fx >= 0 && fx < g_.nx && fy >= 0 && fy < g_.ny && fz >= 0 && fz < g_.nz)) return false;
  const auto ix = static_cast<std::size_t>(fx), iy = static_cast<std::size_t>(fy), iz = static_cast<std::size_t>(fz);
  e_[(iz * static_cast<std::size_t>(g_.ny) + iy) * static_cast<std::size_t>(g_.nx) + ix] += energy;
  return true;
}

double Image::total() const { return std::accumulate(e_.begin(), e_.end(), 0.0); }

Tensor Image::tensor() const { return Tensor(e_, {g_.nz, g_.ny, g_.nx}); }

// --- particle classes -------------------------------------------------------------------------------

bool invisible(int pdg) {
  const int a = std::abs(pdg);
  return a == physics::kElectronNeutrino || a == physics::kMuonNeutrino || a == physics::kTauNeutrino;
}

bool electromagnetic(int pdg) {
  const int a = std::abs(pdg);
  return a == physics::kElectron || a == physics::kPhoton;
}

double sampling_fraction(int pdg, const Response& r) {
  if (invisible(pdg)) return 0.0;
  return electromagnetic(pdg) ? r.sampling_fraction_em : r.sampling_fraction_hadron;
}

// --- longitudinal profile ------------------------------------------------------------------------------

LongitudinalParams longitudinal_params(double energy, const Response& r) {
  using namespace physics;
  const double ly = ln_y(energy, r);
  LongitudinalParams p;
  p.mean_ln_t = std::log(ly - kGFlashLnTOffset);
  p.mean_ln_alpha = std::log(kGFlashAlphaA + (kGFlashAlphaB + kGFlashAlphaZ / r.medium_z) * ly);
  p.sigma_ln_t = 1.0 / (kGFlashSigmaTA + kGFlashSigmaTB * ly);
  p.sigma_ln_alpha = 1.0 / (kGFlashSigmaAlphaA + kGFlashSigmaAlphaB * ly);
  p.rho = std::clamp(kGFlashRhoA + kGFlashRhoB * ly, -kGFlashMaxAbsRho, kGFlashMaxAbsRho);
  return p;
}

double expected_mean_depth(int pdg, double energy, const Response& r) {
  if (invisible(pdg) || !(energy > 0)) return 0.0;
  const LongitudinalParams lp = longitudinal_params(energy, r);
  const double c = std::sqrt(1.0 - lp.rho * lp.rho);
  // Tensor-product midpoint rule on [-8, 8]^2 in the two standard normals; weights renormalised.
  constexpr int kN = 321;
  constexpr double kLim = 8.0;
  const double h = 2 * kLim / kN;
  double num = 0, den = 0;
  for (int i = 0; i < kN; ++i) {
    const double z1 = -kLim + (i + 0.5) * h;
    const double w1 = std::exp(-0.5 * z1 * z1);
    const double t = std::exp(lp.mean_ln_t + lp.sigma_ln_t * z1);
    for (int j = 0; j < kN; ++j) {
      const double z2 = -kLim + (j + 0.5) * h;
      const double w = w1 * std::exp(-0.5 * z2 * z2);
      const double alpha =
          std::max(std::exp(lp.mean_ln_alpha + lp.sigma_ln_alpha * (lp.rho * z1 + c * z2)), physics::kGFlashMinAlpha);
      num += w * t * alpha / (alpha - 1.0);
      den += w;
    }
  }
  const double scale = electromagnetic(pdg) ? 1.0 : r.hadronic_length_scale;
  return scale * num / den;
}

// --- the shower ------------------------------------------------------------------------------------

double shower(const Particle& p, const Geometry& g, const Response& r, Image& image, const std::string& label) {
  return shower(p, g, r, image, label, nullptr);
}

double shower(const Particle& p, const Geometry& /*g*/, const Response& r, Image& image, const std::string& label,
              ShowerStats* stats) {
  if (stats) *stats = ShowerStats{};
  // Nothing to see: neutrinos, and particles with no energy, make no draws at all.
  if (invisible(p.pdg) || !(p.e > 0)) return 0.0;
  const bool em = electromagnetic(p.pdg);
  const double f = em ? r.sampling_fraction_em : r.sampling_fraction_hadron;
  const double length_unit = r.radiation_length * (em ? 1.0 : r.hadronic_length_scale);  // per X0 of the profile
  const double width_unit = r.moliere_radius * (em ? 1.0 : r.hadronic_width_scale);     // per R_M of the profile

  // Shower axis and a transverse frame. No momentum: along +z (the beam axis).
  Vec3 u{p.px, p.py, p.pz};
  const double pm = std::sqrt(u.x * u.x + u.y * u.y + u.z * u.z);
  if (pm > 0 && std::isfinite(pm)) {
    u = {u.x / pm, u.y / pm, u.z / pm};
  } else {
    u = {0, 0, 1};
  }
  Vec3 a = std::abs(u.x) < 0.9 ? Vec3{1, 0, 0} : Vec3{0, 1, 0};
  const double ad = a.x * u.x + a.y * u.y + a.z * u.z;
  Vec3 e1{a.x - ad * u.x, a.y - ad * u.y, a.z - ad * u.z};
  const double e1n = std::sqrt(e1.x * e1.x + e1.y * e1.y + e1.z * e1.z);
  e1 = {e1.x / e1n, e1.y / e1n, e1.z / e1n};
  const Vec3 e2 = cross(u, e1);

  // Shower-to-shower fluctuations of the longitudinal profile (controlled).
  const LongitudinalParams lp = longitudinal_params(p.e, r);
  const double ln_t = sample(Normal(lp.mean_ln_t, lp.sigma_ln_t), label + "lnT");
  const double noise = sample(Normal(0.0, 1.0), label + "lnAlpha_noise");
  const double z_t = (ln_t - lp.mean_ln_t) / lp.sigma_ln_t;
  const double ln_alpha =
      lp.mean_ln_alpha + lp.sigma_ln_alpha * (lp.rho * z_t + std::sqrt(1.0 - lp.rho * lp.rho) * noise);
  const double t_max = std::exp(ln_t);
  const double alpha = std::max(std::exp(ln_alpha), physics::kGFlashMinAlpha);
  const double beta = (alpha - 1.0) / t_max;

  // Number of spots (controlled).
  const long n = static_cast<long>(sample(Poisson(p.e * f / r.spot_energy), label + "num_spots").item());

  // Per-spot draws (uncontrolled). Names and parameter-free pieces built once per shower.
  auto spot_opts = [&](const char* what) {
    SampleOptions o;
    o.name = label + what;
    o.control = false;
    o.address = "probexec::calo::shower/" + o.name;
    return o;
  };
  const SampleOptions n_depth = spot_opts("spot_depth"), n_core = spot_opts("spot_core"), n_u = spot_opts("spot_radius_u"),
                      n_phi = spot_opts("spot_phi"), n_energy = spot_opts("spot_energy");
  const RadialFit rf = radial_fit(p.e, r);
  const double k_energy = 1.0 / (r.spot_resolution * r.spot_resolution);  // Gamma shape for mean e_spot
  const double rate_energy = k_energy / r.spot_energy;
  const Distribution depth_dist = Gamma(alpha, beta);
  const Distribution unit_dist = Uniform(0.0, 1.0);
  const Distribution phi_dist = Uniform(0.0, kTwoPi);
  const Distribution energy_dist = Gamma(k_energy, rate_energy);

  long lost = 0;
  double generated = 0, deposited = 0, depth_sum = 0;
  const bool fixed = r.fixed_spots;
  const std::uint64_t fixed_seed = fixed ? std::hash<std::string>{}(label) : 0;
  for (long i = 0; i < n; ++i) {
    SpotStream spot{fixed_seed ^ (static_cast<std::uint64_t>(i) * 0xD1B54A32D192ED03ULL)};
    const double t = fixed ? spot.gamma(alpha, beta) : sample(depth_dist, n_depth).item();  // radiation lengths (EM profile)
    const double tau = t / t_max;
    const double s = (rf.p2 - tau) / rf.p3;
    const double p_core = std::clamp(rf.p1 * std::exp(s - std::exp(s)), 0.0, 1.0);
    const bool core = fixed ? spot.unit() < p_core : sample(Bernoulli(p_core), n_core).item() > 0.5;
    const double radius = core ? std::max(rf.rc_a + rf.rc_tau * tau, physics::kGFlashMinCoreRadius)
                               : rf.k1 * (std::exp(rf.k3 * (tau - rf.k2)) + std::exp(rf.k4 * (tau - rf.k2)));
    const double uu = fixed ? spot.unit() : sample(unit_dist, n_u).item();
    const double rm = uu < 1.0 ? radius * std::sqrt(uu / (1.0 - uu)) : HUGE_VAL;  // Moliere radii
    const double phi = fixed ? kTwoPi * spot.unit() : sample(phi_dist, n_phi).item();
    const double es = fixed ? spot.gamma(k_energy, rate_energy) : sample(energy_dist, n_energy).item();

    const double along = t * length_unit;
    const double across = rm * width_unit;
    const double c = across * std::cos(phi), sn = across * std::sin(phi);
    const double x = p.x + along * u.x + c * e1.x + sn * e2.x;
    const double y = p.y + along * u.y + c * e1.y + sn * e2.y;
    const double z = p.z + along * u.z + c * e1.z + sn * e2.z;
    generated += es;
    depth_sum += t;
    if (image.deposit(x, y, z, es)) {
      deposited += es;
    } else {
      ++lost;
    }
  }

  if (stats) {
    const double scale = em ? 1.0 : r.hadronic_length_scale;
    stats->spots = n;
    stats->spots_lost = lost;
    stats->energy_generated = generated;
    stats->energy_deposited = deposited;
    stats->depth_max = t_max * scale;
    stats->alpha = alpha;
    stats->beta = beta;
    stats->mean_depth = n > 0 ? scale * depth_sum / static_cast<double>(n) : 0.0;
  }
  return deposited;
}

// --- the observation -------------------------------------------------------------------------------

void observe_image(const Image& image, double noise_floor, const std::string& name) {
  const auto& e = image.data();
  const double floor2 = noise_floor * noise_floor;
  std::vector<double> sd(e.size());
  for (std::size_t i = 0; i < e.size(); ++i) sd[i] = std::sqrt(std::max(e[i], 0.0) + floor2);
  const Geometry& g = image.geometry();
  observe(Normal(image.tensor(), Tensor(std::move(sd), {g.nz, g.ny, g.nx})), name);
}

}  // namespace probexec::calo
