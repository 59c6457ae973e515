// probexec-tau-physics: decays N taus on the local RNG (no engine) and prints the physics checks as
// JSON: channel counts, four-momentum and invariant-mass violations, product masses, visible-mass
// ranges per channel, and the accepted resonance masses (summary plus histogram).
//
//   probexec-tau-physics [--decays N] [--seed S] [--bins B]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "decay.hpp"

namespace ph = probexec::physics;
using probexec::tau::Decay;
using probexec::tau::FourVector;

namespace {

struct MassSample {
  double low = 0, high = 0;
  std::vector<double> values;
};

double relative_violation(const FourVector& sum, const FourVector& tau) {
  double d = std::max({std::abs(sum.e - tau.e), std::abs(sum.px - tau.px), std::abs(sum.py - tau.py),
                       std::abs(sum.pz - tau.pz)});
  return d / tau.e;
}

void print_masses(const std::string& key, MassSample& s, int bins, bool last) {
  auto& v = s.values;
  std::sort(v.begin(), v.end());
  double mean = 0;
  for (double x : v) mean += x;
  std::size_t n = v.size();
  mean = n ? mean / static_cast<double>(n) : 0.0;
  double median = n ? (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2])) : 0.0;
  std::vector<long> hist(static_cast<std::size_t>(bins), 0);
  double w = (s.high - s.low) / bins;
  for (double x : v) {
    long i = static_cast<long>((x - s.low) / w);
    hist[static_cast<std::size_t>(std::clamp(i, 0L, static_cast<long>(bins) - 1))]++;
  }
  std::printf("    \"%s\": {\"count\": %zu, \"low\": %.17g, \"high\": %.17g, \"mean\": %.17g, \"median\": %.17g, \"hist\": [",
              key.c_str(), n, s.low, s.high, mean, median);
  for (int i = 0; i < bins; ++i) std::printf("%s%ld", i ? ", " : "", hist[static_cast<std::size_t>(i)]);
  std::printf("]}%s\n", last ? "" : ",");
}

}  // namespace

