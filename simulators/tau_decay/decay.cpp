#include "decay.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

namespace probexec::tau {

namespace ph = physics;

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kTwoPi = 2.0 * kPi;

// GENBOD weight prod_k p_k of the intermediate masses given by the sorted uniforms `u`: inv[k] is
// the invariant mass of particles 0..k, m_0 + ... + m_k + u_k (M - sum m) for 0 < k < n-1.
double phase_space_weight(double M, const std::vector<double>& m, const std::vector<double>& u, std::vector<double>& inv) {
  const std::size_t n = m.size();
  double msum = 0;
  for (double x : m) msum += x;
  const double t = M - msum;
  double partial = m[0];
  inv.assign(n, 0.0);
  inv[0] = m[0];
  for (std::size_t k = 1; k + 1 < n; ++k) {
    partial += m[k];
    inv[k] = partial + u[k - 1] * t;
  }
  inv[n - 1] = M;
  double w = 1;
  for (std::size_t k = 1; k < n; ++k) w *= two_body_momentum(inv[k], inv[k - 1], m[k]);
  return w;
}

// The maximum of the GENBOD weight over the intermediate masses, times a small safety margin.
// GENBOD's textbook bound (the product of the largest momenta each split could have) is loose:
// about 25 % acceptance for the 3-body leptonic modes and under 1 % for 3 pi pi0 nu (measured), so
// the maximum is found numerically instead: a grid over the ordered unit simplex, then a pattern search from
// the best grid point. Computed once per mass configuration (cached); the sampler throws if a
// weight ever exceeds it, so a too-small bound could not bias the result silently.
double phase_space_max_weight(double M, const std::vector<double>& m) {
  static thread_local std::vector<std::pair<std::vector<double>, double>> cache;
  std::vector<double> key = m;
  key.push_back(M);
  for (const auto& [k, w] : cache)
    if (k == key) return w;
  const std::size_t d = m.size() > 2 ? m.size() - 2 : 0;
  std::vector<double> inv;
  auto weight = [&](std::vector<double> u) {
    for (double& x : u) x = std::clamp(x, 0.0, 1.0);
    std::sort(u.begin(), u.end());
    return phase_space_weight(M, m, u, inv);
  };
  std::vector<double> best(d, 0.5);
  double wbest = weight(best);
  if (d > 0) {
    // Grid: G points per axis, G^d at most about 2e5 evaluations.
    int g = std::max(8, static_cast<int>(std::pow(2e5, 1.0 / static_cast<double>(d))));
    g = std::min(g, 4096);
    std::vector<int> idx(d, 0);
    std::vector<double> u(d);
    for (;;) {
      for (std::size_t i = 0; i < d; ++i) u[i] = (idx[i] + 0.5) / g;
      double w = weight(u);
      if (w > wbest) wbest = w, best = u;
      // Next non-decreasing index tuple (the weight is symmetric in u: ordered tuples suffice).
      std::size_t i = d;
      while (i > 0 && idx[i - 1] == g - 1) --i;
      if (i == 0) break;
      ++idx[i - 1];
      for (std::size_t j = i; j < d; ++j) idx[j] = idx[i - 1];
    }
    // Pattern search (Hooke-Jeeves style) down to a step far below the grid spacing.
    for (double step = 1.0 / g; step > 1e-12; step *= 0.5) {
      bool moved = true;
      while (moved) {
        moved = false;
        for (std::size_t i = 0; i < d; ++i)
          for (double sgn : {1.0, -1.0}) {
            std::vector<double> v = best;
            v[i] += sgn * step;
            double w = weight(v);
            if (w > wbest) wbest = w, best = v, moved = true;
          }
      }
    }
  }
  double wmax = wbest * 1.01;  // safety margin for what the search may have missed
  cache.emplace_back(key, wmax);
  return wmax;
}

// Builds one decay in the tau rest frame; numbers the two-body splits and pi0 decays so every
// draw has a distinct, readable name.
class Builder {
 public:
  explicit Builder(Decay& d) : d_(d) {}

