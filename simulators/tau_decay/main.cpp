// probexec-sim-tau_decay: a tau- of prior momentum decays; its visible products shower in the
// calorimeter; the voxel image is observed.
//
//   latents:  px, py, pz, channel (+ the decay's own draws, see decay.hpp)
//   tags:     fs_<i>_p, fs_<i>_pdg, visible_energy, missing_pt, visible_mass
//   observed: calorimeter, shape [nz, ny, nx]
//
// Extra options (removed before the front end parses the rest): --noise-floor X (GeV), the floor
// of the calorimeter likelihood's variance, default physics::kTauCaloNoiseFloor; --fixed-spots,
// shower spots from a fixed stream of random numbers instead of uncontrolled draws (see
// calorimeter.hpp, Response::fixed_spots; the simulator `tau_decay_fixed_spots`).
#include "../calorimeter/calorimeter.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "decay.hpp"

namespace ph = probexec::physics;

namespace {

double g_noise_floor = ph::kTauCaloNoiseFloor;
probexec::calo::Response g_response;  // set from the command line before serving

probexec::Tensor tau_decay_model() {
  using probexec::sample;
  using probexec::Uniform;
  double px = sample(Uniform(ph::kTauPxMin, ph::kTauPxMax), "px");
  double py = sample(Uniform(ph::kTauPyMin, ph::kTauPyMax), "py");
  double pz = sample(Uniform(ph::kTauPzMin, ph::kTauPzMax), "pz");
  probexec::tau::Decay d = probexec::tau::decay_tau(px, py, pz);
  probexec::tau::tag_decay(d);

  static const probexec::calo::Geometry geometry;
  const probexec::calo::Response& response = g_response;
  probexec::calo::Image image(geometry);
  for (std::size_t i = 0; i < d.products.size(); ++i) {
    const auto& p = d.products[i];
    if (probexec::tau::is_neutrino(p.pdg) || probexec::calo::invisible(p.pdg)) continue;
    if (!(p.p.pz > 0)) continue;  // flies away from the calorimeter (never for this prior)
    // Entry point: the straight line from the decay vertex at the origin to the front face.
    probexec::calo::Particle cp;
    cp.pdg = p.pdg;
    cp.e = p.p.e;
    cp.px = p.p.px;
    cp.py = p.p.py;
    cp.pz = p.p.pz;
    cp.z = geometry.zmin;
    cp.x = geometry.zmin * p.p.px / p.p.pz;
    cp.y = geometry.zmin * p.p.py / p.p.pz;
    probexec::calo::shower(cp, geometry, response, image, "particle_" + std::to_string(i) + "/");
  }
  probexec::calo::observe_image(image, g_noise_floor, "calorimeter");
  return probexec::Tensor{static_cast<double>(d.channel), probexec::tau::visible_energy(d), probexec::tau::missing_pt(d)};
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--fixed-spots") {
      g_response.fixed_spots = true;
      continue;
    }
    if (a == "--noise-floor") {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s: missing value after --noise-floor\n", argv[0]);
        return 2;
      }
      char* end = nullptr;
      g_noise_floor = std::strtod(argv[++i], &end);
      if (!end || *end || !(g_noise_floor >= 0)) {
        std::fprintf(stderr, "%s: bad --noise-floor %s\n", argv[0], argv[i]);
        return 2;
      }
      continue;
    }
    args.push_back(argv[i]);
  }
  args.push_back(nullptr);
  return probexec::serve(tau_decay_model, static_cast<int>(args.size()) - 1, args.data(), "tau_decay");
}
