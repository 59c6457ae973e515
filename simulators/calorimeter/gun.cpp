// probexec-sim-calorimeter: a particle gun in front of the voxel calorimeter.
//
// Latents and their priors (constants in physics/constants.hpp):
//   particle ~ Categorical(1/4, 1/4, 1/4, 1/4) over {electron, photon, pi+, K+} (index 0..3)
//   energy   ~ Uniform(kGunEnergyMin, kGunEnergyMax) = Uniform(1, 20) GeV
//   x, y     ~ Uniform(kGunEntryMin, kGunEntryMax) = Uniform(-1, 1), the entry point on the front face z = zmin
//   theta    ~ Uniform(0, kGunThetaMax) = Uniform(0, 0.2) rad, polar angle to the beam (+z) axis
//   phi      ~ Uniform(0, 2 pi), azimuth
// then the shower's own controlled draws (lnT, lnAlpha_noise, num_spots) and thousands of
// uncontrolled spot draws. Tag "deposited_energy" (GeV); observe "calorimeter", the
// [nz, ny, nx] = [20, 35, 35] voxel image, each voxel ~ Normal(image, sqrt(image + floor^2)) with
// floor kCaloNoiseFloor = 0.01 GeV.
// Result: [deposited energy, energy-weighted centroid x, y, z] (zeros when nothing is deposited).
#include <algorithm>
#include <array>
#include <cmath>

#include "calorimeter.hpp"

namespace {

using namespace probexec;
namespace phys = probexec::physics;

constexpr double kTwoPi = 6.283185307179586;

struct GunParticle {
  int pdg;
  double mass;
};
// The Categorical's categories, in order.
constexpr std::array<GunParticle, 4> kGunParticles = {{
    {phys::kElectron, phys::kElectronMass},
    {phys::kPhoton, 0.0},
    {phys::kPiPlus, phys::kChargedPionMass},
    {phys::kKPlus, phys::kChargedKaonMass},
}};

Tensor gun() {
  static const calo::Geometry geometry;
  static const calo::Response response;

  const double q = 1.0 / kGunParticles.size();
  const auto k = static_cast<std::size_t>(sample(Categorical({q, q, q, q}), "particle").item());
  const GunParticle& gp = kGunParticles.at(k);
  const double energy = sample(Uniform(phys::kGunEnergyMin, phys::kGunEnergyMax), "energy");
  const double x = sample(Uniform(phys::kGunEntryMin, phys::kGunEntryMax), "x");
  const double y = sample(Uniform(phys::kGunEntryMin, phys::kGunEntryMax), "y");
  const double theta = sample(Uniform(0.0, phys::kGunThetaMax), "theta");
  const double phi = sample(Uniform(0.0, kTwoPi), "phi");

  calo::Particle p;
  p.pdg = gp.pdg;
  p.e = energy;
  const double pm = std::sqrt(std::max(energy * energy - gp.mass * gp.mass, 0.0));
  p.px = pm * std::sin(theta) * std::cos(phi);
  p.py = pm * std::sin(theta) * std::sin(phi);
  p.pz = pm * std::cos(theta);
  p.x = x;
  p.y = y;
  p.z = geometry.zmin;

  // One image per thread, cleared per event: no 200 kB allocation (and its page faults) per event.
  thread_local calo::Image image(geometry);
  std::fill(image.data().begin(), image.data().end(), 0.0);
  const double deposited = calo::shower(p, geometry, response, image);
  tag(deposited, "deposited_energy");
  calo::observe_image(image, phys::kCaloNoiseFloor, "calorimeter");

  // Energy-weighted centroid of the image (voxel centres).
  double cx = 0, cy = 0, cz = 0;
  if (deposited > 0) {
    const auto& e = image.data();
    const double dx = (geometry.xmax - geometry.xmin) / geometry.nx;
    const double dy = (geometry.ymax - geometry.ymin) / geometry.ny;
    const double dz = (geometry.zmax - geometry.zmin) / geometry.nz;
    std::size_t i = 0;
    double total = 0;
    for (int iz = 0; iz < geometry.nz; ++iz) {
      for (int iy = 0; iy < geometry.ny; ++iy) {
        for (int ix = 0; ix < geometry.nx; ++ix, ++i) {
          if (e[i] == 0) continue;
          cx += e[i] * (geometry.xmin + (ix + 0.5) * dx);
          cy += e[i] * (geometry.ymin + (iy + 0.5) * dy);
          cz += e[i] * (geometry.zmin + (iz + 0.5) * dz);
          total += e[i];
        }
      }
    }
    cx /= total;
    cy /= total;
    cz /= total;
  }
  return Tensor({deposited, cx, cy, cz});
}

}  // namespace

int main(int argc, char** argv) { return probexec::serve(gun, argc, argv, "calorimeter"); }