  // Isotropic two-body decay of `parent` (four-momentum in the tau rest frame, invariant mass
  // `parent_mass`) into masses m1, m2; returns the daughters in the tau rest frame.
  std::pair<FourVector, FourVector> two_body(const FourVector& parent, double parent_mass, double m1, double m2) {
    std::string step = "decay" + std::to_string(++steps_) + "/";
    return split(parent, parent_mass, m1, m2, step);
  }

  // A final-state particle (tau rest frame); a pi0 is decayed to two photons here.
  void add(int pdg, const FourVector& p) {
    if (pdg == ph::kPiZero) {
      std::string label = "pi0_" + std::to_string(++pi0s_) + "/";
      auto [g1, g2] = split(p, ph::kNeutralPionMass, 0.0, 0.0, label);
      d_.products.push_back({ph::kPhoton, g1});
      d_.products.push_back({ph::kPhoton, g2});
      return;
    }
    d_.products.push_back({pdg, p});
  }

  // Resonance mass by rejection from the Breit-Wigner truncated to [low, high]: a candidate
  // m ~ Uniform(low, high) is accepted with probability BW(m) / max BW over the range. Both draws
  // are `replace` draws, so the number of iterations (and the trace length) varies.
  double resonance_mass(const std::string& name, double mass, double width, double low, double high) {
    if (!(high > low)) throw std::logic_error("tau decay: empty mass range for " + name);
    double peak = breit_wigner(std::clamp(mass, low, high), mass, width);
    SampleOptions cand{name + "/mass_candidate", true, true, ""};
    SampleOptions acc{name + "/accept", true, true, ""};
    for (;;) {
      double m = sample(Uniform(low, high), cand);
      double u = sample(Uniform(0.0, 1.0), acc);
      if (u * peak < breit_wigner(m, mass, width)) {
        d_.resonances.push_back({name, m, low, high});
        return m;
      }
    }
  }

  // Flat n-body phase space for a parent of mass M at rest (GENBOD / Raubold-Lynch): n-2 sorted
  // uniforms give the intermediate invariant masses M_1 < ... < M_{n-2}; the event is kept with
  // probability prod_k p_k / w_max, p_k the two-body momentum of M_k -> M_{k-1} + m_k and w_max the
  // weight's maximum (phase_space_max_weight). Then each split is isotropic in its own rest frame. Momenta in the parent frame.
  std::vector<FourVector> phase_space(double M, const std::vector<double>& m) {
    const std::size_t n = m.size();
    double msum = 0;
    for (double x : m) msum += x;
    if (n < 2 || !(M - msum > 0)) throw std::logic_error("tau decay: phase space closed");
    const double wmax = phase_space_max_weight(M, m);
    std::vector<double> inv(n);  // inv[k]: invariant mass of particles 0..k
    std::vector<double> u(n > 2 ? n - 2 : 0);
    SampleOptions acc{"phase_space/accept", true, true, ""};
    for (;;) {
      for (std::size_t k = 0; k < u.size(); ++k) {
        SampleOptions o{"phase_space/u" + std::to_string(k + 1), true, true, ""};
        u[k] = sample(Uniform(0.0, 1.0), o);
      }
      std::sort(u.begin(), u.end());
      double w = phase_space_weight(M, m, u, inv);
      if (w > wmax) throw std::logic_error("tau decay: phase-space weight above its computed maximum");
      double a = sample(Uniform(0.0, 1.0), acc);
      if (a * wmax < w) break;
    }
    // Build from the innermost pair outwards: in the rest frame of system 0..k, the subsystem
    // 0..k-1 and particle k fly back to back; earlier particles are boosted along with it.
    std::vector<FourVector> out(n);
    out[0] = FourVector(m[0], 0, 0, 0);
    for (std::size_t k = 1; k < n; ++k) {
      FourVector system(inv[k], 0, 0, 0);
      auto [sub, pk] = two_body(system, inv[k], inv[k - 1], m[k]);
      for (std::size_t i = 0; i < k; ++i) out[i] = k == 1 ? sub : out[i].boosted_to_frame_of(sub, inv[k - 1]);
      out[k] = pk;
    }
    return out;
  }

