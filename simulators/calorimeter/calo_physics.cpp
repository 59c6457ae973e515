// probexec-calo-physics: showers one particle type many times with no engine attached (the local
// RNG, seeded; energy k of the list uses seed + k) and prints JSON statistics for the physics tests (tests/test_calorimeter.py).
//
//   probexec-calo-physics --pdg 11 --energies 2,5,15 --n 400 --seed 1 [--geometry standard|large]
//
// Per energy: mean and std of deposited/E (inside the image) and generated/E (all spots, before
// leakage), spot counts, the mean spot depth per shower (radiation lengths) with its quadrature
// expectation, and image sanity (min voxel, finiteness, image total vs the returned energy).
// "large" is one huge voxel: nothing leaks, so deposited == generated.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "calorimeter.hpp"

namespace {

using namespace probexec;

struct Moments {
  double n = 0, sum = 0, sum2 = 0;
  void add(double v) {
    n += 1;
    sum += v;
    sum2 += v * v;
  }
  double mean() const { return n > 0 ? sum / n : 0.0; }
  double std() const { return n > 1 ? std::sqrt(std::max(sum2 - sum * sum / n, 0.0) / (n - 1)) : 0.0; }
};

[[noreturn]] void usage(const char* prog) {
  std::fprintf(stderr, "usage: %s --pdg CODE --energies E1,E2,... [--n N] [--seed S] [--geometry standard|large]\n", prog);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  int pdg = physics::kElectron;
  std::vector<double> energies;
  long n = 400;
  unsigned long long seed = 1;
  std::string geometry_name = "standard";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) usage(argv[0]);
    std::string v = argv[++i];
    if (a == "--pdg") {
      pdg = std::atoi(v.c_str());
    } else if (a == "--energies") {
      std::stringstream ss(v);
      std::string item;
      while (std::getline(ss, item, ',')) energies.push_back(std::atof(item.c_str()));
    } else if (a == "--n") {
      n = std::atol(v.c_str());
    } else if (a == "--seed") {
      seed = std::strtoull(v.c_str(), nullptr, 10);
    } else if (a == "--geometry") {
      geometry_name = v;
    } else {
      usage(argv[0]);
    }
  }
  if (energies.empty() || n < 2 || (geometry_name != "standard" && geometry_name != "large")) usage(argv[0]);

  calo::Geometry g;
  if (geometry_name == "large") {
    g.nx = g.ny = g.nz = 1;
    g.xmin = g.ymin = -1e9;
    g.xmax = g.ymax = 1e9;
    g.zmax = 1e9;
  }
  const calo::Response r;

  std::printf("{\"pdg\": %d, \"n\": %ld, \"seed\": %llu, \"geometry\": \"%s\", \"sampling_fraction\": %.17g, "
              "\"spot_energy\": %.17g, \"spot_resolution\": %.17g, \"results\": [",
              pdg, n, seed, geometry_name.c_str(), calo::sampling_fraction(pdg, r), r.spot_energy, r.spot_resolution);
  for (std::size_t k = 0; k < energies.size(); ++k) {
    const double e = energies[k];
    Moments dep, gen, spots, lost, depth;
    double image_min = std::numeric_limits<double>::infinity(), max_total_diff = 0;
    bool finite = true;
    calo::Particle p;
    p.pdg = pdg;
    p.e = e;
    p.pz = e;  // normal incidence
    p.x = 0.5 * (g.xmin + g.xmax);
    p.y = 0.5 * (g.ymin + g.ymax);
    p.z = g.zmin;
    calo::Image image(g);
    // One shower per trace, run by the front end's standalone mode (local RNG, seeded): draws are
    // made exactly as in the simulator, and addresses are captured from the model entry only.
    auto model = [&]() -> Tensor {
      std::fill(image.data().begin(), image.data().end(), 0.0);
      calo::ShowerStats st;
      const double d = calo::shower(p, g, r, image, "", &st);
      dep.add(d / e);
      gen.add(st.energy_generated / e);
      spots.add(static_cast<double>(st.spots));
      lost.add(static_cast<double>(st.spots_lost));
      if (st.spots > 0) depth.add(st.mean_depth);
      for (double v : image.data()) {
        image_min = std::min(image_min, v);
        finite = finite && std::isfinite(v);
      }
      max_total_diff = std::max(max_total_diff, std::abs(image.total() - d));
      return Tensor();
    };
    const std::string seed_k = std::to_string(seed + k), traces = std::to_string(n);
    const char* args[] = {argv[0], "--standalone", "--quiet", "--seed", seed_k.c_str(), "--traces", traces.c_str()};
    if (int rc = serve(model, 7, const_cast<char**>(args), "calo-physics")) return rc;
    std::printf("%s{\"energy\": %.17g, \"mean_deposited_frac\": %.17g, \"std_deposited_frac\": %.17g, "
                "\"mean_generated_frac\": %.17g, \"std_generated_frac\": %.17g, \"mean_spots\": %.17g, "
                "\"mean_spots_lost\": %.17g, \"depth_showers\": %.17g, \"mean_depth\": %.17g, \"std_depth\": %.17g, "
                "\"expected_depth\": %.17g, \"image_min\": %.17g, \"image_finite\": %s, \"max_total_diff\": %.17g}",
                k ? ", " : "", e, dep.mean(), dep.std(), gen.mean(), gen.std(), spots.mean(), lost.mean(), depth.n,
                depth.mean(), depth.std(), calo::expected_mean_depth(pdg, e, r), image_min, finite ? "true" : "false",
                max_total_diff);
  }
  std::printf("]}\n");
  return 0;
}
