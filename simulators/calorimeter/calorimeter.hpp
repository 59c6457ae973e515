// The calorimeter library: a 3D voxel calorimeter and parametrised (GFlash-style) showers.
// Every random quantity goes through probexec::sample with a meaningful name; spot-level draws
// (thousands per shower) are uncontrolled, drawn locally by the simulator.
#pragma once

#include <probexec/probexec.hpp>

#include <cstddef>
#include <string>
#include <vector>

#include "../physics/constants.hpp"

namespace probexec::calo {

// Voxel grid: nx * ny cells across (x, y), nz layers in depth z; the beam axis is +z.
struct Geometry {
  int nx = physics::kCaloNx, ny = physics::kCaloNy, nz = physics::kCaloNz;
  double xmin = physics::kCaloXMin, xmax = physics::kCaloXMax;
  double ymin = physics::kCaloYMin, ymax = physics::kCaloYMax;
  double zmin = physics::kCaloZMin, zmax = physics::kCaloZMax;
  std::size_t voxels() const { return static_cast<std::size_t>(nx) * ny * nz; }
};

// Detector response and shower-model choices (defaults from physics/constants.hpp).
struct Response {
  double sampling_fraction_em = physics::kSamplingFractionEM;
  double sampling_fraction_hadron = physics::kSamplingFractionHadron;
  double spot_energy = physics::kSpotEnergy;
  double spot_resolution = physics::kSpotRelativeResolution;
  double medium_z = physics::kMediumZ;
  double critical_energy = physics::kCriticalEnergy;
  double radiation_length = physics::kRadiationLength;
  double moliere_radius = physics::kMoliereRadius;
  double hadronic_length_scale = physics::kHadronicLengthScale;
  double hadronic_width_scale = physics::kHadronicWidthScale;
  // Spots from a fixed stream of random numbers (per shower label and spot index, the same in
  // every trace) instead of uncontrolled draws. The image mean is then a deterministic, nearly
  // smooth function of the controlled draws, a quasi-Monte Carlo estimate of the shower's
  // expected deposit, so a trace's likelihood no longer depends on thousands of draws no proposal
  // controls (docs/ic/README.md). The spots stop being protocol traffic.
  bool fixed_spots = false;
};

// A particle entering the calorimeter: PDG code, energy and momentum (GeV), and the point where
// its shower starts (calorimeter length units; z = zmin is the front face).
struct Particle {
  int pdg = physics::kPhoton;
  double e = 0, px = 0, py = 0, pz = 0;
  double x = 0, y = 0, z = physics::kCaloZMin;
};

// The deposited energy per voxel (GeV), x fastest: index = (iz * ny + iy) * nx + ix.
class Image {
 public:
  explicit Image(const Geometry& g) : g_(g), e_(g.voxels(), 0.0) {}
  const Geometry& geometry() const { return g_; }
  std::vector<double>& data() { return e_; }
  const std::vector<double>& data() const { return e_; }
  // Adds `energy` at point (x, y, z); false (and nothing added) when the point is outside.
  bool deposit(double x, double y, double z, double energy);
  double total() const;
  // Shape [nz, ny, nx] (C order, z slowest), as the engine sees it.
  Tensor tensor() const;

 private:
  Geometry g_;
  std::vector<double> e_;
};

// True for particles that leave nothing (neutrinos).
bool invisible(int pdg);
// True for e+-, gamma (EM showers); hadrons otherwise.
bool electromagnetic(int pdg);

// Showers one particle into `image`; returns the energy deposited in the image. `label` prefixes
// the names of its draws (e.g. "particle_0/") so several showers in one event stay apart.
double shower(const Particle& p, const Geometry& g, const Response& r, Image& image, const std::string& label = "");

// What one shower did, for physics checks (optional output of `shower`).
struct ShowerStats {
  long spots = 0;                 // spots generated (the Poisson count)
  long spots_lost = 0;            // spots that fell outside the image (leakage)
  double energy_generated = 0;    // sum of all spot energies (visible energy before leakage), GeV
  double energy_deposited = 0;    // the part inside the image, GeV (the return value of `shower`)
  double depth_max = 0;           // T: depth of the profile maximum, radiation lengths (hadrons: scaled)
  double alpha = 0, beta = 0;     // Gamma shape and rate of the longitudinal profile (EM units, 1/X0)
  double mean_depth = 0;          // mean spot depth along the axis, radiation lengths (hadrons: scaled)
};
double shower(const Particle& p, const Geometry& g, const Response& r, Image& image, const std::string& label,
              ShowerStats* stats);

// The GFlash shower-to-shower distribution of (ln T, ln alpha) at `energy` (GeV): a correlated 2D
// normal. Energies below Ec * exp(kGFlashMinLnY) are evaluated at that floor.
struct LongitudinalParams {
  double mean_ln_t = 0, sigma_ln_t = 0;
  double mean_ln_alpha = 0, sigma_ln_alpha = 0;
  double rho = 0;
};
LongitudinalParams longitudinal_params(double energy, const Response& r);
// Sampling fraction for this particle (EM or hadronic); 0 for invisible particles.
double sampling_fraction(int pdg, const Response& r);
// Expected mean spot depth <alpha / beta> = <T alpha / (alpha - 1)> in radiation lengths (hadrons:
// times hadronic_length_scale), by quadrature over the (ln T, ln alpha) normal, with the same
// alpha floor as `shower`. The physics tests compare the sampled showers with it.
double expected_mean_depth(int pdg, double energy, const Response& r);

// The observation: every voxel ~ Normal(mean = image, variance = image + floor^2), a Poisson-like
// Gaussian; the engine supplies the observed image by `name` (standalone runs simulate it).
void observe_image(const Image& image, double noise_floor, const std::string& name = "calorimeter");

}  // namespace probexec::calo