 private:
  std::pair<FourVector, FourVector> split(const FourVector& parent, double parent_mass, double m1, double m2,
                                          const std::string& label) {
    double c = sample(Uniform(-1.0, 1.0), label + "cos_theta");
    double phi = sample(Uniform(0.0, kTwoPi), label + "phi");
    double q = two_body_momentum(parent_mass, m1, m2);
    ThreeVector dir = ThreeVector::from_angles(c, phi) * q;
    FourVector a = FourVector::from_mass(m1, dir), b = FourVector::from_mass(m2, -dir);
    return {a.boosted_to_frame_of(parent, parent_mass), b.boosted_to_frame_of(parent, parent_mass)};
  }

  Decay& d_;
  int steps_ = 0, pi0s_ = 0;
};

constexpr int kPiMinus = -ph::kPiPlus;
constexpr int kKMinus = -ph::kKPlus;

void decay_in_rest_frame(Builder& b, TauChannel channel) {
  const double mt = ph::kTauMass;
  const FourVector tau(mt, 0, 0, 0);
  const double mpi = ph::kChargedPionMass, mpi0 = ph::kNeutralPionMass;
  switch (channel) {
    case TauChannel::ElectronNu:
    case TauChannel::MuonNu: {
      bool e = channel == TauChannel::ElectronNu;
      int lepton = e ? ph::kElectron : ph::kMuon;
      int nubar = -(e ? ph::kElectronNeutrino : ph::kMuonNeutrino);
      auto p = b.phase_space(mt, {particle_mass(lepton), 0.0, 0.0});
      b.add(lepton, p[0]);
      b.add(nubar, p[1]);
      b.add(ph::kTauNeutrino, p[2]);
      return;
    }
    case TauChannel::Pion:
    case TauChannel::Kaon: {
      int h = channel == TauChannel::Pion ? kPiMinus : kKMinus;
      auto [hp, nu] = b.two_body(tau, mt, particle_mass(h), 0.0);
      b.add(h, hp);
      b.add(ph::kTauNeutrino, nu);
      return;
    }
    case TauChannel::PionPiZero: {  // tau -> rho- nu, rho- -> pi- pi0
      double mr = b.resonance_mass("rho", ph::kRhoMass, ph::kRhoWidth, mpi + mpi0, mt);
      auto [rho, nu] = b.two_body(tau, mt, mr, 0.0);
      auto [pi, pi0] = b.two_body(rho, mr, mpi, mpi0);
      b.add(kPiMinus, pi);
      b.add(ph::kPiZero, pi0);
      b.add(ph::kTauNeutrino, nu);
      return;
    }
    case TauChannel::KaonPiZero:
    case TauChannel::PionKZero: {  // tau -> K*- nu, K*- -> K- pi0 or K0bar pi-
      bool kpi0 = channel == TauChannel::KaonPiZero;
      int ha = kpi0 ? kKMinus : ph::kKZeroLong, hb = kpi0 ? int(ph::kPiZero) : kPiMinus;
      double ma = particle_mass(ha), mb = particle_mass(hb);
      double mk = b.resonance_mass("kstar", ph::kKStarMass, ph::kKStarWidth, ma + mb, mt);
      auto [ks, nu] = b.two_body(tau, mt, mk, 0.0);
      auto [a, c] = b.two_body(ks, mk, ma, mb);
      b.add(ha, a);
      b.add(hb, c);
      b.add(ph::kTauNeutrino, nu);
      return;
    }
    case TauChannel::PionTwoPiZero:
    case TauChannel::ThreePion: {
      // a1- -> rho0 pi- -> (pi+ pi-) pi-, or a1- -> rho- pi0 -> (pi- pi0) pi0 (rho0 -> pi0 pi0 is
      // forbidden by C parity, so the neutral-pion mode goes through the charged rho).
      bool three = channel == TauChannel::ThreePion;
      int r1 = three ? ph::kPiPlus : kPiMinus, r2 = three ? kPiMinus : int(ph::kPiZero);
      int bach = three ? kPiMinus : int(ph::kPiZero);
      double m1 = particle_mass(r1), m2 = particle_mass(r2), mb = particle_mass(bach);
      double ma = b.resonance_mass("a1", ph::kA1Mass, ph::kA1Width, m1 + m2 + mb, mt);
      double mr = b.resonance_mass("a1/rho", ph::kRhoMass, ph::kRhoWidth, m1 + m2, ma - mb);
      auto [a1, nu] = b.two_body(tau, mt, ma, 0.0);
      auto [rho, pb] = b.two_body(a1, ma, mr, mb);
      auto [p1, p2] = b.two_body(rho, mr, m1, m2);
      b.add(r1, p1);
      b.add(r2, p2);
      b.add(bach, pb);
      b.add(ph::kTauNeutrino, nu);
      return;
    }
    case TauChannel::ThreePionPiZero: {  // flat 5-body phase space
      const int pdg[5] = {kPiMinus, kPiMinus, ph::kPiPlus, ph::kPiZero, ph::kTauNeutrino};
      std::vector<double> masses;
      for (int id : pdg) masses.push_back(particle_mass(id));
      auto p = b.phase_space(mt, masses);
      for (int i = 0; i < 5; ++i) b.add(pdg[i], p[static_cast<std::size_t>(i)]);
      return;
    }
  }
  throw std::logic_error("tau decay: unknown channel");
}

}  // namespace