int main(int argc, char** argv) {
  long decays = 20000;
  unsigned long long seed = 1;
  int bins = 200;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "usage: %s [--decays N] [--seed S] [--bins B]\n", argv[0]);
      return 2;
    }
    if (a == "--decays") decays = std::atol(argv[++i]);
    else if (a == "--seed") seed = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--bins") bins = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (decays <= 0 || bins <= 0) return 2;
  probexec::seed(seed);

  std::vector<long> counts(ph::kNumTauChannels, 0);
  std::vector<double> vis_min(ph::kNumTauChannels, 1e300), vis_max(ph::kNumTauChannels, -1e300);
  double max_p4 = 0, max_mass = 0, max_product_mass = 0;
  long max_products = 0;
  std::map<std::string, MassSample> masses;
  // Rest-frame checks: electron energy in e nu nu (flat phase space: <E> = m_tau / 3 for massless
  // products), the hadron's direction relative to the flight direction in pi nu / K nu (isotropic:
  // <cos> = 0), and its momentum (fixed by the masses).
  double e_sum = 0, cos_sum = 0, max_two_body = 0;
  long e_n = 0, cos_n = 0;

  for (long k = 0; k < decays; ++k) {
    double px = probexec::sample(probexec::Uniform(ph::kTauPxMin, ph::kTauPxMax), "px");
    double py = probexec::sample(probexec::Uniform(ph::kTauPyMin, ph::kTauPyMax), "py");
    double pz = probexec::sample(probexec::Uniform(ph::kTauPzMin, ph::kTauPzMax), "pz");
    Decay d = probexec::tau::decay_tau(px, py, pz);
    auto c = static_cast<std::size_t>(d.channel);
    counts[c]++;
    FourVector sum;
    for (const auto& p : d.products) {
      sum += p.p;
      // |m^2 - m_nominal^2| / E^2: the product is on shell to rounding.
      double m0 = probexec::tau::particle_mass(p.pdg);
      max_product_mass = std::max(max_product_mass, std::abs(p.p.m2() - m0 * m0) / (p.p.e * p.p.e));
    }
    max_products = std::max(max_products, static_cast<long>(d.products.size()));
    max_p4 = std::max(max_p4, relative_violation(sum, d.tau));
    max_mass = std::max(max_mass, std::abs(sum.mass() - ph::kTauMass) / ph::kTauMass);
    double vm = probexec::tau::visible_momentum(d).mass();
    vis_min[c] = std::min(vis_min[c], vm);
    vis_max[c] = std::max(vis_max[c], vm);
    if (d.channel == ph::TauChannel::ElectronNu || d.channel == ph::TauChannel::Pion || d.channel == ph::TauChannel::Kaon) {
      const auto& first = d.products.front();  // the charged lepton or hadron
      FourVector rest = first.p.in_rest_frame_of(d.tau);
      if (d.channel == ph::TauChannel::ElectronNu) {
        e_sum += rest.e;
        ++e_n;
      } else {
        double q = probexec::tau::two_body_momentum(ph::kTauMass, probexec::tau::particle_mass(first.pdg), 0.0);
        max_two_body = std::max(max_two_body, std::abs(rest.p() - q) / q);
        cos_sum += rest.p3().dot(d.tau.p3()) / (rest.p() * d.tau.p());
        ++cos_n;
      }
    }
    for (const auto& r : d.resonances) {
      auto& s = masses[std::to_string(static_cast<int>(c)) + ":" + r.name];
      s.low = r.low;  // top-level resonances: one range per channel; a1/rho ranges vary (last kept)
      s.high = r.high;
      s.values.push_back(r.mass);
    }
  }

  auto probs = probexec::tau::channel_probabilities();
  std::printf("{\n  \"decays\": %ld,\n  \"seed\": %llu,\n  \"tau_mass\": %.17g,\n", decays, seed, ph::kTauMass);
  std::printf("  \"max_rel_p4_violation\": %.6g,\n  \"max_rel_mass_violation\": %.6g,\n", max_p4, max_mass);
  std::printf("  \"max_product_mass_violation\": %.6g,\n  \"max_products\": %ld,\n", max_product_mass, max_products);
  std::printf("  \"electron_rest_energy\": {\"count\": %ld, \"mean\": %.17g},\n", e_n, e_n ? e_sum / static_cast<double>(e_n) : 0.0);
  std::printf("  \"two_body_hadron\": {\"count\": %ld, \"mean_cos\": %.17g, \"max_rel_momentum_violation\": %.6g},\n", cos_n,
              cos_n ? cos_sum / static_cast<double>(cos_n) : 0.0, max_two_body);
  std::printf("  \"channels\": [\n");
  for (int c = 0; c < ph::kNumTauChannels; ++c) {
    auto i = static_cast<std::size_t>(c);
    std::printf("    {\"index\": %d, \"name\": \"%s\", \"probability\": %.17g, \"count\": %ld, \"visible_mass_min\": %.17g, "
                "\"visible_mass_max\": %.17g}%s\n",
                c, ph::kTauChannelNames[i], probs[i], counts[i], counts[i] ? vis_min[i] : 0.0, counts[i] ? vis_max[i] : 0.0,
                c + 1 < ph::kNumTauChannels ? "," : "");
  }
  std::printf("  ],\n  \"resonances\": {\n");
  std::size_t j = 0;
  for (auto& [key, s] : masses) print_masses(key, s, bins, ++j == masses.size());
  std::printf("  },\n  \"nominal\": {\"rho\": [%.17g, %.17g], \"a1\": [%.17g, %.17g], \"kstar\": [%.17g, %.17g]}\n}\n",
              ph::kRhoMass, ph::kRhoWidth, ph::kA1Mass, ph::kA1Width, ph::kKStarMass, ph::kKStarWidth);
  return 0;
}