std::array<double, ph::kNumTauChannels> channel_probabilities() {
  std::array<double, ph::kNumTauChannels> p = ph::kTauBranchingFractions;
  double s = 0;
  for (double x : p) s += x;
  for (double& x : p) x /= s;
  return p;
}

double breit_wigner(double m, double mass, double width) {
  double d = m * m - mass * mass;
  return 1.0 / (d * d + mass * mass * width * width);
}

double particle_mass(int pdg) {
  switch (std::abs(pdg)) {
    case ph::kElectron: return ph::kElectronMass;
    case ph::kMuon: return ph::kMuonMass;
    case ph::kPiPlus: return ph::kChargedPionMass;
    case ph::kPiZero: return ph::kNeutralPionMass;
    case ph::kKPlus: return ph::kChargedKaonMass;
    case ph::kKZeroLong: return ph::kNeutralKaonMass;
    case ph::kTauMinus: return ph::kTauMass;
    case ph::kElectronNeutrino:
    case ph::kMuonNeutrino:
    case ph::kTauNeutrino:
    case ph::kPhoton: return 0.0;
    default: throw std::invalid_argument("tau decay: no mass for PDG code " + std::to_string(pdg));
  }
}

bool is_neutrino(int pdg) {
  int a = std::abs(pdg);
  return a == ph::kElectronNeutrino || a == ph::kMuonNeutrino || a == ph::kTauNeutrino;
}

Decay decay_tau(double px, double py, double pz, TauChannel channel) {
  Decay d;
  d.channel = channel;
  d.tau = FourVector::from_mass(ph::kTauMass, {px, py, pz});
  Builder b(d);
  decay_in_rest_frame(b, channel);
  for (auto& p : d.products) p.p = p.p.boosted_to_frame_of(d.tau, ph::kTauMass);
  return d;
}

Decay decay_tau(double px, double py, double pz) {
  auto probs = channel_probabilities();
  Tensor t(std::vector<double>(probs.begin(), probs.end()));
  int c = static_cast<int>(sample(Categorical(t), "channel").item());
  return decay_tau(px, py, pz, static_cast<TauChannel>(c));
}

FourVector visible_momentum(const Decay& d) {
  FourVector s;
  for (const auto& p : d.products)
    if (!is_neutrino(p.pdg)) s += p.p;
  return s;
}

FourVector missing_momentum(const Decay& d) {
  FourVector s;
  for (const auto& p : d.products)
    if (is_neutrino(p.pdg)) s += p.p;
  return s;
}

double visible_energy(const Decay& d) { return visible_momentum(d).e; }
double missing_pt(const Decay& d) { return missing_momentum(d).pt(); }

void tag_decay(const Decay& d) {
  for (std::size_t i = 0; i < d.products.size(); ++i) {
    const auto& p = d.products[i];
    std::string prefix = "fs_" + std::to_string(i);
    tag(Tensor{p.p.e, p.p.px, p.p.py, p.p.pz}, prefix + "_p");
    tag(static_cast<double>(p.pdg), prefix + "_pdg");
  }
  FourVector vis = visible_momentum(d);
  tag(vis.e, "visible_energy");
  tag(missing_pt(d), "missing_pt");
  tag(vis.mass(), "visible_mass");
}

}  // namespace probexec::tau
